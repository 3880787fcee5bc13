//! Usage retention: usage rows are kept for `usage.retention_months` months (0: for ever);
//! older ones go, at start and once a day. The hourly roll-up `llm_usage_hourly` is kept
//! whole: it is small, and the reports read it.
//!
//! A month goes once all of it is older than the retention: with 13 months on 2026-11-15,
//! everything before 2025-10-01 goes. On PostgreSQL `llm_usage_logs` is partitioned by month
//! and a month goes by dropping its partition, never by DELETE, which would leave dead rows to
//! vacuum and indexes to shrink. Only partitions named as the usage writer names them
//! (`llm_usage_logs_yYYYYmMM`) are dropped; the default partition is left alone. SQLite has no
//! partitions: the same rows are deleted in batches, each its own short transaction, so the
//! usage writer waits at most one batch (the file keeps its size; freed pages are reused).

use std::time::Duration;

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveTime, Utc};

use super::{timestamp, Db};

/// Rows one SQLite DELETE removes at most.
const SQLITE_BATCH: u64 = 1000;

/// What one pass removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Usage before this went.
    pub cutoff: DateTime<Utc>,
    /// PostgreSQL: the partitions dropped.
    pub dropped_partitions: Vec<String>,
    /// SQLite: the rows deleted.
    pub deleted_rows: u64,
}

/// The start of the oldest month kept, or None to keep everything.
pub fn retention_cutoff(months: u32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if months == 0 {
        return None;
    }
    let then = now.checked_sub_months(Months::new(months))?;
    Some(
        then.date_naive()
            .with_day(1)?
            .and_time(NaiveTime::MIN)
            .and_utc(),
    )
}

/// Applies the retention at start and then daily, until the task is aborted. A pass that
/// fails (the database away, a drop that waited too long for its lock) is logged and tried
/// again within the hour.
pub async fn run_usage_retention(db: Db, months: u32) {
    if months == 0 {
        tracing::info!("usage retention is off (usage.retention_months = 0): usage rows are kept");
        return;
    }
    tracing::info!(months, "usage retention: usage rows older than this many months are removed daily; the hourly roll-up is kept");
    loop {
        let wait = match db.apply_usage_retention(months, Utc::now()).await {
            Ok(outcome) => {
                outcome.iter().for_each(RetentionOutcome::log);
                Duration::from_secs(24 * 3600)
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "usage retention failed; trying again in an hour");
                Duration::from_secs(3600)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

impl RetentionOutcome {
    fn log(&self) {
        let cutoff = timestamp(self.cutoff);
        if !self.dropped_partitions.is_empty() {
            tracing::info!(%cutoff, partitions = %self.dropped_partitions.join(", "), "usage retention dropped old partitions");
        } else if self.deleted_rows > 0 {
            tracing::info!(%cutoff, rows = self.deleted_rows, "usage retention deleted old usage rows");
        } else {
            tracing::debug!(%cutoff, "usage retention: nothing older to remove");
        }
    }
}

impl Db {
    /// Removes the usage rows that `months` of retention no longer keeps at `now` (see the
    /// module comment). None when `months` is 0.
    pub async fn apply_usage_retention(
        &self,
        months: u32,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<RetentionOutcome>> {
        let Some(cutoff) = retention_cutoff(months, now) else {
            return Ok(None);
        };
        let mut outcome = RetentionOutcome {
            cutoff,
            dropped_partitions: Vec::new(),
            deleted_rows: 0,
        };
        match self {
            Db::Postgres(_) => {
                outcome.dropped_partitions = self.drop_partitions_before(cutoff).await?
            }
            Db::Sqlite(_) => outcome.deleted_rows = self.delete_rows_before(cutoff).await?,
        }
        Ok(Some(outcome))
    }

    /// PostgreSQL: drops each month's partition that ends by `cutoff`.
    async fn drop_partitions_before(&self, cutoff: DateTime<Utc>) -> anyhow::Result<Vec<String>> {
        let rows = self
            .fetch_all(
                "SELECT c.relname::text AS name FROM pg_inherits i
                 JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'llm_usage_logs'::regclass",
                &[],
            )
            .await?;
        let mut old: Vec<(NaiveDate, String)> = Vec::new();
        for row in rows {
            let name = row.text("name")?;
            if let Some(month) = partition_month(&name) {
                let end = month.checked_add_months(Months::new(1));
                if end.is_some_and(|end| end.and_time(NaiveTime::MIN).and_utc() <= cutoff) {
                    old.push((month, name));
                }
            }
        }
        old.sort();
        let mut dropped = Vec::new();
        for (_, name) in old {
            // Dropping a partition locks the whole table for a moment: wait for that lock
            // only briefly (a long report may hold it), and try again at the next pass.
            self.transaction(vec![
                ("SET LOCAL lock_timeout = '5s'".to_owned(), vec![]),
                (format!("DROP TABLE IF EXISTS {name}"), vec![]),
            ])
            .await?;
            self.forget_partition(&name);
            dropped.push(name);
        }
        Ok(dropped)
    }

    /// SQLite: deletes the rows created before `cutoff`, a batch at a time.
    async fn delete_rows_before(&self, cutoff: DateTime<Utc>) -> anyhow::Result<u64> {
        let sql = format!(
            "DELETE FROM llm_usage_logs WHERE rowid IN
                (SELECT rowid FROM llm_usage_logs WHERE created_at < $1 LIMIT {SQLITE_BATCH})"
        );
        let before = timestamp(cutoff);
        let mut deleted = 0;
        loop {
            let n = self.execute(&sql, &[before.as_str().into()]).await?;
            deleted += n;
            if n < SQLITE_BATCH {
                return Ok(deleted);
            }
            // Lets the usage writer take the write lock between batches.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The month of a partition the usage writer made (`llm_usage_logs_y2026m11`), None for any
/// other table.
fn partition_month(name: &str) -> Option<NaiveDate> {
    let (year, month) = name.strip_prefix("llm_usage_logs_y")?.split_once('m')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(year) || month.len() != 2 || !all_digits(month) {
        return None;
    }
    NaiveDate::from_ymd_opt(year.parse().ok()?, month.parse().ok()?, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn the_cutoff_is_the_first_of_the_month_retention_months_ago() {
        let now = at("2026-11-15T08:00:00Z");
        assert_eq!(retention_cutoff(0, now), None);
        assert_eq!(retention_cutoff(1, now), Some(at("2026-10-01T00:00:00Z")));
        assert_eq!(retention_cutoff(13, now), Some(at("2025-10-01T00:00:00Z")));
        // the 31st, a month back, is a month with 30 days
        let now = at("2026-03-31T23:00:00Z");
        assert_eq!(retention_cutoff(1, now), Some(at("2026-02-01T00:00:00Z")));
    }

    #[test]
    fn only_the_writers_partitions_have_a_month() {
        assert_eq!(
            partition_month("llm_usage_logs_y2026m11"),
            NaiveDate::from_ymd_opt(2026, 11, 1)
        );
        for other in [
            "llm_usage_logs_default",
            "llm_usage_logs_y2026m13",
            "llm_usage_logs_y2026m1",
            "llm_usage_logs_y2026m11_old",
            "llm_usage_logs_ym11",
            "llm_usage_logs_y-1m01",
        ] {
            assert_eq!(partition_month(other), None, "{other}");
        }
    }
}
