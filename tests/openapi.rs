//! `GET /api/v1/openapi.json`: the document is OpenAPI 3.1, describes exactly the routes the
//! router serves under `/api/v1` and `/admin` (its `API_ROUTES`), secured as the router
//! guards them, and every live answer of every operation, successes and refusals, is valid
//! against the schema the document gives for its status, on SQLite and on PostgreSQL.

mod common;

use std::collections::BTreeSet;

use common::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use tollgate::server::{Access, API_ROUTES};

const MASTER: &str = "master-key-for-openapi-tests-0123456789";

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// The document, and which operations' success answers were checked against it.
struct Spec {
    doc: Value,
    checked: BTreeSet<(String, String)>,
}

impl Spec {
    /// The schema of `method template`'s answer with `status`, with the document's
    /// components beside it so that its `#/components/schemas/...` references resolve.
    fn schema(&self, method: &str, template: &str, status: StatusCode) -> Value {
        let op = &self.doc["paths"][template][method.to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not in the document");
        let response = &op["responses"][status.as_str()];
        assert!(
            response.is_object(),
            "{method} {template} answered {status}, which the document does not list"
        );
        let mut schema = response["content"]["application/json"]["schema"].clone();
        assert!(
            schema.is_object(),
            "{method} {template} {status}: no JSON schema"
        );
        schema["components"] = self.doc["components"].clone();
        schema
    }

    /// Checks a live answer against the document; returns its JSON.
    fn check(&mut self, method: &str, template: &str, reply: &Reply) -> Value {
        let schema = self.schema(method, template, reply.status);
        let body = reply.json();
        if let Err(errors) = validate(&schema, &body) {
            panic!(
                "{method} {template} answered {} with a body the document does not describe:\n{errors}\n{body:#}",
                reply.status
            );
        }
        if reply.status.is_success() {
            self.checked
                .insert((method.to_owned(), template.to_owned()));
        }
        body
    }
}

/// Every way `instance` breaks `schema` (JSON Schema 2020-12, formats checked).
fn validate(schema: &Value, instance: &Value) -> Result<(), String> {
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("not a valid JSON Schema ({e}): {schema:#}"));
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("  at {}: {e}", e.instance_path()))
        .collect();
    match errors.is_empty() {
        true => Ok(()),
        false => Err(errors.join("\n")),
    }
}

/// A client of the gateway with one key.
struct Client {
    base: String,
    auth: Option<String>,
}

impl Client {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let url = format!("{}{path}", self.base);
        let mut headers = vec![("content-type", "application/json")];
        if let Some(auth) = &self.auth {
            headers.push(("authorization", auth.as_str()));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        request(method, &url, body, &headers).await
    }
}

async fn gateway(db: &TestDb) -> TestGateway {
    let extra = format!("{MOCK_ECHO}\n[[models]]\nname = \"echo-priced\"\nprovider = \"local\"\nmodel_id = \"echo-2\"\ncost_input_per_million = \"1.5\"\n");
    start_gateway_with(db, &extra, |text| {
        text.replace(
            "require_api_key = false",
            &format!("require_api_key = true\nmaster_key = \"{MASTER}\""),
        )
    })
    .await
}

#[tokio::test]
async fn the_document_describes_every_route_and_every_live_answer_on_sqlite() {
    every_route_and_every_live_answer(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_document_describes_every_live_answer_on_postgres() {
    every_route_and_every_live_answer(Backend::Postgres).await;
}

async fn every_route_and_every_live_answer(backend: Backend) {
    let db = TestDb::new(backend).await;
    let gw = gateway(&db).await;
    let anonymous = Client {
        base: gw.base.clone(),
        auth: None,
    };
    let reply = anonymous.call("GET", "/api/v1/openapi.json", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.headers["content-type"], "application/json");
    let again = anonymous.call("GET", "/api/v1/openapi.json", None).await;
    assert_eq!(reply.body, again.body, "the document is built once");
    let mut spec = Spec {
        doc: reply.json(),
        checked: BTreeSet::new(),
    };
    check_shape(&spec.doc);
    check_routes(&spec.doc);
    spec.check("GET", "/api/v1/openapi.json", &reply);

    let admin = Client {
        base: gw.base.clone(),
        auth: Some(format!("Bearer {MASTER}")),
    };
    refusals(&mut spec, &gw.base, &admin).await;
    projects(&mut spec, &admin).await;
    let model_id = providers_and_models(&mut spec, &admin).await;
    settings(&mut spec, &admin).await;
    let user_key = keys(&mut spec, &admin).await;
    let user = Client {
        base: gw.base.clone(),
        auth: Some(format!("Bearer {user_key}")),
    };
    dashboard(&mut spec, &admin, &user).await;
    tasks(&mut spec, &user).await;
    reports_and_server(&mut spec, &admin).await;
    deletions(&mut spec, &admin, &model_id).await;

    let unchecked: Vec<_> = API_ROUTES
        .iter()
        .filter(|(m, t, _)| !spec.checked.contains(&((*m).to_owned(), (*t).to_owned())))
        .collect();
    assert!(
        unchecked.is_empty(),
        "operations whose success answer no test checked: {unchecked:?}"
    );
    gw.running.stop().await;
}

/// OpenAPI 3.1's shape: the fields it requires, every reference resolving, every schema a
/// valid JSON Schema 2020-12, every operation with answers.
fn check_shape(doc: &Value) {
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1."), "openapi is {version:?}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        if let Err(e) = jsonschema::draft202012::meta::validate(schema) {
            panic!("components.schemas.{name} is not a valid JSON Schema: {e}");
        }
    }
    let schemes = &doc["components"]["securitySchemes"];
    for scheme in ["gateway_key", "admin_key"] {
        assert_eq!(schemes[scheme]["type"], "http", "{scheme}");
        assert_eq!(schemes[scheme]["scheme"], "bearer", "{scheme}");
    }
    let mut refs = Vec::new();
    collect_refs(doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external $ref {r}"));
        assert!(
            doc.pointer(pointer).is_some(),
            "$ref {r} resolves to nothing"
        );
    }
    let mut operation_ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        assert!(path.starts_with('/'), "{path}");
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(
                operation_ids.insert(id),
                "{method} {path}: operationId {id:?} is not unique"
            );
            let responses = op["responses"].as_object();
            assert!(
                responses.is_some_and(|r| !r.is_empty()),
                "{method} {path} lists no answer"
            );
        }
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r.clone());
            }
            map.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// The document's operations are exactly the router's `API_ROUTES`, each secured as the
/// router guards it.
fn check_routes(doc: &Value) {
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let routed: BTreeSet<_> = API_ROUTES
        .iter()
        .map(|(m, t, _)| ((*m).to_owned(), (*t).to_owned()))
        .collect();
    assert_eq!(documented, routed, "the document and the router disagree");
    for (method, template, access) in API_ROUTES {
        let security = &doc["paths"][template][method.to_lowercase()]["security"];
        let expected = match access {
            Access::Anyone => json!([]),
            Access::Caller => json!([{"gateway_key": []}]),
            Access::Admin => json!([{"admin_key": []}]),
        };
        assert_eq!(security, &expected, "{method} {template}");
    }
}

/// A path of `template` with its parameters filled in.
fn fill(template: &str) -> String {
    template
        .replace("{name}", "nothing-here")
        .replace("{key}", "nothing-here")
        .replace("{id}", "0190a000-0000-7000-8000-000000000000")
}

/// Every method a documented path does not take is refused (so no route is served that the
/// document leaves out), and the refusals of a missing or wrong key are as documented.
async fn refusals(spec: &mut Spec, base: &str, admin: &Client) {
    let paths: BTreeSet<&str> = API_ROUTES.iter().map(|(_, t, _)| *t).collect();
    for template in paths {
        for method in METHODS {
            if API_ROUTES
                .iter()
                .any(|(m, t, _)| *m == method && *t == template)
            {
                continue;
            }
            let reply = admin.call(method, &fill(template), None).await;
            assert!(
                [StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED].contains(&reply.status),
                "{method} {template} answered {}: a route the document leaves out? {}",
                reply.status,
                reply.text()
            );
            let error = spec.doc["components"]["schemas"]["Error"].clone();
            let mut schema = error;
            schema["components"] = spec.doc["components"].clone();
            validate(&schema, &reply.json()).unwrap();
        }
    }
    let anonymous = Client {
        base: base.to_owned(),
        auth: None,
    };
    let reply = anonymous.call("GET", "/admin/providers", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    spec.check("GET", "/admin/providers", &reply);
    let reply = anonymous
        .call("POST", "/api/v1/llm/query", Some(json!({})))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    spec.check("POST", "/api/v1/llm/query", &reply);
}

async fn projects(spec: &mut Spec, admin: &Client) {
    let body = json!({"name": "team-a", "budget_usd": "12.5"});
    let reply = admin
        .call("POST", "/admin/projects", Some(body.clone()))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert_eq!(
        spec.check("POST", "/admin/projects", &reply)["budget_usd"],
        "12.5"
    );
    let reply = admin.call("POST", "/admin/projects", Some(body)).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    spec.check("POST", "/admin/projects", &reply);
    let reply = admin.call("GET", "/admin/projects?limit=1", None).await;
    spec.check("GET", "/admin/projects", &reply);
    let reply = admin.call("GET", "/admin/projects?limit=0", None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    spec.check("GET", "/admin/projects", &reply);
    let reply = admin.call("GET", "/admin/projects/team-a", None).await;
    spec.check("GET", "/admin/projects/{name}", &reply);
    let reply = admin.call("GET", "/admin/projects/nobody", None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    spec.check("GET", "/admin/projects/{name}", &reply);
    let patch = json!({"budget_period": "monthly"});
    let reply = admin
        .call("PATCH", "/admin/projects/team-a", Some(patch))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    spec.check("PATCH", "/admin/projects/{name}", &reply);
    let patch = json!({"budget_usd": "-1"});
    let reply = admin
        .call("PATCH", "/admin/projects/team-a", Some(patch))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    spec.check("PATCH", "/admin/projects/{name}", &reply);
}

/// A provider `p1` with two models; the id of one.
async fn providers_and_models(spec: &mut Spec, admin: &Client) -> String {
    let body = json!({"name": "p1", "api": "mock", "api_key": "env:P1_KEY", "timeouts": {"connect_ms": 500}});
    let reply = admin.call("POST", "/admin/providers", Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    spec.check("POST", "/admin/providers", &reply);
    let reply = admin
        .call("POST", "/admin/providers", Some(json!({"name": "p2"})))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    spec.check("POST", "/admin/providers", &reply);
    let reply = admin.call("GET", "/admin/providers", None).await;
    let list = spec.check("GET", "/admin/providers", &reply);
    assert!(list["data"].as_array().unwrap().len() >= 2, "{list}");
    let reply = admin.call("GET", "/admin/providers/local", None).await;
    spec.check("GET", "/admin/providers/{name}", &reply);
    let patch = json!({"description": "the test's"});
    let reply = admin
        .call("PATCH", "/admin/providers/p1", Some(patch.clone()))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    spec.check("PATCH", "/admin/providers/{name}", &reply);
    let reply = admin
        .call("PATCH", "/admin/providers/local", Some(patch))
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    spec.check("PATCH", "/admin/providers/{name}", &reply);

    let mut ids = Vec::new();
    for (name, model_id) in [("m1", "m-1"), ("m2", "m-2")] {
        let body = json!({
            "name": name, "provider": "p1", "model_id": model_id,
            "cost_input_per_million": "0.15", "cost_output_per_million": 0.6,
            "context_window": 8192, "supports_vision": true, "release_date": "2026-01-01",
            "parameters": {"temperature": 0.2},
        });
        let reply = admin.call("POST", "/admin/models", Some(body)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        ids.push(
            spec.check("POST", "/admin/models", &reply)["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let bad = json!({"name": "m3", "provider": "nobody", "model_id": "x"});
    let reply = admin.call("POST", "/admin/models", Some(bad)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    spec.check("POST", "/admin/models", &reply);
    let reply = admin
        .call(
            "GET",
            "/admin/models?provider=p1&status=active&limit=1",
            None,
        )
        .await;
    let page = spec.check("GET", "/admin/models", &reply);
    assert_eq!(page["has_more"], true, "{page}");
    let reply = admin.call("GET", "/admin/models?colour=red", None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    spec.check("GET", "/admin/models", &reply);
    let reply = admin
        .call("GET", &format!("/admin/models/{}", ids[0]), None)
        .await;
    spec.check("GET", "/admin/models/{id}", &reply);
    let reply = admin.call("GET", "/admin/models/not-an-id", None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    spec.check("GET", "/admin/models/{id}", &reply);
    let patch = json!({"display_name": "Model One", "cost_cache_read_per_million": "0.05"});
    let reply = admin
        .call("PATCH", &format!("/admin/models/{}", ids[0]), Some(patch))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    spec.check("PATCH", "/admin/models/{id}", &reply);
    let patch = json!({"model_id": "other"});
    let reply = admin
        .call("PATCH", &format!("/admin/models/{}", ids[0]), Some(patch))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    spec.check("PATCH", "/admin/models/{id}", &reply);
    ids.swap_remove(1)
}

async fn settings(spec: &mut Spec, admin: &Client) {
    let value = json!({"provider": "p1", "model_id": "m-1"});
    let path = "/admin/settings/infra_model_test";
    let reply = admin.call("PUT", path, Some(value.clone())).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    spec.check("PUT", "/admin/settings/{key}", &reply);
    let reply = admin.call("PUT", path, Some(value)).await;
    assert_eq!(reply.status, StatusCode::OK);
    spec.check("PUT", "/admin/settings/{key}", &reply);
    let reply = admin.call("PUT", path, None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    spec.check("PUT", "/admin/settings/{key}", &reply);
    let reply = admin.call("GET", "/admin/settings", None).await;
    spec.check("GET", "/admin/settings", &reply);
    let reply = admin.call("GET", path, None).await;
    spec.check("GET", "/admin/settings/{key}", &reply);
    let reply = admin.call("DELETE", path, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    spec.check("DELETE", "/admin/settings/{key}", &reply);
    let reply = admin.call("DELETE", path, None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    spec.check("DELETE", "/admin/settings/{key}", &reply);
}

/// Keys made, changed and revoked; a user key's plaintext, for the dashboard.
async fn keys(spec: &mut Spec, admin: &Client) -> String {
    let body = json!({"name": "short-lived", "project": "team-a", "allowed_models": ["echo"], "expires_at": "2099-01-01T00:00:00Z"});
    let reply = admin.call("POST", "/admin/keys", Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let id = spec.check("POST", "/admin/keys", &reply)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = admin
        .call(
            "POST",
            "/admin/keys",
            Some(json!({"name": "k", "project": "nobody"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    spec.check("POST", "/admin/keys", &reply);
    let reply = admin.call("GET", "/admin/keys?project=team-a", None).await;
    spec.check("GET", "/admin/keys", &reply);
    let reply = admin.call("GET", &format!("/admin/keys/{id}"), None).await;
    spec.check("GET", "/admin/keys/{id}", &reply);
    let patch = json!({"rpm": 10, "budget_usd": 3});
    let reply = admin
        .call("PATCH", &format!("/admin/keys/{id}"), Some(patch))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    spec.check("PATCH", "/admin/keys/{id}", &reply);
    let reply = admin
        .call("DELETE", &format!("/admin/keys/{id}"), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    spec.check("DELETE", "/admin/keys/{id}", &reply);
    let reply = admin
        .call("DELETE", &format!("/admin/keys/{id}"), None)
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    spec.check("DELETE", "/admin/keys/{id}", &reply);
    let reply = admin
        .call("PATCH", &format!("/admin/keys/{id}"), Some(json!({})))
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    spec.check("PATCH", "/admin/keys/{id}", &reply);

    let body = json!({"name": "dashboard", "project": "team-a"});
    let reply = admin.call("POST", "/admin/keys", Some(body)).await;
    let created = spec.check("POST", "/admin/keys", &reply);
    created["key"].as_str().unwrap().to_owned()
}

async fn dashboard(spec: &mut Spec, admin: &Client, user: &Client) {
    let query = json!({"model": "echo", "prompt": "hello"});
    let reply = user.call("POST", "/api/v1/llm/query", Some(query)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    spec.check("POST", "/api/v1/llm/query", &reply);
    let reply = user
        .call("POST", "/api/v1/llm/query", Some(json!({"prompt": "hi"})))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    spec.check("POST", "/api/v1/llm/query", &reply);
    let unknown = json!({"model": "nothing", "prompt": "hi"});
    let reply = user.call("POST", "/api/v1/llm/query", Some(unknown)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    spec.check("POST", "/api/v1/llm/query", &reply);
    let reply = user.call("GET", "/api/v1/llm/models", None).await;
    let list = spec.check("GET", "/api/v1/llm/models", &reply);
    assert!(!list["data"].as_array().unwrap().is_empty(), "{list}");
    let reply = user.call("GET", "/api/v1/llm/models?all=true", None).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    spec.check("GET", "/api/v1/llm/models", &reply);
    let reply = admin.call("GET", "/api/v1/llm/models?all=true", None).await;
    spec.check("GET", "/api/v1/llm/models", &reply);
    let reply = admin
        .call("GET", "/api/v1/llm/models?all=maybe", None)
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    spec.check("GET", "/api/v1/llm/models", &reply);
    let reply = user.call("GET", "/admin/projects", None).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    spec.check("GET", "/admin/projects", &reply);
}

/// A refusal checked against the document, naming the field it says is wrong.
fn refused(
    spec: &mut Spec,
    method: &str,
    template: &str,
    reply: &Reply,
    status: StatusCode,
    param: &str,
) {
    assert_eq!(
        reply.status,
        status,
        "{method} {template}: {}",
        reply.text()
    );
    let body = spec.check(method, template, reply);
    assert_eq!(body["error"]["param"], param, "{body}");
}

/// A task queued, finished, listed, renamed, refused and deleted; its results are checked
/// once the worker has written them.
async fn tasks(spec: &mut Spec, user: &Client) {
    let body = json!({"name": "t1", "prompt": "hello", "models": ["echo", "echo-priced"]});
    let reply = user.call("POST", "/api/v1/tasks", Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let id = spec.check("POST", "/api/v1/tasks", &reply)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/tasks/{id}");
    let no_name = json!({"prompt": "hello", "models": "echo"});
    let reply = user.call("POST", "/api/v1/tasks", Some(no_name)).await;
    refused(
        spec,
        "POST",
        "/api/v1/tasks",
        &reply,
        StatusCode::BAD_REQUEST,
        "name",
    );
    let wrong_type = json!({"name": "t", "prompt": "hello", "models": "echo", "max_tokens": "ten"});
    let reply = user.call("POST", "/api/v1/tasks", Some(wrong_type)).await;
    refused(
        spec,
        "POST",
        "/api/v1/tasks",
        &reply,
        StatusCode::BAD_REQUEST,
        "max_tokens",
    );
    let unknown = json!({"name": "t", "prompt": "hello", "models": "nothing"});
    let reply = user.call("POST", "/api/v1/tasks", Some(unknown)).await;
    refused(
        spec,
        "POST",
        "/api/v1/tasks",
        &reply,
        StatusCode::NOT_FOUND,
        "models",
    );
    let long = json!({"name": "t", "prompt": "x".repeat(70_000), "models": "echo"});
    let reply = user.call("POST", "/api/v1/tasks", Some(long)).await;
    refused(
        spec,
        "POST",
        "/api/v1/tasks",
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "prompt",
    );

    let task = finished(spec, user, &path).await;
    assert_eq!(task["results"].as_array().unwrap().len(), 2, "{task}");
    let reply = user
        .call("GET", "/api/v1/tasks?status=succeeded&limit=1", None)
        .await;
    let page = spec.check("GET", "/api/v1/tasks", &reply);
    assert_eq!(page["data"][0]["id"], id.as_str(), "{page}");
    let reply = user.call("GET", "/api/v1/tasks?status=done", None).await;
    refused(
        spec,
        "GET",
        "/api/v1/tasks",
        &reply,
        StatusCode::BAD_REQUEST,
        "status",
    );
    let reply = user.call("GET", "/api/v1/tasks?after=nope", None).await;
    refused(
        spec,
        "GET",
        "/api/v1/tasks",
        &reply,
        StatusCode::BAD_REQUEST,
        "after",
    );
    let missing = fill("/api/v1/tasks/{id}");
    let reply = user.call("GET", &missing, None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    spec.check("GET", "/api/v1/tasks/{id}", &reply);

    let rename = json!({"name": "renamed", "description": "the test's"});
    let reply = user.call("PUT", &path, Some(rename)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        spec.check("PUT", "/api/v1/tasks/{id}", &reply)["name"],
        "renamed"
    );
    let reply = user
        .call("PUT", &path, Some(json!({"status": "running"})))
        .await;
    refused(
        spec,
        "PUT",
        "/api/v1/tasks/{id}",
        &reply,
        StatusCode::BAD_REQUEST,
        "status",
    );
    let reply = user.call("PUT", &path, Some(json!({"name": " "}))).await;
    refused(
        spec,
        "PUT",
        "/api/v1/tasks/{id}",
        &reply,
        StatusCode::BAD_REQUEST,
        "name",
    );
    let reply = user
        .call("PUT", &path, Some(json!({"status": "cancelled"})))
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text());
    spec.check("PUT", "/api/v1/tasks/{id}", &reply);
    let reply = user.call("PUT", &missing, Some(json!({"name": "x"}))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    spec.check("PUT", "/api/v1/tasks/{id}", &reply);

    let reply = user.call("DELETE", &path, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        spec.check("DELETE", "/api/v1/tasks/{id}", &reply)["deleted"],
        true
    );
    let reply = user.call("DELETE", &path, None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    spec.check("DELETE", "/api/v1/tasks/{id}", &reply);
}

/// The task once its status is final (within 15 s), each read checked against the document.
async fn finished(spec: &mut Spec, user: &Client, path: &str) -> Value {
    for _ in 0..300 {
        let reply = user.call("GET", path, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let task = spec.check("GET", "/api/v1/tasks/{id}", &reply);
        if task["status"] == "succeeded" {
            return task;
        }
        assert!(
            ["queued", "running"].contains(&task["status"].as_str().unwrap()),
            "{task}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("task {path} never finished");
}

async fn reports_and_server(spec: &mut Spec, admin: &Client) {
    let reply = admin.call("GET", "/admin/audit?resource=model", None).await;
    let audit = spec.check("GET", "/admin/audit", &reply);
    assert!(!audit["data"].as_array().unwrap().is_empty(), "{audit}");
    let reply = admin.call("GET", "/admin/audit?after=nope", None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    spec.check("GET", "/admin/audit", &reply);
    let reply = admin
        .call("GET", "/admin/usage?by=project&period=day", None)
        .await;
    spec.check("GET", "/admin/usage", &reply);
    let reply = admin.call("GET", "/admin/usage", None).await;
    spec.check("GET", "/admin/usage", &reply);
    let reply = admin.call("GET", "/admin/usage?by=colour", None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    spec.check("GET", "/admin/usage", &reply);
    let reply = admin.call("GET", "/admin/config", None).await;
    let config = spec.check("GET", "/admin/config", &reply);
    assert!(!config.to_string().contains(MASTER));
    let reply = admin.call("POST", "/admin/reload", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    spec.check("POST", "/admin/reload", &reply);
}

async fn deletions(spec: &mut Spec, admin: &Client, model_id: &str) {
    let path = format!("/admin/models/{model_id}");
    let reply = admin.call("DELETE", &path, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    spec.check("DELETE", "/admin/models/{id}", &reply);
    let reply = admin.call("DELETE", &path, None).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    spec.check("DELETE", "/admin/models/{id}", &reply);
    let reply = admin
        .call("GET", "/admin/models?include_deleted=true", None)
        .await;
    spec.check("GET", "/admin/models", &reply);
    let reply = admin.call("DELETE", "/admin/providers/p1", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let deleted = spec.check("DELETE", "/admin/providers/{name}", &reply);
    assert_eq!(deleted["deleted_models"].as_array().unwrap().len(), 1);
    let reply = admin.call("DELETE", "/admin/providers/p1", None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    spec.check("DELETE", "/admin/providers/{name}", &reply);
}

/// The check is not vacuous: the live answer a schema describes fails once the schema is
/// wrong by one field's type, or misses one field.
#[tokio::test]
async fn a_wrong_schema_fails_the_check() {
    let db = TestDb::new(Backend::Sqlite).await;
    let gw = gateway(&db).await;
    let admin = Client {
        base: gw.base.clone(),
        auth: Some(format!("Bearer {MASTER}")),
    };
    let doc = admin.call("GET", "/api/v1/openapi.json", None).await.json();
    let reply = admin.call("GET", "/admin/providers/local", None).await;
    let body = reply.json();
    let schema = |doc: &Value| {
        let mut s = json!({"$ref": "#/components/schemas/Provider"});
        s["components"] = doc["components"].clone();
        s
    };
    validate(&schema(&doc), &body).unwrap();
    let mut wrong_type = doc.clone();
    wrong_type["components"]["schemas"]["Provider"]["properties"]["is_enabled"] =
        json!({"type": "string"});
    assert!(validate(&schema(&wrong_type), &body).is_err());
    let mut missing = doc.clone();
    let props = &mut missing["components"]["schemas"]["Provider"]["properties"];
    props.as_object_mut().unwrap().remove("queue_timeout_ms");
    assert!(validate(&schema(&missing), &body).is_err());
    gw.running.stop().await;
}
