//! The database: one pool, PostgreSQL or SQLite, the queries per table, the usage writer
//! that batches the request path's usage rows into it (`writer`), the usage reports read from
//! the hourly roll-up (`report`, `report_params`) and the usage retention (`retention`).
//!
//! Every statement is written once, in PostgreSQL syntax with `$N` parameters and explicit
//! casts (`$1::uuid`). For SQLite the casts are dropped and `$N` becomes `?N`, which SQLite
//! understands natively: both schemas store the same values, SQLite as TEXT where PostgreSQL
//! has UUID, NUMERIC, JSONB or TIMESTAMPTZ. Parameters are therefore bound as text, integers
//! and booleans only, and decimals always travel as exact decimal strings.

mod access_rows;
mod audit;
mod columns;
mod keys;
mod models;
mod plan;
mod projects;
mod providers;
mod registry;
mod report;
mod report_params;
mod retention;
mod settings;
mod spend;
mod tx;
mod usage;
mod version;
mod violation;
mod writer;

pub use access_rows::{KEY_COLUMNS, PROJECT_COLUMNS};
pub use audit::{AuditEntry, AuditFilter};
pub use columns::{rfc3339, JsonRow};
pub use keys::{ApiKeyRow, ApiKeyUpdate, NewApiKey};
pub use models::{ModelFilter, MODEL_COLUMNS};
pub use plan::{Change, PlannedChange};
pub use projects::{NewProject, ProjectRow, ProjectUpdate};
pub use providers::PROVIDER_COLUMNS;
pub use registry::{
    ModelRow, ProviderRow, RegistryRows, SyncReport, KEY_IN_CONFIG, ROUTE_SETTING_PREFIX,
};
pub use report::{GroupBy, Period, UsageFilters, UsageQuery, UsageReport, UsageRow, UsageTotals};
pub use report_params::{ParamError, DEFAULT_LIMIT, MAX_LIMIT};
pub use retention::{retention_cutoff, run_usage_retention, RetentionOutcome};
pub use tx::Tx;
pub use usage::refuses_rows;
pub use version::{RegistryListener, LISTENER_APPLICATION_NAME, REGISTRY_CHANNEL};
pub use violation::{violation, Violation};
pub use writer::{usage_pipeline, UsageSink, UsageWriter};

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};

static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone, Debug)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// A bound parameter. Only these three shapes cross the boundary, see the module comment.
#[derive(Clone, Debug)]
pub enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(Option<bool>),
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_owned()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(Some(v))
    }
}
impl From<Option<bool>> for Arg {
    fn from(v: Option<bool>) -> Self {
        Arg::Bool(v)
    }
}

/// A result row from either backend, read by column name.
pub enum DbRow {
    Postgres(sqlx::postgres::PgRow),
    Sqlite(sqlx::sqlite::SqliteRow),
}

impl DbRow {
    pub fn text(&self, col: &str) -> anyhow::Result<String> {
        self.opt_text(col)?
            .with_context(|| format!("column {col} is NULL"))
    }
    pub fn opt_text(&self, col: &str) -> anyhow::Result<Option<String>> {
        Ok(match self {
            DbRow::Postgres(r) => r.try_get(col)?,
            DbRow::Sqlite(r) => r.try_get(col)?,
        })
    }
    pub fn int(&self, col: &str) -> anyhow::Result<i64> {
        self.opt_int(col)?
            .with_context(|| format!("column {col} is NULL"))
    }
    pub fn opt_int(&self, col: &str) -> anyhow::Result<Option<i64>> {
        Ok(match self {
            DbRow::Postgres(r) => r.try_get(col)?,
            DbRow::Sqlite(r) => r.try_get(col)?,
        })
    }
    pub fn bool(&self, col: &str) -> anyhow::Result<bool> {
        self.opt_bool(col)?
            .with_context(|| format!("column {col} is NULL"))
    }
    pub fn opt_bool(&self, col: &str) -> anyhow::Result<Option<bool>> {
        Ok(match self {
            DbRow::Postgres(r) => r.try_get(col)?,
            DbRow::Sqlite(r) => r.try_get(col)?,
        })
    }
    /// A NUMERIC column read as text (`col::text`), exactly.
    pub fn opt_decimal(&self, col: &str) -> anyhow::Result<Option<rust_decimal::Decimal>> {
        self.opt_text(col)?
            .map(|t| {
                rust_decimal::Decimal::from_str(t.trim())
                    .map(|d| d.normalize())
                    .with_context(|| format!("column {col} is not a decimal: {t:?}"))
            })
            .transpose()
    }
    /// A timestamp column read as text (`col::text`): PostgreSQL's form or the one
    /// `timestamp` writes.
    pub fn opt_time(&self, col: &str) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
        self.opt_text(col)?
            .map(|t| {
                parse_timestamp(&t).with_context(|| format!("column {col} is not a time: {t:?}"))
            })
            .transpose()
    }
}

/// The `SET` list of an UPDATE that changes only the fields given, its parameters numbered
/// from `$1`.
#[derive(Default)]
struct Changes {
    sets: Vec<String>,
    args: Vec<Arg>,
}

impl Changes {
    /// `column = $N::cast` (cast may be empty).
    fn set(&mut self, column: &str, cast: &str, value: impl Into<Arg>) {
        self.args.push(value.into());
        let n = self.args.len();
        self.sets.push(format!("{column} = ${n}{cast}"));
    }

    fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// `UPDATE table SET ... WHERE where_` with `where_`'s own parameters following, written
    /// as `$W1`, `$W2`, ...
    fn update(mut self, table: &str, where_: &str, where_args: Vec<Arg>) -> (String, Vec<Arg>) {
        let mut condition = where_.to_owned();
        for i in (1..=where_args.len()).rev() {
            condition = condition.replace(&format!("$W{i}"), &format!("${}", self.args.len() + i));
        }
        self.args.extend(where_args);
        let sql = format!(
            "UPDATE {table} SET {} WHERE {condition}",
            self.sets.join(", ")
        );
        (sql, self.args)
    }
}

/// A timestamp as either database gives it back as text.
pub fn parse_timestamp(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .or_else(|_| chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// The SQLite form of a statement, rewritten once per distinct text: the usage writer runs
/// the same few statements thousands of times a second.
fn sqlite_sql(pg: &str) -> std::sync::Arc<str> {
    use std::collections::HashMap;
    use std::sync::{Arc, LazyLock, Mutex};
    static REWRITTEN: LazyLock<Mutex<HashMap<String, Arc<str>>>> = LazyLock::new(Default::default);
    let mut cache = REWRITTEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(sql) = cache.get(pg) {
        return sql.clone();
    }
    let sql: Arc<str> = sqlite_dialect(pg).into();
    // Statements with lists of varying length would grow the cache without end: keep it small.
    if cache.len() < 256 {
        cache.insert(pg.to_owned(), sql.clone());
    }
    sql
}

/// Rewrites a PostgreSQL-syntax statement for SQLite (see the module comment).
fn sqlite_dialect(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.find(['$', ':']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("::") {
            // drop the cast's type name
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            rest = &after[end..];
        } else if tail.starts_with('$') && tail[1..].starts_with(|c: char| c.is_ascii_digit()) {
            out.push('?');
            rest = &tail[1..];
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

fn bind_sqlite<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    args: impl IntoIterator<Item = Arg>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    for a in args {
        q = match a {
            Arg::Text(v) => q.bind(v),
            Arg::Int(v) => q.bind(v),
            Arg::Bool(v) => q.bind(v),
        };
    }
    q
}

fn bind_pg<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    args: impl IntoIterator<Item = Arg>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    for a in args {
        q = match a {
            Arg::Text(v) => q.bind(v),
            Arg::Int(v) => q.bind(v),
            Arg::Bool(v) => q.bind(v),
        };
    }
    q
}

impl Db {
    /// Opens the pool. SQLite runs in WAL mode so the usage writer never blocks readers.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Db> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .with_context(|| "invalid sqlite database url")?
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                // A statement that may change several rows and then fail (the config sync's
                // UPDATEs; not the usage writer's single-row INSERTs) keeps a statement
                // journal to undo itself: in a file that cost two write syscalls per page
                // touched, in memory it is a copy.
                .pragma("temp_store", "memory")
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(opts)
                .await
                .with_context(|| format!("cannot open {}", redact_url(url)))?;
            Ok(Db::Sqlite(pool))
        } else {
            let opts =
                PgConnectOptions::from_str(url).with_context(|| "invalid postgres database url")?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(opts)
                .await
                .with_context(|| format!("cannot connect to {}", redact_url(url)))?;
            Ok(Db::Postgres(pool))
        }
    }

    /// Opens one connection that cannot write: a SQLite file is neither created nor changed,
    /// and a PostgreSQL session's transactions are read-only (for `check-config`).
    pub async fn connect_read_only(url: &str) -> anyhow::Result<Db> {
        let timeout = Duration::from_secs(3);
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .with_context(|| "invalid sqlite database url")?
                .create_if_missing(false)
                .read_only(true);
            let file = opts.get_filename();
            if file != std::path::Path::new(":memory:") && !file.exists() {
                anyhow::bail!("{} does not exist yet", file.display());
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(timeout)
                .connect_with(opts)
                .await
                .with_context(|| format!("cannot open {}", redact_url(url)))?;
            Ok(Db::Sqlite(pool))
        } else {
            let opts = PgConnectOptions::from_str(url)
                .with_context(|| "invalid postgres database url")?
                .options([("default_transaction_read_only", "on")]);
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(timeout)
                .connect_with(opts)
                .await
                .with_context(|| format!("cannot connect to {}", redact_url(url)))?;
            Ok(Db::Postgres(pool))
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Db::Postgres(_) => "postgres",
            Db::Sqlite(_) => "sqlite",
        }
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Db::Postgres(p) => PG_MIGRATIONS.run(p).await?,
            Db::Sqlite(p) => {
                // Some migrations rebuild a table that others refer to (SQLite cannot change
                // a column's constraints in place). With foreign keys on, dropping the old
                // table would run the ON DELETE actions of every row referring to it; SQLite's
                // own procedure for such changes turns them off (outside any transaction).
                let mut conn = p.acquire().await?;
                sqlx::query("PRAGMA foreign_keys = OFF")
                    .execute(&mut *conn)
                    .await?;
                let migrated = SQLITE_MIGRATIONS.run(&mut *conn).await;
                sqlx::query("PRAGMA foreign_keys = ON")
                    .execute(&mut *conn)
                    .await?;
                migrated?
            }
        }
        Ok(())
    }

    pub async fn ping(&self) -> bool {
        self.fetch_all("SELECT 1 AS one", &[]).await.is_ok()
    }

    fn sql<'a>(&self, pg: &'a str) -> Cow<'a, str> {
        match self {
            Db::Postgres(_) => Cow::Borrowed(pg),
            Db::Sqlite(_) => Cow::Owned(sqlite_sql(pg).to_string()),
        }
    }

    pub async fn execute(&self, sql: &str, args: &[Arg]) -> anyhow::Result<u64> {
        let sql = self.sql(sql);
        Ok(match self {
            Db::Postgres(p) => bind_pg(sqlx::query(&sql), args.iter().cloned())
                .execute(p)
                .await?
                .rows_affected(),
            Db::Sqlite(p) => bind_sqlite(sqlx::query(&sql), args.iter().cloned())
                .execute(p)
                .await?
                .rows_affected(),
        })
    }

    pub async fn fetch_all(&self, sql: &str, args: &[Arg]) -> anyhow::Result<Vec<DbRow>> {
        let sql = self.sql(sql);
        Ok(match self {
            Db::Postgres(p) => bind_pg(sqlx::query(&sql), args.iter().cloned())
                .fetch_all(p)
                .await?
                .into_iter()
                .map(DbRow::Postgres)
                .collect(),
            Db::Sqlite(p) => bind_sqlite(sqlx::query(&sql), args.iter().cloned())
                .fetch_all(p)
                .await?
                .into_iter()
                .map(DbRow::Sqlite)
                .collect(),
        })
    }

    /// Runs the statements in one transaction, all of them or none, and returns the number
    /// of rows each one touched. They are taken by value so that their text parameters move
    /// into the driver instead of being copied (the usage writer binds many).
    pub async fn transaction(&self, stmts: Vec<(String, Vec<Arg>)>) -> anyhow::Result<Vec<u64>> {
        let mut affected = Vec::with_capacity(stmts.len());
        match self {
            Db::Postgres(p) => {
                let mut tx = p.begin().await?;
                for (sql, args) in stmts {
                    let done = bind_pg(sqlx::query(&sql), args).execute(&mut *tx).await?;
                    affected.push(done.rows_affected());
                }
                tx.commit().await?;
            }
            Db::Sqlite(p) => {
                let mut tx = p.begin().await?;
                for (sql, args) in stmts {
                    let sql = sqlite_sql(&sql);
                    let done = bind_sqlite(sqlx::query(&sql), args)
                        .execute(&mut *tx)
                        .await?;
                    affected.push(done.rows_affected());
                }
                tx.commit().await?;
            }
        }
        Ok(affected)
    }

    pub async fn close(&self) {
        match self {
            Db::Postgres(p) => p.close().await,
            Db::Sqlite(p) => p.close().await,
        }
    }
}

/// Database URLs may carry a password; logs and errors show them without it.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// Timestamps are written by the application in one format, so SQLite compares them as text.
/// Written out digit by digit (the same text as chrono's `to_rfc3339_opts(Millis, true)`, which
/// costs several times more): every usage row is stamped.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    }
    let millis = t.timestamp_subsec_millis().min(999); // a leap second reads as 1000+
    let mut out = String::with_capacity(24);
    let mut push = |n: u32, width: u32, after: char| {
        for i in (0..width).rev() {
            out.push(char::from(b'0' + (n / 10u32.pow(i) % 10) as u8));
        }
        out.push(after);
    };
    push(year as u32, 4, '-');
    push(t.month(), 2, '-');
    push(t.day(), 2, 'T');
    push(t.hour(), 2, ':');
    push(t.minute(), 2, ':');
    push(t.second(), 2, '.');
    push(millis, 3, 'Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialect_drops_casts_and_numbers_parameters() {
        assert_eq!(
            sqlite_dialect("SELECT id::text FROM t WHERE a = $1::uuid AND b = $12 AND c = 'x:y'"),
            "SELECT id FROM t WHERE a = ?1 AND b = ?12 AND c = 'x:y'"
        );
    }

    #[test]
    fn timestamps_read_as_chrono_writes_them() {
        use chrono::TimeZone;
        for (secs, millis) in [
            (0, 0),
            (1_795_000_000, 7),
            (1_795_000_059, 999),
            (951_782_400, 120),   // 2000-02-29
            (253_402_300_799, 5), // 9999-12-31T23:59:59
        ] {
            let t = chrono::Utc.timestamp_opt(secs, millis * 1_000_000).unwrap();
            assert_eq!(
                timestamp(t),
                t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            );
        }
    }

    #[test]
    fn timestamps_are_read_in_both_databases_forms() {
        let pg = parse_timestamp("2026-11-30 12:34:56.789+00").unwrap();
        let sqlite = parse_timestamp("2026-11-30T12:34:56.789Z").unwrap();
        assert_eq!(pg, sqlite);
        assert_eq!(parse_timestamp(&timestamp(pg)), Some(pg));
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact_url("postgres://u:secret@db:5432/x"),
            "postgres://***@db:5432/x"
        );
        assert_eq!(redact_url("sqlite://t.db"), "sqlite://t.db");
    }
}
