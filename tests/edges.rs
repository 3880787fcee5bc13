//! What an outsider who holds no key can do to a running gateway: over-long keys, made-up
//! model names, silent and idle connections, requests from web pages, a second instance on
//! the same port. Each bound is checked from the outside, as a client would meet it.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn chat(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

/// Adds `settings` to the test config's `[server]` table.
fn server(settings: &str) -> impl FnOnce(String) -> String + '_ {
    move |t| t.replace("[server]\n", &format!("[server]\n{settings}\n"))
}

async fn keyed_gateway(db: &TestDb) -> TestGateway {
    start_gateway_with(db, MOCK_ECHO, |t| {
        t.replace("require_api_key = false", "require_api_key = true")
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_key_gets_a_401_that_says_so() {
    let db = TestDb::new(Backend::Sqlite).await;
    let gw = keyed_gateway(&db).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let key = format!("Bearer tg-{}", "a".repeat(100_000));
    let r = post(&url, &chat("echo"), &[("authorization", &key)]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "invalid_api_key");
    assert_eq!(e["type"], "invalid_request_error");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("longer than 4096 bytes"),
        "{e}"
    );
    gw.running.stop().await;
}

/// Starts a gateway on `listen` with `server` added to its `[server]` table, or says why it
/// cannot.
async fn try_start_on(
    db: &TestDb,
    listen: &str,
    settings: &str,
) -> anyhow::Result<tollgate::server::Running> {
    let text = config_text(&db.url, db.dir(), MOCK_ECHO).replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{listen}\""),
    );
    let text = server(settings)(text);
    let path = db.dir().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let loaded = tollgate::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    tollgate::server::start(loaded).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_on_a_port_in_use_fails_unless_both_share_it() {
    let (db1, db2) = (
        TestDb::new(Backend::Sqlite).await,
        TestDb::new(Backend::Sqlite).await,
    );
    let first = try_start_on(&db1, "127.0.0.1:0", "").await.unwrap();
    let addr = first.addr.to_string();
    let err = try_start_on(&db2, &addr, "").await.err().expect("refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!(
            "cannot listen on {addr}: another process is already listening there"
        )),
        "{msg}"
    );
    assert!(msg.contains("[server] reuse_port = true"), "{msg}");
    // It was refused before it wrote its config into a database.
    assert!(!db2.dir().join("t.db").exists());
    // Asking for sharing on one side only is not enough.
    let err = try_start_on(&db2, &addr, "reuse_port = true").await.err();
    let msg = format!("{:#}", err.expect("refused"));
    assert!(
        msg.contains(&format!("cannot listen on {addr}: another process")),
        "{msg}"
    );
    first.stop().await;

    let first = try_start_on(&db1, "127.0.0.1:0", "reuse_port = true")
        .await
        .unwrap();
    let addr = first.addr.to_string();
    let second = try_start_on(&db2, &addr, "reuse_port = true")
        .await
        .unwrap();
    assert_eq!(second.addr, first.addr);
    let r = get(&format!("http://{addr}/healthz"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    first.stop().await;
    second.stop().await;
}

/// Waits (up to 5 s) for the gateway to close `stream`; returns how long that took.
async fn closed_by_gateway(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Err(_) => panic!("the gateway kept the connection open"),
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_http1_connections_are_closed() {
    let db = TestDb::new(Backend::Sqlite).await;
    let gw = start_gateway_with(&db, MOCK_ECHO, server("idle_timeout_secs = 1")).await;
    // Connected, and never a byte sent.
    let mut silent = TcpStream::connect(gw.running.addr).await.unwrap();
    let waited = closed_by_gateway(&mut silent).await;
    assert!(waited >= Duration::from_millis(900), "{waited:?}");

    // Kept alive after an answer, then nothing more.
    let mut kept = TcpStream::connect(gw.running.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    kept.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let waited = closed_by_gateway(&mut kept).await;
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    gw.running.stop().await;
}

/// With every connection slot held by a silent client, a new client waits in the backlog
/// (it is not refused) and is answered once the silent ones have timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_a_client_waits_for_a_slot() {
    let db = TestDb::new(Backend::Sqlite).await;
    let settings = "idle_timeout_secs = 1\nmax_connections = 3";
    let gw = start_gateway_with(&db, MOCK_ECHO, server(settings)).await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(gw.running.addr).await.unwrap());
    }
    let started = Instant::now();
    let url = format!("{}/healthz", gw.base);
    let health = tokio::spawn(async move { get(&url, &[]).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!health.is_finished(), "answered while every slot was held");
    let r = tokio::time::timeout(Duration::from_secs(5), health)
        .await
        .expect("answered once the silent connections timed out")
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(900));
    for s in &mut silent {
        closed_by_gateway(s).await;
    }
    gw.running.stop().await;
}

/// An HTTP/2 connection (h2c, prior knowledge) is closed once it has had no stream open for
/// the idle time; a request that takes longer than that is not cut, on HTTP/2 or HTTP/1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_but_slow_answers_are_not() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (_mock, upstream) = start_mock(tollgate::mock::MockUpstream {
        options: tollgate::mock::MockOptions {
            ttft_ms: 2500,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let slow = format!(
        "[[providers]]\nname = \"slow\"\napi = \"openai\"\nbase_url = \"http://{upstream}/v1\"\n\
         [[models]]\nname = \"slow\"\nprovider = \"slow\"\nmodel_id = \"m\"\n"
    );
    let gw = start_gateway_with(&db, &slow, server("idle_timeout_secs = 1")).await;

    let r = post(
        &format!("{}/v1/chat/completions", gw.base),
        &chat("slow"),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    let tcp = TcpStream::connect(gw.running.addr).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::post(format!("{}/v1/chat/completions", gw.base))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat("slow").to_string())))
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.unwrap();
    let answered = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the gateway closed the idle HTTP/2 connection")
        .unwrap()
        .unwrap();
    // The watchdog looks every quarter of the idle time and counts from the last look that saw
    // the request in progress: the connection closes between 0.75 and 1.25 idle times after it.
    assert!(answered.elapsed() >= Duration::from_millis(700));
    gw.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_model_names_never_become_metric_labels() {
    let db = TestDb::new(Backend::Sqlite).await;
    let gw = start_gateway(&db, MOCK_ECHO).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let names: Vec<String> = (0..50)
        .map(|i| format!("made-up-{i}-{}", uuid::Uuid::now_v7().simple()))
        .collect();
    for name in &names {
        let r = post(&url, &chat(name), &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.json()["error"]["code"], "model_not_found");
    }
    // A known name, and the same deployment asked for as provider/model_id.
    for model in ["echo", "local/echo-1"] {
        let r = post(&url, &chat(model), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let text = get(&format!("{}/metrics", gw.base), &[]).await.text();
    assert!(!text.contains("made-up-"), "a client's name became a label");
    assert!(!text.contains("local/echo-1"), "{text}");
    let requests = |model, status| {
        metric(
            &text,
            "tollgate_requests_total",
            &[("model", model), ("status", status)],
        )
    };
    assert_eq!(requests("unknown", "404"), Some(50.0), "{text}");
    assert_eq!(requests("echo", "200"), Some(2.0), "{text}");
    gw.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_have_their_own_address_and_a_token() {
    let db = TestDb::new(Backend::Sqlite).await;
    let token = "scrape-token-0123456789";
    let settings = format!("metrics_listen = \"127.0.0.1:0\"\nmetrics_token = \"{token}\"");
    let gw = start_gateway_with(&db, MOCK_ECHO, server(&settings)).await;
    let metrics_addr = gw.running.metrics_addr.expect("a metrics address");
    assert_ne!(metrics_addr, gw.running.addr);
    let url = format!("http://{metrics_addr}/metrics");

    let r = get(&format!("{}/metrics", gw.base), &[]).await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "the main port no longer serves it"
    );
    let r = get(&url, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    let r = get(&url, &[("authorization", "Bearer wrong-token-0123456789")]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let bearer = format!("Bearer {token}");
    let r = get(&url, &[("authorization", &bearer)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text().contains("tollgate_registry_deployments 1"),
        "{}",
        r.text()
    );
    // That address serves nothing else.
    let r = get(
        &format!("http://{metrics_addr}/healthz"),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    gw.running.stop().await;

    // A token alone protects /metrics on the main address.
    let db = TestDb::new(Backend::Sqlite).await;
    let settings = format!("metrics_token = \"{token}\"");
    let gw = start_gateway_with(&db, MOCK_ECHO, server(&settings)).await;
    let url = format!("{}/metrics", gw.base);
    assert_eq!(get(&url, &[]).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(&url, &[("authorization", &bearer)]).await.status,
        StatusCode::OK
    );
    gw.running.stop().await;
}

/// What a web page can make a browser send, against an open gateway on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_gateway_answers_only_local_json_requests() {
    let db = TestDb::new(Backend::Sqlite).await;
    let gw = start_gateway(&db, MOCK_ECHO).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let port = gw.running.addr.port();
    let (localhost, v6, evil) = (
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("evil.example:{port}"),
    );
    let json = ("content-type", "application/json");
    let form = ("content-type", "application/x-www-form-urlencoded");
    let text = ("content-type", "text/plain");
    let charset = ("content-type", "application/json; charset=utf-8");
    let (local_page, foreign_page) = (
        ("origin", "http://localhost:3000"),
        ("origin", "https://evil.example"),
    );
    // (what, headers, the error code it is refused with; none = answered)
    let cases = [
        ("JSON", vec![json], None),
        ("JSON with charset", vec![charset], None),
        ("text/plain", vec![text], Some("unsupported_media_type")),
        ("form", vec![form], Some("unsupported_media_type")),
        ("no content type", vec![], Some("unsupported_media_type")),
        ("Host localhost", vec![json, ("host", &localhost)], None),
        ("Host [::1]", vec![json, ("host", &v6)], None),
        (
            "DNS rebinding",
            vec![json, ("host", &evil)],
            Some("forbidden_host"),
        ),
        ("local page", vec![json, local_page], None),
        (
            "foreign page",
            vec![json, foreign_page],
            Some("forbidden_origin"),
        ),
        (
            "sandboxed page",
            vec![json, ("origin", "null")],
            Some("forbidden_origin"),
        ),
        (
            "foreign form",
            vec![form, foreign_page, ("host", &evil)],
            Some("forbidden_host"),
        ),
    ];
    let body = chat("echo").to_string();
    for (what, headers, refused) in cases {
        let r = request(http::Method::POST, &url, body.clone(), &headers).await;
        let status = match refused {
            None => StatusCode::OK,
            Some("unsupported_media_type") => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some(_) => StatusCode::FORBIDDEN,
        };
        assert_eq!(r.status, status, "{what}: {}", r.text());
        if let Some(code) = refused {
            let e = &r.json()["error"];
            assert_eq!(e["code"], code, "{what}");
            assert_eq!(e["type"], "invalid_request_error", "{what}");
            assert!(
                e["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{what}"
            );
        }
    }
    // A rebinding page cannot read either.
    let r = get(&format!("{}/v1/models", gw.base), &[("host", &evil)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Refused from their headers alone: counted, never written as usage rows.
    let text = get(&format!("{}/metrics", gw.base), &[]).await.text();
    let refused = |reason| metric(&text, "tollgate_auth_failures_total", &[("reason", reason)]);
    assert_eq!(refused("forbidden"), Some(5.0), "{text}");
    assert_eq!(refused("unsupported_media_type"), Some(3.0), "{text}");
    // HTTP/1.0 without a Host is no browser's.
    let mut tcp = TcpStream::connect(gw.running.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    gw.running.stop().await;
}

/// With keys required, Host and Origin are not checked (a page cannot present a key), but
/// JSON endpoints still take only JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_gateway_checks_the_content_type_only() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let (key, prefix, hash) = tollgate::auth::generate_key();
    let new = tollgate::store::NewApiKey {
        name: "web".into(),
        role: "user".into(),
        ..Default::default()
    };
    store.insert_api_key(&new, &hash, &prefix).await.unwrap();
    let gw = keyed_gateway(&db).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let bearer = format!("Bearer {key}");
    let body = chat("echo").to_string();
    let foreign = [
        ("authorization", bearer.as_str()),
        ("host", "gateway.example"),
        ("origin", "https://app.example"),
    ];
    let mut headers = foreign.to_vec();
    headers.push(("content-type", "application/json"));
    let r = request(http::Method::POST, &url, body.clone(), &headers).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let mut headers = foreign.to_vec();
    headers.push(("content-type", "text/plain"));
    let r = request(http::Method::POST, &url, body, &headers).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    gw.running.stop().await;
}
