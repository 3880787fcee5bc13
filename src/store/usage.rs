//! `llm_usage_logs` and `llm_usage_hourly`: batched writes (`report` reads them).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};

use chrono::{Datelike, TimeZone, Utc};

use super::{timestamp, Arg, Db};
use crate::metering::UsageRecord;

/// Months whose partition this process has already made sure of (PostgreSQL only), by
/// database (`Db::partition_key`).
static PARTITIONS: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// PostgreSQL's duplicate_table, or unique_violation on its catalog (a concurrent CREATE).
fn already_exists(e: &anyhow::Error) -> bool {
    e.downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .and_then(|e| e.code())
        .is_some_and(|code| code == "42P07" || code == "23505")
}

/// Whether the database refused the rows themselves rather than being unreachable or busy:
/// the same rows would be refused again, so they must not go back to the spool. PostgreSQL's
/// SQLSTATE classes 22 (data exception: a value out of range or of the wrong form) and 23
/// (a constraint); SQLite's constraint, type mismatch and too-big errors.
pub fn refuses_rows(e: &anyhow::Error) -> bool {
    use rusqlite::ErrorCode;
    if let Some(e) = e.downcast_ref::<rusqlite::Error>() {
        return matches!(
            e.sqlite_error_code(),
            Some(ErrorCode::ConstraintViolation | ErrorCode::TypeMismatch | ErrorCode::TooBig)
        );
    }
    e.downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .and_then(|e| e.code())
        .is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
}

fn hour_start(hour: i64) -> String {
    timestamp(
        Utc.timestamp_opt(hour * 3600, 0)
            .single()
            .unwrap_or_default(),
    )
}

impl Db {
    /// Writes the records and adds them to the hourly roll-up in one transaction.
    /// PostgreSQL takes each table's batch as one JSON array parameter expanded by
    /// `jsonb_to_recordset`: one statement text, prepared once, one round trip per batch.
    /// SQLite runs a prepared single-row statement per table, see `write_sqlite`.
    pub async fn insert_usage(&self, records: Arc<[UsageRecord]>) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let sums: Vec<HourRow> = rollup(&records);
        match self {
            Db::Postgres(_) => {
                self.ensure_partitions(&records).await?;
                let rows: Vec<LogRow> = records.iter().map(LogRow::from).collect();
                self.transaction(vec![
                    json_insert("llm_usage_logs", &LOG_COLUMNS, LOG_TAIL, &rows)?,
                    json_insert("llm_usage_hourly", &HOUR_COLUMNS, &HOURLY_ADD, &sums)?,
                ])
                .await?;
            }
            Db::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                let runtime = tokio::runtime::Handle::current();
                // SQLite's C code works through the batch for milliseconds: on a blocking
                // thread, not on one that serves requests.
                tokio::task::spawn_blocking(move || {
                    let mut handle = runtime.block_on(conn.lock_handle())?;
                    write_sqlite(&mut handle, &records, &sums)
                })
                .await??;
            }
        }
        Ok(())
    }

    async fn ensure_partitions(&self, records: &[UsageRecord]) -> anyhow::Result<()> {
        let months: HashSet<(i32, u32)> = records
            .iter()
            .map(|r| (r.created_at.year(), r.created_at.month()))
            .collect();
        for (y, m) in months {
            let name = format!("llm_usage_logs_y{y}m{m:02}");
            let key = self.partition_key(&name);
            let known = PARTITIONS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(HashSet::new)
                .contains(&key);
            if known {
                continue;
            }
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let created = self
                .execute(
                    &format!(
                        "CREATE TABLE IF NOT EXISTS {name} PARTITION OF llm_usage_logs
                         FOR VALUES FROM ('{y}-{m:02}-01') TO ('{ny}-{nm:02}-01')"
                    ),
                    &[],
                )
                .await;
            // Instances sharing the database race to make a new month's partition, and
            // IF NOT EXISTS does not stop the loser failing on the catalog: that partition
            // exists, which is all this needs.
            if let Err(e) = created {
                if !already_exists(&e) {
                    return Err(e);
                }
            }
            PARTITIONS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(HashSet::new)
                .insert(key);
        }
        Ok(())
    }

    /// A partition as the cache knows it: one process may write to several databases (the
    /// tests do), and a month made in one is not made in another.
    fn partition_key(&self, name: &str) -> String {
        match self {
            Db::Postgres(pool) => {
                let o = pool.connect_options();
                let database = o.get_database().unwrap_or_default();
                format!("{}:{}/{database}/{name}", o.get_host(), o.get_port())
            }
            Db::Sqlite(_) => name.to_owned(),
        }
    }

    /// Forgets a month's partition after the retention dropped it: a row for that month (a
    /// replayed old spool) makes it again rather than landing in the default partition.
    pub(super) fn forget_partition(&self, name: &str) {
        let key = self.partition_key(name);
        if let Some(known) = PARTITIONS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            known.remove(&key);
        }
    }
}

/// PostgreSQL: `INSERT INTO table (cols) SELECT cols FROM jsonb_to_recordset($1)`.
fn json_insert<T: serde::Serialize>(
    table: &str,
    cols: &[(&str, &str)],
    tail: &str,
    rows: &[T],
) -> anyhow::Result<(String, Vec<Arg>)> {
    let names: Vec<&str> = cols.iter().map(|(n, _)| *n).collect();
    let typed: Vec<String> = cols.iter().map(|(n, t)| format!("{n} {t}")).collect();
    let sql = format!(
        "INSERT INTO {table} ({names}) SELECT {names} FROM jsonb_to_recordset($1::jsonb) AS r({typed}) {tail}",
        names = names.join(", "),
        typed = typed.join(", ")
    );
    Ok((sql, vec![serde_json::to_string(rows)?.into()]))
}

/// Writes a batch through the handle of one of sqlx's SQLite connections, with one prepared
/// single-row statement per table, in one transaction. Through sqlx the same rows cost a
/// tenth of the gateway's CPU time more: it copies every text to hand it to its connection's
/// thread (where SQLite copies it again), clears and rebinds every parameter, and each
/// statement is a round trip to that thread.
fn write_sqlite(
    handle: &mut sqlx::sqlite::LockedSqliteHandle<'_>,
    records: &[UsageRecord],
    sums: &[HourRow],
) -> anyhow::Result<()> {
    // SAFETY: while `handle` is held, sqlx's thread makes no call on this connection or its
    // statements. The wrapper never closes the connection, and it is dropped, with the
    // statements it prepared, when this function returns, before `handle` is released.
    let mut conn = unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr())? };
    // IMMEDIATE takes the write lock up front, waiting out another writer (busy_timeout)
    // instead of failing when a read transaction would have to become a write one.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    insert_each(&tx, &LOG_INSERT, records.iter().map(LogParams::new))?;
    insert_each(&tx, &HOUR_INSERT, sums)?;
    tx.commit()?;
    Ok(())
}

/// SQLite's single-row statements, made once from the column lists.
static LOG_INSERT: LazyLock<String> =
    LazyLock::new(|| single_row_insert("llm_usage_logs", &LOG_COLUMNS, LOG_TAIL));
static HOUR_INSERT: LazyLock<String> =
    LazyLock::new(|| single_row_insert("llm_usage_hourly", &HOUR_COLUMNS, &HOURLY_ADD));

fn single_row_insert(table: &str, cols: &[(&str, &str)], tail: &str) -> String {
    let names: Vec<&str> = cols.iter().map(|(n, _)| *n).collect();
    format!(
        "INSERT INTO {table} ({}) VALUES ({}) {tail}",
        names.join(", "),
        vec!["?"; cols.len()].join(", ")
    )
}

fn insert_each<T: RowParams>(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    rows: impl IntoIterator<Item = T>,
) -> rusqlite::Result<()> {
    let mut statement = tx.prepare(sql)?;
    for row in rows {
        for (i, param) in row.params().enumerate() {
            // SQLite numbers parameters from 1.
            match param {
                Param::Text(v) => statement.raw_bind_parameter(i + 1, v)?,
                Param::Int(v) => statement.raw_bind_parameter(i + 1, v)?,
                Param::Bool(v) => statement.raw_bind_parameter(i + 1, v)?,
            }
        }
        statement.raw_execute()?;
    }
    Ok(())
}

/// One SQLite parameter, borrowed from the row it belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Param<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Bool(bool),
}

/// A row's values as parameters, in the order of its column list (a test checks them against
/// the PostgreSQL row shape). Written out because going through `serde_json::Value` cost more
/// instructions per row than SQLite's own insert.
trait RowParams {
    fn params(&self) -> impl Iterator<Item = Param<'_>>;
}

impl<T: RowParams> RowParams for &T {
    fn params(&self) -> impl Iterator<Item = Param<'_>> {
        (**self).params()
    }
}

/// A usage record with the two values SQLite stores as text that the record does not hold
/// as text. Raw usage is stored as the text it is; PostgreSQL's jsonb needs it checked first.
struct LogParams<'a> {
    record: &'a UsageRecord,
    created_at: String,
    cost_usd: String,
}

impl<'a> LogParams<'a> {
    fn new(record: &'a UsageRecord) -> Self {
        LogParams {
            record,
            created_at: timestamp(record.created_at),
            cost_usd: record.cost_usd.to_string(),
        }
    }
}

impl RowParams for LogParams<'_> {
    fn params(&self) -> impl Iterator<Item = Param<'_>> {
        let r = self.record;
        let text = Param::Text;
        let int = |v: u64| Param::Int(Some(v as i64));
        let t = &r.tokens;
        [
            text(Some(&r.id)),
            text(Some(&r.request_id)),
            text(Some(&self.created_at)),
            text(r.llm_model_id.as_deref()),
            text(r.provider_id.as_deref()),
            text(r.project_id.as_deref()),
            text(r.api_key_id.as_deref()),
            text(Some(&r.model_name)),
            text(Some(&r.endpoint)),
            Param::Bool(r.stream),
            int(u64::from(r.status_code)),
            text(r.error_type.as_deref()),
            int(t.input),
            int(t.cache_read),
            int(t.cache_write),
            int(t.output),
            int(t.reasoning),
            text(r.raw_usage.as_deref()),
            text(Some(r.usage_source.as_str())),
            Param::Bool(r.cache_hit),
            text(Some(&self.cost_usd)),
            int(r.latency_ms),
            Param::Int(r.ttft_ms.map(|v| v as i64)),
            Param::Int(r.upstream_ms.map(|v| v as i64)),
            int(u64::from(r.attempts)),
        ]
        .into_iter()
    }
}

impl RowParams for HourRow {
    fn params(&self) -> impl Iterator<Item = Param<'_>> {
        fn text(v: &str) -> Param<'_> {
            Param::Text(Some(v))
        }
        let int = |v: i64| Param::Int(Some(v));
        [
            text(&self.hour),
            text(&self.provider_id),
            text(&self.llm_model_id),
            text(&self.project_id),
            text(&self.api_key_id),
            int(self.requests),
            int(self.errors),
            int(self.input_tokens),
            int(self.cache_read_tokens),
            int(self.cache_write_tokens),
            int(self.output_tokens),
            int(self.reasoning_tokens),
            int(self.cost_usd_e10),
        ]
        .into_iter()
    }
}

/// `llm_usage_logs` columns with their PostgreSQL types, in `LogRow` order.
const LOG_COLUMNS: [(&str, &str); 25] = [
    ("id", "uuid"),
    ("request_id", "text"),
    ("created_at", "timestamptz"),
    ("llm_model_id", "uuid"),
    ("provider_id", "uuid"),
    ("project_id", "uuid"),
    ("api_key_id", "uuid"),
    ("model_name", "text"),
    ("endpoint", "text"),
    ("stream", "boolean"),
    ("status_code", "bigint"),
    ("error_type", "text"),
    ("input_tokens", "bigint"),
    ("cache_read_tokens", "bigint"),
    ("cache_write_tokens", "bigint"),
    ("output_tokens", "bigint"),
    ("reasoning_tokens", "bigint"),
    ("raw_usage", "jsonb"),
    ("usage_source", "text"),
    ("cache_hit", "boolean"),
    ("cost_usd", "numeric"),
    ("latency_ms", "bigint"),
    ("ttft_ms", "bigint"),
    ("upstream_ms", "bigint"),
    ("attempts", "bigint"),
];

/// One `llm_usage_logs` row as the JSON the batch statement reads.
#[derive(serde::Serialize)]
struct LogRow<'a> {
    id: &'a str,
    request_id: &'a str,
    created_at: String,
    llm_model_id: Option<&'a str>,
    provider_id: Option<&'a str>,
    project_id: Option<&'a str>,
    api_key_id: Option<&'a str>,
    model_name: &'a str,
    endpoint: &'a str,
    stream: bool,
    status_code: u16,
    error_type: Option<&'a str>,
    input_tokens: u64,
    cache_read_tokens: u64,
    cache_write_tokens: u64,
    output_tokens: u64,
    reasoning_tokens: u64,
    raw_usage: Option<&'a serde_json::value::RawValue>,
    usage_source: &'static str,
    cache_hit: bool,
    /// A string: the exact decimal, never a float.
    cost_usd: String,
    latency_ms: u64,
    ttft_ms: Option<u64>,
    upstream_ms: Option<u64>,
    attempts: u32,
}

impl<'a> From<&'a UsageRecord> for LogRow<'a> {
    fn from(r: &'a UsageRecord) -> Self {
        let t = &r.tokens;
        LogRow {
            id: &r.id,
            request_id: &r.request_id,
            created_at: timestamp(r.created_at),
            llm_model_id: r.llm_model_id.as_deref(),
            provider_id: r.provider_id.as_deref(),
            project_id: r.project_id.as_deref(),
            api_key_id: r.api_key_id.as_deref(),
            model_name: &r.model_name,
            endpoint: &r.endpoint,
            stream: r.stream,
            status_code: r.status_code,
            error_type: r.error_type.as_deref(),
            input_tokens: t.input,
            cache_read_tokens: t.cache_read,
            cache_write_tokens: t.cache_write,
            output_tokens: t.output,
            reasoning_tokens: t.reasoning,
            raw_usage: r
                .raw_usage
                .as_deref()
                .and_then(|u| serde_json::from_str(u).ok()),
            usage_source: r.usage_source.as_str(),
            cache_hit: r.cache_hit,
            cost_usd: r.cost_usd.to_string(),
            latency_ms: r.latency_ms,
            ttft_ms: r.ttft_ms,
            upstream_ms: r.upstream_ms,
            attempts: r.attempts,
        }
    }
}

const HOUR_COLUMNS: [(&str, &str); 13] = [
    ("hour", "timestamptz"),
    ("provider_id", "text"),
    ("llm_model_id", "text"),
    ("project_id", "text"),
    ("api_key_id", "text"),
    ("requests", "bigint"),
    ("errors", "bigint"),
    ("input_tokens", "bigint"),
    ("cache_read_tokens", "bigint"),
    ("cache_write_tokens", "bigint"),
    ("output_tokens", "bigint"),
    ("reasoning_tokens", "bigint"),
    ("cost_usd_e10", "bigint"),
];

/// One `llm_usage_hourly` increment; the dimensions use "" for none.
#[derive(serde::Serialize, Default)]
struct HourRow {
    hour: String,
    provider_id: String,
    llm_model_id: String,
    project_id: String,
    api_key_id: String,
    requests: i64,
    errors: i64,
    input_tokens: i64,
    cache_read_tokens: i64,
    cache_write_tokens: i64,
    output_tokens: i64,
    reasoning_tokens: i64,
    cost_usd_e10: i64,
}

/// A replayed spool batch may hold rows that did reach the database: keep the first.
const LOG_TAIL: &str = "ON CONFLICT DO NOTHING";

/// Adds a batch's sums to the roll-up. A sum stops at the BIGINT maximum instead of
/// overflowing: PostgreSQL would refuse the batch, and SQLite would store the sum as REAL,
/// which every report after it fails to read.
static HOURLY_ADD: LazyLock<String> = LazyLock::new(|| {
    const MAX: i64 = i64::MAX;
    let sums: Vec<String> = HOUR_COLUMNS
        .iter()
        .filter(|(_, ty)| *ty == "bigint") // the sums; not the hour and the dimensions
        .map(|(c, _)| {
            format!(
                "{c} = CASE WHEN llm_usage_hourly.{c} > {MAX} - excluded.{c} THEN {MAX}
                 ELSE llm_usage_hourly.{c} + excluded.{c} END"
            )
        })
        .collect();
    format!(
        "ON CONFLICT (hour, provider_id, llm_model_id, project_id, api_key_id) DO UPDATE SET {}",
        sums.join(", ")
    )
});

/// Sums a batch per (hour, provider, model, project, key) for `llm_usage_hourly`.
fn rollup(records: &[UsageRecord]) -> Vec<HourRow> {
    type Key<'a> = (i64, &'a str, &'a str, &'a str, &'a str);
    let mut sums: BTreeMap<Key, HourRow> = BTreeMap::new();
    for r in records {
        let key = (
            r.created_at.timestamp().div_euclid(3600),
            r.provider_id.as_deref().unwrap_or_default(),
            r.llm_model_id.as_deref().unwrap_or_default(),
            r.project_id.as_deref().unwrap_or_default(),
            r.api_key_id.as_deref().unwrap_or_default(),
        );
        let s = sums.entry(key).or_default();
        let t = &r.tokens;
        // Saturating, as the roll-up's upsert is (HOURLY_ADD).
        let add = |sum: &mut i64, n: i64| *sum = sum.saturating_add(n);
        add(&mut s.requests, 1);
        add(&mut s.errors, i64::from(r.status_code >= 400));
        add(&mut s.input_tokens, t.input as i64);
        add(&mut s.cache_read_tokens, t.cache_read as i64);
        add(&mut s.cache_write_tokens, t.cache_write as i64);
        add(&mut s.output_tokens, t.output as i64);
        add(&mut s.reasoning_tokens, t.reasoning as i64);
        add(&mut s.cost_usd_e10, crate::metering::cost_e10(r.cost_usd));
    }
    sums.into_iter()
        .map(|((hour, provider, model, project, key), s)| HourRow {
            hour: hour_start(hour),
            provider_id: provider.to_owned(),
            llm_model_id: model.to_owned(),
            project_id: project.to_owned(),
            api_key_id: key.to_owned(),
            ..s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The written-out parameter lists follow the column lists, which follow the fields.
    #[test]
    fn row_parameters_follow_the_columns() {
        let rec = UsageRecord {
            llm_model_id: Some("m".into()),
            model_name: "n".into(),
            stream: true,
            tokens: crate::metering::TokenUsage {
                input: 3,
                output: 4,
                ..Default::default()
            },
            raw_usage: Some("{\"prompt_tokens\":3}".into()),
            usage_source: crate::metering::UsageSource::Provider,
            cost_usd: "0.5".parse().unwrap(),
            latency_ms: 9,
            upstream_ms: Some(7),
            ..crate::metering::sample_record()
        };
        let row = LogRow::from(&rec);
        let json = serde_json::to_value(&row).unwrap();
        let names: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut columns: Vec<&str> = LOG_COLUMNS.iter().map(|(n, _)| *n).collect();
        let mut sorted = names.clone();
        sorted.sort();
        columns.sort();
        assert_eq!(
            sorted, columns,
            "LogRow fields and LOG_COLUMNS name the same columns"
        );
        let log = LogParams::new(&rec);
        let params: Vec<Param> = log.params().collect();
        assert_eq!(params.len(), LOG_COLUMNS.len());
        for ((name, _), param) in LOG_COLUMNS.iter().zip(&params) {
            let expected = &json[*name];
            let same = match *param {
                Param::Text(None) | Param::Int(None) => expected.is_null(),
                Param::Text(Some(t)) => {
                    expected.as_str() == Some(t)
                        || serde_json::from_str::<serde_json::Value>(t).ok().as_ref()
                            == Some(expected)
                }
                Param::Int(Some(i)) => expected.as_i64() == Some(i),
                Param::Bool(b) => expected.as_bool() == Some(b),
            };
            assert!(same, "column {name}: {param:?} vs {expected}");
        }
        let hour = &rollup(std::slice::from_ref(&rec))[0];
        let json = serde_json::to_value(hour).unwrap();
        let params: Vec<Param> = hour.params().collect();
        assert_eq!(params.len(), HOUR_COLUMNS.len());
        for ((name, _), param) in HOUR_COLUMNS.iter().zip(params) {
            let same = match param {
                Param::Text(Some(t)) => json[*name].as_str() == Some(t),
                Param::Int(Some(i)) => json[*name].as_i64() == Some(i),
                _ => false,
            };
            assert!(same, "hourly column {name}");
        }
    }
}
