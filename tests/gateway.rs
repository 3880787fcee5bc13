//! The gateway end to end: a real Tollgate in-process, a mock upstream on loopback, and a real
//! database (each case runs on SQLite and on PostgreSQL).

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::json;

/// Runs an async case on both databases as two tests.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await
                }
            )*
        }
    };
}

on_both_databases!(
    chat_is_rewritten_forwarded_and_metered_exactly,
    streams_pass_through_and_usage_chunk_follows_the_client,
    embeddings_models_and_qualified_names,
    errors_are_openai_shaped_and_still_metered,
    gateway_keys_are_required_and_attributed,
    a_failing_deployment_falls_back_to_the_next,
    config_sync_and_reload_follow_the_file,
    the_database_enforces_the_registry_rules,
    capability_flags_left_unset_never_refuse,
);

fn upstream_provider(addr: std::net::SocketAddr, name: &str, key: &str) -> String {
    format!(
        r#"
[[providers]]
name = "{name}"
api = "openai"
base_url = "http://{addr}/v1"
api_key = "{key}"
"#
    )
}

const CHAT_MODEL: &str = r#"
[[models]]
name = "fast"
provider = "up"
model_id = "upstream-model-v1"
cost_input_per_million = "0.15"
cost_output_per_million = "0.60"
parameters = { temperature = 0.25, top_p = 0.5 }
"#;

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
    assert!(metric(&metrics, "tollgate_cost_usd_total", &[("model", "fast")]).is_some());
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
    // 4 * 0.15 + 16 * 0.60 = 10.2 per million tokens
    assert_eq!(dec(&r.cost_usd), dec("0.0000102"));
    assert_eq!(r.usage_source, "provider");
    assert_eq!(r.provider.as_deref(), Some("up"));
    assert_eq!(
        (r.endpoint.as_str(), r.stream, r.attempts),
        ("chat.completions", false, 1)
    );

    // the hourly roll-up holds the same exact total
    let report = db
        .connect()
        .await
        .usage_report("model", chrono::Utc::now() - chrono::Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(report[0].group, "up/upstream-model-v1");
    assert_eq!(report[0].totals.cost_usd, dec("0.0000102"));
    assert_eq!(report[0].totals.output_tokens, 16);
}

async fn streams_pass_through_and_usage_chunk_follows_the_client(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (mock, addr) = mock_upstream().await;
    let gw = start_gateway(
        &db,
        &format!("{}{CHAT_MODEL}", upstream_provider(addr, "up", "k")),
    )
    .await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let messages = json!([{"role": "user", "content": "a b c"}]);

    let plain = post(
        &url,
        &json!({"model": "fast", "stream": true, "max_tokens": 5, "messages": messages}),
        &[],
    )
    .await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(plain.headers["content-type"], "text/event-stream");
    let text = plain.text();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(
        !text.contains("\"choices\":[]"),
        "usage chunk must be cut when not asked for: {text}"
    );
    let content: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|l| *l != "[DONE]")
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, "This is a mock answer");
    // upstream was asked for usage even though the client was not
    assert_eq!(
        mock.received()[0].json()["stream_options"]["include_usage"],
        true
    );

    let with_usage = post(
        &url,
        &json!({"model": "fast", "stream": true, "stream_options": {"include_usage": true}, "messages": messages}),
        &[],
    )
    .await;
    let text = with_usage.text();
    let usage_line = text
        .lines()
        .find(|l| l.contains("\"choices\":[]"))
        .expect("usage chunk kept");
    let usage: serde_json::Value =
        serde_json::from_str(usage_line.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], 3);
    assert_eq!(usage["usage"]["completion_tokens"], 16);

    gw.running.stop().await;
    let rows = usage_rows(&db.connect().await).await;
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .all(|r| r.stream && r.status_code == 200 && r.usage_source == "provider"));
    assert_eq!((rows[0].input_tokens, rows[0].output_tokens), (3, 5));
    assert_eq!((rows[1].input_tokens, rows[1].output_tokens), (3, 16));
    // 3 * 0.15 + 5 * 0.60 = 3.45 per million
    assert_eq!(dec(&rows[0].cost_usd), dec("0.00000345"));
    assert!(rows[0].ttft_ms.is_some());
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

async fn gateway_keys_are_required_and_attributed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (_mock, addr) = mock_upstream().await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let (key, prefix, hash) = tollgate::auth::generate_key();
    let new = tollgate::store::NewApiKey {
        name: "ci".into(),
        project: Some("alpha".into()),
        role: "user".into(),
        ..Default::default()
    };
    let key_id = store.insert_api_key(&new, &hash, &prefix).await.unwrap();
    let (revoked, rprefix, rhash) = tollgate::auth::generate_key();
    store
        .insert_api_key(
            &tollgate::store::NewApiKey {
                name: "old".into(),
                role: "user".into(),
                ..Default::default()
            },
            &rhash,
            &rprefix,
        )
        .await
        .unwrap();
    assert!(store.revoke_api_key(&rprefix).await.unwrap());

    let extra = format!("{}{CHAT_MODEL}", upstream_provider(addr, "up", "k"));
    let gw = start_gateway_with(&db, &extra, |t| {
        t.replace("require_api_key = false", "require_api_key = true")
    })
    .await;
    let running = gw.running;
    let url = format!("http://{}/v1/chat/completions", running.addr);
    let body = json!({"model": "fast", "messages": [{"role": "user", "content": "x y"}]});

    let r = post(&url, &body, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json()["error"]["code"],
        serde_json::Value::Null,
        "as OpenAI's"
    );
    let r = post(
        &url,
        &body,
        &[("authorization", "Bearer tg-not-a-real-key")],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    let r = post(
        &url,
        &body,
        &[("authorization", &format!("Bearer {revoked}"))],
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "revoked keys are refused"
    );
    let r = post(&url, &body, &[("authorization", &format!("Bearer {key}"))]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = get(&format!("http://{}/v1/models", running.addr), &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    running.stop().await;
    let rows = usage_rows(&store).await;
    let ok = rows.iter().find(|r| r.status_code == 200).unwrap();
    assert_eq!(ok.api_key_id.as_deref(), Some(key_id.as_str()));
    assert!(ok.project_id.is_some());
    assert_eq!(rows.len(), 1, "refusals without a caller have no row");
    let keys = store.list_api_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert!(
        keys.iter().all(|k| !format!("{k:?}").contains(&key[3..])),
        "only the hash is stored"
    );
}

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
    assert_eq!(r.json()["error"]["type"], "rate_limit_exceeded");
    assert!(r.headers.contains_key("retry-after"));

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

async fn config_sync_and_reload_follow_the_file(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (_mock, addr) = mock_upstream().await;
    let two_models = format!(
        "{}\n[[models]]\nname = \"a\"\nprovider = \"up\"\nmodel_id = \"a1\"\nis_default = true\n[[models]]\nname = \"b\"\nprovider = \"up\"\nmodel_id = \"b1\"\n",
        upstream_provider(addr, "up", "k")
    );
    let gw = start_gateway(&db, &two_models).await;
    let store = db.connect().await;
    // a row the admin API made: the file never touches it
    store
        .execute(
            "INSERT INTO llm_providers (id, name, display_name, api, base_url, managed_by) VALUES ($1::uuid, 'manual', 'Manual', 'openai', 'http://127.0.0.1:1/v1', 'api')",
            &[tollgate::ids::new_id().into()],
        )
        .await
        .unwrap();
    let chat = |m: &str| json!({"model": m, "messages": [{"role": "user", "content": "x"}]});
    let url = format!("{}/v1/chat/completions", gw.base);
    assert_eq!(post(&url, &chat("b"), &[]).await.status, StatusCode::OK);

    // b leaves the file, a gets new prices and stops being the default, c appears
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    let new_models = "[[models]]\nname = \"a\"\nprovider = \"up\"\nmodel_id = \"a1\"\ncost_input_per_million = \"5\"\n[[models]]\nname = \"c\"\nprovider = \"up\"\nmodel_id = \"c1\"\nis_default = true\n";
    let head = &text[..text.find("[[models]]").unwrap()];
    std::fs::write(&gw.config_path, format!("{head}{new_models}")).unwrap();
    gw.running.gateway.reload().await.unwrap();
    assert_eq!(
        post(&url, &chat("b"), &[]).await.status,
        StatusCode::NOT_FOUND,
        "removed from the file: inactive"
    );
    assert_eq!(post(&url, &chat("c"), &[]).await.status, StatusCode::OK);
    // a system setting naming a deployment can be asked for by its key (seed 001's infra models)
    store
        .put_setting(
            "infra_model_summarization",
            &json!({"providerId": "up", "modelId": "c1"}),
        )
        .await
        .unwrap();
    gw.running.gateway.reload().await.unwrap();
    let r = post(&url, &chat("infra_model_summarization"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // a broken file is refused and the registry keeps serving
    std::fs::write(&gw.config_path, "[[models]]\nname = \n").unwrap();
    assert!(gw.running.gateway.reload().await.is_err());
    assert_eq!(post(&url, &chat("c"), &[]).await.status, StatusCode::OK);
    let metrics = get(&format!("{}/metrics", gw.base), &[]).await.text();
    assert_eq!(
        metric(
            &metrics,
            "tollgate_config_reloads_total",
            &[("result", "error")]
        ),
        Some(1.0)
    );
    gw.running.stop().await;

    let rows = store
        .fetch_all(
            "SELECT m.model_id, m.status, m.is_default, m.cost_input_per_million::text AS price FROM llm_models m ORDER BY m.model_id",
            &[],
        )
        .await
        .unwrap();
    let state: Vec<(String, String, bool, rust_decimal::Decimal)> = rows
        .iter()
        .map(|r| {
            (
                r.text("model_id").unwrap(),
                r.text("status").unwrap(),
                r.bool("is_default").unwrap(),
                dec(&r.text("price").unwrap()),
            )
        })
        .collect();
    assert_eq!(
        state,
        [
            ("a1".into(), "active".into(), false, dec("5")),
            ("b1".into(), "inactive".into(), false, dec("0")),
            ("c1".into(), "active".into(), true, dec("0")),
        ]
    );
    let manual = store
        .fetch_all(
            "SELECT managed_by, is_enabled FROM llm_providers WHERE name = 'manual'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(manual[0].text("managed_by").unwrap(), "api");
    assert!(manual[0].bool("is_enabled").unwrap());
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
    for (m, status) in [
        ("unset", StatusCode::OK),
        ("sees", StatusCode::OK),
        ("blind", StatusCode::BAD_REQUEST),
    ] {
        let r = post(&url, &image(m), &[]).await;
        assert_eq!(r.status, status, "{m}: {}", r.text());
    }
    let r = post(&url, &image("blind"), &[]).await;
    assert_eq!(
        r.json()["error"]["message"],
        "No deployment of `blind` supports images."
    );
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
    gw.running.gateway.reload().await.unwrap();
    let r = post(&url, &image("seeded"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    gw.running.stop().await;
}

async fn the_database_enforces_the_registry_rules(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let pid = tollgate::ids::new_id();
    store
        .execute(
            "INSERT INTO llm_providers (id, name, display_name) VALUES ($1::uuid, 'p', 'P')",
            &[pid.as_str().into()],
        )
        .await
        .unwrap();
    let insert = |model_id: &str, default: bool, price: &str| {
        let store = store.clone();
        let (pid, model_id, price) = (pid.clone(), model_id.to_owned(), price.to_owned());
        async move {
            store
                .execute(
                    "INSERT INTO llm_models (id, provider_id, model_id, name, display_name, is_default, cost_input_per_million)
                     VALUES ($1::uuid, $2::uuid, $3, $3, $3, $4, $5::numeric)",
                    &[tollgate::ids::new_id().into(), pid.into(), model_id.into(), default.into(), price.into()],
                )
                .await
        }
    };
    insert("m1", true, "1.5").await.unwrap();
    assert!(
        insert("m2", true, "1").await.is_err(),
        "one default model per provider"
    );
    assert!(
        insert("m1", false, "1").await.is_err(),
        "unique (provider, model_id)"
    );
    assert!(insert("m3", false, "-0.01").await.is_err(), "costs >= 0");
    insert("m4", false, "0").await.unwrap();
    assert!(
        store
            .execute(
                "UPDATE llm_models SET model_id = 'renamed' WHERE model_id = 'm1'",
                &[]
            )
            .await
            .is_err(),
        "model_id is immutable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_survives_a_database_outage() {
    // PostgreSQL stops accepting connections, the writer spools to disk, and replays the
    // records once the database is back: none is lost.
    let db = TestDb::new(Backend::Postgres).await;
    let (_mock, addr) = mock_upstream().await;
    let gw = start_gateway(
        &db,
        &format!("{}{CHAT_MODEL}", upstream_provider(addr, "up", "k")),
    )
    .await;
    let name = db.url.rsplit('/').next().unwrap().to_owned();
    let admin = tollgate::store::Db::connect(&pg_admin_url(), 1)
        .await
        .unwrap();
    admin
        .execute(
            &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"),
            &[],
        )
        .await
        .unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[name.as_str().into()],
        )
        .await
        .unwrap();

    let url = format!("{}/v1/chat/completions", gw.base);
    for _ in 0..3 {
        let r = post(
            &url,
            &json!({"model": "fast", "messages": [{"role": "user", "content": "x"}]}),
            &[],
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "serving does not need the database: {}",
            r.text()
        );
    }
    let spool = db.dir().join("usage.spool");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::fs::read_to_string(&spool).map_or(0, |s| s.lines().count()) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "records were not spooled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let metrics = get(&format!("{}/metrics", gw.base), &[]).await.text();
    assert_eq!(
        metric(&metrics, "tollgate_usage_log_spooled_total", &[]),
        Some(3.0)
    );

    admin
        .execute(
            &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"),
            &[],
        )
        .await
        .unwrap();
    admin.close().await;
    gw.running.stop().await; // replays the spool on the way out
    let rows = usage_rows(&db.connect().await).await;
    assert_eq!(rows.len(), 3);
    assert!(!spool.exists() || std::fs::read_to_string(&spool).unwrap().is_empty());
}

/// The client's stream ends with `data: [DONE]`, even while the provider keeps its body open
/// after it; the provider's connection is still read to its end and pooled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_at_done_and_its_connection_goes_back_to_the_pool() {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    let db = TestDb::new(Backend::Sqlite).await;
    let (mock, addr) = start_mock(tollgate::mock::MockUpstream {
        options: tollgate::mock::MockOptions {
            chunk_ms: 5,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let models = "[[models]]\nname = \"linger\"\nprovider = \"up\"\nmodel_id = \"mock-linger\"\n\
                  [[models]]\nname = \"plain\"\nprovider = \"up\"\nmodel_id = \"mock-chat\"\n";
    let gw = start_gateway(&db, &(upstream_provider(addr, "up", "k") + models)).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let ask = |model: &str| json!({"model": model, "stream": true, "max_tokens": 4, "messages": [{"role": "user", "content": "a b"}]});

    let started = Instant::now();
    let r = post(&url, &ask("linger"), &[]).await;
    let took = started.elapsed();
    assert!(r.text().ends_with("data: [DONE]\n\n"), "{}", r.text());
    assert!(
        took < Duration::from_secs(2),
        "the stream ended at [DONE], not 3 s later with the provider's body: {took:?}"
    );
    // Once the provider's body has ended, its connection serves the next request.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(post(&url, &ask("plain"), &[]).await.status, StatusCode::OK);
    assert_eq!(mock.counters.connections.load(Ordering::SeqCst), 1);

    gw.running.stop().await;
    let rows = usage_rows(&db.connect().await).await;
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!((row.status_code, row.error_type.as_deref()), (200, None));
        assert_eq!((row.input_tokens, row.output_tokens), (2, 4));
    }
}

/// A provider that closes each connection after one answer (without saying so, as some
/// servers do on their idle timeout): the next request goes on a new connection, never to the
/// client as an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_closing_its_kept_alive_connections_costs_no_request() {
    assert_one_connection_per_answer(false).await;
}

/// The same race caught later: the provider reads the next request on the kept-alive
/// connection and closes it without a word. That request goes again on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_provider_dropped_on_a_kept_alive_connection_goes_again() {
    assert_one_connection_per_answer(true).await;
}

/// Five requests to a provider that answers once per connection; `read_the_next` makes it
/// read a second request before it closes.
async fn assert_one_connection_per_answer(read_the_next: bool) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // One request (headers and the small JSON body arrive together), one answer.
                let mut buf = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                let body = r#"{"id":"x","object":"chat.completion","model":"m1","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":1}}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                if read_the_next {
                    let _ = socket.read(&mut buf).await;
                }
                // and then the connection is closed, with no `connection: close` said
            });
        }
    });
    let extra = upstream_provider(addr, "up", "k")
        + "[[models]]\nname = \"m\"\nprovider = \"up\"\nmodel_id = \"m1\"\n";
    let db = TestDb::new(Backend::Sqlite).await;
    let gw = start_gateway(&db, &extra).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    for i in 0..5 {
        let r = post(
            &url,
            &json!({"model": "m", "messages": [{"role": "user", "content": "a b"}]}),
            &[],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.text());
        assert_eq!(r.json()["choices"][0]["message"]["content"], "hi");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        5,
        "one connection per answer"
    );
    gw.running.stop().await;
}

/// Several instances writing the first rows of a new month race to create its partition;
/// every one of them must still write its batch (not spool it as if the database failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_racing_for_a_new_months_partition_all_succeed() {
    let db = TestDb::new(Backend::Postgres).await;
    db.connect().await.migrate().await.unwrap();
    let mut writers = Vec::new();
    for i in 0..8 {
        // One pool each, like separate gateway instances.
        let store = db.connect().await;
        let record: tollgate::metering::UsageRecord = serde_json::from_value(json!({
            "id": tollgate::ids::new_id(), "request_id": format!("r{i}"),
            "created_at": "2031-03-15T12:00:00Z",
            "llm_model_id": null, "provider_id": null, "project_id": null, "api_key_id": null,
            "model_name": "m", "provider_name": "", "project_name": "",
            "endpoint": "chat.completions", "stream": false, "status_code": 200, "error_type": null,
            "tokens": {"input": 1, "cache_read": 0, "cache_write": 0, "output": 1, "reasoning": 0},
            "raw_usage": null, "usage_source": "provider", "cache_hit": false,
            "cost_usd": "0", "latency_ms": 1, "ttft_ms": null, "upstream_ms": null, "attempts": 1
        }))
        .unwrap();
        writers.push(tokio::spawn(async move {
            store.insert_usage(std::sync::Arc::new([record])).await
        }));
    }
    for w in writers {
        w.await.unwrap().expect("each batch is written");
    }
    let store = db.connect().await;
    let rows = store
        .fetch_all("SELECT COUNT(*) AS n FROM llm_usage_logs_y2031m03", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].int("n").unwrap(), 8);
}

/// An SQLite database made before the usage table's key changed keeps its rows through the
/// rebuilds, time-range queries then use the new key, and the usage_source rule still holds
/// without a temporary B-tree per inserted row.
#[tokio::test]
async fn sqlite_usage_rows_survive_the_key_migration() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.connect().await;
    let tollgate::store::Db::Sqlite(pool) = &store else {
        unreachable!("an SQLite test database")
    };
    let first = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/migrations/sqlite/0001_init.sql"
        ),
        first.path().join("0001_init.sql"),
    )
    .unwrap();
    sqlx::migrate::Migrator::new(first.path())
        .await
        .unwrap()
        .run(pool)
        .await
        .unwrap();
    store
        .execute(
            "INSERT INTO llm_usage_logs (id, request_id, created_at, endpoint, status_code, output_tokens)
             VALUES ('a', 'r1', '2026-11-01T00:00:00.000Z', 'chat.completions', 200, 7),
                    ('b', 'r2', '2026-11-02T00:00:00.000Z', 'chat.completions', 200, 5)",
            &[],
        )
        .await
        .unwrap();

    store.migrate().await.unwrap();
    let rows = store
        .fetch_all(
            "SELECT COUNT(*) AS n, SUM(output_tokens) AS t FROM llm_usage_logs
             WHERE created_at >= '2026-11-02'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (rows[0].int("n").unwrap(), rows[0].int("t").unwrap()),
        (1, 5)
    );
    let plan = store
        .fetch_all(
            "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM llm_usage_logs WHERE created_at >= '2026-11-02'",
            &[],
        )
        .await
        .unwrap();
    let detail = plan[0].text("detail").unwrap();
    assert!(detail.contains("autoindex_llm_usage_logs"), "{detail}");

    let insert = |source: &str| {
        format!(
            "INSERT INTO llm_usage_logs (id, request_id, created_at, endpoint, status_code, usage_source)
             VALUES ('{source}', 'r', '2026-11-03T00:00:00.000Z', 'chat.completions', 200, '{source}')"
        )
    };
    assert!(store.execute(&insert("estimated"), &[]).await.is_ok());
    assert!(store.execute(&insert("bogus"), &[]).await.is_err());
    let program = store
        .fetch_all(&format!("EXPLAIN {}", insert("none")), &[])
        .await
        .unwrap();
    assert!(
        program
            .iter()
            .all(|op| op.text("opcode").unwrap() != "OpenEphemeral"),
        "the CHECK is evaluated without a temporary table"
    );
}

/// Dashboards and alerts need a series before its first increase; a metric nothing moves
/// yet is not exported at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_gateway_exports_known_counters_at_zero_and_no_cache_metrics() {
    let db = TestDb::new(Backend::Sqlite).await;
    let gw = start_gateway(&db, "").await;
    let text = get(&format!("{}/metrics", gw.base), &[]).await.text();
    for line in [
        "tollgate_config_reloads_total{result=\"success\"} 0",
        "tollgate_config_reloads_total{result=\"error\"} 0",
        "tollgate_rate_limited_total{scope=\"provider\"} 0",
        "tollgate_rate_limited_total{scope=\"model\"} 0",
        "tollgate_rate_limited_total{scope=\"key\"} 0",
        "tollgate_usage_log_dropped_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    assert!(!text.contains("tollgate_cache_"), "{text}");
    gw.running.stop().await;
}

/// The SQLite rebuild that lets capability flags be unknown keeps every model row and every
/// usage row's reference to it, and foreign keys are enforced again afterwards.
#[tokio::test]
async fn sqlite_models_and_their_usage_survive_the_capability_migration() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.connect().await;
    let tollgate::store::Db::Sqlite(pool) = &store else {
        unreachable!("an SQLite test database")
    };
    let before = tempfile::tempdir().unwrap();
    for file in [
        "0001_init.sql",
        "0002_usage_key_leads_with_time.sql",
        "0003_usage_source_check_without_in_list.sql",
    ] {
        let from = format!("{}/migrations/sqlite/{file}", env!("CARGO_MANIFEST_DIR"));
        std::fs::copy(from, before.path().join(file)).unwrap();
    }
    sqlx::migrate::Migrator::new(before.path())
        .await
        .unwrap()
        .run(pool)
        .await
        .unwrap();
    for insert in [
        "INSERT INTO llm_providers (id, name, display_name) VALUES ('p', 'p', 'P')",
        "INSERT INTO llm_models (id, provider_id, model_id, name, display_name)
         VALUES ('m', 'p', 'm1', 'm', 'M')",
    ] {
        store.execute(insert, &[]).await.unwrap();
    }
    store
        .execute(
            "INSERT INTO llm_usage_logs (id, request_id, created_at, llm_model_id, provider_id, endpoint, status_code)
             VALUES ('u', 'r', '2026-11-01T00:00:00.000Z', 'm', 'p', 'chat.completions', 200)",
            &[],
        )
        .await
        .unwrap();

    store.migrate().await.unwrap();
    let rows = store
        .fetch_all(
            "SELECT u.llm_model_id, m.model_id, m.supports_vision, m.supports_json
             FROM llm_usage_logs u JOIN llm_models m ON m.id = u.llm_model_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "the usage row still refers to its model");
    assert_eq!(rows[0].text("model_id").unwrap(), "m1");
    // the old defaults stay until the config sync rewrites the row
    assert_eq!(rows[0].opt_bool("supports_vision").unwrap(), Some(false));
    assert_eq!(rows[0].opt_bool("supports_json").unwrap(), Some(true));
    store
        .execute(
            "INSERT INTO llm_models (id, provider_id, model_id, name, display_name, model_type)
             VALUES ('n', 'p', 'n1', 'n', 'N', 'llm')",
            &[],
        )
        .await
        .unwrap();
    let orphan = "INSERT INTO llm_models (id, provider_id, model_id, name, display_name)
                  VALUES ('o', 'no-such-provider', 'o1', 'o', 'O')";
    for _ in 0..4 {
        // every pooled connection, the migrating one included
        assert!(store.execute(orphan, &[]).await.is_err(), "foreign keys on");
    }
    assert!(
        store
            .execute("UPDATE llm_models SET model_id = 'x' WHERE id = 'm'", &[])
            .await
            .is_err(),
        "model_id is still immutable"
    );
}
