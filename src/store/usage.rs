//! `llm_usage_logs` and `llm_usage_hourly`: batched writes and the reports read from them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use chrono::{Datelike, TimeZone, Timelike, Utc};
use rust_decimal::Decimal;

use super::{timestamp, Arg, Db};
use crate::metering::UsageRecord;

/// Months whose partition this process has already made sure of (PostgreSQL only).
static PARTITIONS: Mutex<Option<HashSet<String>>> = Mutex::new(None);

#[derive(Debug, Clone, PartialEq)]
pub struct UsageTotals {
    pub requests: i64,
    pub errors: i64,
    pub input_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_usd: Decimal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UsageReportRow {
    pub group: String,
    pub totals: UsageTotals,
}

fn hour_of(t: chrono::DateTime<Utc>) -> String {
    timestamp(
        Utc.with_ymd_and_hms(t.year(), t.month(), t.day(), t.hour(), 0, 0)
            .single()
            .unwrap_or(t),
    )
}

impl Db {
    /// Writes the records and adds them to the hourly roll-up, in one transaction. PostgreSQL
    /// gets one `INSERT ... SELECT FROM UNNEST(arrays)` per table (one statement, one round
    /// trip, whatever the batch size); SQLite runs one prepared single-row statement per row,
    /// which is what it is fast at (no network, and no huge parameter lists to bind).
    pub async fn insert_usage(&self, records: &[UsageRecord]) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let sums = rollup(records);
        let stmts: Vec<(String, Vec<Arg>)> = match self {
            Db::Postgres(_) => {
                self.ensure_partitions(records).await?;
                vec![usage_unnest(records), rollup_unnest(&sums)]
            }
            Db::Sqlite(_) => {
                // A replayed spool batch may hold rows that did reach the database: keep the first.
                let insert = single_row(
                    "llm_usage_logs",
                    USAGE_COLUMNS,
                    25,
                    "ON CONFLICT DO NOTHING",
                );
                let upsert = single_row("llm_usage_hourly", HOURLY_COLUMNS, 13, HOURLY_ADD);
                records
                    .iter()
                    .map(|r| (insert.clone(), usage_args(r)))
                    .chain(
                        sums.iter()
                            .map(|(k, s)| (upsert.clone(), hourly_args(k, s))),
                    )
                    .collect()
            }
        };
        self.transaction(&stmts).await?;
        Ok(())
    }

    async fn ensure_partitions(&self, records: &[UsageRecord]) -> anyhow::Result<()> {
        let months: HashSet<(i32, u32)> = records
            .iter()
            .map(|r| (r.created_at.year(), r.created_at.month()))
            .collect();
        for (y, m) in months {
            let name = format!("llm_usage_logs_y{y}m{m:02}");
            let known = PARTITIONS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(HashSet::new)
                .contains(&name);
            if known {
                continue;
            }
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            self.execute(
                &format!(
                    "CREATE TABLE IF NOT EXISTS {name} PARTITION OF llm_usage_logs
                     FOR VALUES FROM ('{y}-{m:02}-01') TO ('{ny}-{nm:02}-01')"
                ),
                &[],
            )
            .await?;
            PARTITIONS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(HashSet::new)
                .insert(name);
        }
        Ok(())
    }

    /// Totals per group since a time, from the hourly roll-up. `by` is model, provider,
    /// project or key.
    pub async fn usage_report(
        &self,
        by: &str,
        since: chrono::DateTime<Utc>,
    ) -> anyhow::Result<Vec<UsageReportRow>> {
        let (join, group) = match by {
            "model" => (
                "LEFT JOIN llm_models m ON m.id::text = h.llm_model_id
                 LEFT JOIN llm_providers p ON p.id = m.provider_id",
                "COALESCE(p.name || '/' || m.model_id, '(none)')",
            ),
            "provider" => (
                "LEFT JOIN llm_providers p ON p.id::text = h.provider_id",
                "COALESCE(p.name, '(none)')",
            ),
            "project" => (
                "LEFT JOIN projects p ON p.id::text = h.project_id",
                "COALESCE(p.name, '(none)')",
            ),
            "key" => (
                "LEFT JOIN api_keys k ON k.id::text = h.api_key_id",
                "COALESCE(k.name || ' (' || k.key_prefix || ')', '(none)')",
            ),
            other => anyhow::bail!(
                "cannot group usage by {other:?}: use model, provider, project or key"
            ),
        };
        let sql = format!(
            "SELECT {group} AS grp, SUM(h.requests)::bigint AS requests, SUM(h.errors)::bigint AS errors,
                SUM(h.input_tokens)::bigint AS input_tokens, SUM(h.cache_read_tokens)::bigint AS cache_read_tokens,
                SUM(h.cache_write_tokens)::bigint AS cache_write_tokens,
                SUM(h.output_tokens)::bigint AS output_tokens, SUM(h.reasoning_tokens)::bigint AS reasoning_tokens,
                SUM(h.cost_usd_e10)::bigint AS cost_usd_e10
             FROM llm_usage_hourly h {join}
             WHERE h.hour >= $1::timestamptz
             GROUP BY {group} ORDER BY SUM(h.cost_usd_e10) DESC, {group}"
        );
        let rows = self.fetch_all(&sql, &[timestamp(since).into()]).await?;
        let mut out = Vec::new();
        for r in rows {
            // SUM over no rows is NULL; the casts keep PostgreSQL's NUMERIC sums as BIGINT.
            let sum = |c: &str| -> anyhow::Result<i64> { Ok(r.opt_int(c)?.unwrap_or(0)) };
            out.push(UsageReportRow {
                group: r.text("grp")?,
                totals: UsageTotals {
                    requests: sum("requests")?,
                    errors: sum("errors")?,
                    input_tokens: sum("input_tokens")?,
                    cache_read_tokens: sum("cache_read_tokens")?,
                    cache_write_tokens: sum("cache_write_tokens")?,
                    output_tokens: sum("output_tokens")?,
                    reasoning_tokens: sum("reasoning_tokens")?,
                    cost_usd: Decimal::from_i128_with_scale(i128::from(sum("cost_usd_e10")?), 10)
                        .normalize(),
                },
            });
        }
        Ok(out)
    }
}

const USAGE_COLUMNS: &str = "id, request_id, created_at, llm_model_id, provider_id, project_id,
    api_key_id, model_name, endpoint, stream, status_code, error_type, input_tokens,
    cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens, raw_usage,
    usage_source, cache_hit, cost_usd, latency_ms, ttft_ms, upstream_ms, attempts";

const HOURLY_ADD: &str = "ON CONFLICT (hour, provider_id, llm_model_id, project_id, api_key_id)
    DO UPDATE SET
    requests = llm_usage_hourly.requests + excluded.requests,
    errors = llm_usage_hourly.errors + excluded.errors,
    input_tokens = llm_usage_hourly.input_tokens + excluded.input_tokens,
    cache_read_tokens = llm_usage_hourly.cache_read_tokens + excluded.cache_read_tokens,
    cache_write_tokens = llm_usage_hourly.cache_write_tokens + excluded.cache_write_tokens,
    output_tokens = llm_usage_hourly.output_tokens + excluded.output_tokens,
    reasoning_tokens = llm_usage_hourly.reasoning_tokens + excluded.reasoning_tokens,
    cost_usd_e10 = llm_usage_hourly.cost_usd_e10 + excluded.cost_usd_e10";

const HOURLY_COLUMNS: &str = "hour, provider_id, llm_model_id, project_id, api_key_id, requests,
    errors, input_tokens, cache_read_tokens, cache_write_tokens, output_tokens,
    reasoning_tokens, cost_usd_e10";

/// A single-row statement (the SQLite path) for a table and its columns.
fn single_row(table: &str, cols: &str, n: usize, tail: &str) -> String {
    let values: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO {table} ({cols}) VALUES ({}) {tail}",
        values.join(", ")
    )
}

fn usage_args(r: &UsageRecord) -> Vec<Arg> {
    let t = &r.tokens;
    vec![
        r.id.clone().into(),
        r.request_id.clone().into(),
        timestamp(r.created_at).into(),
        r.llm_model_id.clone().into(),
        r.provider_id.clone().into(),
        r.project_id.clone().into(),
        r.api_key_id.clone().into(),
        r.model_name.clone().into(),
        r.endpoint.clone().into(),
        r.stream.into(),
        i64::from(r.status_code).into(),
        r.error_type.clone().into(),
        (t.input as i64).into(),
        (t.cache_read as i64).into(),
        (t.cache_write as i64).into(),
        (t.output as i64).into(),
        (t.reasoning as i64).into(),
        r.raw_usage.clone().into(),
        r.usage_source.as_str().into(),
        r.cache_hit.into(),
        r.cost_usd.to_string().into(),
        (r.latency_ms as i64).into(),
        r.ttft_ms.map(|v| v as i64).into(),
        r.upstream_ms.map(|v| v as i64).into(),
        i64::from(r.attempts).into(),
    ]
}

/// The PostgreSQL batch: the same columns as `usage_args`, one array per column.
fn usage_unnest(records: &[UsageRecord]) -> (String, Vec<Arg>) {
    const TYPES: [&str; 25] = [
        "uuid",
        "text",
        "timestamptz",
        "uuid",
        "uuid",
        "uuid",
        "uuid",
        "text",
        "text",
        "bool",
        "int8",
        "text",
        "int8",
        "int8",
        "int8",
        "int8",
        "int8",
        "jsonb",
        "text",
        "bool",
        "numeric",
        "int8",
        "int8",
        "int8",
        "int8",
    ];
    let rows: Vec<Vec<Arg>> = records.iter().map(usage_args).collect();
    (
        unnest_insert(
            "llm_usage_logs",
            USAGE_COLUMNS,
            &TYPES,
            "ON CONFLICT DO NOTHING",
        ),
        columns(&rows, TYPES.len()),
    )
}

fn rollup_unnest(sums: &[(HourKey, [i64; 8])]) -> (String, Vec<Arg>) {
    const TYPES: [&str; 13] = [
        "timestamptz",
        "text",
        "text",
        "text",
        "text",
        "int8",
        "int8",
        "int8",
        "int8",
        "int8",
        "int8",
        "int8",
        "int8",
    ];
    let rows: Vec<Vec<Arg>> = sums.iter().map(|(k, s)| hourly_args(k, s)).collect();
    (
        unnest_insert("llm_usage_hourly", HOURLY_COLUMNS, &TYPES, HOURLY_ADD),
        columns(&rows, TYPES.len()),
    )
}

fn unnest_insert(table: &str, cols: &str, types: &[&str], tail: &str) -> String {
    // Arrays travel as text[], int8[] and bool[]; PostgreSQL casts them element by element.
    let arrays: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| match *t {
            "int8" | "bool" => format!("${}::{t}[]", i + 1),
            _ => format!("${}::text[]::{t}[]", i + 1),
        })
        .collect();
    format!(
        "INSERT INTO {table} ({cols}) SELECT * FROM UNNEST({}) {tail}",
        arrays.join(", ")
    )
}

/// Turns rows of scalar arguments into one array argument per column.
fn columns(rows: &[Vec<Arg>], n: usize) -> Vec<Arg> {
    (0..n)
        .map(|c| match &rows[0][c] {
            Arg::Text(_) => Arg::TextArray(
                rows.iter()
                    .map(|r| match &r[c] {
                        Arg::Text(v) => v.clone(),
                        _ => None,
                    })
                    .collect(),
            ),
            Arg::Int(_) => Arg::IntArray(
                rows.iter()
                    .map(|r| match &r[c] {
                        Arg::Int(v) => *v,
                        _ => None,
                    })
                    .collect(),
            ),
            Arg::Bool(_) => Arg::BoolArray(
                rows.iter()
                    .map(|r| matches!(r[c], Arg::Bool(true)))
                    .collect(),
            ),
            _ => unreachable!("rows hold scalars"),
        })
        .collect()
}

type HourKey = (String, String, String, String, String);

fn hourly_args(k: &HourKey, s: &[i64; 8]) -> Vec<Arg> {
    let mut args: Vec<Arg> = vec![
        k.0.clone().into(),
        k.1.clone().into(),
        k.2.clone().into(),
        k.3.clone().into(),
        k.4.clone().into(),
    ];
    args.extend(s.iter().map(|&v| Arg::from(v)));
    args
}

/// Sums a batch per (hour, provider, model, project, key) for `llm_usage_hourly`.
fn rollup(records: &[UsageRecord]) -> Vec<(HourKey, [i64; 8])> {
    let mut sums: BTreeMap<HourKey, [i64; 8]> = BTreeMap::new();
    for r in records {
        let key = (
            hour_of(r.created_at),
            r.provider_id.clone().unwrap_or_default(),
            r.llm_model_id.clone().unwrap_or_default(),
            r.project_id.clone().unwrap_or_default(),
            r.api_key_id.clone().unwrap_or_default(),
        );
        let s = sums.entry(key).or_default();
        let t = &r.tokens;
        s[0] += 1;
        s[1] += i64::from(r.status_code >= 400);
        s[2] += t.input as i64;
        s[3] += t.cache_read as i64;
        s[4] += t.cache_write as i64;
        s[5] += t.output as i64;
        s[6] += t.reasoning as i64;
        s[7] += crate::metering::cost_e10(r.cost_usd);
    }
    sums.into_iter().collect()
}
