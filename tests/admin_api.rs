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

    /// POST that must answer 201; its JSON.
    async fn created(&self, path: &str, body: Value) -> Value {
        ok(&self.post(path, body).await, StatusCode::CREATED)
    }
    /// GET that must answer 200; its JSON.
    async fn read(&self, path: &str) -> Value {
        ok(&self.get(path).await, StatusCode::OK)
    }
    /// PATCH that must answer 200; its JSON.
    async fn changed(&self, path: &str, body: Value) -> Value {
        ok(&self.patch(path, body).await, StatusCode::OK)
    }
    /// DELETE that must answer 200; its JSON.
    async fn deleted(&self, path: &str) -> Value {
        ok(&self.delete(path).await, StatusCode::OK)
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
    refused_at("", reply, status, param, fragment)
}

#[track_caller]
fn refused_at(what: &str, reply: &Reply, status: StatusCode, param: &str, fragment: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.text());
    let e = &reply.json()["error"];
    let param = match param {
        "" => Value::Null,
        p => json!(p),
    };
    assert_eq!(e["param"], param, "{what}: {}", reply.text());
    let message = e["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(fragment),
        "{what}: {fragment:?} not in {message:?}"
    );
    assert!(e["type"].is_string(), "{what}: {}", reply.text());
}

/// A request and the refusal it must get: method, path, body, status, `param`, message
/// fragment.
type Refusal<'a> = (Method, &'a str, Value, StatusCode, &'a str, &'a str);

async fn expect_refusals(admin: &Admin, cases: &[Refusal<'_>]) {
    for (method, path, body, status, param, fragment) in cases {
        let body = (!body.is_null()).then_some(body);
        let reply = admin.call(method.clone(), path, body).await;
        refused_at(
            &format!("{method} {path}"),
            &reply,
            *status,
            param,
            fragment,
        );
    }
}

#[track_caller]
fn ok(reply: &Reply, status: StatusCode) -> Value {
    assert_eq!(reply.status, status, "{}", reply.text());
    reply.json()
}

/// Asserts that `value` has each field of `expected` with its value.
#[track_caller]
fn has(value: &Value, expected: Value) {
    for (k, v) in expected.as_object().expect("expected fields") {
        assert_eq!(&value[k], v, "field {k} of {value}");
    }
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
    every_change_moves_the_registry_version,
    a_deleted_provider_frees_its_name_and_deletes_its_models,
    provider_input_is_checked_field_by_field,
    provider_keys_are_sealed_never_shown_and_used,
    plaintext_keys_need_a_master_key,
    model_input_is_checked_field_by_field,
    models_keep_one_default_and_their_identity,
    a_model_created_here_is_served_at_once,
    a_deleted_model_keeps_its_usage,
    models_are_listed_by_filter,
    rows_config_toml_manages_are_refused,
    settings_are_put_read_and_deleted,
    the_audit_log_records_every_change,
    secrets_are_in_no_answer_nor_audit_row,
    lists_are_paginated_with_cursors,
    concurrent_requests_meet_the_same_rules,
    user_callers_are_refused,
    usage_is_reported,
    projects_are_created_read_and_changed,
    keys_are_created_and_shown_once,
    keys_are_changed_and_revoked,
);

async fn providers_are_created_read_changed_and_deleted(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    let body = json!({"name": "acme", "api": "openai", "base_url": "http://127.0.0.1:9/v1",
        "api_key": "env:ACME_KEY", "max_parallel_requests": 3, "timeouts": {"connect_ms": 500}});
    let created = admin.created("/admin/providers", body).await;
    assert_eq!(created["object"], "provider");
    has(
        &created,
        json!({"api_key": "env:ACME_KEY", "managed_by": "api", "display_name": "acme"}),
    );
    has(
        &created,
        json!({"max_parallel_requests": 3, "requests_per_minute": 60}),
    );
    has(&created["timeouts"], json!({"connect_ms": 500}));
    assert_eq!(admin.read("/admin/providers/acme").await, created);

    let patch = json!({"display_name": "Acme AI", "requests_per_minute": 120});
    let changed = admin.changed("/admin/providers/acme", patch).await;
    has(
        &changed,
        json!({"display_name": "Acme AI", "requests_per_minute": 120}),
    );
    // Fields not sent are kept, the key among them.
    has(
        &changed,
        json!({"api_key": "env:ACME_KEY", "max_parallel_requests": 3}),
    );
    // A GET's answer can be sent back as it is; a read-only field cannot be changed.
    admin.changed("/admin/providers/acme", changed).await;
    let reply = admin
        .patch("/admin/providers/acme", json!({"id": "x"}))
        .await;
    refused(&reply, StatusCode::BAD_REQUEST, "id", "read-only");

    admin
        .changed("/admin/providers/acme", json!({"name": "acme2"}))
        .await;
    let reply = admin.get("/admin/providers/acme").await;
    refused(
        &reply,
        StatusCode::NOT_FOUND,
        "name",
        "No provider is named `acme`",
    );
    let reply = admin
        .call(Method::PUT, "/admin/providers/acme2", Some(&json!({})))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "{}",
        reply.text()
    );
    refused(
        &admin.get("/admin/nothing").await,
        StatusCode::NOT_FOUND,
        "",
        "Unknown admin URL",
    );
    gw.running.stop().await;
}

/// Every change moves the registry version the other instances follow; the database's own
/// triggers move it, whoever writes (SQLite's made again after its table's rebuild).
async fn every_change_moves_the_registry_version(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    let store = db.connect().await;
    let version = store.registry_version().await.unwrap();
    admin
        .created("/admin/providers", mock_provider("acme"))
        .await;
    assert!(store.registry_version().await.unwrap() > version);
    let version = store.registry_version().await.unwrap();
    let by_hand = "UPDATE llm_providers SET description = 'd' WHERE name = 'acme'";
    store.execute(by_hand, &[]).await.unwrap();
    assert!(store.registry_version().await.unwrap() > version);
    let version = store.registry_version().await.unwrap();
    admin.deleted("/admin/providers/acme").await;
    assert!(store.registry_version().await.unwrap() > version);
    gw.running.stop().await;
}

async fn a_deleted_provider_frees_its_name_and_deletes_its_models(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    admin.created("/admin/providers", mock_provider("p1")).await;
    let mut m = model("m", "p1", "id-1");
    m["is_default"] = json!(true);
    let m = admin.created("/admin/models", m).await;
    let path = format!("/admin/models/{}", m["id"].as_str().unwrap());

    let store = db.connect().await;
    let version = store.registry_version().await.unwrap();
    let deleted = admin.deleted("/admin/providers/p1").await;
    has(
        &deleted,
        json!({"deleted": true, "deleted_models": [m["id"]]}),
    );
    assert!(store.registry_version().await.unwrap() > version);
    let gone = admin.read(&path).await;
    has(&gone, json!({"status": "inactive", "is_default": false}));
    assert!(gone["deleted_at"].is_string(), "{gone}");
    #[rustfmt::skip]
    let cases: &[Refusal] = &[
        (Method::GET, "/admin/providers/p1", Value::Null, StatusCode::NOT_FOUND, "name", "No provider is named `p1`"),
        (Method::DELETE, "/admin/providers/p1", Value::Null, StatusCode::NOT_FOUND, "name", "p1"),
        (Method::PATCH, &path, json!({"display_name": "x"}), StatusCode::CONFLICT, "id", "is deleted"),
        (Method::POST, "/admin/models", model("n", "p1", "id-9"), StatusCode::NOT_FOUND, "provider", "No provider is named `p1`"),
    ];
    expect_refusals(&admin, cases).await;
    // The name may be taken again, by a provider with models of its own.
    admin.created("/admin/providers", mock_provider("p1")).await;
    admin
        .created("/admin/models", model("m", "p1", "id-1"))
        .await;
    ok(&chat(&gw.base, "m").await, StatusCode::OK);
    gw.running.stop().await;
}

async fn provider_input_is_checked_field_by_field(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    admin
        .created("/admin/providers", mock_provider("taken"))
        .await;
    let post = |body: Value, status, param, fragment| {
        (
            Method::POST,
            "/admin/providers",
            body,
            status,
            param,
            fragment,
        )
    };
    use StatusCode as S;
    #[rustfmt::skip]
    let cases: &[Refusal] = &[
        post(json!({"name": "taken", "api": "mock"}), S::CONFLICT, "name", "A provider named `taken` already exists"),
        post(json!({"name": "a/b", "api": "mock"}), S::BAD_REQUEST, "name", "letters, digits"),
        post(json!({"name": "n"}), S::BAD_REQUEST, "api", "missing field `api`"),
        post(json!({"name": "n", "api": "telepathy"}), S::BAD_REQUEST, "api", "unknown variant `telepathy`"),
        post(json!({"name": "n", "api": "mock", "max_parallel_requests": "many"}), S::BAD_REQUEST, "max_parallel_requests", "invalid type"),
        post(json!({"name": "n", "api": "mock", "requests_per_minute": -1}), S::BAD_REQUEST, "requests_per_minute", "invalid value"),
        post(json!({"name": "n", "api": "mock", "colour": "red"}), S::BAD_REQUEST, "colour", "unknown field `colour`"),
        post(json!({"name": "n", "api": "mock", "timeouts": {"connect_ms": "soon"}}), S::BAD_REQUEST, "timeouts.connect_ms", "invalid type"),
        post(json!({"name": "n", "api": "openai", "base_url": "ftp://x"}), S::BAD_REQUEST, "base_url", "not an http(s) URL"),
        post(json!({"name": "n", "api": "azure", "base_url": "https://x.openai.azure.com"}), S::BAD_REQUEST, "api_version", "api_version"),
        post(json!({"name": "n", "api": "mock", "api_key": "env:"}), S::BAD_REQUEST, "api_key", "variable name"),
        post(json!({"name": "n", "api": "mock", "api_key": "[sealed]"}), S::BAD_REQUEST, "api_key", "the key itself"),
        post(json!([1, 2]), S::BAD_REQUEST, "", "must be a JSON object"),
        post(Value::Null, S::BAD_REQUEST, "", "must be a JSON object"),
    ];
    expect_refusals(&admin, cases).await;
    let url = format!("{}/admin/providers", gw.base);
    let auth = format!("Bearer {MASTER}");
    let headers = [("authorization", auth.as_str())];
    let reply = request(Method::POST, &url, "{not json", &headers).await;
    refused(&reply, StatusCode::BAD_REQUEST, "", "not valid JSON");
    let huge = json!({"name": "n", "api": "mock", "description": "x".repeat(1_100_000)});
    let reply = request(Method::POST, &url, huge.to_string(), &headers).await;
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
    let body = json!({"name": "up", "api": "openai", "base_url": format!("http://{addr}/v1"), "api_key": SECRET});
    let created = admin.created("/admin/providers", body).await;
    assert_eq!(created["api_key"], "[sealed]");
    admin
        .created("/admin/models", model("sealed-model", "up", "m-1"))
        .await;
    // The registry opens the sealed key and sends it upstream.
    ok(&chat(&gw.base, "sealed-model").await, StatusCode::OK);
    let sent = mock.received.lock().unwrap()[0].headers["authorization"].clone();
    assert_eq!(sent, format!("Bearer {SECRET}").as_str());
    // "[sealed]" sent back keeps the key.
    let kept = admin
        .patch("/admin/providers/up", json!({"api_key": "[sealed]"}))
        .await;
    assert_eq!(ok(&kept, StatusCode::OK)["api_key"], "[sealed]");
    ok(&chat(&gw.base, "sealed-model").await, StatusCode::OK);
    let store = db.connect().await;
    let rows = store.fetch_all(
        "SELECT api_key_ref FROM llm_providers WHERE name = 'up'",
        &[],
    );
    let stored = rows.await.unwrap()[0].text("api_key_ref").unwrap();
    assert!(
        stored.starts_with("sealed:v1:") && !stored.contains(SECRET),
        "{stored}"
    );
    let cleared = admin
        .patch("/admin/providers/up", json!({"api_key": null}))
        .await;
    assert_eq!(ok(&cleared, StatusCode::OK)["api_key"], Value::Null);
    gw.running.stop().await;
}

async fn plaintext_keys_need_a_master_key(backend: Backend) {
    let db = TestDb::new(backend).await;
    let key = stored_key(&db, "ops", "admin").await;
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
    admin.created("/admin/providers", body).await;
    gw.running.stop().await;
}

/// A gateway key written straight into the database (before the gateway starts).
async fn stored_key(db: &TestDb, name: &str, role: &str) -> String {
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let (key, prefix, hash) = tollgate::auth::generate_key();
    let new = tollgate::store::NewApiKey {
        name: name.into(),
        role: role.into(),
        ..Default::default()
    };
    store.insert_api_key(&new, &hash, &prefix).await.unwrap();
    key
}

async fn model_input_is_checked_field_by_field(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    admin.created("/admin/providers", mock_provider("p1")).await;
    let m = admin
        .created("/admin/models", model("m", "p1", "id-1"))
        .await;
    has(
        &m,
        json!({"cost_input_per_million": "0.15", "cost_output_per_million": "0.6"}),
    );
    has(
        &m,
        json!({"provider": "p1", "status": "active", "object": "model"}),
    );
    let path = format!("/admin/models/{}", m["id"].as_str().unwrap());
    let with = |field: &str, value: Value| {
        let mut m = model("n", "p1", "id-3");
        m[field] = value;
        m
    };
    use StatusCode as S;
    #[rustfmt::skip]
    let cases: &[Refusal] = &[
        (Method::POST, "/admin/models", with("cost_input_per_million", json!("-0.01")), S::BAD_REQUEST, "cost_input_per_million", "must be >= 0"),
        (Method::POST, "/admin/models", with("cost_cache_read_per_million", json!(-1)), S::BAD_REQUEST, "cost_cache_read_per_million", "must be >= 0"),
        (Method::POST, "/admin/models", with("cost_output_per_million", json!("cheap")), S::BAD_REQUEST, "cost_output_per_million", "not a decimal"),
        (Method::POST, "/admin/models", with("model_id", json!("")), S::BAD_REQUEST, "model_id", "1 to 256"),
        (Method::POST, "/admin/models", with("release_date", json!("soon")), S::BAD_REQUEST, "release_date", ""),
        (Method::POST, "/admin/models", model("n", "nobody", "x"), S::NOT_FOUND, "provider", "No provider is named `nobody`"),
        (Method::PATCH, &path, json!({"cost_output_per_million": "-5"}), S::BAD_REQUEST, "cost_output_per_million", "must be >= 0"),
        (Method::PATCH, &path, json!({"context_window": 0}), S::BAD_REQUEST, "context_window", "nonzero"),
        (Method::PATCH, &path, json!({"status": "retired"}), S::BAD_REQUEST, "status", "unknown variant"),
        (Method::PATCH, &path, json!({"provider_id": "x"}), S::BAD_REQUEST, "provider_id", "read-only"),
        (Method::GET, "/admin/models/not-an-id", Value::Null, S::NOT_FOUND, "id", "No model"),
    ];
    expect_refusals(&admin, cases).await;
    gw.running.stop().await;
}

async fn models_keep_one_default_and_their_identity(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    admin.created("/admin/providers", mock_provider("p1")).await;
    admin.created("/admin/providers", mock_provider("p2")).await;
    let mut first = model("m", "p1", "id-1");
    first["is_default"] = json!(true);
    let m1 = admin.created("/admin/models", first).await;
    let m2 = admin
        .created("/admin/models", model("m", "p1", "id-2"))
        .await;
    let (path1, path2) = (
        format!("/admin/models/{}", m1["id"].as_str().unwrap()),
        format!("/admin/models/{}", m2["id"].as_str().unwrap()),
    );
    // The same model_id at another provider is another model.
    admin
        .created("/admin/models", model("m", "p2", "id-1"))
        .await;
    let mut second_default = model("n", "p1", "id-4");
    second_default["is_default"] = json!(true);
    use StatusCode as S;
    #[rustfmt::skip]
    let cases: &[Refusal] = &[
        (Method::POST, "/admin/models", model("n", "p1", "id-1"), S::CONFLICT, "model_id", "already has a model with model_id `id-1`"),
        (Method::POST, "/admin/models", second_default, S::CONFLICT, "is_default", "already has a default model"),
        (Method::PATCH, &path2, json!({"is_default": true}), S::CONFLICT, "is_default", "at most one model per provider"),
        (Method::PATCH, &path2, json!({"model_id": "renamed"}), S::BAD_REQUEST, "model_id", "cannot be changed after creation"),
        (Method::PATCH, &path2, json!({"provider": "p2"}), S::BAD_REQUEST, "provider", "cannot be changed after creation"),
    ];
    expect_refusals(&admin, cases).await;
    // The default moves once the old one lets go of it; model_id sent unchanged is fine.
    admin.changed(&path1, json!({"is_default": false})).await;
    let patch = json!({"is_default": true, "cost_input_per_million": "2.5", "model_id": "id-2"});
    let moved = admin.changed(&path2, patch).await;
    has(
        &moved,
        json!({"is_default": true, "cost_input_per_million": "2.5"}),
    );
    gw.running.stop().await;
}

async fn a_model_created_here_is_served_at_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    admin
        .created("/admin/providers", mock_provider("api-mock"))
        .await;
    refused(
        &chat(&gw.base, "fresh").await,
        StatusCode::NOT_FOUND,
        "model",
        "fresh",
    );
    let created = admin
        .post("/admin/models", model("fresh", "api-mock", "fresh-1"))
        .await;
    let path = format!(
        "/admin/models/{}",
        ok(&created, StatusCode::CREATED)["id"].as_str().unwrap()
    );
    ok(&chat(&gw.base, "fresh").await, StatusCode::OK);
    ok(&chat(&gw.base, "api-mock/fresh-1").await, StatusCode::OK);
    assert!(listed_models(&gw.base).await.contains(&"fresh".to_owned()));
    // Inactive: not served, still listed by the admin API; active again: served again.
    admin.changed(&path, json!({"status": "inactive"})).await;
    assert!(!listed_models(&gw.base).await.contains(&"fresh".to_owned()));
    refused(
        &chat(&gw.base, "fresh").await,
        StatusCode::NOT_FOUND,
        "model",
        "fresh",
    );
    admin.changed(&path, json!({"status": "active"})).await;
    ok(&chat(&gw.base, "fresh").await, StatusCode::OK);
    gw.running.stop().await;
}

async fn a_deleted_model_keeps_its_usage(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    admin
        .created("/admin/providers", mock_provider("api-mock"))
        .await;
    let created = admin
        .post("/admin/models", model("fresh", "api-mock", "fresh-1"))
        .await;
    let id = ok(&created, StatusCode::CREATED)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(&chat(&gw.base, "fresh").await, StatusCode::OK);
    ok(&chat(&gw.base, "fresh").await, StatusCode::OK);
    let deleted = admin.deleted(&format!("/admin/models/{id}")).await;
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
    let live = admin.read("/admin/models?provider=api-mock").await;
    assert_eq!(live["data"], json!([]));
    let all = admin
        .get("/admin/models?provider=api-mock&include_deleted=true")
        .await;
    let all = ok(&all, StatusCode::OK);
    has(&all["data"][0], json!({"id": id, "status": "inactive"}));
    let again = admin.delete(&format!("/admin/models/{id}")).await;
    refused(&again, StatusCode::CONFLICT, "id", "is deleted");
    gw.running.stop().await;
    // Its usage rows are still there, still pointing at it.
    let store = db.connect().await;
    let count = "SELECT COUNT(*) AS n FROM llm_usage_logs WHERE llm_model_id = $1::uuid";
    let rows = store.fetch_all(count, &[id.as_str().into()]).await.unwrap();
    assert_eq!(rows[0].int("n").unwrap(), 2);
}

async fn models_are_listed_by_filter(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    admin.created("/admin/providers", mock_provider("p1")).await;
    let m = admin
        .created("/admin/models", model("m", "p1", "id-1"))
        .await;
    let by_provider = admin.read("/admin/models?provider=p1").await;
    assert_eq!(by_provider["data"], json!([m]));
    let by_name = admin.read("/admin/models?name=echo&status=active").await;
    assert_eq!(by_name["data"][0]["model_id"], "echo-1");
    let inactive = admin.read("/admin/models?status=inactive").await;
    assert_eq!(inactive["data"], json!([]));
    use StatusCode as S;
    #[rustfmt::skip]
    let cases: &[Refusal] = &[
        (Method::GET, "/admin/models?status=gone", Value::Null, S::BAD_REQUEST, "status", "active, inactive or deprecated"),
        (Method::GET, "/admin/models?colour=red", Value::Null, S::BAD_REQUEST, "colour", "Unknown query parameter"),
        (Method::GET, "/admin/models?include_deleted=yes", Value::Null, S::BAD_REQUEST, "include_deleted", "true or false"),
    ];
    expect_refusals(&admin, cases).await;
    gw.running.stop().await;
}

async fn rows_config_toml_manages_are_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    let local = admin.read("/admin/providers/local").await;
    assert_eq!(local["managed_by"], "config");
    let echo = admin.read("/admin/models?name=echo").await;
    let path = format!("/admin/models/{}", echo["data"][0]["id"].as_str().unwrap());
    let route = admin.read("/admin/settings/route:smart").await;
    assert_eq!(route["managed_by"], "config");
    let (c, f) = (
        StatusCode::CONFLICT,
        "managed by config.toml; edit the file",
    );
    #[rustfmt::skip]
    let cases: &[Refusal] = &[
        (Method::PATCH, "/admin/providers/local", json!({"display_name": "x"}), c, "managed_by", f),
        (Method::DELETE, "/admin/providers/local", Value::Null, c, "managed_by", f),
        (Method::PATCH, &path, json!({"weight": 2}), c, "managed_by", f),
        (Method::DELETE, &path, Value::Null, c, "managed_by", f),
        (Method::PUT, "/admin/settings/route:smart", json!({}), c, "managed_by", f),
        (Method::DELETE, "/admin/settings/route:smart", Value::Null, c, "managed_by", f),
    ];
    expect_refusals(&admin, cases).await;
    ok(&chat(&gw.base, "smart").await, StatusCode::OK);
    ok(&chat(&gw.base, "echo").await, StatusCode::OK);
    // A model of the API's may live at a provider of the file's.
    admin
        .created("/admin/models", model("extra", "local", "extra-1"))
        .await;
    ok(&chat(&gw.base, "extra").await, StatusCode::OK);
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
    let target = json!({"provider": "local", "model_id": "echo-1"});
    let created = ok(&admin.put(path, target).await, StatusCode::CREATED);
    has(
        &created,
        json!({"managed_by": "api", "value": {"provider": "local", "model_id": "echo-1"}}),
    );
    // A setting naming a deployment is a model name at once.
    ok(
        &chat(&gw.base, "infra_model_summarization").await,
        StatusCode::OK,
    );
    let other = json!({"provider": "local", "model_id": "other"});
    let replaced = ok(&admin.put(path, other).await, StatusCode::OK);
    assert_eq!(replaced["value"]["model_id"], "other");
    let value = json!([1, "two", {"three": 3}]);
    ok(
        &admin.put("/admin/settings/plain", value.clone()).await,
        StatusCode::CREATED,
    );
    assert_eq!(admin.read("/admin/settings/plain").await["value"], value);
    let keys = all_pages(&admin, "/admin/settings", 2, "key").await;
    assert_eq!(keys, ["infra_model_summarization", "plain", "route:smart"]);
    let bad_key = admin.put("/admin/settings/bad%20key", json!(1)).await;
    refused(&bad_key, StatusCode::BAD_REQUEST, "key", "letters, digits");
    let empty = admin.call(Method::PUT, path, None).await;
    refused(&empty, StatusCode::BAD_REQUEST, "", "DELETE it");
    admin.deleted(path).await;
    refused(
        &admin.get(path).await,
        StatusCode::NOT_FOUND,
        "key",
        "No setting",
    );
    let chat = chat(&gw.base, "infra_model_summarization").await;
    refused(&chat, StatusCode::NOT_FOUND, "model", "infra_model");
    gw.running.stop().await;
}

async fn the_audit_log_records_every_change(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    admin.created("/admin/providers", mock_provider("s")).await;
    let m = admin
        .created("/admin/models", model("sm", "s", "sm-1"))
        .await;
    admin
        .changed("/admin/providers/s", json!({"description": "d"}))
        .await;
    ok(
        &admin.put("/admin/settings/k", json!(1)).await,
        StatusCode::CREATED,
    );
    admin.deleted("/admin/providers/s").await;

    let log = admin.read("/admin/audit").await;
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
    // Newest first: the provider's deletion with its model's, the setting, the update, ...
    #[rustfmt::skip]
    assert_eq!(summary, [("delete", "model"), ("delete", "provider"), ("create", "setting"),
        ("update", "provider"), ("create", "model"), ("create", "provider")]);
    let create = &entries[5];
    has(create, json!({"actor": "master key", "resource_id": "s"}));
    has(create, json!({"before": null}));
    has(&create["after"], json!({"name": "s", "api_key": null}));
    assert!(create["at"].is_string() && create["id"].is_string());
    let update = &entries[3];
    has(&update["before"], json!({"description": null}));
    has(&update["after"], json!({"description": "d"}));
    let deletion = &entries[1];
    assert_eq!(deletion["before"]["deleted_at"], Value::Null);
    assert!(deletion["after"]["deleted_at"].is_string());
    assert_eq!(entries[0]["resource_id"], m["id"]);

    let only = admin.read("/admin/audit?resource=setting").await;
    assert_eq!(only["data"].as_array().unwrap().len(), 1);
    let nobody = admin.read("/admin/audit?actor=someone%20else").await;
    assert_eq!(nobody["data"], json!([]));
    let row = format!("/admin/audit?resource_id={}", m["id"].as_str().unwrap());
    assert_eq!(admin.read(&row).await["data"].as_array().unwrap().len(), 2);

    // The log is append-only, even for the gateway's own database connection.
    let store = &gw.running.app.gateway.db;
    for sql in [
        "UPDATE audit_log SET actor = 'someone else'",
        "DELETE FROM audit_log",
    ] {
        let e = store.execute(sql, &[]).await.unwrap_err();
        assert!(format!("{e:#}").contains("append-only"), "{sql}: {e:#}");
    }
    assert_eq!(admin.read("/admin/audit").await["data"], log["data"]);
    gw.running.stop().await;
}

async fn secrets_are_in_no_answer_nor_audit_row(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    let body = json!({"name": "s", "api": "mock", "api_key": SECRET});
    let mut seen = admin.post("/admin/providers", body).await.text();
    let second = json!({"api_key": format!("{SECRET}-2")});
    seen += &admin.patch("/admin/providers/s", second).await.text();
    seen += &admin.get("/admin/providers/s").await.text();
    seen += &admin.get("/admin/providers").await.text();
    seen += &admin.delete("/admin/providers/s").await.text();
    let log = admin.read("/admin/audit?resource=provider").await;
    assert_eq!(log["data"][2]["after"]["api_key"], "[sealed]");
    seen += &log.to_string();
    assert!(!seen.contains(SECRET), "a provider key was shown");
    gw.running.stop().await;
    let store = db.connect().await;
    let rows = "SELECT before::text AS b, after::text AS a FROM audit_log";
    for r in store.fetch_all(rows, &[]).await.unwrap() {
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
        let page = admin.read(&url).await;
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
    let first = admin.read("/admin/providers").await;
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
        report = admin.read("/admin/usage?by=model&period=day").await;
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

async fn projects_are_created_read_and_changed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    let alpha = json!({"name": "alpha", "budget_usd": "12.5", "budget_period": "monthly"});
    let p = admin.created("/admin/projects", alpha.clone()).await;
    has(
        &p,
        json!({"budget_usd": "12.5", "budget_period": "monthly", "object": "project"}),
    );
    assert_eq!(admin.read("/admin/projects/alpha").await, p);
    use StatusCode as S;
    #[rustfmt::skip]
    let cases: &[Refusal] = &[
        (Method::POST, "/admin/projects", alpha, S::CONFLICT, "name", "A project named `alpha` already exists"),
        (Method::POST, "/admin/projects", json!({"name": "b", "budget_usd": -1}), S::BAD_REQUEST, "budget_usd", "must be >= 0"),
        (Method::POST, "/admin/projects", json!({"name": "b", "budget_period": "weekly"}), S::BAD_REQUEST, "budget_period", "not total or monthly"),
        (Method::POST, "/admin/projects", json!({"name": " "}), S::BAD_REQUEST, "name", "1 to 128"),
        (Method::GET, "/admin/projects/nope", Value::Null, S::NOT_FOUND, "name", "No project is named `nope`"),
    ];
    expect_refusals(&admin, cases).await;
    let p = admin
        .changed("/admin/projects/alpha", json!({"budget_usd": null}))
        .await;
    has(&p, json!({"budget_usd": null, "budget_period": "monthly"}));
    admin
        .created("/admin/projects", json!({"name": "beta"}))
        .await;
    assert_eq!(
        all_pages(&admin, "/admin/projects", 1, "name").await,
        ["alpha", "beta"]
    );
    let reply = admin.delete("/admin/projects/alpha").await;
    assert_eq!(
        reply.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "{}",
        reply.text()
    );
    let log = admin.read("/admin/audit?resource=project").await;
    assert_eq!(log["data"].as_array().unwrap().len(), 3);
    gw.running.stop().await;
}

async fn keys_are_created_and_shown_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    admin
        .created("/admin/projects", json!({"name": "alpha"}))
        .await;
    let body = json!({"name": "app", "project": "alpha", "allowed_models": ["echo"], "rpm": 100, "expires_at": "2999-01-01T00:00:00Z"});
    let created = admin.created("/admin/keys", body).await;
    let key = created["key"].as_str().unwrap().to_owned();
    let path = format!("/admin/keys/{}", created["id"].as_str().unwrap());
    assert!(key.starts_with(created["key_prefix"].as_str().unwrap()) && key.starts_with("tg-"));
    has(&created, json!({"project": "alpha", "role": "user"}));
    has(
        &created,
        json!({"allowed_models": ["echo"], "expires_at": "2999-01-01T00:00:00.000Z"}),
    );
    let shown = admin.read(&path).await;
    assert!(
        shown.get("key").is_none() && !shown.to_string().contains(&key),
        "{shown}"
    );
    let user = Admin::new(&gw.base, &key);
    ok(&chat_as(&user, "echo").await, StatusCode::OK);
    refused(
        &chat_as(&user, "smart").await,
        StatusCode::FORBIDDEN,
        "model",
        "",
    );
    use StatusCode as S;
    #[rustfmt::skip]
    let cases: &[Refusal] = &[
        (Method::POST, "/admin/keys", json!({"name": "k", "project": "nope"}), S::NOT_FOUND, "project", "No project is named `nope`"),
        (Method::POST, "/admin/keys", json!({"name": "k", "role": "root"}), S::BAD_REQUEST, "role", "unknown variant"),
        (Method::POST, "/admin/keys", json!({"name": "k", "rpm": -1}), S::BAD_REQUEST, "rpm", "invalid value"),
        (Method::POST, "/admin/keys", json!({"name": "k", "budget_usd": "-0.5"}), S::BAD_REQUEST, "budget_usd", "must be >= 0"),
        (Method::POST, "/admin/keys", json!({"name": "k", "expires_at": "soon"}), S::BAD_REQUEST, "expires_at", ""),
        (Method::POST, "/admin/keys", json!({"name": "k", "allowed_models": [""]}), S::BAD_REQUEST, "allowed_models", "none empty"),
        (Method::PATCH, &path, json!({"key_prefix": "tg-x"}), S::BAD_REQUEST, "key_prefix", "read-only"),
        (Method::GET, "/admin/keys/tg-123", Value::Null, S::NOT_FOUND, "id", "No key"),
    ];
    expect_refusals(&admin, cases).await;

    gw.running.stop().await;
}

async fn keys_are_changed_and_revoked(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (gw, admin) = gateway(&db, true).await;
    admin
        .created("/admin/projects", json!({"name": "beta"}))
        .await;
    let created = admin.created("/admin/keys", json!({"name": "app"})).await;
    let key = created["key"].as_str().unwrap().to_owned();
    let path = format!("/admin/keys/{}", created["id"].as_str().unwrap());
    let user = Admin::new(&gw.base, &key);
    ok(&chat_as(&user, "echo").await, StatusCode::OK);

    // An admin key manages keys too, and is the actor of its changes.
    let ops = admin
        .created("/admin/keys", json!({"name": "ops", "role": "admin"}))
        .await;
    let ops = Admin::new(&gw.base, ops["key"].as_str().unwrap());
    let patch = json!({"project": "beta", "budget_usd": "3"});
    let changed = ops.changed(&path, patch).await;
    has(&changed, json!({"project": "beta", "budget_usd": "3"}));
    let in_beta = admin.read("/admin/keys?project=beta").await;
    assert_eq!(in_beta["data"], json!([changed]));

    assert_eq!(admin.deleted(&path).await["revoked"], true);
    refused(
        &admin.delete(&path).await,
        StatusCode::CONFLICT,
        "id",
        "is revoked",
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await; // the key cache's TTL
    assert_eq!(
        chat_as(&user, "echo").await.status,
        StatusCode::UNAUTHORIZED
    );

    let log = admin.read("/admin/audit?resource=key").await;
    let actions: Vec<&str> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["revoke", "update", "create", "create"]); // ops's own creation too
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

async fn chat_as(client: &Admin, model: &str) -> Reply {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    client.post("/v1/chat/completions", body).await
}
