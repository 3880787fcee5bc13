//! Errors as a client meets them: OpenAI-shaped, naming what was refused, never leaking a
//! secret, and still metered; each case on SQLite and on PostgreSQL.

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::json;

on_both_databases!(errors_are_openai_shaped_and_still_metered,);

async fn errors_are_openai_shaped_and_still_metered(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (_mock, addr) = mock_upstream().await;
    let extra = format!(
        r#"{}
[[models]]
name = "ok"
provider = "up"
model_id = "fine"
[[models]]
name = "broken"
provider = "up"
model_id = "mock-status-500"
[[models]]
name = "locked"
provider = "up"
model_id = "mock-status-401"
[[models]]
name = "hangs"
provider = "up"
model_id = "mock-hang"
[[models]]
name = "garbage"
provider = "up"
model_id = "mock-garbage"
[[providers]]
name = "nowhere"
api = "openai"
base_url = "http://127.0.0.1:9/v1"
[[models]]
name = "unreachable"
provider = "nowhere"
model_id = "x"
"#,
        upstream_provider(addr, "up", "sk-secret-provider-key")
    );
    let gw = start_gateway(&db, &extra).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let msgs = json!([{"role": "user", "content": "hi"}]);

    let check = |r: &Reply, status: StatusCode| {
        assert_eq!(r.status, status, "{}", r.text());
        let e = &r.json()["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        assert!(e["type"].is_string(), "{e}");
        assert!(
            !r.text().contains("sk-secret"),
            "secret leaked: {}",
            r.text()
        );
    };

    let r = request(
        Method::POST,
        &url,
        "{not json",
        &[("content-type", "application/json")],
    )
    .await;
    check(&r, StatusCode::BAD_REQUEST);
    let r = post(&url, &json!({"messages": msgs}), &[]).await;
    check(&r, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["param"], "model");
    let r = post(&url, &json!({"model": "ok"}), &[]).await;
    check(&r, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["param"], "messages");
    let r = post(
        &url,
        &json!({"model": "ok", "messages": msgs, "stream": "yes"}),
        &[],
    )
    .await;
    assert_eq!(r.json()["error"]["param"], "stream");
    let r = post(
        &url,
        &json!({"model": "missing-model", "messages": msgs}),
        &[],
    )
    .await;
    check(&r, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    let big = "x".repeat(70_000);
    let r = post(
        &url,
        &json!({"model": "ok", "messages": [{"role": "user", "content": big}]}),
        &[],
    )
    .await;
    check(&r, StatusCode::PAYLOAD_TOO_LARGE);
    let r = post(&url, &json!({"model": "broken", "messages": msgs}), &[]).await;
    check(&r, StatusCode::BAD_GATEWAY);
    let r = post(&url, &json!({"model": "locked", "messages": msgs}), &[]).await;
    check(&r, StatusCode::BAD_GATEWAY);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("credentials"));
    let r = post(&url, &json!({"model": "garbage", "messages": msgs}), &[]).await;
    check(&r, StatusCode::BAD_GATEWAY);
    let r = post(
        &url,
        &json!({"model": "unreachable", "messages": msgs}),
        &[],
    )
    .await;
    check(&r, StatusCode::BAD_GATEWAY);
    let started = std::time::Instant::now();
    let r = post(&url, &json!({"model": "hangs", "messages": msgs}), &[]).await;
    check(&r, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "request_timeout_secs = 5 holds"
    );
    let r = get(&format!("{}/v1/nothing-here", gw.base), &[]).await;
    check(&r, StatusCode::NOT_FOUND);

    // the gateway still serves after all of that
    let r = post(&url, &json!({"model": "ok", "messages": msgs}), &[]).await;
    assert_eq!(r.status, StatusCode::OK);

    gw.running.stop().await;
    let rows = usage_rows(&db.connect().await).await;
    let statuses: Vec<i64> = rows.iter().map(|r| r.status_code).collect();
    assert_eq!(
        statuses,
        [400, 400, 400, 400, 404, 413, 502, 502, 502, 502, 504, 200]
    );
    assert!(rows
        .iter()
        .filter(|r| r.status_code != 200)
        .all(|r| r.error_type.is_some() && r.output_tokens == 0 && dec(&r.cost_usd).is_zero()));
    assert_eq!(rows[4].model_name, "missing-model");
}
