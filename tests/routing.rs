//! Choosing a deployment: entries sharing a public name are tried in priority order, and
//! only a capability set to false refuses a request; on SQLite and on PostgreSQL.

mod common;

use common::*;
use http::StatusCode;
use serde_json::json;

on_both_databases!(
    a_failing_deployment_falls_back_to_the_next,
    capability_flags_left_unset_never_refuse,
);

async fn a_failing_deployment_falls_back_to_the_next(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (mock, addr) = mock_upstream().await;
    let extra = format!(
        r#"{}
[[models]]
name = "resilient"
provider = "up"
model_id = "mock-status-503"
priority = 1
[[models]]
name = "resilient"
provider = "up"
model_id = "healthy"
priority = 2
cost_input_per_million = "1"
[[models]]
name = "limited"
provider = "up"
model_id = "mock-status-429"
"#,
        upstream_provider(addr, "up", "k")
    );
    let gw = start_gateway(&db, &extra).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let r = post(&url, &json!({"model": "resilient", "messages": msgs}), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let models: Vec<String> = mock
        .received()
        .iter()
        .map(|r| r.json()["model"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(models, ["mock-status-503", "healthy"]);
    let r = post(&url, &json!({"model": "limited", "messages": msgs}), &[]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let e = &r.json()["error"];
    assert_eq!(
        (&e["type"], &e["code"]),
        (&json!("rate_limit_exceeded"), &json!("rate_limit_exceeded")),
        "{e}"
    );
    assert_eq!(e["message"], "Provider up is rate limiting requests.");
    assert_eq!(
        r.headers["retry-after"], "1",
        "the provider's own retry-after"
    );

    let metrics = get(&format!("{}/metrics", gw.base), &[]).await.text();
    assert_eq!(
        metric(
            &metrics,
            "tollgate_fallbacks_total",
            &[("model", "resilient")]
        ),
        Some(1.0)
    );
    gw.running.stop().await;
    let rows = usage_rows(&db.connect().await).await;
    assert_eq!((rows[0].attempts, rows[0].status_code), (2, 200));
    // one prompt token at $1 per million: priced as the deployment that answered
    assert_eq!(dec(&rows[0].cost_usd), dec("0.000001"));
}

async fn capability_flags_left_unset_never_refuse(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (mock, addr) = mock_upstream().await;
    let model = |name: &str, extra: &str| {
        format!(
            "[[models]]\nname = \"{name}\"\nprovider = \"up\"\nmodel_id = \"{name}-1\"\n{extra}\n"
        )
    };
    let extra = upstream_provider(addr, "up", "k")
        + &model("unset", "model_type = \"llm\"")
        + &model("sees", "supports_vision = true")
        + &model("blind", "supports_vision = false");
    let gw = start_gateway(&db, &extra).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let image = |m: &str| {
        json!({"model": m, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]})
    };
    let refused = "No deployment of `blind` supports images.";
    // (what, model, status, error.message)
    #[rustfmt::skip]
    let cases = [
        ("flags left unset never refuse", "unset", StatusCode::OK, None),
        ("supports_vision = true serves", "sees", StatusCode::OK, None),
        ("supports_vision = false refuses", "blind", StatusCode::BAD_REQUEST, Some(refused)),
    ];
    for (what, model, status, says) in cases {
        let r = post(&url, &image(model), &[]).await;
        assert_eq!(r.status, status, "{what}: {}", r.text());
        if let Some(says) = says {
            let e = &r.json()["error"];
            assert_eq!(
                (&e["type"], &e["message"]),
                (&json!("invalid_request_error"), &json!(says))
            );
        }
    }
    let sent = mock.received();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0].json()["messages"][0]["content"][1]["type"],
        "image_url"
    );

    // The database says "unknown" for what the file left unset, and "llm" became "chat".
    let store = db.connect().await;
    let rows = store
        .fetch_all(
            "SELECT model_id, model_type, supports_vision, supports_function_calling FROM llm_models ORDER BY model_id",
            &[],
        )
        .await
        .unwrap();
    let flags: Vec<(String, String, Option<bool>, Option<bool>)> = rows
        .iter()
        .map(|r| {
            (
                r.text("model_id").unwrap(),
                r.text("model_type").unwrap(),
                r.opt_bool("supports_vision").unwrap(),
                r.opt_bool("supports_function_calling").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        flags,
        [
            ("blind-1".into(), "chat".into(), Some(false), None),
            ("sees-1".into(), "chat".into(), Some(true), None),
            ("unset-1".into(), "chat".into(), None, None),
        ]
    );
    // A row another tool wrote with the seeds' model_type "llm" serves chat too.
    store
        .execute(
            "INSERT INTO llm_models (id, provider_id, model_id, name, display_name, model_type)
             SELECT $1::uuid, id, 'seeded-1', 'seeded', 'Seeded', 'llm' FROM llm_providers WHERE name = 'up'",
            &[tollgate::ids::new_id().into()],
        )
        .await
        .unwrap();
    gw.running.app.reload().await.unwrap();
    let r = post(&url, &image("seeded"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    gw.running.stop().await;
}
