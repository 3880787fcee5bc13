//! Usage reports and usage retention against real databases (each case on SQLite and on
//! PostgreSQL): grouping by model, provider, project and key; hour, day and month buckets;
//! half-open ranges; exact decimal sums; filters; parameters refused by name; old usage rows
//! removed by the retention (PostgreSQL: whole monthly partitions dropped) while the hourly
//! roll-up keeps every hour.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use http::StatusCode;
use serde_json::json;
use tollgate::error::GatewayError;
use tollgate::metering::UsageRecord;
use tollgate::store::{
    Db, GroupBy, NewApiKey, Period, UsageFilters, UsageQuery, UsageReport, UsageTotals,
};

on_both_databases!(
    rows_are_grouped_by_each_dimension,
    buckets_are_hours_days_and_months_in_utc,
    ranges_include_since_and_exclude_until,
    costs_are_summed_exactly,
    filters_narrow_the_usage_counted,
    a_limit_cuts_rows_but_not_the_total,
    retention_removes_old_usage_and_keeps_the_rollup,
    the_gateway_applies_the_retention_at_start,
);

const REGISTRY: &str = r#"
[[providers]]
name = "alpha"
api = "mock"
[[providers]]
name = "beta"
api = "mock"
[[models]]
name = "chat"
provider = "alpha"
model_id = "chat-a"
[[models]]
name = "chat"
provider = "beta"
model_id = "chat-b"
[[models]]
name = "embed"
provider = "alpha"
model_id = "embed-a"
"#;

/// A database with the registry above, projects `web` and `batch` with one key each, and the
/// ids of all of them.
struct Fixture {
    db: TestDb,
    store: Db,
    /// provider and project names, and `provider/model_id` for models, to ids
    ids: HashMap<String, String>,
    /// key name to (id, prefix)
    keys: HashMap<String, (String, String)>,
}

impl Fixture {
    async fn new(backend: Backend) -> Fixture {
        let db = TestDb::new(backend).await;
        let store = db.connect().await;
        store.migrate().await.unwrap();
        let path = db.dir().join("registry.toml");
        std::fs::write(&path, config_text(&db.url, db.dir(), REGISTRY)).unwrap();
        let loaded = tollgate::config::Config::load(&path).unwrap();
        store.sync_config(&loaded.config, None).await.unwrap();
        let mut keys = HashMap::new();
        for (key, project) in [("web-key", "web"), ("batch-key", "batch")] {
            let (_, prefix, hash) = tollgate::auth::generate_key();
            let new = NewApiKey {
                name: key.into(),
                project: Some(project.into()),
                role: "user".into(),
                ..Default::default()
            };
            let id = store.insert_api_key(&new, &hash, &prefix).await.unwrap();
            keys.insert(key.to_owned(), (id, prefix));
        }
        let mut ids = HashMap::new();
        let rows = store
            .fetch_all(
                "SELECT p.name || '/' || m.model_id AS name, m.id::text AS id FROM llm_models m
                 JOIN llm_providers p ON p.id = m.provider_id
                 UNION ALL SELECT name, id::text AS id FROM llm_providers
                 UNION ALL SELECT name, id::text AS id FROM projects",
                &[],
            )
            .await
            .unwrap();
        for r in rows {
            ids.insert(r.text("name").unwrap(), r.text("id").unwrap());
        }
        Fixture {
            db,
            store,
            ids,
            keys,
        }
    }

    /// A usage row at `at` for `model` (`provider/model_id`) through `key`.
    fn record(&self, at: &str, model: Option<&str>, key: Option<&str>) -> UsageRecord {
        let provider = model.map(|m| m.split('/').next().unwrap());
        let key_row = key.map(|k| &self.keys[k]);
        let project = key.map(|k| self.project_of(k));
        serde_json::from_value(json!({
            "id": tollgate::ids::new_id(), "request_id": "r", "created_at": at,
            "llm_model_id": model.map(|m| &self.ids[m]),
            "provider_id": provider.map(|p| &self.ids[p]),
            "project_id": project, "api_key_id": key_row.map(|(id, _)| id),
            "model_name": "chat", "provider_name": "", "project_name": "",
            "endpoint": "chat.completions", "stream": false, "status_code": 200, "error_type": null,
            "tokens": {"input": 0, "cache_read": 0, "cache_write": 0, "output": 0, "reasoning": 0},
            "raw_usage": null, "usage_source": "provider", "cache_hit": false,
            "cost_usd": "0", "latency_ms": 1, "ttft_ms": null, "upstream_ms": null, "attempts": 1
        }))
        .unwrap()
    }

    fn project_of(&self, key: &str) -> &str {
        let name = if key == "web-key" { "web" } else { "batch" };
        &self.ids[name]
    }

    async fn write(&self, records: Vec<UsageRecord>) {
        self.store.insert_usage(Arc::from(records)).await.unwrap();
    }

    async fn report(&self, pairs: &[(&str, &str)]) -> UsageReport {
        let query = UsageQuery::from_params(pairs.iter().copied(), now()).unwrap();
        self.store.usage_report(&query).await.unwrap()
    }
}

/// "Now" for the parameters' defaults.
fn now() -> DateTime<Utc> {
    at("2026-11-15T08:20:00Z")
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// Each case's tokens, cost and status on a record.
fn with(mut r: UsageRecord, tokens: [u64; 5], cost: &str, status: u16) -> UsageRecord {
    let [input, cache_read, cache_write, output, reasoning] = tokens;
    r.tokens.input = input;
    r.tokens.cache_read = cache_read;
    r.tokens.cache_write = cache_write;
    r.tokens.output = output;
    r.tokens.reasoning = reasoning;
    r.cost_usd = cost.parse().unwrap();
    r.status_code = status;
    r
}

/// Five requests on 2026-03-10: three cost 0.0000001 USD each, two failed.
async fn one_day_of_usage(f: &Fixture) {
    let rows = vec![
        with(
            f.record(
                "2026-03-10T10:15:00Z",
                Some("alpha/chat-a"),
                Some("web-key"),
            ),
            [10, 3, 2, 5, 1],
            "0.0000001",
            200,
        ),
        with(
            f.record("2026-03-10T10:45:00Z", Some("beta/chat-b"), Some("web-key")),
            [20, 0, 0, 7, 0],
            "0.0000001",
            200,
        ),
        with(
            f.record(
                "2026-03-10T11:05:00Z",
                Some("alpha/embed-a"),
                Some("batch-key"),
            ),
            [30, 0, 0, 0, 0],
            "0.0000001",
            200,
        ),
        with(
            f.record(
                "2026-03-10T12:00:00Z",
                Some("alpha/chat-a"),
                Some("batch-key"),
            ),
            [0; 5],
            "0",
            502,
        ),
        // a model that does not exist: no model, no provider
        with(
            f.record("2026-03-10T13:30:00Z", None, Some("web-key")),
            [0; 5],
            "0",
            404,
        ),
    ];
    f.write(rows).await;
}

/// A row as (group, requests, errors, input, output, cost).
type Summary = (String, i64, i64, i64, i64, String);

fn summary(report: &UsageReport) -> Vec<Summary> {
    report
        .rows
        .iter()
        .map(|r| {
            let t = &r.totals;
            let cost = t.cost_usd.to_string();
            (
                r.group.clone(),
                t.requests,
                t.errors,
                t.input_tokens,
                t.output_tokens,
                cost,
            )
        })
        .collect()
}

fn row(group: &str, counts: [i64; 4], cost: &str) -> Summary {
    let [requests, errors, input, output] = counts;
    (
        group.to_owned(),
        requests,
        errors,
        input,
        output,
        cost.to_owned(),
    )
}

const MARCH: [(&str, &str); 2] = [("since", "2026-03-01"), ("until", "2026-04-01")];

async fn rows_are_grouped_by_each_dimension(backend: Backend) {
    let f = Fixture::new(backend).await;
    one_day_of_usage(&f).await;
    let by = |dimension: &'static str| {
        let mut pairs = MARCH.to_vec();
        pairs.push(("by", dimension));
        pairs
    };
    // Highest cost first; the public name `chat` sums its deployments on both providers.
    let report = f.report(&by("model")).await;
    assert_eq!(
        summary(&report),
        [
            row("chat", [3, 1, 30, 12], "0.0000002"),
            row("embed", [1, 0, 30, 0], "0.0000001"),
            row("(none)", [1, 1, 0, 0], "0"),
        ]
    );
    assert!(report.rows.iter().all(|r| r.group_id.is_none()));
    let report = f.report(&by("provider")).await;
    assert_eq!(
        summary(&report),
        [
            row("alpha", [3, 1, 40, 5], "0.0000002"),
            row("beta", [1, 0, 20, 7], "0.0000001"),
            row("(none)", [1, 1, 0, 0], "0"),
        ]
    );
    assert_eq!(
        report.rows[0].group_id.as_deref(),
        Some(f.ids["alpha"].as_str())
    );
    let report = f.report(&by("project")).await;
    assert_eq!(
        summary(&report),
        [
            row("web", [3, 1, 30, 12], "0.0000002"),
            row("batch", [2, 1, 30, 0], "0.0000001"),
        ]
    );
    let report = f.report(&by("key")).await;
    let (web_id, web_prefix) = &f.keys["web-key"];
    let (_, batch_prefix) = &f.keys["batch-key"];
    assert_eq!(
        summary(&report),
        [
            row(
                &format!("web-key ({web_prefix})"),
                [3, 1, 30, 12],
                "0.0000002"
            ),
            row(
                &format!("batch-key ({batch_prefix})"),
                [2, 1, 30, 0],
                "0.0000001"
            ),
        ]
    );
    assert_eq!(report.rows[0].group_id.as_ref(), Some(web_id));
    // Every token kind is summed, and the total is every row's.
    assert_eq!(
        report.total,
        UsageTotals {
            requests: 5,
            errors: 2,
            input_tokens: 60,
            cache_read_tokens: 3,
            cache_write_tokens: 2,
            output_tokens: 12,
            reasoning_tokens: 1,
            cost_usd: dec("0.0000003"),
        }
    );
}

/// One request at each of these times, 0.0000001 USD each.
const TIMES: [&str; 6] = [
    "2026-01-31T23:30:00Z",
    "2026-02-01T00:00:00Z",
    "2026-02-01T00:59:59Z",
    "2026-02-01T01:00:00Z",
    "2026-02-02T12:00:00Z",
    "2026-03-01T00:00:00Z",
];

async fn write_times(f: &Fixture) {
    let rows = TIMES
        .iter()
        .map(|t| {
            with(
                f.record(t, Some("alpha/chat-a"), None),
                [1, 0, 0, 0, 0],
                "0.0000001",
                200,
            )
        })
        .collect();
    f.write(rows).await;
}

/// (bucket, requests, cost) of each row.
fn buckets(report: &UsageReport) -> Vec<(String, i64, String)> {
    report
        .rows
        .iter()
        .map(|r| {
            let bucket = r.bucket.map(|b| b.to_rfc3339()).unwrap_or_default();
            (bucket, r.totals.requests, r.totals.cost_usd.to_string())
        })
        .collect()
}

fn bucket(start: &str, requests: i64, cost: &str) -> (String, i64, String) {
    (at(start).to_rfc3339(), requests, cost.to_owned())
}

async fn buckets_are_hours_days_and_months_in_utc(backend: Backend) {
    let f = Fixture::new(backend).await;
    write_times(&f).await;
    let range = [("since", "2026-01-01"), ("until", "2026-04-01")];
    let per = |period: &'static str| {
        let mut pairs = range.to_vec();
        pairs.push(("period", period));
        pairs
    };
    assert_eq!(
        buckets(&f.report(&per("hour")).await),
        [
            bucket("2026-01-31T23:00:00Z", 1, "0.0000001"),
            bucket("2026-02-01T00:00:00Z", 2, "0.0000002"),
            bucket("2026-02-01T01:00:00Z", 1, "0.0000001"),
            bucket("2026-02-02T12:00:00Z", 1, "0.0000001"),
            bucket("2026-03-01T00:00:00Z", 1, "0.0000001"),
        ]
    );
    assert_eq!(
        buckets(&f.report(&per("day")).await),
        [
            bucket("2026-01-31T00:00:00Z", 1, "0.0000001"),
            bucket("2026-02-01T00:00:00Z", 3, "0.0000003"),
            bucket("2026-02-02T00:00:00Z", 1, "0.0000001"),
            bucket("2026-03-01T00:00:00Z", 1, "0.0000001"),
        ]
    );
    let months = f.report(&per("month")).await;
    assert_eq!(
        buckets(&months),
        [
            bucket("2026-01-01T00:00:00Z", 1, "0.0000001"),
            bucket("2026-02-01T00:00:00Z", 4, "0.0000004"),
            bucket("2026-03-01T00:00:00Z", 1, "0.0000001"),
        ]
    );
    let json = serde_json::to_value(&months).unwrap();
    assert_eq!(json["rows"][1]["bucket"], "2026-02-01T00:00:00Z");
    assert_eq!(json["rows"][1]["group"], "chat");
    assert_eq!(json["query"]["period"], "month");
    // Without a period: one row for the whole range.
    assert_eq!(
        buckets(&f.report(&range).await),
        [(String::new(), 6, "0.0000006".into())]
    );
}

async fn ranges_include_since_and_exclude_until(backend: Backend) {
    let f = Fixture::new(backend).await;
    write_times(&f).await;
    let requests = |report: UsageReport| report.total.requests;
    let one_hour = [
        ("since", "2026-02-01T00:00:00Z"),
        ("until", "2026-02-01T01:00:00Z"),
    ];
    assert_eq!(requests(f.report(&one_hour).await), 2, "00:00 and 00:59:59");
    let february = [("since", "2026-02-01"), ("until", "2026-03-01")];
    assert_eq!(
        requests(f.report(&february).await),
        4,
        "March 1st is not in"
    );
    // An offset is read as the UTC time it is.
    let offset = [
        ("since", "2026-02-01T02:00:00+01:00"),
        ("until", "2026-02-02T14:00:00+01:00"),
    ];
    assert_eq!(requests(f.report(&offset).await), 2, "01:00 and 12:00 UTC");
    // No end: up to now.
    assert_eq!(requests(f.report(&[("since", "2026-02-02")]).await), 2);
}

async fn costs_are_summed_exactly(backend: Backend) {
    let f = Fixture::new(backend).await;
    one_day_of_usage(&f).await;
    let report = f.report(&MARCH).await;
    assert_eq!(report.total.cost_usd.to_string(), "0.0000003");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["total"]["cost_usd"], "0.0000003",
        "a string, never a float"
    );
    assert_eq!(json["rows"][0]["cost_usd"], "0.0000002");

    // Two hours whose roll-up rows each saturated at the BIGINT maximum of 1e-10 USD: their
    // sum is past a BIGINT and still exact; token counts stop at the maximum.
    let costly = |hour: &str| {
        let r = f.record(hour, Some("beta/chat-b"), None);
        with(r, [u64::MAX / 4, 0, 0, 0, 0], "99999999.9999999999", 200)
    };
    let mut rows = Vec::new();
    for hour in ["2026-04-01T10:00:00Z", "2026-04-01T11:00:00Z"] {
        rows.extend((0..10).map(|_| costly(hour)));
    }
    f.write(rows).await;
    let april = [("since", "2026-04-01"), ("until", "2026-05-01")];
    let report = f.report(&april).await;
    assert_eq!(report.total.requests, 20);
    assert_eq!(report.total.input_tokens, i64::MAX);
    assert_eq!(report.total.cost_usd.to_string(), "1844674407.3709551614");
}

async fn filters_narrow_the_usage_counted(backend: Backend) {
    let f = Fixture::new(backend).await;
    one_day_of_usage(&f).await;
    let (batch_id, batch_prefix) = f.keys["batch-key"].clone();
    type Pairs<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(Pairs, Vec<Summary>)> = vec![
        (
            vec![("project", "web")],
            vec![
                row("chat", [2, 0, 30, 12], "0.0000002"),
                row("(none)", [1, 1, 0, 0], "0"),
            ],
        ),
        (
            vec![("key", batch_id.as_str())],
            vec![
                row("embed", [1, 0, 30, 0], "0.0000001"),
                row("chat", [1, 1, 0, 0], "0"),
            ],
        ),
        (
            vec![("key", batch_prefix.as_str())],
            vec![
                row("embed", [1, 0, 30, 0], "0.0000001"),
                row("chat", [1, 1, 0, 0], "0"),
            ],
        ),
        (
            vec![("model", "embed")],
            vec![row("embed", [1, 0, 30, 0], "0.0000001")],
        ),
        (
            vec![("provider", "beta")],
            vec![row("chat", [1, 0, 20, 7], "0.0000001")],
        ),
        (
            vec![("project", "web"), ("provider", "alpha")],
            vec![row("chat", [1, 0, 10, 5], "0.0000001")],
        ),
        (vec![("project", "no-such-project")], vec![]),
    ];
    for (filters, expected) in cases {
        let mut pairs = MARCH.to_vec();
        pairs.extend(filters.iter().copied());
        let report = f.report(&pairs).await;
        assert_eq!(summary(&report), expected, "{filters:?}");
        let requests: i64 = expected.iter().map(|r| r.1).sum();
        assert_eq!(report.total.requests, requests, "{filters:?}");
    }
}

async fn a_limit_cuts_rows_but_not_the_total(backend: Backend) {
    let f = Fixture::new(backend).await;
    one_day_of_usage(&f).await;
    let mut pairs = MARCH.to_vec();
    pairs.push(("limit", "1"));
    let report = f.report(&pairs).await;
    assert_eq!(summary(&report), [row("chat", [3, 1, 30, 12], "0.0000002")]);
    assert!(report.truncated);
    assert_eq!(report.total.requests, 5);
    assert_eq!(report.total.cost_usd, dec("0.0000003"));
    pairs.pop();
    pairs.push(("limit", "3"));
    assert!(!f.report(&pairs).await.truncated, "exactly the limit");
}

/// Parameters, the one the refusal names, and a part of its message.
type Refusal = (
    &'static [(&'static str, &'static str)],
    &'static str,
    &'static str,
);

#[test]
fn bad_parameters_are_refused_by_name() {
    let cases: &[Refusal] = &[
        (
            &[("by", "team")],
            "by",
            "\"team\" is not model, provider, project or key",
        ),
        (
            &[("period", "week")],
            "period",
            "\"week\" is not hour, day or month",
        ),
        (
            &[("since", "yesterday")],
            "since",
            "is not a date (2026-11-01)",
        ),
        (
            &[("since", "2026-11-01T10:30:00Z")],
            "since",
            "is not on a whole hour",
        ),
        (&[("until", "2026-13-01")], "until", "is not a date"),
        (
            &[("since", "1969-12-31")],
            "since",
            "between the years 1970 and 9999",
        ),
        (
            &[("since", "2026-11-02"), ("until", "2026-11-01")],
            "until",
            "later than since",
        ),
        (
            &[("since", "2026-11-01"), ("until", "2026-11-01")],
            "until",
            "later than since",
        ),
        (&[("limit", "0")], "limit", "from 1 to 10000"),
        (&[("limit", "10001")], "limit", "from 1 to 10000"),
        (&[("limit", "ten")], "limit", "from 1 to 10000"),
        (&[("group_by", "model")], "group_by", "unknown parameter"),
        (
            &[("by", "model"), ("by", "key")],
            "by",
            "given more than once",
        ),
    ];
    for (pairs, param, problem) in cases {
        let e = UsageQuery::from_params(pairs.iter().copied(), now()).unwrap_err();
        assert_eq!(e.param, *param, "{pairs:?}");
        assert!(e.problem.contains(problem), "{pairs:?}: {}", e.problem);
        let e = GatewayError::from(e);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.kind, "invalid_request_error");
        assert_eq!(e.param.as_deref(), Some(*param));
        assert!(e.message.contains(&format!("`{param}`")), "{}", e.message);
    }
}

#[test]
fn parameters_left_out_take_their_defaults() {
    let query = UsageQuery::from_params([("period", ""), ("project", "")], now()).unwrap();
    assert_eq!(
        query,
        UsageQuery {
            by: GroupBy::Model,
            period: None,
            since: at("2026-11-01T00:00:00Z"),
            until: None,
            filters: UsageFilters::default(),
            limit: 1000,
        }
    );
    let query = UsageQuery::from_params(
        [
            ("by", "key"),
            ("period", "day"),
            ("since", "2026-10-01T05:30:00+05:30"),
            ("key", "tg-abc"),
        ],
        now(),
    )
    .unwrap();
    assert_eq!((query.by, query.period), (GroupBy::Key, Some(Period::Day)));
    assert_eq!(
        query.since,
        at("2026-10-01T00:00:00Z"),
        "an offset on a whole UTC hour"
    );
    assert_eq!(query.filters.key.as_deref(), Some("tg-abc"));
}

/// The month partitions of the usage table (PostgreSQL).
async fn partitions(store: &Db) -> Vec<String> {
    let rows = store
        .fetch_all(
            "SELECT c.relname::text AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'llm_usage_logs'::regclass ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.text("name").unwrap()).collect()
}

async fn count(store: &Db, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) AS n FROM {table}");
    store.fetch_all(&sql, &[]).await.unwrap()[0]
        .int("n")
        .unwrap()
}

async fn retention_removes_old_usage_and_keeps_the_rollup(backend: Backend) {
    let f = Fixture::new(backend).await;
    let old = |t: &str, n: usize| -> Vec<UsageRecord> {
        let r = with(
            f.record(t, Some("alpha/chat-a"), None),
            [1, 0, 0, 0, 0],
            "0.0000001",
            200,
        );
        (0..n)
            .map(|_| UsageRecord {
                id: tollgate::ids::new_id(),
                ..r.clone()
            })
            .collect()
    };
    // More than one SQLite batch in the last month to go.
    let mut rows = old("2024-01-15T10:00:00Z", 1);
    rows.extend(old("2025-09-30T23:59:59Z", 2_500));
    rows.extend(old("2025-10-01T00:00:00Z", 1));
    rows.extend(old("2026-03-05T10:00:00Z", 1));
    f.write(rows).await;
    let everything = [("since", "2024-01-01"), ("until", "2026-12-01")];
    let before = f.report(&everything).await;
    let hourly = count(&f.store, "llm_usage_hourly").await;

    // 13 months on 2026-11-15: everything before 2025-10-01 goes.
    let outcome = f
        .store
        .apply_usage_retention(13, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.cutoff, at("2025-10-01T00:00:00Z"));
    assert_eq!(
        count(&f.store, "llm_usage_logs").await,
        2,
        "October and March stay"
    );
    match backend {
        Backend::Postgres => {
            assert_eq!(
                outcome.dropped_partitions,
                ["llm_usage_logs_y2024m01", "llm_usage_logs_y2025m09"]
            );
            assert_eq!(
                outcome.deleted_rows, 0,
                "partitions are dropped, rows never deleted"
            );
            assert_eq!(
                partitions(&f.store).await,
                [
                    "llm_usage_logs_default",
                    "llm_usage_logs_y2025m10",
                    "llm_usage_logs_y2026m03"
                ]
            );
        }
        Backend::Sqlite => {
            assert_eq!(outcome.deleted_rows, 2_501);
            assert!(outcome.dropped_partitions.is_empty());
        }
    }
    // The roll-up keeps every hour, and the reports read the same totals.
    assert_eq!(count(&f.store, "llm_usage_hourly").await, hourly);
    assert_eq!(f.report(&everything).await, before);
    assert_eq!(before.total.requests, 2_503);

    // Again: nothing left to remove. 0 months: nothing is ever removed.
    let again = f
        .store
        .apply_usage_retention(13, now())
        .await
        .unwrap()
        .unwrap();
    assert!(again.dropped_partitions.is_empty() && again.deleted_rows == 0);
    let forever = f
        .store
        .apply_usage_retention(0, at("2099-01-01T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(forever, None);
    assert_eq!(count(&f.store, "llm_usage_logs").await, 2);

    // A late row for a dropped month (a replayed spool) is written, into a new partition.
    f.write(old("2024-01-20T10:00:00Z", 1)).await;
    assert_eq!(count(&f.store, "llm_usage_logs").await, 3);
    if backend == Backend::Postgres {
        assert!(partitions(&f.store)
            .await
            .contains(&"llm_usage_logs_y2024m01".to_owned()));
    }
}

async fn the_gateway_applies_the_retention_at_start(backend: Backend) {
    let f = Fixture::new(backend).await;
    let old = with(
        f.record("2020-05-01T10:00:00Z", Some("alpha/chat-a"), None),
        [1, 0, 0, 0, 0],
        "0",
        200,
    );
    let new = UsageRecord {
        id: tollgate::ids::new_id(),
        created_at: Utc::now(),
        ..old.clone()
    };
    f.write(vec![old, new]).await;
    let gw = start_gateway_with(&f.db, REGISTRY, |t| {
        t.replace("[usage]\n", "[usage]\nretention_months = 1\n")
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(&f.store, "llm_usage_logs").await > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the old row was not removed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if backend == Backend::Postgres {
        assert!(!partitions(&f.store)
            .await
            .contains(&"llm_usage_logs_y2020m05".to_owned()));
    }
    gw.running.stop().await;
    assert_eq!(
        count(&f.store, "llm_usage_hourly").await,
        2,
        "the roll-up keeps both hours"
    );
}
