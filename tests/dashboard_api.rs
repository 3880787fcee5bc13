//! The dashboard API (`/api/v1/*`): a query goes through the same routing, limits, budgets,
//! allowed models and metering as a chat completion, and answers in seed 003's shape; the
//! model list shows what a dashboard needs, inactive models only to admins; browsers of the
//! pages `[server] cors_allowed_origins` lists may call both. On SQLite and on PostgreSQL.

mod common;

use common::*;
use http::StatusCode;
use serde_json::json;
use tollgate::store::{Db, NewApiKey};

const MASTER: &str = "master-key-for-dashboard-tests-01";

fn keys_required(text: String) -> String {
    text.replace(
        "require_api_key = false",
        &format!("require_api_key = true\nmaster_key = \"{MASTER}\""),
    )
}

/// `echo` (free), `priced` (with prices and flags), `retired` (inactive) on the in-process
/// mock, `broken`, whose provider listens nowhere, and `switched-off`, whose provider is
/// disabled.
fn models(closed: std::net::SocketAddr) -> String {
    format!(
        r#"{MOCK_ECHO}
[[models]]
name = "priced"
display_name = "Priced Echo"
provider = "local"
model_id = "echo-2"
cost_input_per_million = "1.5"
cost_output_per_million = "6"
context_window = 8192
supports_vision = true

[[models]]
name = "retired"
provider = "local"
model_id = "echo-0"
status = "inactive"

{down}
[[models]]
name = "broken"
provider = "down"
model_id = "nothing-v1"

[[providers]]
name = "off"
api = "mock"
enabled = false

[[models]]
name = "switched-off"
provider = "off"
model_id = "echo-off"
"#,
        down = upstream_provider(closed, "down", "sk-down")
    )
}

/// A loopback address nothing listens on.
async fn closed_port() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

async fn user_key(store: &Db, allowed: Option<Vec<String>>, budget: Option<&str>) -> String {
    let (key, prefix, hash) = tollgate::auth::generate_key();
    let new = NewApiKey {
        name: "dash".into(),
        role: "user".into(),
        allowed_models: allowed,
        budget_usd: budget.map(|b| b.parse().unwrap()),
        ..Default::default()
    };
    store.insert_api_key(&new, &hash, &prefix).await.unwrap();
    key
}

async fn query(base: &str, key: &str, body: &serde_json::Value) -> Reply {
    let auth = format!("Bearer {key}");
    post(
        &format!("{base}/api/v1/llm/query"),
        body,
        &[("authorization", &auth)],
    )
    .await
}

/// An OpenAI-shaped error with this status, type and `param`.
fn assert_error(r: &Reply, status: StatusCode, param: Option<&str>) -> serde_json::Value {
    assert_eq!(r.status, status, "{}", r.text());
    let e = r.json()["error"].clone();
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    assert!(e["type"].is_string(), "{e}");
    if let Some(p) = param {
        assert_eq!(e["param"], p, "{e}");
    }
    e
}

on_both_databases!(
    a_query_answers_in_the_seeds_shape_with_one_usage_row,
    bad_queries_name_the_field,
    queries_are_refused_as_chat_completions_are,
    the_model_list_shows_active_models_and_inactive_ones_to_admins,
    a_browser_dashboard_may_call_from_an_allowed_origin_only,
    without_the_setting_there_are_no_cors_headers,
    an_open_gateway_still_refuses_foreign_pages,
    a_reload_applies_the_cors_origins,
);

async fn a_query_answers_in_the_seeds_shape_with_one_usage_row(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let key = user_key(&store, None, None).await;
    let gw = start_gateway_with(&db, &models(closed_port().await), keys_required).await;

    let url = format!("{}/api/v1/llm/query", gw.base);
    let auth = format!("Bearer {key}");
    let headers = [("authorization", auth.as_str()), ("x-request-id", "dash-1")];
    let body = json!({"model": "priced", "prompt": "hello there"});
    let r = post(&url, &body, &headers).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // The client's request id comes back, as the limits' headers do on /v1/*.
    assert_eq!(r.headers["x-request-id"], "dash-1");
    let answer = r.json();
    assert_eq!(answer["model"], "priced");
    assert!(
        answer["text"].as_str().is_some_and(|t| !t.is_empty()),
        "{answer}"
    );
    let usage = &answer["usage"];
    let count = |k: &str| usage[k].as_i64().unwrap();
    assert!(
        count("prompt_tokens") > 0 && count("completion_tokens") > 0,
        "{usage}"
    );
    assert_eq!(
        count("total_tokens"),
        count("prompt_tokens") + count("completion_tokens")
    );
    gw.running.stop().await;

    let rows = usage_rows(&store).await;
    assert_eq!(rows.len(), 1, "one usage row per query");
    let row = &rows[0];
    assert_eq!(row.endpoint, "api.llm.query");
    assert_eq!(row.status_code, 200);
    assert_eq!(row.model_name, "priced");
    assert_eq!(row.input_tokens, count("prompt_tokens"));
    assert_eq!(row.output_tokens, count("completion_tokens"));
    // The cost the answer reports is the one the row records, exactly.
    assert!(dec(&row.cost_usd) > dec("0"));
    assert_eq!(dec(usage["cost_usd"].as_str().unwrap()), dec(&row.cost_usd));
}

async fn bad_queries_name_the_field(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let key = user_key(&store, None, None).await;
    let gw = start_gateway_with(&db, &models(closed_port().await), keys_required).await;

    let cases = [
        (json!({"prompt": "hi"}), "model"),
        (json!({"model": 7, "prompt": "hi"}), "model"),
        (json!({"model": "echo"}), "prompt"),
        (json!({"model": "echo", "prompt": ["hi"]}), "prompt"),
        (
            json!({"model": "echo", "prompt": "hi", "max_tokens": 0}),
            "max_tokens",
        ),
        (
            json!({"model": "echo", "prompt": "hi", "max_tokens": -3}),
            "max_tokens",
        ),
        (
            json!({"model": "echo", "prompt": "hi", "max_tokens": 2.5}),
            "max_tokens",
        ),
        (
            json!({"model": "echo", "prompt": "hi", "max_tokens": "9"}),
            "max_tokens",
        ),
    ];
    for (body, field) in cases {
        let r = query(&gw.base, &key, &body).await;
        let e = assert_error(&r, StatusCode::BAD_REQUEST, Some(field));
        assert_eq!(e["type"], "invalid_request_error", "{body}: {e}");
    }
    // Not JSON at all is a 400 too, and a missing bearer a 401.
    let auth = format!("Bearer {key}");
    let url = format!("{}/api/v1/llm/query", gw.base);
    let r = request(
        http::Method::POST,
        &url,
        "{not json",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, None);
    let r = post(&url, &json!({"model": "echo", "prompt": "hi"}), &[]).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, None);

    let r = query(
        &gw.base,
        &key,
        &json!({"model": "no-such-model", "prompt": "hi"}),
    )
    .await;
    let e = assert_error(&r, StatusCode::NOT_FOUND, None);
    assert_eq!(e["code"], "model_not_found", "{e}");
    gw.running.stop().await;
}

async fn queries_are_refused_as_chat_completions_are(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let narrow = user_key(&store, Some(vec!["echo".into()]), None).await;
    let poor = user_key(&store, None, Some("0.000001")).await;
    let key = user_key(&store, None, None).await;
    let gw = start_gateway_with(&db, &models(closed_port().await), keys_required).await;
    let ask = |model: &str| json!({"model": model, "prompt": "hi", "max_tokens": 50});

    let r = query(&gw.base, &narrow, &ask("priced")).await;
    let e = assert_error(&r, StatusCode::FORBIDDEN, Some("model"));
    assert_eq!(e["code"], "model_not_allowed", "{e}");
    assert_eq!(
        query(&gw.base, &narrow, &ask("echo")).await.status,
        StatusCode::OK
    );

    let r = query(&gw.base, &poor, &ask("priced")).await;
    let e = assert_error(&r, StatusCode::TOO_MANY_REQUESTS, None);
    assert_eq!(e["code"], "budget_exceeded", "{e}");

    let r = query(&gw.base, &key, &ask("broken")).await;
    assert_error(&r, StatusCode::BAD_GATEWAY, None);

    // The key's own limits: one request a minute, and the headers that say so.
    let (slow, prefix, hash) = tollgate::auth::generate_key();
    let new = NewApiKey {
        name: "slow".into(),
        role: "user".into(),
        rpm: Some(1),
        ..Default::default()
    };
    store.insert_api_key(&new, &hash, &prefix).await.unwrap();
    let r = query(&gw.base, &slow, &ask("echo")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.headers["x-ratelimit-limit-requests"], "1");
    let r = query(&gw.base, &slow, &ask("echo")).await;
    let e = assert_error(&r, StatusCode::TOO_MANY_REQUESTS, None);
    assert_eq!(e["code"], "rate_limit_exceeded", "{e}");
    assert!(r.headers.contains_key("retry-after"));
    gw.running.stop().await;

    // Every query, refused or not, made its one row under the dashboard's endpoint.
    let rows = usage_rows(&store).await;
    assert_eq!(rows.len(), 6, "one row per query");
    assert!(rows.iter().all(|r| r.endpoint == "api.llm.query"));
    let statuses: Vec<i64> = rows.iter().map(|r| r.status_code).collect();
    assert_eq!(statuses, [403, 200, 429, 502, 200, 429]);
}

async fn the_model_list_shows_active_models_and_inactive_ones_to_admins(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let key = user_key(&store, None, None).await;
    let narrow = user_key(&store, Some(vec!["echo".into()]), None).await;
    let gw = start_gateway_with(&db, &models(closed_port().await), keys_required).await;
    let url = format!("{}/api/v1/llm/models", gw.base);
    let list = |k: &str, query: &str| {
        let (url, auth) = (format!("{url}{query}"), format!("Bearer {k}"));
        async move { get(&url, &[("authorization", &auth)]).await }
    };
    let names = |r: &Reply| -> Vec<String> {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let mut names: Vec<String> = r.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };

    let r = list(&key, "").await;
    assert_eq!(names(&r), ["broken", "echo", "priced"]);
    let data = r.json()["data"].clone();
    let priced = data
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "priced")
        .unwrap();
    assert_eq!(priced["display_name"], "Priced Echo");
    assert_eq!(priced["provider"], "local");
    assert_eq!(priced["type"], "chat");
    assert_eq!(priced["status"], "active");
    assert_eq!(priced["context_window"], 8192);
    assert_eq!(
        dec(priced["prices"]["input_per_million"].as_str().unwrap()),
        dec("1.5")
    );
    assert_eq!(
        dec(priced["prices"]["output_per_million"].as_str().unwrap()),
        dec("6")
    );
    assert_eq!(priced["capabilities"]["vision"], true);

    // A key limited to some models sees only those.
    assert_eq!(names(&list(&narrow, "").await), ["echo"]);
    // Inactive models: admins only.
    let r = list(&key, "?all=true").await;
    let e = assert_error(&r, StatusCode::FORBIDDEN, None);
    assert_eq!(e["type"], "permission_denied", "{e}");
    assert_eq!(
        names(&list(MASTER, "?all=true").await),
        ["broken", "echo", "priced", "retired", "switched-off"]
    );
    assert_eq!(names(&list(MASTER, "").await), ["broken", "echo", "priced"]);
    let r = list(&key, "?all=maybe").await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("all"));
    gw.running.stop().await;
}

const DASH: &str = "https://dash.example.com";

/// A gateway with keys required and, when `cors` is set, that CORS setting.
async fn gateway_with_cors(db: &TestDb, cors: Option<&str>) -> TestGateway {
    let setting = cors.map_or(String::new(), |c| format!("cors_allowed_origins = {c}\n"));
    start_gateway_with(db, MOCK_ECHO, |t| {
        keys_required(t).replace("[server]\n", &format!("[server]\n{setting}"))
    })
    .await
}

async fn preflight(url: &str, origin: &str) -> Reply {
    request(
        http::Method::OPTIONS,
        url,
        "",
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type",
            ),
        ],
    )
    .await
}

fn header<'r>(r: &'r Reply, name: &str) -> Option<&'r str> {
    r.headers.get(name).map(|v| v.to_str().unwrap())
}

async fn a_browser_dashboard_may_call_from_an_allowed_origin_only(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let key = user_key(&store, None, None).await;
    let gw = gateway_with_cors(&db, Some(&format!("[\"{DASH}\"]"))).await;
    let query_url = format!("{}/api/v1/llm/query", gw.base);

    for url in [
        query_url.clone(),
        format!("{}/v1/chat/completions", gw.base),
    ] {
        let r = preflight(&url, DASH).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{url}: {}", r.text());
        assert_eq!(header(&r, "access-control-allow-origin"), Some(DASH));
        let methods = header(&r, "access-control-allow-methods").unwrap();
        assert!(
            methods.contains("POST") && methods.contains("GET"),
            "{methods}"
        );
        let headers = header(&r, "access-control-allow-headers").unwrap();
        assert!(headers.contains("authorization") && headers.contains("content-type"));
        assert!(header(&r, "access-control-max-age").is_some());
        assert_eq!(header(&r, "vary"), Some("origin"));
        assert_eq!(header(&r, "access-control-allow-credentials"), None);
    }
    let r = preflight(&query_url, "https://evil.example").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert!(!r
        .headers
        .keys()
        .any(|k| k.as_str().starts_with("access-control-")));

    // The answers themselves: readable by the allowed page only.
    let auth = format!("Bearer {key}");
    let body = json!({"model": "echo", "prompt": "hi"});
    let r = post(
        &query_url,
        &body,
        &[("authorization", &auth), ("origin", DASH)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(header(&r, "access-control-allow-origin"), Some(DASH));
    assert!(header(&r, "vary").is_some_and(|v| v.contains("origin")));
    assert!(header(&r, "access-control-expose-headers").is_some_and(|v| v.contains("x-request-id")));
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
    let r = get(
        &format!("{}/api/v1/llm/models", gw.base),
        &[("authorization", &auth), ("origin", DASH)],
    )
    .await;
    assert_eq!(header(&r, "access-control-allow-origin"), Some(DASH));
    let origin = [
        ("authorization", auth.as_str()),
        ("origin", "https://evil.example"),
    ];
    let r = post(&query_url, &body, &origin).await;
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    // The admin API is no browser's.
    let r = preflight(&format!("{}/admin/keys", gw.base), DASH).await;
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    gw.running.stop().await;
}

async fn without_the_setting_there_are_no_cors_headers(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let key = user_key(&store, None, None).await;
    let gw = gateway_with_cors(&db, None).await;
    let url = format!("{}/api/v1/llm/query", gw.base);
    let r = preflight(&url, DASH).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    let auth = format!("Bearer {key}");
    let body = json!({"model": "echo", "prompt": "hi"});
    let r = post(&url, &body, &[("authorization", &auth), ("origin", DASH)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(!r
        .headers
        .keys()
        .any(|k| k.as_str().starts_with("access-control-")));
    gw.running.stop().await;
}

/// Without keys nothing but the Origin check guards the providers: it still refuses a page
/// that is not local, even one the CORS list allows.
async fn an_open_gateway_still_refuses_foreign_pages(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cors = format!("cors_allowed_origins = [\"{DASH}\", \"http://localhost:3000\"]\n");
    let gw = start_gateway_with(&db, MOCK_ECHO, |t| {
        t.replace("[server]\n", &format!("[server]\n{cors}"))
    })
    .await;
    let url = format!("{}/api/v1/llm/query", gw.base);
    let r = preflight(&url, DASH).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "forbidden_origin");
    let r = preflight(&url, "http://localhost:3000").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    gw.running.stop().await;
}

async fn a_reload_applies_the_cors_origins(backend: Backend) {
    let db = TestDb::new(backend).await;
    let gw = gateway_with_cors(&db, Some(&format!("[\"{DASH}\"]"))).await;
    let url = format!("{}/v1/models", gw.base);
    let other = "https://other.example.com";
    assert_eq!(preflight(&url, other).await.status, StatusCode::FORBIDDEN);

    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    let text = text.replace(&format!("[\"{DASH}\"]"), &format!("[\"{other}\"]"));
    std::fs::write(&gw.config_path, text).unwrap();
    let report = gw.running.app.reload().await.unwrap();
    assert_eq!(report.applied, ["server.cors_allowed_origins"]);
    assert!(
        report.restart_required.is_empty(),
        "{:?}",
        report.restart_required
    );
    assert_eq!(preflight(&url, other).await.status, StatusCode::NO_CONTENT);
    assert_eq!(preflight(&url, DASH).await.status, StatusCode::FORBIDDEN);
    gw.running.stop().await;
}
