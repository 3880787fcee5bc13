//! What a key or project has spent, as recorded: the sum of the hourly roll-up's cost, which
//! the usage writer keeps in the same transaction as the usage rows it adds up (so it is the
//! usage log's sum, exactly, in 1e-10 USD). Budgets start from it (`limits::budget`).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::{timestamp, Arg, Db};
use crate::limits::budget::{Nanos, Scope, SpendFuture, SpendSource};

impl Db {
    /// The cost recorded for the key or project `id` since `since` (all of it with None),
    /// in 1e-10 USD.
    pub async fn spent_e10(
        &self,
        scope: Scope,
        id: &str,
        since: Option<DateTime<Utc>>,
    ) -> anyhow::Result<i64> {
        let column = match scope {
            Scope::Key => "api_key_id",
            Scope::Project => "project_id",
        };
        let mut sql = format!(
            "SELECT SUM(cost_usd_e10)::bigint AS spent FROM llm_usage_hourly WHERE {column} = $1"
        );
        let mut args = vec![Arg::from(id)];
        if let Some(since) = since {
            // Hours start on the hour, so a month's first hour is `>=` its start.
            sql.push_str(" AND hour >= $2::timestamptz");
            args.push(timestamp(since).into());
        }
        let rows = self.fetch_all(&sql, &args).await?;
        // SUM over no rows is NULL.
        Ok(match rows.first() {
            Some(r) => r.opt_int("spent")?.unwrap_or(0),
            None => 0,
        })
    }

    /// The same in USD.
    pub async fn spent_usd(
        &self,
        scope: Scope,
        id: &str,
        since: Option<DateTime<Utc>>,
    ) -> anyhow::Result<Decimal> {
        let e10 = self.spent_e10(scope, id, since).await?;
        Ok(Decimal::from_i128_with_scale(i128::from(e10), 10).normalize())
    }
}

impl SpendSource for Db {
    fn spent(&self, scope: Scope, id: &str, since: Option<DateTime<Utc>>) -> SpendFuture {
        let (db, id) = (self.clone(), id.to_owned());
        Box::pin(async move {
            let e10 = db.spent_e10(scope, &id, since).await?;
            // Whole nano-dollars, rounded up.
            Ok(u64::try_from(e10).unwrap_or(0).div_ceil(10) as Nanos)
        })
    }
}
