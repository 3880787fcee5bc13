//! Keys limited to some models, and budgets of keys and projects that concurrent requests
//! cannot overspend: on one gateway and on three sharing Redis, on SQLite and PostgreSQL.
//!
//! The models here charge only for output ($1000 per million tokens) and the mock upstream
//! writes exactly `max_tokens` (16) words, so a request's worst case and its actual cost are
//! both 16 * $0.001 = $0.016: a budget of $0.16 fits exactly ten.

mod common;

use std::time::{Duration, Instant};

use chrono::{Datelike, TimeZone, Utc};
use common::*;
use http::StatusCode;
use rust_decimal::Decimal;
use serde_json::json;
use tollgate::limits::budget::Period;
use tollgate::mock::{MockOptions, MockUpstream};
use tollgate::store::{ApiKeyUpdate, Db, NewApiKey, NewProject, ProjectUpdate};

/// One request's cost (and worst case) with `max_tokens: 16`.
const ONE: &str = "0.016";

/// A mock upstream that waits `ttft_ms` before answering, so requests overlap.
async fn slow_upstream(ttft_ms: u64) -> (MockUpstream, std::net::SocketAddr) {
    start_mock(MockUpstream {
        options: MockOptions {
            ttft_ms,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

/// The provider `up` without limits of its own, and models that cost only their output:
/// `metered`, `other`, `broken` (answers 500) and `hang` (never answers).
fn models(addr: std::net::SocketAddr) -> String {
    let mut text = format!(
        r#"
[[providers]]
name = "up"
api = "openai"
base_url = "http://{addr}/v1"
api_key = "k"
max_parallel_requests = 0
requests_per_minute = 0
"#
    );
    for (name, model_id) in [
        ("metered", "metered-v1"),
        ("other", "other-v1"),
        ("broken", "mock-status-500"),
        ("hang", "mock-hang"),
    ] {
        text += &format!(
            r#"
[[models]]
name = "{name}"
provider = "up"
model_id = "{model_id}"
cost_input_per_million = "0"
cost_output_per_million = "1000"
"#
        );
    }
    text
}

fn keys_required(text: String) -> String {
    text.replace("require_api_key = false", "require_api_key = true")
}

/// The secret JWTs are signed with (the master key, with no `jwt_secret` set).
const MASTER: &str = "master-key-for-budget-tests-0123";

fn keys_and_jwts_required(text: String) -> String {
    text.replace(
        "require_api_key = false",
        &format!("require_api_key = true\nmaster_key = \"{MASTER}\""),
    )
}

/// A user's JWT naming `project`.
fn user_jwt(project: &str) -> String {
    let claims = tollgate::auth::Claims {
        sub: "alice@example.com".into(),
        role: "user".into(),
        project: Some(project.into()),
        exp: (Utc::now().timestamp() + 600) as u64,
    };
    tollgate::auth::sign_jwt(&claims, MASTER)
}

/// Creates a key and returns it (the secret) with its id.
async fn create_key(store: &Db, new: NewApiKey) -> (String, String) {
    let (key, prefix, hash) = tollgate::auth::generate_key();
    let new = NewApiKey {
        role: "user".into(),
        ..new
    };
    let id = store.insert_api_key(&new, &hash, &prefix).await.unwrap();
    (key, id)
}

fn usd(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn chat(model: &str) -> serde_json::Value {
    json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "count to sixteen"}]})
}

async fn ask(base: &str, key: &str, body: &serde_json::Value) -> Reply {
    let auth = format!("Bearer {key}");
    post(
        &format!("{base}/v1/chat/completions"),
        body,
        &[("authorization", &auth)],
    )
    .await
}

/// The refusal of a budget with no room, as the client gets it.
fn assert_budget_exceeded(r: &Reply, names: &str) {
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["code"], "budget_exceeded", "{e}");
    assert_eq!(e["type"], "insufficient_quota", "{e}");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains(names), "{message}");
}

/// The recorded cost of every usage row, and how many rows had each (status, error type).
async fn recorded(store: &Db) -> (Decimal, Vec<UsageRow>) {
    let rows = usage_rows(store).await;
    let spent = rows.iter().map(|r| dec(&r.cost_usd)).sum();
    (spent, rows)
}

on_both_databases!(
    a_key_asks_only_for_its_allowed_models,
    fifty_racing_requests_never_spend_more_than_the_budget,
    settling_gives_back_what_a_request_did_not_use_on_every_path,
    a_project_budget_counts_its_keys_and_this_month_only,
    a_restarted_gateway_still_knows_the_spend,
    the_store_creates_reads_changes_and_revokes_keys_and_projects,
);

async fn a_key_asks_only_for_its_allowed_models(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (_mock, addr) = mock_upstream().await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let allowed = Some(vec!["metered".into(), "up/other-v1".into()]);
    let (key, key_id) = create_key(
        &store,
        NewApiKey {
            name: "narrow".into(),
            allowed_models: allowed,
            ..Default::default()
        },
    )
    .await;
    let (open_key, _) = create_key(
        &store,
        NewApiKey {
            name: "open".into(),
            allowed_models: Some(vec![]),
            ..Default::default()
        },
    )
    .await;
    let gw = start_gateway_with(&db, &models(addr), keys_required).await;

    assert_eq!(
        ask(&gw.base, &key, &chat("metered")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        ask(&gw.base, &key, &chat("up/other-v1")).await.status,
        StatusCode::OK
    );
    for model in ["other", "up/metered-v1", "no-such-model"] {
        let r = ask(&gw.base, &key, &chat(model)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{model}: {}", r.text());
        let e = &r.json()["error"];
        assert_eq!(e["type"], "invalid_request_error");
        assert_eq!(e["code"], "model_not_allowed");
        assert_eq!(e["param"], "model");
        let message = e["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{model}`")), "{message}");
        assert!(!message.contains(&key[3..]), "never the key");
    }
    // An empty list limits nothing.
    assert_eq!(
        ask(&gw.base, &open_key, &chat("other")).await.status,
        StatusCode::OK
    );

    let auth = format!("Bearer {key}");
    let listed = get(
        &format!("{}/v1/models", gw.base),
        &[("authorization", &auth)],
    )
    .await;
    let ids: Vec<String> = listed.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["metered", "up/other-v1"]);
    let other = get(
        &format!("{}/v1/models/other", gw.base),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    let mine = get(
        &format!("{}/v1/models/metered", gw.base),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(mine.status, StatusCode::OK);
    let everything = get(
        &format!("{}/v1/models", gw.base),
        &[("authorization", &format!("Bearer {open_key}"))],
    )
    .await;
    assert_eq!(everything.json()["data"].as_array().unwrap().len(), 4);

    gw.running.stop().await;
    let rows = usage_rows(&store).await;
    let refused: Vec<_> = rows
        .iter()
        .filter(|r| r.error_type.as_deref() == Some("model_not_allowed"))
        .collect();
    assert_eq!(refused.len(), 3, "every refusal is metered");
    assert!(refused
        .iter()
        .all(|r| r.status_code == 403 && r.api_key_id.as_deref() == Some(key_id.as_str())));
}

/// Sends `n` requests at once, the i-th to `bases[i % len]`; returns the replies.
async fn race(bases: &[&str], key: &str, n: usize) -> Vec<Reply> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let (base, key) = (bases[i % bases.len()].to_owned(), key.to_owned());
        set.spawn(async move { ask(&base, &key, &chat("metered")).await });
    }
    set.join_all().await
}

/// At most ten of fifty are admitted, the others refused with 429 budget_exceeded, and the
/// recorded spend is within the budget.
async fn check_race(replies: &[Reply], store: &Db, budget: Decimal, key_name: &str) {
    let admitted = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert!(admitted <= 10, "{admitted} admitted");
    assert!(admitted >= 1);
    for r in replies.iter().filter(|r| r.status != StatusCode::OK) {
        assert_budget_exceeded(r, key_name);
        assert!(r.text().contains("$0.16"), "{}", r.text());
    }
    let (spent, rows) = recorded(store).await;
    assert_eq!(rows.len(), 50, "every request has its row");
    let refused = rows
        .iter()
        .filter(|r| r.status_code == 429 && r.error_type.as_deref() == Some("budget_exceeded"))
        .count();
    assert_eq!(refused, 50 - admitted);
    assert!(spent <= budget + usd(ONE), "{spent} recorded of {budget}");
    assert_eq!(spent, usd(ONE) * Decimal::from(admitted as u64));
}

async fn fifty_racing_requests_never_spend_more_than_the_budget(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (_mock, addr) = slow_upstream(300).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let budget = usd("0.16");
    let (key, _) = create_key(
        &store,
        NewApiKey {
            name: "racer".into(),
            budget_usd: Some(budget),
            ..Default::default()
        },
    )
    .await;
    let gw = start_gateway_with(&db, &models(addr), keys_required).await;
    let replies = race(&[&gw.base], &key, 50).await;
    let admitted = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert_eq!(admitted, 10, "exactly the ten that fit");
    let metrics = get(&format!("{}/metrics", gw.base), &[]).await.text();
    let counted = metric(
        &metrics,
        "tollgate_budget_exceeded_total",
        &[("scope", "key")],
    );
    assert_eq!(counted, Some(40.0));
    assert_eq!(
        metric(
            &metrics,
            "tollgate_budget_exceeded_total",
            &[("scope", "project")]
        ),
        Some(0.0),
        "present from the start"
    );
    gw.running.stop().await;
    check_race(&replies, &store, budget, "key `racer` (tg-").await;
}

/// Three gateways on one PostgreSQL database decide through one Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_sharing_redis_never_spend_more_than_the_budget() {
    let db = TestDb::new(Backend::Postgres).await;
    let (_mock, addr) = slow_upstream(300).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let budget = usd("0.16");
    let (key, _) = create_key(
        &store,
        NewApiKey {
            name: "shared".into(),
            budget_usd: Some(budget),
            ..Default::default()
        },
    )
    .await;
    let redis =
        std::env::var("TOLLGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("tollgate:test:{}:", uuid::Uuid::now_v7());
    let extra = format!(
        "{}\n[redis]\nurl = \"{redis}\"\nkey_prefix = \"{prefix}\"\ninstances = 3\n",
        models(addr)
    );
    let mut gateways = Vec::new();
    for i in 0..3 {
        let spool = format!("usage-{i}.spool");
        let gw = start_gateway_with(&db, &extra, |t| {
            keys_required(t).replace("usage.spool", &spool)
        })
        .await;
        gateways.push(gw);
    }
    let bases: Vec<&str> = gateways.iter().map(|g| g.base.as_str()).collect();
    let replies = race(&bases, &key, 50).await;
    let admitted = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert_eq!(
        admitted, 10,
        "exactly the ten that fit, across three instances"
    );
    for gw in gateways {
        gw.running.stop().await;
    }
    check_race(&replies, &store, budget, "key `shared` (tg-").await;
    delete_redis_keys(&redis, &prefix);
}

fn delete_redis_keys(url: &str, prefix: &str) {
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut conn)
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL").arg(&keys).query(&mut conn).unwrap();
    }
}

/// Polls `check` every 50 ms for up to five seconds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A failed request, one whose client went away and one streamed give their reservations
/// back (keeping what they cost), so the budget admits again what it has room for.
async fn settling_gives_back_what_a_request_did_not_use_on_every_path(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (_mock, addr) = slow_upstream(200).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    // Room for two reservations at a time (0.032), with 0.008 to spare.
    let (key, _) = create_key(
        &store,
        NewApiKey {
            name: "settler".into(),
            budget_usd: Some(usd("0.04")),
            ..Default::default()
        },
    )
    .await;
    let gw = start_gateway_with(&db, &models(addr), keys_required).await;
    let base = gw.base.clone();

    // Two at once fit; a third at the same time does not.
    let two = race(&[&base], &key, 3).await;
    let ok = two.iter().filter(|r| r.status == StatusCode::OK).count();
    assert_eq!(
        ok,
        2,
        "{:?}",
        two.iter().map(Reply::text).collect::<Vec<_>>()
    );
    // They cost 0.016 each: 0.032 spent, one more reservation does not fit.
    assert_budget_exceeded(&ask(&base, &key, &chat("metered")).await, "$0.032");

    // A larger budget from here on: the key is read again after key_cache_ttl_secs (30 s by
    // default), so a new gateway sees it now.
    gw.running.stop().await;
    let update = ApiKeyUpdate {
        budget_usd: Some(Some(usd("0.08"))),
        ..Default::default()
    };
    store
        .update_api_key(&key[..11], &update)
        .await
        .unwrap()
        .unwrap();
    let gw = start_gateway_with(&db, &models(addr), keys_required).await;
    let base = gw.base.clone();
    // 0.032 spent of 0.08: room for three reservations.
    let failed = ask(&base, &key, &chat("broken")).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY, "{}", failed.text());
    let gave_up =
        tokio::time::timeout(Duration::from_millis(300), ask(&base, &key, &chat("hang"))).await;
    assert!(gave_up.is_err(), "the provider never answers");
    let mut streamed = chat("metered");
    streamed["stream"] = json!(true);
    let stream = ask(&base, &key, &streamed).await;
    assert_eq!(stream.status, StatusCode::OK);
    assert!(stream.text().contains("[DONE]"));
    // The failure and the departed client cost nothing and hold nothing once their rows are
    // recorded (the client's when the gateway notices it left); the stream cost 0.016.
    eventually("the abandoned request is recorded", || async {
        usage_rows(&store)
            .await
            .iter()
            .any(|r| r.status_code == 499)
    })
    .await;
    // 0.048 spent of 0.08: two reservations fit at once.
    let both = race(&[&base], &key, 2).await;
    assert!(
        both.iter().all(|r| r.status == StatusCode::OK),
        "{}",
        both[0].text()
    );
    // 0.08 spent: nothing fits any more.
    assert_budget_exceeded(&ask(&base, &key, &chat("metered")).await, "$0.08");
    gw.running.stop().await;
    let (spent, rows) = recorded(&store).await;
    assert_eq!(spent, usd("0.08"));
    let statuses = |status: i64, error: Option<&str>| {
        rows.iter()
            .filter(|r| r.status_code == status && r.error_type.as_deref() == error)
            .count()
    };
    assert_eq!(statuses(502, Some("upstream_error")), 1);
    assert_eq!(statuses(499, Some("client_disconnected")), 1);
    assert_eq!(statuses(200, None), 5);
}

/// The hourly roll-up row of a spend recorded for `project_id` at `hour`.
async fn record_spend(store: &Db, project_id: &str, hour: chrono::DateTime<Utc>, e10: i64) {
    store
        .execute(
            "INSERT INTO llm_usage_hourly (hour, provider_id, llm_model_id, project_id,
                api_key_id, requests, cost_usd_e10)
             VALUES ($1::timestamptz, '', '', $2, '', 1, $3)",
            &[
                tollgate::store::timestamp(hour).into(),
                project_id.into(),
                e10.into(),
            ],
        )
        .await
        .unwrap();
}

async fn a_project_budget_counts_its_keys_and_this_month_only(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (_mock, addr) = mock_upstream().await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let now = Utc::now();
    let this_month = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .unwrap();
    let last_month = this_month - chrono::Duration::days(3);
    let mut keys = Vec::new();
    for (name, period) in [
        ("monthly-team", Period::Monthly),
        ("lifetime-team", Period::Total),
    ] {
        let project = store
            .create_project(&NewProject {
                name: name.into(),
                budget_usd: Some(usd("0.05")),
                budget_period: period,
            })
            .await
            .unwrap();
        // $100 last month, $0.02 this month.
        record_spend(&store, &project.id, last_month, 100 * 10_000_000_000).await;
        record_spend(&store, &project.id, this_month, 200_000_000).await;
        let mut two = Vec::new();
        for k in ["a", "b"] {
            let new = NewApiKey {
                name: format!("{name}-{k}"),
                project: Some(name.into()),
                ..Default::default()
            };
            two.push(create_key(&store, new).await.0);
        }
        keys.push(two);
    }
    let gw = start_gateway_with(&db, &models(addr), keys_and_jwts_required).await;

    // Monthly: 0.03 left this month, shared by both keys: one request, then none.
    let monthly = &keys[0];
    assert_eq!(
        ask(&gw.base, &monthly[0], &chat("metered")).await.status,
        StatusCode::OK
    );
    let r = ask(&gw.base, &monthly[1], &chat("metered")).await;
    assert_budget_exceeded(&r, "project `monthly-team`");
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("$0.036 of its $0.05 are spent this month"),
        "{message}"
    );
    // A JWT naming the project spends from the same budget.
    let r = ask(&gw.base, &user_jwt("monthly-team"), &chat("metered")).await;
    assert_budget_exceeded(&r, "project `monthly-team`");
    // Total: last month's $100 counts.
    let r = ask(&gw.base, &keys[1][0], &chat("metered")).await;
    assert_budget_exceeded(&r, "project `lifetime-team`");
    let metrics = get(&format!("{}/metrics", gw.base), &[]).await.text();
    assert_eq!(
        metric(
            &metrics,
            "tollgate_budget_exceeded_total",
            &[("scope", "project")]
        ),
        Some(3.0)
    );
    gw.running.stop().await;
}

async fn a_restarted_gateway_still_knows_the_spend(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (_mock, addr) = mock_upstream().await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let (key, _) = create_key(
        &store,
        NewApiKey {
            name: "durable".into(),
            budget_usd: Some(usd("0.05")),
            ..Default::default()
        },
    )
    .await;
    let gw = start_gateway_with(&db, &models(addr), keys_required).await;
    for _ in 0..3 {
        assert_eq!(
            ask(&gw.base, &key, &chat("metered")).await.status,
            StatusCode::OK
        );
    }
    assert_budget_exceeded(&ask(&gw.base, &key, &chat("metered")).await, "$0.048");
    gw.running.stop().await;

    let gw = start_gateway_with(&db, &models(addr), keys_required).await;
    assert_budget_exceeded(
        &ask(&gw.base, &key, &chat("metered")).await,
        "$0.048 of its $0.05",
    );
    gw.running.stop().await;
    assert_eq!(recorded(&store).await.0, usd("0.048"));
}

async fn the_store_creates_reads_changes_and_revokes_keys_and_projects(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let team = store
        .create_project(&NewProject {
            name: "team".into(),
            budget_usd: Some(usd("12.5")),
            budget_period: Period::Monthly,
        })
        .await
        .unwrap();
    assert_eq!(
        (team.budget_usd, team.budget_period),
        (Some(usd("12.5")), Period::Monthly)
    );
    let again = store
        .create_project(&NewProject {
            name: "team".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(again.to_string().contains("exists already"), "{again}");
    let negative = NewProject {
        name: "broke".into(),
        budget_usd: Some(usd("-1")),
        ..Default::default()
    };
    let e = store.create_project(&negative).await.unwrap_err();
    assert!(
        e.to_string().contains("budget_usd must be 0 or more"),
        "{e}"
    );
    let changed = store
        .update_project(
            "team",
            &ProjectUpdate {
                budget_usd: Some(None),
                budget_period: Some(Period::Total),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (changed.budget_usd, changed.budget_period),
        (None, Period::Total)
    );
    assert_eq!(
        store.get_project(&team.id).await.unwrap().unwrap().name,
        "team"
    );
    assert!(store
        .update_project("nobody", &ProjectUpdate::default())
        .await
        .unwrap()
        .is_none());

    let expires = Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap();
    let (key, id) = create_key(
        &store,
        NewApiKey {
            name: "svc".into(),
            project: Some("team".into()),
            allowed_models: Some(vec!["a".into(), "b/c".into()]),
            rpm: Some(10),
            budget_usd: Some(usd("0.25")),
            expires_at: Some(expires),
            ..Default::default()
        },
    )
    .await;
    let row = store.get_api_key(&key[..11]).await.unwrap().unwrap();
    assert_eq!(row.id, id);
    assert_eq!(
        row.allowed_models,
        Some(vec!["a".to_owned(), "b/c".to_owned()])
    );
    assert_eq!(row.budget_usd, Some(usd("0.25")));
    assert_eq!(row.expires_at, Some(expires));
    assert_eq!(row.project_name.as_deref(), Some("team"));
    let update = ApiKeyUpdate {
        allowed_models: Some(None),
        budget_usd: Some(Some(usd("3"))),
        rpm: Some(None),
        name: Some("svc-2".into()),
        ..Default::default()
    };
    let row = store.update_api_key(&id, &update).await.unwrap().unwrap();
    assert_eq!(
        (
            row.name.as_str(),
            row.allowed_models,
            row.budget_usd,
            row.rpm,
            row.expires_at
        ),
        ("svc-2", None, Some(usd("3")), None, Some(expires))
    );
    let bad = ApiKeyUpdate {
        tpm: Some(Some(-5)),
        ..Default::default()
    };
    let e = store.update_api_key(&id, &bad).await.unwrap_err();
    assert!(e.to_string().contains("tpm must be 0 or more"), "{e}");
    assert!(store.revoke_api_key(&id).await.unwrap());
    assert!(store
        .get_api_key(&id)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());
    assert_eq!(store.list_api_keys().await.unwrap().len(), 1);
    assert_eq!(store.list_projects().await.unwrap().len(), 1);
}
