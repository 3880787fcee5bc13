//! Traffic control end to end: limits, waiting, fallbacks, circuit breakers, and limits shared
//! by several gateway processes through Redis.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::json;
use tollgate::mock::{MockOptions, MockUpstream};

fn chat(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]})
}

fn provider(addr: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "[[providers]]\nname = \"up\"\napi = \"openai\"\nbase_url = \"http://{addr}/v1\"\napi_key = \"k\"\n{extra}\n"
    )
}

fn model(name: &str, model_id: &str, extra: &str) -> String {
    format!(
        "[[models]]\nname = \"{name}\"\nprovider = \"up\"\nmodel_id = \"{model_id}\"\n{extra}\n"
    )
}

async fn slow_mock(chunk_ms: u64, chunks: usize) -> (MockUpstream, std::net::SocketAddr) {
    let options = MockOptions {
        chunk_ms,
        chunks,
        ..Default::default()
    };
    start_mock(MockUpstream {
        options,
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_rpm_reaches_the_provider_exactly_up_to_the_limit() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (mock, addr) = mock_upstream().await;
    let extra = provider(addr, "requests_per_minute = 5\nmax_parallel_requests = 100")
        + &model("m", "m1", "");
    let gw = start_gateway(&db, &extra).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let replies = futures_util::future::join_all((0..12).map(|_| {
        let body = chat("m");
        let url = url.clone();
        async move { post(&url, &body, &[]).await }
    }))
    .await;

    assert_eq!(
        mock.counters.requests.load(Ordering::SeqCst),
        5,
        "the provider saw exactly the limit"
    );
    let ok: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .collect();
    let limited: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!((ok.len(), limited.len()), (5, 7));
    for r in &limited {
        assert_eq!(r.json()["error"]["type"], "rate_limit_exceeded");
        let secs: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        let ms: u64 = r.headers["retry-after-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (1..=12).contains(&secs) && ms > 0 && ms <= 12_000,
            "{secs} s / {ms} ms"
        );
        assert_eq!(r.headers["x-ratelimit-limit-requests"], "5");
        assert_eq!(r.headers["x-ratelimit-remaining-requests"], "0");
        assert!(r.headers["x-ratelimit-reset-requests"]
            .to_str()
            .unwrap()
            .ends_with("ms"));
    }
    assert!(
        ok.iter()
            .all(|r| r.headers["x-ratelimit-limit-requests"] == "5"),
        "headers on successes too"
    );
    let metrics = get(&format!("{}/metrics", gw.base), &[]).await.text();
    assert_eq!(
        metric(
            &metrics,
            "tollgate_rate_limited_total",
            &[("scope", "provider")]
        ),
        Some(7.0)
    );
    gw.running.stop().await;
    let rows = usage_rows(&db.connect().await).await;
    assert_eq!(
        rows.iter().filter(|r| r.status_code == 429).count(),
        7,
        "refused requests are metered too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_requests_wait_in_line_and_never_exceed_the_slots() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (mock, addr) = slow_mock(20, 5).await;
    let extra = provider(
        addr,
        "max_parallel_requests = 2\nrequests_per_minute = 0\nqueue_timeout_ms = 20000",
    ) + &model("m", "m1", "");
    let gw = start_gateway(&db, &extra).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let replies = futures_util::future::join_all((0..20).map(|_| post(&url, &body, &[]))).await;
    assert!(replies
        .iter()
        .all(|r| r.status == StatusCode::OK && r.text().ends_with("data: [DONE]\n\n")));
    assert_eq!(mock.counters.requests.load(Ordering::SeqCst), 20);
    assert_eq!(
        mock.counters.max_in_flight.load(Ordering::SeqCst),
        2,
        "never more than 2 at once"
    );
    gw.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_come_back_when_clients_hang_up_mid_stream() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (mock, addr) = slow_mock(300, 30).await; // 9 s streams
    let extra = provider(addr, "max_parallel_requests = 2\nrequests_per_minute = 0")
        + &model("m", "m1", "");
    let gw = start_gateway(&db, &extra).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]})
            .to_string();
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    for _ in 0..2 {
        let req = http::Request::post(&url)
            .header("content-type", "application/json")
            .body(body.clone().into())
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut b = resp.into_body();
        b.frame().await.unwrap().unwrap(); // the first content arrived; now hang up
    }
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let snapshot = gw.running.app.gateway.registry.load();
        let in_use = snapshot
            .providers
            .iter()
            .find(|p| &*p.name == "up")
            .unwrap()
            .limits
            .parallel_in_use();
        if in_use == 0 && mock.counters.in_flight.load(Ordering::SeqCst) == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slots leaked: {in_use} still in use"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = get(&format!("{}/metrics", gw.base), &[]).await.text();
    assert_eq!(
        metric(&metrics, "tollgate_in_flight", &[("provider", "up")]),
        Some(0.0)
    );
    let again = post(
        &url,
        &json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}),
        &[],
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    gw.running.stop().await;
    let rows = usage_rows(&db.connect().await).await;
    let gone = rows
        .iter()
        .filter(|r| r.error_type.as_deref() == Some("client_disconnected"))
        .count();
    assert_eq!(gone, 2, "a disconnect still writes its usage row");
}

/// A client that gives up while the provider is still working (an SDK timeout, a closed tab)
/// leaves a usage row too: the provider may well bill the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_before_the_answer_still_leaves_a_usage_row() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (_mock, addr) = mock_upstream().await;
    // Two slots: the second request must not depend on how fast the first one's hang-up is seen.
    let extra = provider(addr, "max_parallel_requests = 2") + &model("m", "mock-hang", "");
    let gw = start_gateway(&db, &extra).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    for stream in [false, true] {
        let body =
            json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "x"}]});
        let gave_up =
            tokio::time::timeout(Duration::from_millis(300), post(&url, &body, &[])).await;
        if let Ok(reply) = gave_up {
            panic!(
                "the provider never answers, yet: {} {}",
                reply.status,
                reply.text()
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let rows = loop {
        let rows = usage_rows(&db.connect().await).await;
        if rows.len() == 2 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(rows.len(), 2, "one row per request");
    for row in &rows {
        assert_eq!(
            (row.status_code, row.error_type.as_deref()),
            (499, Some("client_disconnected"))
        );
    }
    gw.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_failure_before_content_falls_back() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (mock, addr) = mock_upstream().await;
    let mut extra = provider(addr, "timeouts = { first_token_ms = 300 }");
    extra +=
        "[[providers]]\nname = \"down\"\napi = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n";
    for (name, first) in [
        ("after-429", "mock-status-429"),
        ("after-hang", "mock-hang"),
        ("after-early-error", "mock-early-error"),
    ] {
        extra += &model(name, first, "priority = 1");
        extra += &model(name, &format!("ok-{name}"), "priority = 2");
    }
    extra += "[[models]]\nname = \"after-refused\"\nprovider = \"down\"\nmodel_id = \"x\"\npriority = 1\n";
    extra += &model("after-refused", "ok-refused", "priority = 2");
    extra += &model("all-bad", "mock-status-500", "priority = 1");
    extra += &model("all-bad", "mock-status-503", "priority = 2");
    let gw = start_gateway(&db, &extra).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    for name in ["after-429", "after-hang", "after-refused"] {
        let r = post(&url, &chat(name), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.text());
        assert!(
            r.json()["model"].as_str().unwrap().starts_with("ok-"),
            "{name} answered by the fallback"
        );
    }
    // the 429 said "retry-after: 1": for that second the deployment is skipped, not tried
    let before = mock.counters.requests.load(Ordering::SeqCst);
    assert_eq!(
        post(&url, &chat("after-429"), &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        mock.counters.requests.load(Ordering::SeqCst),
        before + 1,
        "only the fallback was asked"
    );
    // a stream that reports an error before its first content falls back as well
    let r = post(&url, &json!({"model": "after-early-error", "stream": true, "messages": [{"role": "user", "content": "x"}]}), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text().contains("ok-after-early-error") && !r.text().contains("\"error\""),
        "{}",
        r.text()
    );
    let r = post(&url, &chat("all-bad"), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.json()["error"]["type"], "server_error");
    let metrics = get(&format!("{}/metrics", gw.base), &[]).await.text();
    assert!(
        metric(
            &metrics,
            "tollgate_fallbacks_total",
            &[("model", "after-hang")]
        ) == Some(1.0)
    );
    drop(mock);
    gw.running.stop().await;
    let rows = usage_rows(&db.connect().await).await;
    let answered: Vec<&UsageRow> = rows.iter().filter(|r| r.status_code == 200).collect();
    // (what, model, attempts): each fallback took two; during the 429's pause, one
    #[rustfmt::skip]
    let expected = [
        ("a 429, then the fallback", "after-429", 2),
        ("a hang past first_token_ms, then the fallback", "after-hang", 2),
        ("a refused connection, then the fallback", "after-refused", 2),
        ("the 429's deployment skipped for its retry-after", "after-429", 1),
        ("an error event before content, then the fallback", "after-early-error", 2),
    ];
    assert_eq!(answered.len(), expected.len(), "{answered:?}");
    for ((what, model, attempts), row) in expected.into_iter().zip(answered) {
        assert_eq!(
            (row.model_name.as_str(), row.attempts),
            (model, attempts),
            "{what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_deployment_opens_its_circuit_and_a_probe_closes_it() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (mock, addr) = mock_upstream().await;
    let extra = provider(addr, "") + &model("m", "m1", "")
        + "[circuit_breaker]\nerror_ratio = 0.5\nmin_requests = 2\nwindow_secs = 30\ncooldown_secs = 1\n";
    let gw = start_gateway(&db, &extra).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let up = |text: &str| metric(text, "tollgate_provider_up", &[("provider", "up")]);
    assert_eq!(
        up(&get(&format!("{}/metrics", gw.base), &[]).await.text()),
        Some(1.0)
    );

    mock.failing.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        assert_eq!(
            post(&url, &chat("m"), &[]).await.status,
            StatusCode::BAD_GATEWAY
        );
    }
    assert_eq!(
        up(&get(&format!("{}/metrics", gw.base), &[]).await.text()),
        Some(0.0),
        "open"
    );
    let r = post(&url, &chat("m"), &[]).await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "an open circuit is skipped, not tried"
    );
    assert_eq!(r.json()["error"]["code"], "no_healthy_deployment");
    assert_eq!(mock.counters.requests.load(Ordering::SeqCst), 2);

    mock.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        post(&url, &chat("m"), &[]).await.status,
        StatusCode::OK,
        "the half-open probe"
    );
    assert_eq!(
        up(&get(&format!("{}/metrics", gw.base), &[]).await.text()),
        Some(1.0),
        "closed again"
    );
    assert_eq!(post(&url, &chat("m"), &[]).await.status, StatusCode::OK);
    gw.running.stop().await;
}

/// A half-open circuit's probe that the provider answers with a refusal (429, 400) proves
/// the provider is up: the circuit closes instead of waiting for a verdict that never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_answered_with_a_refusal_closes_the_circuit() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (mock, addr) = mock_upstream().await;
    let extra = provider(addr, "max_parallel_requests = 10")
        + &model("limited", "mock-status-429", "")
        + &model("picky", "mock-status-400", "")
        + "[circuit_breaker]\nerror_ratio = 0.5\nmin_requests = 2\nwindow_secs = 30\ncooldown_secs = 1\n";
    let gw = start_gateway(&db, &extra).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    mock.failing.store(true, Ordering::SeqCst);
    for m in ["limited", "picky"] {
        for _ in 0..2 {
            assert_eq!(
                post(&url, &chat(m), &[]).await.status,
                StatusCode::BAD_GATEWAY
            );
        }
        let r = post(&url, &chat(m), &[]).await;
        assert_eq!(
            r.json()["error"]["code"],
            "no_healthy_deployment",
            "{m} open"
        );
    }
    mock.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let sent = || mock.counters.requests.load(Ordering::SeqCst);
    for (m, status) in [
        ("limited", StatusCode::TOO_MANY_REQUESTS),
        ("picky", StatusCode::BAD_REQUEST),
    ] {
        let before = sent();
        let r = post(&url, &chat(m), &[]).await;
        assert_eq!(r.status, status, "{m}, the probe: {}", r.text());
        if m == "limited" {
            // its `retry-after: 1` keeps requests away for a second: a rate limit, not an outage
            let r = post(&url, &chat(m), &[]).await;
            assert_eq!(r.status, status, "{m}, paused: {}", r.text());
            assert!(r.headers.contains_key("retry-after"));
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        let r = post(&url, &chat(m), &[]).await;
        assert_eq!(r.status, status, "{m}, the next request: {}", r.text());
        assert_eq!(
            sent() - before,
            2,
            "{m}: the probe and the next request reached it"
        );
    }
    let metrics = get(&format!("{}/metrics", gw.base), &[]).await.text();
    assert_eq!(
        metric(&metrics, "tollgate_provider_up", &[("provider", "up")]),
        Some(1.0),
        "closed again"
    );
    gw.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_limits_apply_per_key() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (_mock, addr) = mock_upstream().await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let (key, prefix, hash) = tollgate::auth::generate_key();
    let new = tollgate::store::NewApiKey {
        name: "small".into(),
        role: "user".into(),
        rpm: Some(2),
        ..Default::default()
    };
    store.insert_api_key(&new, &hash, &prefix).await.unwrap();
    let gw = start_gateway(&db, &(provider(addr, "") + &model("m", "m1", ""))).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let auth = format!("Bearer {key}");
    let limit = "the key limit on requests is used up";
    // (what, status, a fragment of error.message)
    #[rustfmt::skip]
    let cases = [
        ("the first of 2 per minute", StatusCode::OK, None),
        ("the second of 2 per minute", StatusCode::OK, None),
        ("a third within the minute", StatusCode::TOO_MANY_REQUESTS, Some(limit)),
    ];
    for (what, status, says) in cases {
        let r = post(&url, &chat("m"), &[("authorization", &auth)]).await;
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert_eq!(r.headers["x-ratelimit-limit-requests"], "2", "{what}");
        if let Some(says) = says {
            let e = &r.json()["error"];
            assert_eq!(e["code"], "rate_limit_exceeded", "{what}: {e}");
            assert!(e["message"].as_str().unwrap().contains(says), "{what}: {e}");
        }
    }
    // other callers are not affected
    assert_eq!(post(&url, &chat("m"), &[]).await.status, StatusCode::OK);
    gw.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_together_stay_within_one_provider_limit() {
    // Three gateway processes share PostgreSQL and Redis; one provider allows 60 requests per
    // minute (a bucket of 60 refilled at 1 per second). Driven well past the limit for 10 s,
    // the upstream must see at most 60 + 10 requests, and at least 95% of that.
    let db = TestDb::new(Backend::Postgres).await;
    let (mock, addr) = mock_upstream().await;
    let redis =
        std::env::var("TOLLGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("tollgate:test:{}:", uuid::Uuid::now_v7().simple());
    let mut children = Vec::new();
    let mut urls = Vec::new();
    for i in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let extra = format!(
            "[redis]\nurl = \"{redis}\"\nkey_prefix = \"{prefix}\"\ninstances = 3\n{}{}",
            provider(
                addr,
                "requests_per_minute = 60\nmax_parallel_requests = 1000"
            ),
            model("m", "m1", "")
        );
        let text = config_text(&db.url, db.dir(), &extra)
            .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
            .replace("usage.spool", &format!("usage-{i}.spool"));
        let path = db.dir().join(format!("instance-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        // one at a time: the first one creates the schema
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["--config", path.to_str().unwrap(), "serve"])
            .env("RUST_LOG", "warn")
            .env_remove("DATABASE_URL")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let health = format!("http://127.0.0.1:{port}/healthz");
        let up_by = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < up_by, "instance {i} did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(get(&health, &[]).await.status, StatusCode::OK);
        children.push(child);
        urls.push(format!("http://127.0.0.1:{port}/v1/chat/completions"));
    }

    let started = Instant::now();
    let run_for = Duration::from_secs(10);
    let workers: Vec<_> = (0..9)
        .map(|w| {
            let url = urls[w % 3].clone();
            tokio::spawn(async move {
                let (mut ok, mut limited) = (0u32, 0u32);
                while started.elapsed() < run_for {
                    match post(&url, &chat("m"), &[]).await.status {
                        StatusCode::OK => ok += 1,
                        StatusCode::TOO_MANY_REQUESTS => {
                            limited += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        other => panic!("unexpected {other}"),
                    }
                }
                (ok, limited)
            })
        })
        .collect();
    let mut ok = 0;
    let mut limited = 0;
    for w in workers {
        let (o, l) = w.await.unwrap();
        ok += o;
        limited += l;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let seen = mock.counters.requests.load(Ordering::SeqCst) as f64;
    let allowed = 60.0 + elapsed; // the bucket, plus 1 per second of refill
    assert!(
        limited > 100,
        "demand exceeded the limit ({limited} refused)"
    );
    assert_eq!(
        seen as u32, ok,
        "every admitted request reached the provider"
    );
    assert!(seen <= allowed + 1.0, "upstream saw {seen} > {allowed:.1}");
    assert!(
        seen >= 0.95 * (60.0 + run_for.as_secs_f64()),
        "upstream saw only {seen}"
    );
    drop(children);
}
