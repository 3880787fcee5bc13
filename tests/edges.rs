//! What an outsider who holds no key can do to a running gateway: over-long keys, made-up
//! model names, silent and idle connections, requests from web pages, a second instance on
//! the same port. Each bound is checked from the outside, as a client would meet it.

mod common;

use common::*;
use http::StatusCode;
use serde_json::json;

const MOCK: &str = r#"
[[providers]]
name = "local"
api = "mock"

[[models]]
name = "echo"
provider = "local"
model_id = "echo-1"
"#;

fn chat(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

async fn keyed_gateway(db: &TestDb) -> TestGateway {
    start_gateway_with(db, MOCK, |t| {
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
    server: &str,
) -> anyhow::Result<tollgate::proxy::Running> {
    let text = config_text(&db.url, db.dir(), MOCK).replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{listen}\"\n{server}"),
    );
    let path = db.dir().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let loaded = tollgate::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    tollgate::proxy::start(loaded).await
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
    assert!(err.is_some());
    first.stop().await;

    let first = try_start_on(&db1, "127.0.0.1:0", "reuse_port = true")
        .await
        .unwrap();
    let addr = first.addr.to_string();
    let second = try_start_on(&db2, &addr, "reuse_port = true").await.unwrap();
    assert_eq!(second.addr, first.addr);
    let r = get(&format!("http://{addr}/healthz"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    first.stop().await;
    second.stop().await;
}
