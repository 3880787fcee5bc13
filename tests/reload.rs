//! Reloading config.toml while serving (SIGHUP calls `Gateway::reload`): what applies at run
//! time applies, what needs a restart is named, and a file that would leave nothing serving
//! is refused while the running configuration keeps serving. The file's models and providers
//! are synced into the database on every load, on SQLite and on PostgreSQL.

mod common;

use common::*;
use http::StatusCode;
use serde_json::json;

on_both_databases!(config_sync_and_reload_follow_the_file);

fn chat(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

const MODEL: &str = "[[providers]]\nname = \"m\"\napi = \"mock\"\n\
    [[models]]\nname = \"chat\"\nprovider = \"m\"\nmodel_id = \"mock-chat\"\n";

/// Rewrites the gateway's config file with `edit` applied to its current text.
fn rewrite(gw: &TestGateway, edit: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    std::fs::write(&gw.config_path, edit(text)).unwrap();
}

fn reloads(text: &str, result: &str) -> Option<f64> {
    metric(text, "tollgate_config_reloads_total", &[("result", result)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_keys_on_and_limits_down_applies_at_once() {
    let db = TestDb::new(Backend::Sqlite).await;
    let gw = start_gateway(&db, MODEL).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    assert_eq!(post(&url, &chat("chat"), &[]).await.status, StatusCode::OK);

    let store = db.connect().await;
    let (key, prefix, hash) = tollgate::auth::generate_key();
    let new = tollgate::store::NewApiKey {
        name: "app".into(),
        role: "user".into(),
        ..Default::default()
    };
    store.insert_api_key(&new, &hash, &prefix).await.unwrap();
    rewrite(&gw, |t| {
        t.replace("require_api_key = false", "require_api_key = true")
            .replace("max_body_bytes = 65536", "max_body_bytes = 300")
    });
    let report = gw.running.app.reload().await.unwrap();
    assert_eq!(
        report.applied,
        ["auth.require_api_key", "server.max_body_bytes"]
    );
    assert!(report.restart_required.is_empty(), "{report:?}");

    let r = post(&url, &chat("chat"), &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    let auth = format!("Bearer {key}");
    let with_key = [("authorization", auth.as_str())];
    assert_eq!(
        post(&url, &chat("chat"), &with_key).await.status,
        StatusCode::OK
    );
    let big = json!({"model": "chat", "messages": [{"role": "user", "content": "x".repeat(400)}]});
    assert_eq!(
        post(&url, &big, &with_key).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    gw.running.stop().await;
}

/// Turning keys off opens the gateway: from then on it answers only local pages, as one that
/// started open does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_keys_off_brings_the_open_gateways_host_checks() {
    let db = TestDb::new(Backend::Sqlite).await;
    let gw = start_gateway_with(&db, MODEL, |t| {
        t.replace("require_api_key = false", "require_api_key = true")
    })
    .await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let foreign = [("origin", "https://evil.example")];
    let r = post(&url, &chat("chat"), &foreign).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());

    rewrite(&gw, |t| {
        t.replace("require_api_key = true", "require_api_key = false")
    });
    let report = gw.running.app.reload().await.unwrap();
    assert_eq!(report.applied, ["auth.require_api_key"]);
    let r = post(&url, &chat("chat"), &foreign).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "forbidden_origin");
    assert_eq!(post(&url, &chat("chat"), &[]).await.status, StatusCode::OK);
    gw.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_need_a_restart_are_named_until_it_happens() {
    let db = TestDb::new(Backend::Sqlite).await;
    let gw = start_gateway(&db, MODEL).await;
    rewrite(&gw, |t| {
        t.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"")
            .replace("shutdown_grace_secs = 2", "shutdown_grace_secs = 3")
            .replace("request_timeout_secs = 5", "request_timeout_secs = 7")
    });
    let report = gw.running.app.reload().await.unwrap();
    assert_eq!(report.applied, ["server.request_timeout_secs"]);
    assert_eq!(
        report.restart_required,
        ["server.listen", "server.shutdown_grace_secs"]
    );
    assert_eq!(report.deployments, 1);
    // still pending at the next reload; nothing new to apply
    let again = gw.running.app.reload().await.unwrap();
    assert!(again.applied.is_empty(), "{again:?}");
    assert_eq!(again.restart_required, report.restart_required);

    // still serving where it started
    let url = format!("{}/v1/chat/completions", gw.base);
    assert_eq!(post(&url, &chat("chat"), &[]).await.status, StatusCode::OK);
    let metrics = get(&format!("{}/metrics", gw.base), &[]).await.text();
    assert_eq!(reloads(&metrics, "success"), Some(2.0));
    gw.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_would_leave_nothing_serving_is_refused() {
    let db = TestDb::new(Backend::Sqlite).await;
    let gw = start_gateway(&db, MODEL).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let head = std::fs::read_to_string(&gw.config_path)
        .unwrap()
        .replace(MODEL, "");
    let inactive = MODEL.to_owned() + "status = \"inactive\"\n";
    let disabled = MODEL.replace("api = \"mock\"", "api = \"mock\"\nenabled = false");
    for (what, text) in [
        ("empty", String::new()),
        ("model-less", head.clone()),
        ("every model inactive", head.clone() + &inactive),
        ("every provider disabled", head.clone() + &disabled),
    ] {
        std::fs::write(&gw.config_path, text).unwrap();
        let err = gw.running.app.reload().await.unwrap_err();
        assert!(
            err.to_string().contains("no [[models]] entry would serve"),
            "{what}: {err:#}"
        );
        let r = post(&url, &chat("chat"), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.text());
    }
    let metrics = get(&format!("{}/metrics", gw.base), &[]).await.text();
    assert_eq!(reloads(&metrics, "error"), Some(4.0));
    gw.running.stop().await;

    // nothing was written: the model is still active in the database
    let rows = db
        .connect()
        .await
        .fetch_all("SELECT status FROM llm_models", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].text("status").unwrap(), "active");
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
    gw.running.app.reload().await.unwrap();
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
    gw.running.app.reload().await.unwrap();
    let r = post(&url, &chat("infra_model_summarization"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // a broken file is refused and the registry keeps serving
    std::fs::write(&gw.config_path, "[[models]]\nname = \n").unwrap();
    assert!(gw.running.app.reload().await.is_err());
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
