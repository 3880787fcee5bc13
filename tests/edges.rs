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
