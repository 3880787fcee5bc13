//! The OpenAI API as a client sees it through the gateway: chat rewritten and forwarded,
//! embeddings, the model list, qualified names; each case on SQLite and on PostgreSQL.

mod common;

use common::*;
use http::StatusCode;
use rust_decimal::prelude::ToPrimitive;
use serde_json::json;

on_both_databases!(
    chat_is_rewritten_forwarded_and_metered_exactly,
    embeddings_models_and_qualified_names,
);

async fn chat_is_rewritten_forwarded_and_metered_exactly(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (mock, addr) = mock_upstream().await;
    let gw = start_gateway(
        &db,
        &format!(
            "{}{CHAT_MODEL}",
            upstream_provider(addr, "up", "sk-provider-secret")
        ),
    )
    .await;

    let reply = post(
        &format!("{}/v1/chat/completions", gw.base),
        &json!({"model": "fast", "temperature": 0.9, "messages": [{"role": "user", "content": "one two three four"}]}),
        &[("authorization", "Bearer client-key-must-not-leak")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["usage"]["prompt_tokens"], 4);
    assert_eq!(body["usage"]["completion_tokens"], 16);
    assert!(reply.headers.contains_key("x-request-id"));

    let received = mock.received();
    assert_eq!(received.len(), 1);
    let sent = received[0].json();
    assert_eq!(received[0].path, "/v1/chat/completions");
    assert_eq!(sent["model"], "upstream-model-v1", "model id rewritten");
    assert_eq!(sent["temperature"], 0.9, "the client's parameter wins");
    assert_eq!(sent["top_p"], 0.5, "the model's default fills in");
    assert_eq!(
        received[0].headers["authorization"],
        "Bearer sk-provider-secret"
    );
    let all_headers = format!("{:?}", received[0].headers);
    assert!(!all_headers.contains("client-key-must-not-leak"));

    let metrics = get(&format!("{}/metrics", gw.base), &[]).await.text();
    assert_eq!(
        metric(
            &metrics,
            "tollgate_requests_total",
            &[("model", "fast"), ("provider", "up"), ("status", "200")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "tollgate_tokens_total",
            &[("model", "fast"), ("kind", "input")]
        ),
        Some(4.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "tollgate_tokens_total",
            &[("model", "fast"), ("kind", "output")]
        ),
        Some(16.0)
    );
    // 4 prompt tokens at $0.15 and 16 completion tokens at $0.60 per million
    let cost = (dec("4") * dec("0.15") + dec("16") * dec("0.60")) / dec("1000000");
    assert_eq!(cost, dec("0.0000102"));
    assert_eq!(
        metric(&metrics, "tollgate_cost_usd_total", &[("model", "fast")]),
        cost.to_f64(),
        "the metric holds the row's exact cost"
    );
    assert_eq!(
        metric(&metrics, "tollgate_usage_log_dropped_total", &[]),
        Some(0.0)
    );
    assert!(metrics.contains("gen_ai_client_token_usage_bucket"));

    gw.running.stop().await;
    let rows = usage_rows(&db.connect().await).await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        (r.input_tokens, r.output_tokens, r.status_code),
        (4, 16, 200)
    );
    assert_eq!(dec(&r.cost_usd), cost);
    assert_eq!(r.usage_source, "provider");
    assert_eq!(r.provider.as_deref(), Some("up"));
    assert_eq!(
        (r.endpoint.as_str(), r.stream, r.attempts),
        ("chat.completions", false, 1)
    );

    // the hourly roll-up holds the same exact total
    let since = chrono::Utc::now() - chrono::Duration::hours(2);
    let query = tollgate::store::UsageQuery::new(tollgate::store::GroupBy::Model, since);
    let report = db.connect().await.usage_report(&query).await.unwrap().rows;
    assert_eq!(report[0].group, "fast");
    assert_eq!(report[0].totals.cost_usd, cost);
    assert_eq!(report[0].totals.output_tokens, 16);
}

async fn embeddings_models_and_qualified_names(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (_mock, addr) = mock_upstream().await;
    let extra = format!(
        r#"{}
[[models]]
name = "embed"
provider = "up"
model_id = "up-embed"
model_type = "embedding"
cost_input_per_million = "0.02"

[[models]]
name = "retired"
provider = "up"
model_id = "old-one"
status = "inactive"

[[models]]
name = "chat"
provider = "up"
model_id = "chat-1"
"#,
        upstream_provider(addr, "up", "k")
    );
    let gw = start_gateway(&db, &extra).await;

    let reply = post(
        &format!("{}/v1/embeddings", gw.base),
        &json!({"model": "embed", "input": ["a b", "c"]}),
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["data"].as_array().unwrap().len(), 2);

    let wrong = post(
        &format!("{}/v1/embeddings", gw.base),
        &json!({"model": "chat", "input": "x"}),
        &[],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert_eq!(wrong.json()["error"]["param"], "model");

    let models = get(&format!("{}/v1/models", gw.base), &[]).await.json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["chat", "embed"], "active models only");
    assert_eq!(
        get(&format!("{}/v1/models/chat", gw.base), &[])
            .await
            .json()["owned_by"],
        "up"
    );
    assert_eq!(
        get(&format!("{}/v1/models/retired", gw.base), &[])
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let by_qualified = post(
        &format!("{}/v1/chat/completions", gw.base),
        &json!({"model": "up/chat-1", "messages": [{"role": "user", "content": "x"}]}),
        &[],
    )
    .await;
    assert_eq!(by_qualified.status, StatusCode::OK);
    let retired = post(
        &format!("{}/v1/chat/completions", gw.base),
        &json!({"model": "retired", "messages": [{"role": "user", "content": "x"}]}),
        &[],
    )
    .await;
    assert_eq!(
        retired.status,
        StatusCode::NOT_FOUND,
        "inactive entries never serve"
    );

    gw.running.stop().await;
    let rows = usage_rows(&db.connect().await).await;
    let e = rows
        .iter()
        .find(|r| r.endpoint == "embeddings" && r.status_code == 200)
        .unwrap();
    assert_eq!((e.input_tokens, e.output_tokens), (3, 0));
    assert_eq!(dec(&e.cost_usd), dec("0.00000006"));
}
