//! The admin API through HTTP against a started gateway, on SQLite and on PostgreSQL: every
//! endpoint; the seeds' rules, each refusal with its status, field and message; a model
//! created here served at once, a deleted one gone from `/v1/models` with its usage kept;
//! config-managed rows left to config.toml; provider keys never shown; the audit log;
//! pagination.

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};

const MASTER: &str = "master-key-for-admin-tests-0123456789";
const SECRET: &str = "sk-provider-secret-never-shown-42";

/// A config-managed mock provider and model beside whatever the API creates.
const CONFIG_ROWS: &str = r#"
[[providers]]
name = "local"
api = "mock"

[[models]]
name = "echo"
provider = "local"
model_id = "echo-1"

[[routes]]
name = "smart"
targets = ["local/echo-1"]
"#;

/// An admin client: the gateway's base URL and a bearer credential.
struct Admin {
    base: String,
    auth: String,
}

impl Admin {
    fn new(base: &str, key: &str) -> Admin {
        Admin {
            base: base.to_owned(),
            auth: format!("Bearer {key}"),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let url = format!("{}{path}", self.base);
        let body = body.map(Value::to_string).unwrap_or_default();
        let headers = [
            ("authorization", self.auth.as_str()),
            ("content-type", "application/json"),
        ];
        request(method, &url, body, &headers).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(&body)).await
    }
    async fn patch(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(&body)).await
    }
    async fn put(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(&body)).await
    }
    async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }
}

/// Asserts an OpenAI-shaped refusal: its status, the field in `param`, a message fragment.
#[track_caller]
fn refused(reply: &Reply, status: StatusCode, param: &str, fragment: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    let e = &reply.json()["error"];
    let param = match param {
        "" => Value::Null,
        p => json!(p),
    };
    assert_eq!(e["param"], param, "{}", reply.text());
    let message = e["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(fragment),
        "{fragment:?} not in {message:?}"
    );
    assert!(e["type"].is_string(), "{}", reply.text());
}

#[track_caller]
fn ok(reply: &Reply, status: StatusCode) -> Value {
    assert_eq!(reply.status, status, "{}", reply.text());
    reply.json()
}

/// A gateway with a master key, the config rows, and an admin client.
async fn gateway(db: &TestDb, master: bool) -> (TestGateway, Admin) {
    let auth = match master {
        true => {
            format!("require_api_key = true\nkey_cache_ttl_secs = 1\nmaster_key = \"{MASTER}\"")
        }
        false => "require_api_key = true".to_owned(),
    };
    let gw = start_gateway_with(db, CONFIG_ROWS, |t| {
        t.replace("require_api_key = false", &auth)
    })
    .await;
    let admin = Admin::new(&gw.base, MASTER);
    (gw, admin)
}

fn mock_provider(name: &str) -> Value {
    json!({"name": name, "api": "mock"})
}

fn model(name: &str, provider: &str, model_id: &str) -> Value {
    json!({"name": name, "provider": provider, "model_id": model_id,
           "cost_input_per_million": "0.15", "cost_output_per_million": 0.6})
}

async fn chat(base: &str, model: &str) -> Reply {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    post(
        &format!("{base}/v1/chat/completions"),
        &body,
        &[("authorization", &format!("Bearer {MASTER}"))],
    )
    .await
}

async fn listed_models(base: &str) -> Vec<String> {
    let auth = format!("Bearer {MASTER}");
    let reply = get(&format!("{base}/v1/models"), &[("authorization", &auth)]).await;
    let list = ok(&reply, StatusCode::OK);
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

on_both_databases!(
    providers_are_created_read_changed_and_deleted,
    provider_input_is_checked_field_by_field,
    provider_keys_are_sealed_never_shown_and_used,
    plaintext_keys_need_a_master_key,
    models_follow_the_seeds_rules,
    a_model_created_here_is_served_at_once_and_a_deleted_one_keeps_its_usage,
    rows_config_toml_manages_are_refused,
    settings_are_put_read_and_deleted,
    the_audit_log_records_every_change_without_secrets,
    lists_are_paginated_with_cursors,
    concurrent_requests_meet_the_same_rules,
    user_callers_are_refused,
    usage_is_reported,
    projects_and_keys_are_managed_here,
);

async fn providers_are_created_read_changed_and_deleted(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    let created = ok(&admin.post("/admin/providers", json!({
        "name": "acme", "api": "openai", "base_url": "http://127.0.0.1:9/v1",
        "api_key": "env:ACME_KEY", "max_parallel_requests": 3, "timeouts": {"connect_ms": 500}
    })).await, StatusCode::CREATED);
    assert_eq!(created["object"], "provider");
    assert_eq!(created["api_key"], "env:ACME_KEY");
    assert_eq!(created["managed_by"], "api");
    assert_eq!(created["max_parallel_requests"], 3);
    assert_eq!(created["requests_per_minute"], 60);
    assert_eq!(created["timeouts"]["connect_ms"], 500);
    assert_eq!(created["display_name"], "acme");

    let read = ok(&admin.get("/admin/providers/acme").await, StatusCode::OK);
    assert_eq!(read, created);
    let changed = ok(
        &admin
            .patch(
                "/admin/providers/acme",
                json!({
                    "display_name": "Acme AI", "requests_per_minute": 120
                }),
            )
            .await,
        StatusCode::OK,
    );
    assert_eq!(changed["display_name"], "Acme AI");
    assert_eq!(changed["requests_per_minute"], 120);
    assert_eq!(changed["api_key"], "env:ACME_KEY", "an absent key is kept");
    assert_eq!(
        changed["max_parallel_requests"], 3,
        "absent fields are kept"
    );
    // A GET's answer can be sent back as it is.
    ok(
        &admin.patch("/admin/providers/acme", changed.clone()).await,
        StatusCode::OK,
    );
    refused(
        &admin
            .patch("/admin/providers/acme", json!({"id": "x"}))
            .await,
        StatusCode::BAD_REQUEST,
        "id",
        "read-only",
    );

    // Every change moves the registry version the other instances follow.
    let store = db.connect().await;
    let version = store.registry_version().await.unwrap();
    ok(
        &admin
            .patch("/admin/providers/acme", json!({"is_enabled": false}))
            .await,
        StatusCode::OK,
    );
    assert!(store.registry_version().await.unwrap() > version);
    // The database's own triggers move it, whoever writes (SQLite's were made again after
    // the provider table was rebuilt).
    let version = store.registry_version().await.unwrap();
    store
        .execute(
            "UPDATE llm_providers SET description = 'd' WHERE name = 'acme'",
            &[],
        )
        .await
        .unwrap();
    assert!(store.registry_version().await.unwrap() > version);

    // Renamed, the old name is gone.
    ok(
        &admin
            .patch("/admin/providers/acme", json!({"name": "acme2"}))
            .await,
        StatusCode::OK,
    );
    refused(
        &admin.get("/admin/providers/acme").await,
        StatusCode::NOT_FOUND,
        "name",
        "No provider is named `acme`",
    );

    let version = store.registry_version().await.unwrap();
    let deleted = ok(
        &admin.delete("/admin/providers/acme2").await,
        StatusCode::OK,
    );
    assert!(store.registry_version().await.unwrap() > version);
    assert_eq!(deleted["deleted"], true);
    refused(
        &admin.get("/admin/providers/acme2").await,
        StatusCode::NOT_FOUND,
        "name",
        "acme2",
    );
    refused(
        &admin.delete("/admin/providers/acme2").await,
        StatusCode::NOT_FOUND,
        "name",
        "acme2",
    );
    // A deleted provider's name may be taken again.
    ok(
        &admin.post("/admin/providers", mock_provider("acme2")).await,
        StatusCode::CREATED,
    );

    let e = admin
        .call(Method::PUT, "/admin/providers/acme2", Some(&json!({})))
        .await;
    assert_eq!(e.status, StatusCode::METHOD_NOT_ALLOWED, "{}", e.text());
    refused(
        &admin.get("/admin/nothing").await,
        StatusCode::NOT_FOUND,
        "",
        "Unknown admin URL",
    );
    gw.running.stop().await;
}

async fn provider_input_is_checked_field_by_field(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    ok(
        &admin.post("/admin/providers", mock_provider("taken")).await,
        StatusCode::CREATED,
    );
    let cases = [
        (
            json!({"name": "taken", "api": "mock"}),
            StatusCode::CONFLICT,
            "name",
            "A provider named `taken` already exists",
        ),
        (
            json!({"name": "a/b", "api": "mock"}),
            StatusCode::BAD_REQUEST,
            "name",
            "letters, digits",
        ),
        (
            json!({"name": "n"}),
            StatusCode::BAD_REQUEST,
            "api",
            "missing field `api`",
        ),
        (
            json!({"name": "n", "api": "telepathy"}),
            StatusCode::BAD_REQUEST,
            "api",
            "unknown variant `telepathy`",
        ),
        (
            json!({"name": "n", "api": "mock", "max_parallel_requests": "many"}),
            StatusCode::BAD_REQUEST,
            "max_parallel_requests",
            "invalid type",
        ),
        (
            json!({"name": "n", "api": "mock", "requests_per_minute": -1}),
            StatusCode::BAD_REQUEST,
            "requests_per_minute",
            "invalid value",
        ),
        (
            json!({"name": "n", "api": "mock", "colour": "red"}),
            StatusCode::BAD_REQUEST,
            "colour",
            "unknown field `colour`",
        ),
        (
            json!({"name": "n", "api": "mock", "timeouts": {"connect_ms": "soon"}}),
            StatusCode::BAD_REQUEST,
            "timeouts.connect_ms",
            "invalid type",
        ),
        (
            json!({"name": "n", "api": "openai", "base_url": "ftp://x"}),
            StatusCode::BAD_REQUEST,
            "base_url",
            "not an http(s) URL",
        ),
        (
            json!({"name": "n", "api": "azure", "base_url": "https://x.openai.azure.com"}),
            StatusCode::BAD_REQUEST,
            "api_version",
            "api_version",
        ),
        (
            json!({"name": "n", "api": "mock", "api_key": "env:"}),
            StatusCode::BAD_REQUEST,
            "api_key",
            "variable name",
        ),
        (
            json!({"name": "n", "api": "mock", "api_key": "[sealed]"}),
            StatusCode::BAD_REQUEST,
            "api_key",
            "the key itself",
        ),
    ];
    for (body, status, param, fragment) in cases {
        refused(
            &admin.post("/admin/providers", body).await,
            status,
            param,
            fragment,
        );
    }
    let url = format!("{}/admin/providers", gw.base);
    let auth = format!("Bearer {MASTER}");
    let headers = [("authorization", auth.as_str())];
    for (body, fragment) in [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ("", "must be a JSON object"),
    ] {
        let reply = request(Method::POST, &url, body.to_owned(), &headers).await;
        refused(&reply, StatusCode::BAD_REQUEST, "", fragment);
    }
    let huge = format!(
        "{{\"name\": \"n\", \"api\": \"mock\", \"description\": \"{}\"}}",
        "x".repeat(1_100_000)
    );
    let reply = request(Method::POST, &url, huge, &headers).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text()
    );
    gw.running.stop().await;
}

async fn provider_keys_are_sealed_never_shown_and_used(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (mock, addr) = mock_upstream().await;
    let (gw, admin) = gateway(&db, true).await;
    let created = ok(&admin.post("/admin/providers", json!({
        "name": "up", "api": "openai", "base_url": format!("http://{addr}/v1"), "api_key": SECRET
    })).await, StatusCode::CREATED);
    assert_eq!(created["api_key"], "[sealed]");
    ok(
        &admin
            .post("/admin/models", model("sealed-model", "up", "m-1"))
            .await,
        StatusCode::CREATED,
    );
    // The registry opens the sealed key and sends it upstream.
    ok(&chat(&gw.base, "sealed-model").await, StatusCode::OK);
    let sent = mock.received.lock().unwrap()[0].headers["authorization"].clone();
    assert_eq!(sent, format!("Bearer {SECRET}").as_str());
    // "[sealed]" sent back keeps the key; a new one replaces it, sealed again.
    let kept = ok(
        &admin
            .patch("/admin/providers/up", json!({"api_key": "[sealed]"}))
            .await,
        StatusCode::OK,
    );
    assert_eq!(kept["api_key"], "[sealed]");
    ok(&chat(&gw.base, "sealed-model").await, StatusCode::OK);
    let store = db.connect().await;
    let stored = store
        .fetch_all(
            "SELECT api_key_ref FROM llm_providers WHERE name = 'up'",
            &[],
        )
        .await
        .unwrap()[0]
        .text("api_key_ref")
        .unwrap();
    assert!(
        stored.starts_with("sealed:v1:") && !stored.contains(SECRET),
        "{stored}"
    );
    let cleared = ok(
        &admin
            .patch("/admin/providers/up", json!({"api_key": null}))
            .await,
        StatusCode::OK,
    );
    assert_eq!(cleared["api_key"], Value::Null);
    gw.running.stop().await;
}

async fn plaintext_keys_need_a_master_key(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let (key, prefix, hash) = tollgate::auth::generate_key();
    let new = tollgate::store::NewApiKey {
        name: "ops".into(),
        role: "admin".into(),
        ..Default::default()
    };
    store.insert_api_key(&new, &hash, &prefix).await.unwrap();
    let (gw, _) = gateway(&db, false).await;
    let admin = Admin::new(&gw.base, &key);
    let body = json!({"name": "p", "api": "mock", "api_key": SECRET});
    let reply = admin.post("/admin/providers", body).await;
    refused(
        &reply,
        StatusCode::BAD_REQUEST,
        "api_key",
        "No master key is configured",
    );
    assert!(!reply.text().contains(SECRET));
    let body = json!({"name": "p", "api": "mock", "api_key": "env:P_KEY"});
    ok(
        &admin.post("/admin/providers", body).await,
        StatusCode::CREATED,
    );
    gw.running.stop().await;
}

async fn models_follow_the_seeds_rules(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    ok(
        &admin.post("/admin/providers", mock_provider("p1")).await,
        StatusCode::CREATED,
    );
    ok(
        &admin.post("/admin/providers", mock_provider("p2")).await,
        StatusCode::CREATED,
    );
    let mut first = model("m", "p1", "id-1");
    first["is_default"] = json!(true);
    let m1 = ok(
        &admin.post("/admin/models", first).await,
        StatusCode::CREATED,
    );
    assert_eq!(m1["cost_input_per_million"], "0.15");
    assert_eq!(m1["cost_output_per_million"], "0.6");
    assert_eq!(m1["provider"], "p1");
    assert_eq!(m1["status"], "active");
    let id1 = m1["id"].as_str().unwrap();
    let m2 = ok(
        &admin.post("/admin/models", model("m", "p1", "id-2")).await,
        StatusCode::CREATED,
    );
    let id2 = m2["id"].as_str().unwrap();
    // The same model_id at another provider is another model.
    ok(
        &admin.post("/admin/models", model("m", "p2", "id-1")).await,
        StatusCode::CREATED,
    );

    let mut negative = model("n", "p1", "id-3");
    negative["cost_input_per_million"] = json!("-0.01");
    refused(
        &admin.post("/admin/models", negative).await,
        StatusCode::BAD_REQUEST,
        "cost_input_per_million",
        "must be >= 0",
    );
    let mut negative = model("n", "p1", "id-3");
    negative["cost_cache_read_per_million"] = json!(-1);
    refused(
        &admin.post("/admin/models", negative).await,
        StatusCode::BAD_REQUEST,
        "cost_cache_read_per_million",
        "must be >= 0",
    );
    refused(
        &admin.post("/admin/models", model("n", "nobody", "x")).await,
        StatusCode::NOT_FOUND,
        "provider",
        "No provider is named `nobody`",
    );
    refused(
        &admin.post("/admin/models", model("n", "p1", "id-1")).await,
        StatusCode::CONFLICT,
        "model_id",
        "already has a model with model_id `id-1`",
    );
    let mut second_default = model("n", "p1", "id-4");
    second_default["is_default"] = json!(true);
    refused(
        &admin.post("/admin/models", second_default).await,
        StatusCode::CONFLICT,
        "is_default",
        "already has a default model",
    );
    let path2 = format!("/admin/models/{id2}");
    refused(
        &admin.patch(&path2, json!({"is_default": true})).await,
        StatusCode::CONFLICT,
        "is_default",
        "at most one model per provider",
    );
    refused(
        &admin.patch(&path2, json!({"model_id": "renamed"})).await,
        StatusCode::BAD_REQUEST,
        "model_id",
        "cannot be changed after creation",
    );
    refused(
        &admin.patch(&path2, json!({"provider": "p2"})).await,
        StatusCode::BAD_REQUEST,
        "provider",
        "cannot be changed after creation",
    );
    refused(
        &admin
            .patch(&path2, json!({"cost_output_per_million": "-5"}))
            .await,
        StatusCode::BAD_REQUEST,
        "cost_output_per_million",
        "must be >= 0",
    );
    refused(
        &admin.patch(&path2, json!({"context_window": 0})).await,
        StatusCode::BAD_REQUEST,
        "context_window",
        "nonzero",
    );
    refused(
        &admin.patch(&path2, json!({"status": "retired"})).await,
        StatusCode::BAD_REQUEST,
        "status",
        "unknown variant",
    );
    refused(
        &admin.get("/admin/models/not-an-id").await,
        StatusCode::NOT_FOUND,
        "id",
        "No model",
    );

    // The default moves once the old one lets go of it.
    ok(
        &admin
            .patch(
                &format!("/admin/models/{id1}"),
                json!({"is_default": false}),
            )
            .await,
        StatusCode::OK,
    );
    let moved = ok(
        &admin
            .patch(
                &path2,
                json!({"is_default": true, "cost_input_per_million": "2.5", "model_id": "id-2"}),
            )
            .await,
        StatusCode::OK,
    );
    assert_eq!(
        (
            moved["is_default"].clone(),
            moved["cost_input_per_million"].clone()
        ),
        (json!(true), json!("2.5"))
    );

    // Deleting the provider soft-deletes its models.
    ok(&admin.delete("/admin/providers/p1").await, StatusCode::OK);
    let gone = ok(&admin.get(&path2).await, StatusCode::OK);
    assert_eq!(
        (gone["status"].clone(), gone["is_default"].clone()),
        (json!("inactive"), json!(false))
    );
    assert!(gone["deleted_at"].is_string(), "{gone}");
    refused(
        &admin.patch(&path2, json!({"display_name": "x"})).await,
        StatusCode::CONFLICT,
        "id",
        "is deleted",
    );
    refused(
        &admin.post("/admin/models", model("n", "p1", "id-9")).await,
        StatusCode::NOT_FOUND,
        "provider",
        "p1",
    );
    let live = ok(&admin.get("/admin/models").await, StatusCode::OK);
    assert_eq!(live["data"].as_array().unwrap().len(), 2, "{live}"); // p2's model and config's echo
    gw.running.stop().await;
}

async fn a_model_created_here_is_served_at_once_and_a_deleted_one_keeps_its_usage(
    backend: Backend,
) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    ok(
        &admin
            .post("/admin/providers", mock_provider("api-mock"))
            .await,
        StatusCode::CREATED,
    );
    refused(
        &chat(&gw.base, "fresh").await,
        StatusCode::NOT_FOUND,
        "model",
        "fresh",
    );
    let created = ok(
        &admin
            .post("/admin/models", model("fresh", "api-mock", "fresh-1"))
            .await,
        StatusCode::CREATED,
    );
    let id = created["id"].as_str().unwrap().to_owned();
    ok(&chat(&gw.base, "fresh").await, StatusCode::OK);
    assert!(listed_models(&gw.base).await.contains(&"fresh".to_owned()));

    // Filters.
    let by_provider = ok(
        &admin.get("/admin/models?provider=api-mock").await,
        StatusCode::OK,
    );
    assert_eq!(by_provider["data"][0]["id"], id.as_str());
    assert_eq!(by_provider["data"].as_array().unwrap().len(), 1);
    let by_name = ok(
        &admin.get("/admin/models?name=echo&status=active").await,
        StatusCode::OK,
    );
    assert_eq!(by_name["data"][0]["model_id"], "echo-1");
    refused(
        &admin.get("/admin/models?status=gone").await,
        StatusCode::BAD_REQUEST,
        "status",
        "active, inactive or deprecated",
    );
    refused(
        &admin.get("/admin/models?colour=red").await,
        StatusCode::BAD_REQUEST,
        "colour",
        "Unknown query parameter",
    );

    // Inactive: not served, still listed by the admin API.
    ok(
        &admin
            .patch(
                &format!("/admin/models/{id}"),
                json!({"status": "inactive"}),
            )
            .await,
        StatusCode::OK,
    );
    assert!(!listed_models(&gw.base).await.contains(&"fresh".to_owned()));
    ok(
        &admin
            .patch(&format!("/admin/models/{id}"), json!({"status": "active"}))
            .await,
        StatusCode::OK,
    );
    ok(&chat(&gw.base, "fresh").await, StatusCode::OK);

    let deleted = ok(
        &admin.delete(&format!("/admin/models/{id}")).await,
        StatusCode::OK,
    );
    assert_eq!(
        deleted,
        json!({"object": "model", "id": id, "deleted": true})
    );
    assert!(!listed_models(&gw.base).await.contains(&"fresh".to_owned()));
    refused(
        &chat(&gw.base, "fresh").await,
        StatusCode::NOT_FOUND,
        "model",
        "fresh",
    );
    let live = ok(
        &admin.get("/admin/models?provider=api-mock").await,
        StatusCode::OK,
    );
    assert_eq!(live["data"], json!([]));
    let all = ok(
        &admin
            .get("/admin/models?provider=api-mock&include_deleted=true")
            .await,
        StatusCode::OK,
    );
    assert_eq!(all["data"][0]["id"], id.as_str());
    assert_eq!(all["data"][0]["status"], "inactive");
    refused(
        &admin.delete(&format!("/admin/models/{id}")).await,
        StatusCode::CONFLICT,
        "id",
        "is deleted",
    );
    gw.running.stop().await;

    // Its usage rows are still there, still pointing at it.
    let store = db.connect().await;
    let rows = store
        .fetch_all(
            "SELECT COUNT(*) AS n FROM llm_usage_logs WHERE llm_model_id = $1::uuid",
            &[id.as_str().into()],
        )
        .await
        .unwrap();
    assert_eq!(rows[0].int("n").unwrap(), 2);
}

async fn rows_config_toml_manages_are_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    let local = ok(&admin.get("/admin/providers/local").await, StatusCode::OK);
    assert_eq!(local["managed_by"], "config");
    let reply = admin
        .patch("/admin/providers/local", json!({"display_name": "x"}))
        .await;
    refused(
        &reply,
        StatusCode::CONFLICT,
        "managed_by",
        "managed by config.toml; edit the file",
    );
    let reply = admin.delete("/admin/providers/local").await;
    refused(
        &reply,
        StatusCode::CONFLICT,
        "managed_by",
        "managed by config.toml; edit the file",
    );
    let echo = ok(&admin.get("/admin/models?name=echo").await, StatusCode::OK);
    let path = format!("/admin/models/{}", echo["data"][0]["id"].as_str().unwrap());
    refused(
        &admin.patch(&path, json!({"weight": 2})).await,
        StatusCode::CONFLICT,
        "managed_by",
        "managed by config.toml",
    );
    refused(
        &admin.delete(&path).await,
        StatusCode::CONFLICT,
        "managed_by",
        "managed by config.toml",
    );
    let route = ok(
        &admin.get("/admin/settings/route:smart").await,
        StatusCode::OK,
    );
    assert_eq!(route["managed_by"], "config");
    refused(
        &admin.put("/admin/settings/route:smart", json!({})).await,
        StatusCode::CONFLICT,
        "managed_by",
        "managed by config.toml",
    );
    refused(
        &admin.delete("/admin/settings/route:smart").await,
        StatusCode::CONFLICT,
        "managed_by",
        "managed by config.toml",
    );
    ok(&chat(&gw.base, "smart").await, StatusCode::OK);
    // A model of the API's may live at a provider of the file's.
    ok(
        &admin
            .post("/admin/models", model("extra", "local", "extra-1"))
            .await,
        StatusCode::CREATED,
    );
    ok(&chat(&gw.base, "extra").await, StatusCode::OK);
    ok(&chat(&gw.base, "echo").await, StatusCode::OK);
    gw.running.stop().await;
}

async fn settings_are_put_read_and_deleted(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    let path = "/admin/settings/infra_model_summarization";
    refused(
        &admin.get(path).await,
        StatusCode::NOT_FOUND,
        "key",
        "No setting",
    );
    let created = ok(
        &admin
            .put(path, json!({"provider": "local", "model_id": "echo-1"}))
            .await,
        StatusCode::CREATED,
    );
    assert_eq!(created["value"]["model_id"], "echo-1");
    // A setting naming a deployment is a model name at once.
    ok(
        &chat(&gw.base, "infra_model_summarization").await,
        StatusCode::OK,
    );
    let replaced = ok(
        &admin
            .put(path, json!({"provider": "local", "model_id": "other"}))
            .await,
        StatusCode::OK,
    );
    assert_eq!(replaced["value"]["model_id"], "other");
    ok(
        &admin
            .put("/admin/settings/plain", json!([1, "two", {"three": 3}]))
            .await,
        StatusCode::CREATED,
    );
    let read = ok(&admin.get("/admin/settings/plain").await, StatusCode::OK);
    assert_eq!(read["value"], json!([1, "two", {"three": 3}]));
    let list = ok(&admin.get("/admin/settings").await, StatusCode::OK);
    let keys: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["infra_model_summarization", "plain", "route:smart"]);
    refused(
        &admin.put("/admin/settings/bad%20key", json!(1)).await,
        StatusCode::BAD_REQUEST,
        "key",
        "letters, digits",
    );
    refused(
        &admin.call(Method::PUT, path, None).await,
        StatusCode::BAD_REQUEST,
        "",
        "DELETE it",
    );
    ok(&admin.delete(path).await, StatusCode::OK);
    refused(
        &admin.get(path).await,
        StatusCode::NOT_FOUND,
        "key",
        "No setting",
    );
    refused(
        &chat(&gw.base, "infra_model_summarization").await,
        StatusCode::NOT_FOUND,
        "model",
        "infra_model",
    );
    gw.running.stop().await;
}

async fn the_audit_log_records_every_change_without_secrets(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    let mut seen = String::new();
    let body = json!({"name": "s", "api": "mock", "api_key": SECRET});
    seen += &ok(
        &admin.post("/admin/providers", body).await,
        StatusCode::CREATED,
    )
    .to_string();
    let m = ok(
        &admin.post("/admin/models", model("sm", "s", "sm-1")).await,
        StatusCode::CREATED,
    );
    seen += &m.to_string();
    seen += &admin
        .patch(
            "/admin/providers/s",
            json!({"api_key": format!("{SECRET}-2")}),
        )
        .await
        .text();
    seen += &admin.put("/admin/settings/k", json!(1)).await.text();
    seen += &admin.delete("/admin/providers/s").await.text();
    seen += &admin.get("/admin/providers").await.text();

    let log = ok(&admin.get("/admin/audit").await, StatusCode::OK);
    seen += &log.to_string();
    let entries = log["data"].as_array().unwrap();
    let summary: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["resource"].as_str().unwrap(),
            )
        })
        .collect();
    // Newest first: the provider's deletion with its model's, the setting, the key change, ...
    assert_eq!(
        summary,
        [
            ("delete", "model"),
            ("delete", "provider"),
            ("create", "setting"),
            ("update", "provider"),
            ("create", "model"),
            ("create", "provider")
        ]
    );
    let create = &entries[5];
    assert_eq!(create["actor"], "master key");
    assert_eq!(create["resource_id"], "s");
    assert_eq!(create["before"], Value::Null);
    assert_eq!(create["after"]["api_key"], "[sealed]");
    assert!(create["at"].is_string() && create["id"].is_string());
    let deletion = &entries[1];
    assert_eq!(deletion["before"]["deleted_at"], Value::Null);
    assert!(deletion["after"]["deleted_at"].is_string());
    assert_eq!(entries[0]["resource_id"], m["id"]);

    let only = ok(
        &admin.get("/admin/audit?resource=setting").await,
        StatusCode::OK,
    );
    assert_eq!(only["data"].as_array().unwrap().len(), 1);
    let nobody = ok(
        &admin.get("/admin/audit?actor=someone%20else").await,
        StatusCode::OK,
    );
    assert_eq!(nobody["data"], json!([]));
    let by_row = ok(
        &admin
            .get(&format!(
                "/admin/audit?resource_id={}",
                m["id"].as_str().unwrap()
            ))
            .await,
        StatusCode::OK,
    );
    assert_eq!(by_row["data"].as_array().unwrap().len(), 2);
    assert!(!seen.contains(SECRET), "a provider key was shown");
    gw.running.stop().await;

    let store = db.connect().await;
    let raw = store
        .fetch_all(
            "SELECT before::text AS b, after::text AS a FROM audit_log",
            &[],
        )
        .await
        .unwrap();
    for r in raw {
        let text = format!(
            "{:?}{:?}",
            r.opt_text("b").unwrap(),
            r.opt_text("a").unwrap()
        );
        assert!(
            !text.contains(SECRET) && !text.contains("sealed:v1"),
            "{text}"
        );
    }
}

/// Follows `next` from the first page to the last, collecting `field` of each row.
async fn all_pages(admin: &Admin, path: &str, limit: usize, field: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut url = format!("{path}?limit={limit}");
    loop {
        let page = ok(&admin.get(&url).await, StatusCode::OK);
        assert_eq!(page["object"], "list");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit);
        seen.extend(data.iter().map(|r| r[field].as_str().unwrap().to_owned()));
        if page["has_more"] == json!(false) {
            assert_eq!(page["next"], Value::Null);
            return seen;
        }
        url = format!(
            "{path}?limit={limit}&after={}",
            page["next"].as_str().unwrap()
        );
    }
}

async fn lists_are_paginated_with_cursors(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    for i in 0..7 {
        ok(
            &admin
                .post("/admin/providers", mock_provider(&format!("p{i}")))
                .await,
            StatusCode::CREATED,
        );
        ok(
            &admin
                .post("/admin/models", model("m", &format!("p{i}"), "x"))
                .await,
            StatusCode::CREATED,
        );
    }
    let names = all_pages(&admin, "/admin/providers", 3, "name").await;
    assert_eq!(names, ["local", "p0", "p1", "p2", "p3", "p4", "p5", "p6"]);
    let models = all_pages(&admin, "/admin/models", 2, "id").await;
    assert_eq!(models.len(), 8);
    let mut sorted = models.clone();
    sorted.sort();
    assert_eq!(models, sorted, "models come in creation (id) order");
    let audit = all_pages(&admin, "/admin/audit", 4, "id").await;
    assert_eq!(audit.len(), 14);
    assert!(audit.windows(2).all(|w| w[0] > w[1]), "newest first");
    let first = ok(&admin.get("/admin/providers").await, StatusCode::OK);
    assert_eq!(
        first["data"].as_array().unwrap().len(),
        8,
        "the default limit is 50"
    );
    refused(
        &admin.get("/admin/providers?limit=501").await,
        StatusCode::BAD_REQUEST,
        "limit",
        "from 1 to 500",
    );
    refused(
        &admin.get("/admin/providers?limit=0").await,
        StatusCode::BAD_REQUEST,
        "limit",
        "from 1 to 500",
    );
    refused(
        &admin.get("/admin/models?after=bogus").await,
        StatusCode::BAD_REQUEST,
        "after",
        "next",
    );
    gw.running.stop().await;
}

/// Racing requests meet the rule in the database, not a check that both passed.
async fn concurrent_requests_meet_the_same_rules(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    let racers = (0..6).map(|_| admin.post("/admin/providers", mock_provider("race")));
    let statuses: Vec<StatusCode> = futures_util::future::join_all(racers)
        .await
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        5,
        "{statuses:?}"
    );
    let defaults = (0..6).map(|i| {
        let mut m = model("d", "race", &format!("d-{i}"));
        m["is_default"] = json!(true);
        admin.post("/admin/models", m)
    });
    let replies = futures_util::future::join_all(defaults).await;
    let created = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    assert_eq!(
        created,
        1,
        "{:?}",
        replies.iter().map(Reply::text).collect::<Vec<_>>()
    );
    for r in replies.iter().filter(|r| r.status != StatusCode::CREATED) {
        refused(
            r,
            StatusCode::CONFLICT,
            "is_default",
            "already has a default model",
        );
    }
    gw.running.stop().await;
}

async fn user_callers_are_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let (key, prefix, hash) = tollgate::auth::generate_key();
    let new = tollgate::store::NewApiKey {
        name: "app".into(),
        role: "user".into(),
        ..Default::default()
    };
    store.insert_api_key(&new, &hash, &prefix).await.unwrap();
    let (gw, _) = gateway(&db, true).await;
    let user = Admin::new(&gw.base, &key);
    let reply = user.post("/admin/providers", mock_provider("nope")).await;
    refused(&reply, StatusCode::FORBIDDEN, "", "role is `user`");
    refused(
        &user.get("/admin/models").await,
        StatusCode::FORBIDDEN,
        "",
        "role is `user`",
    );
    let reply = get(
        &format!("{}/v1/models", gw.base),
        &[("authorization", &format!("Bearer {key}"))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    gw.running.stop().await;
}

async fn usage_is_reported(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    ok(&chat(&gw.base, "echo").await, StatusCode::OK);
    // The usage writer batches rows off the request path: wait for this one.
    let mut report = Value::Null;
    for _ in 0..50 {
        report = ok(
            &admin.get("/admin/usage?by=model&period=day").await,
            StatusCode::OK,
        );
        if report["total"]["requests"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(report["object"], "usage_report");
    assert_eq!(report["rows"][0]["group"], "echo", "{report}");
    assert_eq!(report["rows"][0]["requests"], 1);
    assert!(report["rows"][0]["bucket"].is_string());
    refused(
        &admin.get("/admin/usage?period=week").await,
        StatusCode::BAD_REQUEST,
        "period",
        "week",
    );
    refused(
        &admin.get("/admin/usage?colour=red").await,
        StatusCode::BAD_REQUEST,
        "colour",
        "",
    );
    gw.running.stop().await;
}

async fn projects_and_keys_are_managed_here(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    let alpha = json!({"name": "alpha", "budget_usd": "12.5", "budget_period": "monthly"});
    let p = ok(
        &admin.post("/admin/projects", alpha.clone()).await,
        StatusCode::CREATED,
    );
    assert_eq!(
        (p["budget_usd"].clone(), p["budget_period"].clone()),
        (json!("12.5"), json!("monthly"))
    );
    refused(
        &admin.post("/admin/projects", alpha).await,
        StatusCode::CONFLICT,
        "name",
        "A project named `alpha` already exists",
    );
    refused(
        &admin
            .post("/admin/projects", json!({"name": "b", "budget_usd": -1}))
            .await,
        StatusCode::BAD_REQUEST,
        "budget_usd",
        "must be >= 0",
    );
    refused(
        &admin
            .post(
                "/admin/projects",
                json!({"name": "b", "budget_period": "weekly"}),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "budget_period",
        "not total or monthly",
    );
    let p = ok(
        &admin
            .patch("/admin/projects/alpha", json!({"budget_usd": null}))
            .await,
        StatusCode::OK,
    );
    assert_eq!(
        (p["budget_usd"].clone(), p["budget_period"].clone()),
        (Value::Null, json!("monthly"))
    );
    ok(
        &admin.post("/admin/projects", json!({"name": "beta"})).await,
        StatusCode::CREATED,
    );
    assert_eq!(
        all_pages(&admin, "/admin/projects", 1, "name").await,
        ["alpha", "beta"]
    );
    let e = admin.delete("/admin/projects/alpha").await;
    assert_eq!(e.status, StatusCode::METHOD_NOT_ALLOWED, "{}", e.text());

    let body = json!({"name": "app", "project": "alpha", "allowed_models": ["echo"], "rpm": 100, "expires_at": "2999-01-01T00:00:00Z"});
    let created = ok(&admin.post("/admin/keys", body).await, StatusCode::CREATED);
    let (key, id) = (
        created["key"].as_str().unwrap().to_owned(),
        created["id"].as_str().unwrap().to_owned(),
    );
    assert!(key.starts_with(created["key_prefix"].as_str().unwrap()) && key.starts_with("tg-"));
    assert_eq!(
        (created["project"].clone(), created["role"].clone()),
        (json!("alpha"), json!("user"))
    );
    assert_eq!(created["allowed_models"], json!(["echo"]));
    assert_eq!(created["expires_at"], "2999-01-01T00:00:00.000Z");
    let shown = ok(
        &admin.get(&format!("/admin/keys/{id}")).await,
        StatusCode::OK,
    );
    assert!(
        shown.get("key").is_none() && !shown.to_string().contains(&key),
        "{shown}"
    );
    let user = Admin::new(&gw.base, &key);
    ok(
        &user
            .post(
                "/v1/chat/completions",
                json!({"model": "echo", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await,
        StatusCode::OK,
    );

    refused(
        &admin
            .post("/admin/keys", json!({"name": "k", "project": "nope"}))
            .await,
        StatusCode::NOT_FOUND,
        "project",
        "No project is named `nope`",
    );
    refused(
        &admin
            .post("/admin/keys", json!({"name": "k", "role": "root"}))
            .await,
        StatusCode::BAD_REQUEST,
        "role",
        "unknown variant",
    );
    refused(
        &admin
            .post("/admin/keys", json!({"name": "k", "rpm": -1}))
            .await,
        StatusCode::BAD_REQUEST,
        "rpm",
        "invalid value",
    );
    refused(
        &admin
            .post("/admin/keys", json!({"name": "k", "budget_usd": "-0.5"}))
            .await,
        StatusCode::BAD_REQUEST,
        "budget_usd",
        "must be >= 0",
    );
    refused(
        &admin
            .post("/admin/keys", json!({"name": "k", "expires_at": "soon"}))
            .await,
        StatusCode::BAD_REQUEST,
        "expires_at",
        "",
    );
    refused(
        &admin
            .patch(&format!("/admin/keys/{id}"), json!({"key_prefix": "tg-x"}))
            .await,
        StatusCode::BAD_REQUEST,
        "key_prefix",
        "read-only",
    );

    let admin_key = ok(
        &admin
            .post("/admin/keys", json!({"name": "ops", "role": "admin"}))
            .await,
        StatusCode::CREATED,
    );
    let ops = Admin::new(&gw.base, admin_key["key"].as_str().unwrap());
    let changed = ok(
        &ops.patch(
            &format!("/admin/keys/{id}"),
            json!({"project": "beta", "budget_usd": "3"}),
        )
        .await,
        StatusCode::OK,
    );
    assert_eq!(
        (changed["project"].clone(), changed["budget_usd"].clone()),
        (json!("beta"), json!("3"))
    );
    let in_beta = ok(&admin.get("/admin/keys?project=beta").await, StatusCode::OK);
    assert_eq!(in_beta["data"].as_array().unwrap().len(), 1);

    let revoked = ok(
        &admin.delete(&format!("/admin/keys/{id}")).await,
        StatusCode::OK,
    );
    assert_eq!(revoked["revoked"], true);
    refused(
        &admin.delete(&format!("/admin/keys/{id}")).await,
        StatusCode::CONFLICT,
        "id",
        "is revoked",
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await; // the key cache's TTL
    let r = user
        .post(
            "/v1/chat/completions",
            json!({"model": "echo", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());

    let log = ok(
        &admin.get("/admin/audit?resource=key").await,
        StatusCode::OK,
    );
    let actions: Vec<&str> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["revoke", "update", "create", "create"]);
    assert!(
        log["data"][1]["actor"]
            .as_str()
            .unwrap()
            .starts_with("key ops"),
        "{log}"
    );
    assert!(
        !log.to_string().contains(&key),
        "a key's plaintext is in the audit log"
    );
    gw.running.stop().await;
}
