//! Metering that fails safe, against real databases (each case on SQLite and on PostgreSQL):
//! refusals of unauthenticated requests are counted, not written; an absurd usage report is
//! clamped; a row the database refuses is set aside without holding back its batch; the
//! hourly roll-up stays integer; a database outage or a race for a new month's partition
//! loses no row; the counters exist at zero before their first increase.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::StatusCode;
use serde_json::json;
use tollgate::metering::{Metrics, UsageRecord};
use tollgate::store::{usage_pipeline, Db, GroupBy, UsageQuery, UsageRow};

on_both_databases!(
    an_absurd_usage_report_is_clamped_and_its_batch_lands,
    hourly_sums_saturate_instead_of_overflowing,
    a_row_the_database_refuses_is_set_aside_and_the_rest_lands,
    refusals_of_unauthenticated_requests_are_counted_not_written,
);

const MODELS: &str = r#"
[[models]]
name = "fast"
provider = "up"
model_id = "upstream-model-v1"
cost_input_per_million = "0.15"
cost_output_per_million = "0.60"
[[models]]
name = "absurd"
provider = "up"
model_id = "mock-absurd-usage"
cost_input_per_million = "0.15"
cost_output_per_million = "0.60"
"#;

fn provider(addr: std::net::SocketAddr) -> String {
    format!(
        r#"
[[providers]]
name = "up"
api = "openai"
base_url = "http://{addr}/v1"
api_key = "k"
"#
    )
}

fn chat(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "one two three"}]})
}

async fn an_absurd_usage_report_is_clamped_and_its_batch_lands(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (_mock, addr) = mock_upstream().await;
    // One batch of 22 rows: the absurd one must not hold back the 21 others.
    let gw = start_gateway_with(&db, &format!("{}{MODELS}", provider(addr)), |t| {
        t.replace(
            "[usage]\n",
            "[usage]\nbatch_size = 22\nflush_interval_ms = 60000\n",
        )
    })
    .await;
    let url = format!("{}/v1/chat/completions", gw.base);
    for i in 0..22 {
        let model = if i == 10 { "absurd" } else { "fast" };
        let r = post(&url, &chat(model), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let store = db.connect().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while usage_rows(&store).await.len() < 22 {
        assert!(
            std::time::Instant::now() < deadline,
            "the batch was not written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A second report in the same hour adds to the same roll-up row (written at the stop).
    let r = post(&url, &chat("absurd"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    gw.running.stop().await;

    let rows = usage_rows(&store).await;
    assert_eq!(rows.len(), 23);
    let absurd: Vec<_> = rows.iter().filter(|r| r.model_name == "absurd").collect();
    assert_eq!(absurd.len(), 2);
    for r in &absurd {
        assert_eq!(r.input_tokens, 1_000_000_000, "clamped to the cap");
        let expected = dec("150") + dec(&r.output_tokens.to_string()) * dec("0.0000006");
        assert_eq!(dec(&r.cost_usd), expected);
    }
    let raw = store
        .fetch_all(
            "SELECT raw_usage::text AS raw FROM llm_usage_logs WHERE model_name = 'absurd'",
            &[],
        )
        .await
        .unwrap();
    let raw: serde_json::Value = serde_json::from_str(&raw[0].text("raw").unwrap()).unwrap();
    assert_eq!(
        raw["prompt_tokens"].as_u64(),
        Some(1_000_000_000_000_000_000),
        "the provider's report is kept as sent"
    );
    assert!(!db.dir().join("usage.spool").exists());

    let since = chrono::Utc::now() - chrono::Duration::days(1);
    for by in GroupBy::ALL {
        let report = store
            .usage_report(&UsageQuery::new(by, since))
            .await
            .unwrap_or_else(|e| panic!("usage --by {by:?}: {e:#}"));
        let requests: i64 = report.rows.iter().map(|r| r.totals.requests).sum();
        assert_eq!(requests, 23, "--by {by:?}");
        assert_eq!(report.total.requests, 23, "--by {by:?}");
    }
    let by_model = model_report(&store, since).await;
    let absurd = by_model.iter().find(|r| r.group == "absurd").unwrap();
    assert_eq!(absurd.totals.input_tokens, 2_000_000_000);
    assert_integer_rollup(&store).await;
}

/// The report by model since a time.
async fn model_report(store: &Db, since: chrono::DateTime<chrono::Utc>) -> Vec<UsageRow> {
    let query = UsageQuery::new(GroupBy::Model, since);
    store.usage_report(&query).await.unwrap().rows
}

/// Every roll-up value is stored as an integer (SQLite turns an overflowing sum into REAL).
async fn assert_integer_rollup(store: &Db) {
    if let Db::Sqlite(_) = store {
        let rows = store
            .fetch_all(
                "SELECT COUNT(*) AS n FROM llm_usage_hourly WHERE typeof(requests) <> 'integer'
                 OR typeof(input_tokens) <> 'integer' OR typeof(cache_read_tokens) <> 'integer'
                 OR typeof(cache_write_tokens) <> 'integer' OR typeof(output_tokens) <> 'integer'
                 OR typeof(reasoning_tokens) <> 'integer' OR typeof(cost_usd_e10) <> 'integer'
                 OR typeof(errors) <> 'integer'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(rows[0].int("n").unwrap(), 0);
    }
}

/// A usage record for the writer; `model` is a model id (none exists in these databases, so
/// any id makes a row the database refuses).
fn record(request_id: &str, model: Option<String>) -> UsageRecord {
    serde_json::from_value(json!({
        "id": tollgate::ids::new_id(), "request_id": request_id,
        "created_at": chrono::Utc::now(),
        "llm_model_id": model, "provider_id": null, "project_id": null, "api_key_id": null,
        "model_name": "m", "provider_name": "", "project_name": "",
        "endpoint": "chat.completions", "stream": false, "status_code": 200, "error_type": null,
        "tokens": {"input": 3, "cache_read": 0, "cache_write": 0, "output": 2, "reasoning": 0},
        "raw_usage": null, "usage_source": "provider", "cache_hit": false,
        "cost_usd": "0.0000015", "latency_ms": 1, "ttft_ms": null, "upstream_ms": null, "attempts": 1
    }))
    .unwrap()
}

async fn hourly_sums_saturate_instead_of_overflowing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    // The most a row can cost (NUMERIC(18,10)); ten of them exceed a BIGINT of 1e-10 USD.
    let costly = || UsageRecord {
        cost_usd: "99999999.9999999999".parse().unwrap(),
        ..record("costly", None)
    };
    let batch: Arc<[UsageRecord]> = (0..10).map(|_| costly()).collect();
    store.insert_usage(batch).await.unwrap();
    store.insert_usage(Arc::new([costly()])).await.unwrap();

    let since = chrono::Utc::now() - chrono::Duration::days(1);
    let report = model_report(&store, since).await;
    assert_eq!(report[0].totals.requests, 11);
    assert_eq!(report[0].totals.cost_usd, dec("922337203.6854775807"));
    assert_integer_rollup(&store).await;
}

/// An SQLite roll-up that an earlier version let overflow into REAL is made integer again by
/// the migration, and reports read it.
#[tokio::test]
async fn sqlite_rollup_sums_stored_as_real_are_repaired() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.connect().await;
    let Db::Sqlite(pool) = &store else {
        unreachable!("an SQLite test database")
    };
    let earlier = tempfile::tempdir().unwrap();
    for name in [
        "0001_init.sql",
        "0002_usage_key_leads_with_time.sql",
        "0003_usage_source_check_without_in_list.sql",
    ] {
        let from = format!("{}/migrations/sqlite/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::copy(from, earlier.path().join(name)).unwrap();
    }
    sqlx::migrate::Migrator::new(earlier.path())
        .await
        .unwrap()
        .run(pool)
        .await
        .unwrap();
    let hour = "2026-11-01T10:00:00.000Z";
    store
        .execute(
            "INSERT INTO llm_usage_hourly (hour, provider_id, llm_model_id, project_id, api_key_id,
                requests, input_tokens, cost_usd_e10)
             VALUES ($1, '', '', '', '', 2, 9223372036854775807, 9223372036854775807)",
            &[hour.into()],
        )
        .await
        .unwrap();
    // What the old upsert did with a second absurd report.
    store
        .execute(
            "UPDATE llm_usage_hourly SET input_tokens = input_tokens + 5, cost_usd_e10 = cost_usd_e10 + 5",
            &[],
        )
        .await
        .unwrap();
    let since = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let query = UsageQuery::new(GroupBy::Model, since);
    assert!(store.usage_report(&query).await.is_err());

    store.migrate().await.unwrap();
    assert_integer_rollup(&store).await;
    let report = model_report(&store, since).await;
    assert_eq!(report[0].totals.requests, 2);
    assert_eq!(report[0].totals.input_tokens, i64::MAX);
    assert_eq!(report[0].totals.cost_usd, dec("922337203.6854775807"));
}

fn lines(path: &std::path::Path) -> Vec<UsageRecord> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn a_row_the_database_refuses_is_set_aside_and_the_rest_lands(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let spool = db.dir().join("usage.spool");
    let rejected = db.dir().join("usage.rejected.jsonl");
    // A spool left with a refused row in it (an older version spooled refused batches whole
    // and replayed them for ever).
    let old: Vec<UsageRecord> = vec![
        record("spooled-1", None),
        record("spooled-bad", Some(tollgate::ids::new_id())),
        record("spooled-2", None),
    ];
    let text: String = old
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    std::fs::write(&spool, text).unwrap();

    let metrics = Arc::new(Metrics::new());
    let (sink, writer) = usage_pipeline(
        store.clone(),
        metrics.clone(),
        100,
        22,
        Duration::from_secs(60),
        spool.clone(),
    );
    let (stop, stop_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(writer.run(stop_rx));
    for i in 0..22 {
        let model = (i == 7).then(tollgate::ids::new_id);
        sink.record(record(&format!("live-{i}"), model));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metrics.usage_log_written_total.get() < 23 {
        assert!(
            std::time::Instant::now() < deadline,
            "written {}",
            metrics.usage_log_written_total.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    task.await.unwrap();

    let rows = store
        .fetch_all("SELECT request_id FROM llm_usage_logs", &[])
        .await
        .unwrap();
    let mut ids: Vec<String> = rows.iter().map(|r| r.text("request_id").unwrap()).collect();
    ids.sort();
    assert_eq!(ids.len(), 23, "{ids:?}");
    assert!(!ids.iter().any(|i| i == "live-7" || i == "spooled-bad"));
    let mut set_aside: Vec<String> = lines(&rejected).into_iter().map(|r| r.request_id).collect();
    set_aside.sort();
    assert_eq!(set_aside, ["live-7", "spooled-bad"]);
    assert!(lines(&spool).is_empty(), "nothing goes back to the spool");
    assert!(!spool.with_extension("replay").exists());
    assert_eq!(metrics.usage_log_rejected_total.get(), 2);
    assert_eq!(metrics.usage_log_spooled_total.get(), 0);
    assert_eq!(metrics.usage_log_dropped_total.get(), 0);
    // The roll-up counts each written row once, and no refused one.
    let since = chrono::Utc::now() - chrono::Duration::days(1);
    let report = model_report(&store, since).await;
    assert_eq!(report[0].totals.requests, 23);
    assert_eq!(report[0].totals.input_tokens, 69);
}

async fn scrape(base: &str) -> String {
    get(&format!("{base}/metrics"), &[]).await.text()
}

async fn refusals_of_unauthenticated_requests_are_counted_not_written(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let (key, prefix, hash) = tollgate::auth::generate_key();
    let new = tollgate::store::NewApiKey {
        name: "app".into(),
        role: "user".into(),
        ..Default::default()
    };
    let key_id = store.insert_api_key(&new, &hash, &prefix).await.unwrap();
    let (_mock, addr) = mock_upstream().await;
    let gw = start_gateway_with(&db, &format!("{}{MODELS}", provider(addr)), |t| {
        t.replace("require_api_key = false", "require_api_key = true")
    })
    .await;
    let failures = |text: &str, reason: &str| {
        metric(text, "tollgate_auth_failures_total", &[("reason", reason)])
    };
    let before = scrape(&gw.base).await;
    assert_eq!(failures(&before, "invalid_key"), Some(0.0), "{before}");
    assert_eq!(failures(&before, "missing_key"), Some(0.0), "{before}");

    let url = format!("{}/v1/chat/completions", gw.base);
    for _ in 0..200 {
        let r = post(&url, &chat("fast"), &[("authorization", "Bearer tg-wrong")]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    }
    for _ in 0..3 {
        let r = post(&url, &chat("fast"), &[]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    }
    let r = post(
        &url,
        &chat("fast"),
        &[("authorization", &format!("Bearer {key}"))],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let after = scrape(&gw.base).await;
    assert_eq!(failures(&after, "invalid_key"), Some(200.0));
    assert_eq!(failures(&after, "missing_key"), Some(3.0));

    gw.running.stop().await;
    let rows = usage_rows(&store).await;
    assert_eq!(rows.len(), 1, "only the keyed request has a row: {rows:?}");
    assert_eq!(rows[0].status_code, 200);
    assert_eq!(rows[0].api_key_id.as_deref(), Some(key_id.as_str()));
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

/// Dashboards and alerts need a series before its first increase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_gateway_exports_known_counters_at_zero() {
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
        "tollgate_cache_errors_total{backend=\"memory\"} 0",
        "tollgate_cache_errors_total{backend=\"redis\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    gw.running.stop().await;
}
