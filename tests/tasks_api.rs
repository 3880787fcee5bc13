//! Background tasks (`/api/v1/tasks`): each endpoint and each refusal, the ownership rule,
//! tasks run on several models through the data plane with their costs adding up to the
//! usage rows', a failing model beside answering ones, and a cancel that stops the calls in
//! flight. On SQLite and on PostgreSQL.

mod common;

use std::time::Duration;

use common::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use tollgate::mock::{MockOptions, MockUpstream};
use tollgate::store::{Db, NewApiKey};

const MASTER: &str = "master-key-for-task-tests-000001";

/// Three priced models on the in-process mock, one whose provider answers 500, and a
/// provider with room for parallel calls.
const MODELS: &str = r#"
[[providers]]
name = "local"
api = "mock"
max_parallel_requests = 16
requests_per_minute = 100000

[[models]]
name = "m1"
provider = "local"
model_id = "echo-1"
cost_input_per_million = "1.5"
cost_output_per_million = "6"

[[models]]
name = "m2"
provider = "local"
model_id = "echo-2"
cost_input_per_million = "0.25"
cost_output_per_million = "2"

[[models]]
name = "m3"
provider = "local"
model_id = "echo-3"
cost_input_per_million = "3"
cost_output_per_million = "15"

[[models]]
name = "broken"
provider = "local"
model_id = "mock-status-500"
"#;

fn tasks_section(workers: usize, max_queued: u64) -> String {
    format!(
        "[tasks]\nworkers = {workers}\nmax_parallel = 4\nlease_secs = 2\npoll_interval_ms = 100\nmax_queued_per_project = {max_queued}\n"
    )
}

fn keys_required(text: String) -> String {
    text.replace(
        "require_api_key = false",
        &format!("require_api_key = true\nmaster_key = \"{MASTER}\""),
    )
}

async fn user_key(store: &Db, project: Option<&str>) -> String {
    let (key, prefix, hash) = tollgate::auth::generate_key();
    let new = NewApiKey {
        name: "tasks".into(),
        role: "user".into(),
        project: project.map(str::to_owned),
        ..Default::default()
    };
    store.insert_api_key(&new, &hash, &prefix).await.unwrap();
    key
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

async fn create(base: &str, key: &str, body: &Value) -> Reply {
    let auth = bearer(key);
    post(
        &format!("{base}/api/v1/tasks"),
        body,
        &[("authorization", &auth)],
    )
    .await
}

async fn call(method: Method, url: &str, key: &str, body: Option<&Value>) -> Reply {
    let auth = bearer(key);
    let mut headers = vec![("authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    let body = body.map(Value::to_string).unwrap_or_default();
    request(method, url, body, &headers).await
}

/// Polls the task until its status is final (or `want`), within 15 s.
async fn wait_for(base: &str, key: &str, id: &str, want: &[&str]) -> Value {
    let url = format!("{base}/api/v1/tasks/{id}");
    for _ in 0..300 {
        let r = call(Method::GET, &url, key, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let task = r.json();
        if want.contains(&task["status"].as_str().unwrap()) {
            return task;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("task {id} never reached {want:?}");
}

/// Usage rows are written in batches: waits until `n` rows of tasks are there.
async fn task_usage_rows(store: &Db, n: usize) -> Vec<UsageRow> {
    for _ in 0..100 {
        let rows: Vec<UsageRow> = usage_rows(store)
            .await
            .into_iter()
            .filter(|r| r.endpoint == "api.tasks")
            .collect();
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} usage rows of tasks");
}

fn assert_error(r: &Reply, status: StatusCode, param: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.text());
    let e = &r.json()["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    assert!(e["type"].is_string(), "{e}");
    if let Some(p) = param {
        assert_eq!(e["param"], p, "{e}");
    }
}

on_both_databases!(
    a_task_on_three_models_costs_what_its_usage_rows_cost,
    a_failing_model_is_recorded_beside_the_answers,
    bad_input_is_refused_naming_the_field,
    queued_tasks_are_bounded_per_project_and_listed_by_pages,
    callers_see_only_their_own_projects_tasks,
    tasks_are_renamed_cancelled_and_deleted,
    a_cancel_stops_the_calls_in_flight_and_meters_what_was_done,
    a_stopping_instance_gives_its_running_tasks_back,
    a_provider_with_one_slot_takes_a_tasks_models_in_turn,
    a_browser_dashboard_may_change_and_delete_tasks,
);

async fn a_task_on_three_models_costs_what_its_usage_rows_cost(backend: Backend) {
    let db = TestDb::new(backend).await;
    let gw = start_gateway(&db, &format!("{MODELS}\n{}", tasks_section(2, 100))).await;
    let store = db.connect().await;
    let body = json!({"name": "compare", "description": "three answers", "prompt": "say three words", "models": ["m1", "m2", "m3"], "max_tokens": 5});
    let r = create(&gw.base, "any", &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let created = r.json();
    assert_eq!(created["object"], "task");
    assert_eq!(created["name"], "compare");
    assert_eq!(created["models"], json!(["m1", "m2", "m3"]));
    assert_eq!(created["max_tokens"], 5);
    assert!(created["created_at"].is_string());
    let id = created["id"].as_str().unwrap();

    let task = wait_for(&gw.base, "any", id, &["succeeded", "failed", "cancelled"]).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert!(task["error"].is_null());
    assert_eq!(task["attempts"], 1);
    assert!(task["started_at"].is_string() && task["finished_at"].is_string());
    let results = task["results"].as_array().unwrap();
    let models: Vec<&str> = results
        .iter()
        .map(|r| r["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["m1", "m2", "m3"]);
    let rows = task_usage_rows(&store, 3).await;
    assert_eq!(rows.len(), 3, "one usage row per model");
    let mut sum = rust_decimal::Decimal::ZERO;
    for result in results {
        assert_eq!(result["status"], "succeeded", "{result}");
        assert!(!result["text"].as_str().unwrap().is_empty());
        assert_eq!(result["usage"]["prompt_tokens"], 3);
        assert_eq!(result["usage"]["completion_tokens"], 5);
        assert!(result["latency_ms"].is_i64() && result["error"].is_null());
        let row = rows
            .iter()
            .find(|u| u.model_name == result["model"])
            .unwrap();
        assert_eq!(row.status_code, 200);
        assert_eq!(
            dec(&row.cost_usd),
            dec(result["cost_usd"].as_str().unwrap())
        );
        sum += dec(&row.cost_usd);
    }
    assert!(sum > rust_decimal::Decimal::ZERO);
    assert_eq!(dec(task["cost_usd"].as_str().unwrap()), sum);

    let metrics = get(&format!("{}/metrics", gw.base), &[]).await.text();
    let done = metric(
        &metrics,
        "tollgate_task_duration_seconds_count",
        &[("status", "succeeded")],
    );
    assert_eq!(done, Some(1.0), "{metrics}");
    assert!(metric(&metrics, "tollgate_tasks_queue_depth", &[]).is_some());
    assert_eq!(metric(&metrics, "tollgate_tasks_running", &[]), Some(0.0));
    gw.running.stop().await;
}

async fn a_failing_model_is_recorded_beside_the_answers(backend: Backend) {
    let db = TestDb::new(backend).await;
    let gw = start_gateway(&db, &format!("{MODELS}\n{}", tasks_section(2, 100))).await;
    let body = json!({"name": "partly", "prompt": "hello there", "models": ["m1", "broken"]});
    let id = create(&gw.base, "any", &body).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let task = wait_for(&gw.base, "any", &id, &["succeeded", "failed"]).await;
    assert_eq!(task["status"], "succeeded", "one model answered: {task}");
    let results = task["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "succeeded");
    assert_eq!(results[1]["model"], "broken");
    assert_eq!(results[1]["status"], "failed");
    assert!(results[1]["text"].is_null());
    assert!(results[1]["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(results[1]["error"]["type"].is_string());
    assert_eq!(results[1]["cost_usd"], "0");

    let body = json!({"name": "all broken", "prompt": "hello", "models": "broken"});
    let id = create(&gw.base, "any", &body).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let task = wait_for(&gw.base, "any", &id, &["succeeded", "failed"]).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert!(task["error"]
        .as_str()
        .unwrap()
        .contains("every model failed"));
    gw.running.stop().await;
}

async fn bad_input_is_refused_naming_the_field(backend: Backend) {
    let db = TestDb::new(backend).await;
    let extra = format!(
        "{MODELS}\n{}max_prompt_bytes = 100\n",
        tasks_section(0, 100)
    );
    let gw = start_gateway(&db, &extra).await;
    let ok = json!({"name": "n", "prompt": "p", "models": ["m1"]});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = ok.clone();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    let many: Vec<String> = (0..17).map(|_| "m1".to_string()).collect();
    let cases = [
        (without("name"), StatusCode::BAD_REQUEST, "name"),
        (with("name", json!("  ")), StatusCode::BAD_REQUEST, "name"),
        (
            with("name", json!("x".repeat(201))),
            StatusCode::BAD_REQUEST,
            "name",
        ),
        (
            with("description", json!("x".repeat(2001))),
            StatusCode::BAD_REQUEST,
            "description",
        ),
        (without("prompt"), StatusCode::BAD_REQUEST, "prompt"),
        (with("prompt", json!(7)), StatusCode::BAD_REQUEST, "prompt"),
        (
            with("prompt", json!("x".repeat(101))),
            StatusCode::PAYLOAD_TOO_LARGE,
            "prompt",
        ),
        (without("models"), StatusCode::BAD_REQUEST, "models"),
        (with("models", json!([])), StatusCode::BAD_REQUEST, "models"),
        (
            with("models", json!(many)),
            StatusCode::BAD_REQUEST,
            "models",
        ),
        (
            with("models", json!(["m1", "m1"])),
            StatusCode::BAD_REQUEST,
            "models",
        ),
        (
            with("models", json!(["m1", "nope"])),
            StatusCode::NOT_FOUND,
            "models",
        ),
        (
            with("max_tokens", json!(0)),
            StatusCode::BAD_REQUEST,
            "max_tokens",
        ),
        (
            with("max_tokens", json!(-3)),
            StatusCode::BAD_REQUEST,
            "max_tokens",
        ),
        (
            with("colour", json!("red")),
            StatusCode::BAD_REQUEST,
            "colour",
        ),
    ];
    for (body, status, param) in cases {
        let r = create(&gw.base, "any", &body).await;
        assert_error(&r, status, Some(param));
    }
    let r = create(&gw.base, "any", &json!([1])).await;
    assert_error(&r, StatusCode::BAD_REQUEST, None);
    let url = format!("{}/api/v1/tasks", gw.base);
    let r = call(Method::GET, &format!("{url}?status=done"), "any", None).await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("status"));
    let r = call(Method::GET, &format!("{url}?limit=0"), "any", None).await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("limit"));
    let r = call(Method::GET, &format!("{url}?after=x"), "any", None).await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("after"));
    let r = call(Method::GET, &format!("{url}?sort=x"), "any", None).await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("sort"));

    let id = create(&gw.base, "any", &ok).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let one = format!("{url}/{id}");
    let r = call(
        Method::PUT,
        &one,
        "any",
        Some(&json!({"status": "running"})),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("status"));
    let r = call(Method::PUT, &one, "any", Some(&json!({"name": ""}))).await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("name"));
    let r = call(
        Method::PUT,
        &one,
        "any",
        Some(&json!({"prompt": "changed"})),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, Some("prompt"));
    for missing in [
        format!("{url}/not-an-id"),
        format!("{url}/{}", uuid::Uuid::now_v7()),
    ] {
        let r = call(Method::GET, &missing, "any", None).await;
        assert_error(&r, StatusCode::NOT_FOUND, None);
    }
    let r = request(
        Method::POST,
        &url,
        ok.to_string(),
        &[("content-type", "text/plain")],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.text());
    gw.running.stop().await;
}

async fn queued_tasks_are_bounded_per_project_and_listed_by_pages(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let (a, b) = (
        user_key(&store, Some("pa")).await,
        user_key(&store, Some("pb")).await,
    );
    // No workers: tasks stay queued.
    let gw = start_gateway_with(
        &db,
        &format!("{MODELS}\n{}", tasks_section(0, 2)),
        keys_required,
    )
    .await;
    let body = json!({"name": "q", "prompt": "p", "models": "m1"});
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = create(&gw.base, &a, &body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    let r = create(&gw.base, &a, &body).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, None);
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(
        create(&gw.base, &b, &body).await.status,
        StatusCode::CREATED
    );

    let url = format!("{}/api/v1/tasks", gw.base);
    let first = call(Method::GET, &format!("{url}?limit=1"), &a, None)
        .await
        .json();
    assert_eq!(first["object"], "list");
    assert_eq!(first["has_more"], true);
    assert_eq!(first["data"][0]["id"], ids[1].as_str(), "newest first");
    let next = first["next"].as_str().unwrap();
    let second = call(
        Method::GET,
        &format!("{url}?limit=1&after={next}"),
        &a,
        None,
    )
    .await
    .json();
    assert_eq!(second["data"][0]["id"], ids[0].as_str());
    assert_eq!(second["has_more"], false);
    assert!(second["next"].is_null());
    let queued = call(Method::GET, &format!("{url}?status=queued"), &a, None)
        .await
        .json();
    assert_eq!(queued["data"].as_array().unwrap().len(), 2);
    let done = call(Method::GET, &format!("{url}?status=succeeded"), &a, None)
        .await
        .json();
    assert_eq!(done["data"], json!([]));

    // A cancelled task no longer counts against the bound.
    let r = call(
        Method::PUT,
        &format!("{url}/{}", ids[0]),
        &a,
        Some(&json!({"status": "cancelled"})),
    )
    .await;
    assert_eq!(r.json()["status"], "cancelled");
    assert_eq!(
        create(&gw.base, &a, &body).await.status,
        StatusCode::CREATED
    );
    gw.running.stop().await;
}

async fn callers_see_only_their_own_projects_tasks(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let mine = user_key(&store, Some("mine")).await;
    let colleague = user_key(&store, Some("mine")).await;
    let other = user_key(&store, Some("other")).await;
    let gw = start_gateway_with(
        &db,
        &format!("{MODELS}\n{}", tasks_section(0, 100)),
        keys_required,
    )
    .await;
    let body = json!({"name": "private", "prompt": "p", "models": ["m1"]});
    let id = create(&gw.base, &mine, &body).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("{}/api/v1/tasks", gw.base);
    let one = format!("{url}/{id}");

    for key in [&mine, &colleague, &MASTER.to_owned()] {
        assert_eq!(
            call(Method::GET, &one, key, None).await.status,
            StatusCode::OK
        );
        let list = call(Method::GET, &url, key, None).await.json();
        assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    }
    let rename = json!({"name": "mine now"});
    assert_error(
        &call(Method::GET, &one, &other, None).await,
        StatusCode::NOT_FOUND,
        None,
    );
    assert_error(
        &call(Method::PUT, &one, &other, Some(&rename)).await,
        StatusCode::NOT_FOUND,
        None,
    );
    assert_error(
        &call(Method::DELETE, &one, &other, None).await,
        StatusCode::NOT_FOUND,
        None,
    );
    assert_eq!(
        call(Method::GET, &url, &other, None).await.json()["data"],
        json!([])
    );
    assert_eq!(
        call(Method::GET, &one, &mine, None).await.json()["name"],
        "private"
    );
    let r = get(&url, &[]).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, None);
    let r = call(Method::PUT, &one, &colleague, Some(&rename)).await;
    assert_eq!(r.json()["name"], "mine now");
    assert_eq!(
        call(Method::DELETE, &one, MASTER, None).await.status,
        StatusCode::OK
    );
    gw.running.stop().await;
}

async fn tasks_are_renamed_cancelled_and_deleted(backend: Backend) {
    let db = TestDb::new(backend).await;
    let gw = start_gateway(&db, &format!("{MODELS}\n{}", tasks_section(0, 100))).await;
    let url = format!("{}/api/v1/tasks", gw.base);
    let body = json!({"name": "old", "prompt": "p", "models": ["m1", "m2"]});
    let created = create(&gw.base, "any", &body).await.json();
    assert_eq!(created["status"], "queued");
    assert_eq!(created["max_tokens"], 100, "the seed's default");
    let one = format!("{url}/{}", created["id"].as_str().unwrap());
    let r = call(
        Method::PUT,
        &one,
        "any",
        Some(&json!({"name": "new", "description": "d"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let task = r.json();
    assert_eq!(
        (task["name"].as_str(), task["description"].as_str()),
        (Some("new"), Some("d"))
    );
    assert!(task["updated_at"].as_str() >= created["updated_at"].as_str());

    let cancel = json!({"status": "cancelled"});
    let task = call(Method::PUT, &one, "any", Some(&cancel)).await.json();
    assert_eq!(task["status"], "cancelled");
    assert!(task["finished_at"].is_string());
    assert_eq!(
        call(Method::PUT, &one, "any", Some(&cancel)).await.status,
        StatusCode::OK
    );

    let r = call(Method::DELETE, &one, "any", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["deleted"], true);
    assert_error(
        &call(Method::GET, &one, "any", None).await,
        StatusCode::NOT_FOUND,
        None,
    );
    assert_error(
        &call(Method::DELETE, &one, "any", None).await,
        StatusCode::NOT_FOUND,
        None,
    );
    gw.running.stop().await;

    // A finished task cannot be cancelled any more.
    let gw = start_gateway(&db, &format!("{MODELS}\n{}", tasks_section(1, 100))).await;
    let id = create(&gw.base, "any", &body).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for(&gw.base, "any", &id, &["succeeded"]).await;
    let r = call(
        Method::PUT,
        &format!("{}/api/v1/tasks/{id}", gw.base),
        "any",
        Some(&cancel),
    )
    .await;
    assert_error(&r, StatusCode::CONFLICT, Some("status"));
    gw.running.stop().await;
}

/// `fast` answers, `stuck` never does: a cancel while `stuck` is in flight stops its
/// upstream request, and `fast`'s answer stays metered.
async fn a_cancel_stops_the_calls_in_flight_and_meters_what_was_done(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (mock, addr) = start_mock(MockUpstream {
        options: MockOptions::default(),
        ..Default::default()
    })
    .await;
    let extra = format!(
        r#"{}
max_parallel_requests = 8
requests_per_minute = 100000

[[models]]
name = "fast"
provider = "up"
model_id = "upstream-fast"
cost_input_per_million = "1"
cost_output_per_million = "2"

[[models]]
name = "stuck"
provider = "up"
model_id = "mock-hang"

{}"#,
        upstream_provider(addr, "up", "sk-up"),
        tasks_section(2, 100)
    );
    let gw = start_gateway(&db, &extra).await;
    let store = db.connect().await;
    let url = format!("{}/api/v1/tasks", gw.base);
    for how in ["cancel", "delete"] {
        let body = json!({"name": how, "prompt": "two words", "models": ["fast", "stuck"]});
        let id = create(&gw.base, "any", &body).await.json()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let one = format!("{url}/{id}");
        // `fast` has answered and `stuck` is waiting upstream.
        for _ in 0..200 {
            let task = call(Method::GET, &one, "any", None).await.json();
            let in_flight = mock
                .counters
                .in_flight
                .load(std::sync::atomic::Ordering::SeqCst);
            if task["results"].as_array().unwrap().len() == 1 && in_flight == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(
            mock.counters
                .in_flight
                .load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        let r = if how == "cancel" {
            call(
                Method::PUT,
                &one,
                "any",
                Some(&json!({"status": "cancelled"})),
            )
            .await
        } else {
            call(Method::DELETE, &one, "any", None).await
        };
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        for _ in 0..100 {
            if mock
                .counters
                .in_flight
                .load(std::sync::atomic::Ordering::SeqCst)
                == 0
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            mock.counters
                .in_flight
                .load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the upstream request was cancelled ({how})"
        );
        if how == "delete" {
            assert_error(
                &call(Method::GET, &one, "any", None).await,
                StatusCode::NOT_FOUND,
                None,
            );
            continue;
        }
        let task = wait_for(&gw.base, "any", &id, &["cancelled"]).await;
        let results = task["results"].as_array().unwrap();
        assert_eq!(results[0]["status"], "succeeded", "{task}");
        assert_eq!(results[1]["status"], "cancelled", "{task}");
        let rows = task_usage_rows(&store, 2).await;
        let done = rows.iter().find(|r| r.model_name == "fast").unwrap();
        assert_eq!(done.status_code, 200);
        let stopped = rows.iter().find(|r| r.model_name == "stuck").unwrap();
        assert_eq!(stopped.status_code, 499, "as a client that hung up");
        let metered: rust_decimal::Decimal = rows.iter().map(|r| dec(&r.cost_usd)).sum();
        assert!(metered > rust_decimal::Decimal::ZERO);
        assert_eq!(dec(task["cost_usd"].as_str().unwrap()), metered);
    }
    gw.running.stop().await;
}

/// A task still running when its instance stops (after the grace period) goes back to the
/// queue, its attempt not counted, for any instance to run.
async fn a_stopping_instance_gives_its_running_tasks_back(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (mock, addr) = start_mock(MockUpstream::default()).await;
    let extra = format!(
        "{}\n[[models]]\nname = \"stuck\"\nprovider = \"up\"\nmodel_id = \"mock-hang\"\n\n{}",
        upstream_provider(addr, "up", "sk-up"),
        tasks_section(1, 100)
    );
    let gw = start_gateway(&db, &extra).await;
    let body = json!({"name": "long", "prompt": "p", "models": ["stuck"]});
    let id = create(&gw.base, "any", &body).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for(&gw.base, "any", &id, &["running"]).await;
    for _ in 0..100 {
        if mock
            .counters
            .in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = std::time::Instant::now();
    gw.running.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the stop waited the grace period only"
    );
    let store = db.connect().await;
    let rows = store
        .fetch_all(
            "SELECT status, attempts::bigint AS attempts, lease_owner FROM tasks",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows[0].text("status").unwrap(), "queued");
    assert_eq!(rows[0].int("attempts").unwrap(), 0);
    assert_eq!(rows[0].opt_text("lease_owner").unwrap(), None);
    assert_eq!(
        mock.counters
            .in_flight
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

/// A provider that takes one request at a time: the task's three parallel calls are refused
/// for the slot, wait, and are tried again until each one answers; the refused calls leave
/// their (free) usage rows, and the task still costs what its usage rows cost.
async fn a_provider_with_one_slot_takes_a_tasks_models_in_turn(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (mock, addr) = start_mock(MockUpstream {
        options: MockOptions {
            ttft_ms: 150,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut extra = upstream_provider(addr, "single", "sk-single");
    extra.push_str("max_parallel_requests = 1\nrequests_per_minute = 100000\n");
    for i in 1..=3 {
        extra.push_str(&format!(
            "[[models]]\nname = \"s{i}\"\nprovider = \"single\"\nmodel_id = \"single-{i}\"\ncost_output_per_million = \"1\"\n"
        ));
    }
    extra.push_str(&tasks_section(1, 100));
    let gw = start_gateway(&db, &extra).await;
    let body = json!({"name": "one at a time", "prompt": "p", "models": ["s1", "s2", "s3"]});
    let id = create(&gw.base, "any", &body).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let task = wait_for(&gw.base, "any", &id, &["succeeded", "failed"]).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    for r in task["results"].as_array().unwrap() {
        assert_eq!(r["status"], "succeeded", "{task}");
    }
    assert_eq!(
        mock.counters
            .max_in_flight
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let store = db.connect().await;
    let mut rows = task_usage_rows(&store, 3).await;
    for _ in 0..100 {
        if rows.iter().filter(|r| r.status_code == 200).count() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        rows = task_usage_rows(&store, 3).await;
    }
    assert_eq!(rows.iter().filter(|r| r.status_code == 200).count(), 3);
    assert!(
        rows.iter().any(|r| r.status_code == 429),
        "some calls waited for the slot"
    );
    let metered: rust_decimal::Decimal = rows.iter().map(|r| dec(&r.cost_usd)).sum();
    assert_eq!(dec(task["cost_usd"].as_str().unwrap()), metered);
    gw.running.stop().await;
}

/// A listed page's browser may send the task API's PUT and DELETE after its preflight.
async fn a_browser_dashboard_may_change_and_delete_tasks(backend: Backend) {
    let db = TestDb::new(backend).await;
    let origin = "https://dash.example.com";
    let gw = start_gateway_with(&db, &format!("{MODELS}\n{}", tasks_section(0, 100)), |t| {
        keys_required(t).replace(
            "[server]\n",
            &format!("[server]\ncors_allowed_origins = [\"{origin}\"]\n"),
        )
    })
    .await;
    let url = format!("{}/api/v1/tasks/{}", gw.base, uuid::Uuid::now_v7());
    for method in ["PUT", "DELETE"] {
        let r = request(
            Method::OPTIONS,
            &url,
            bytes::Bytes::new(),
            &[
                ("origin", origin),
                ("access-control-request-method", method),
            ],
        )
        .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
        let allowed = r.headers["access-control-allow-methods"].to_str().unwrap();
        assert!(allowed.contains(method), "{allowed}");
    }
    gw.running.stop().await;
}
