//! Usage reports, read from the hourly roll-up `llm_usage_hourly`: totals grouped by model,
//! provider, project or key, per hour, day or month or over the whole range, with exact
//! decimal costs. `GET /admin/usage` and `tollgate usage` both make a `UsageQuery` from their
//! parameters (`report_params`) and call `Db::usage_report`:
//!
//! ```ignore
//! // an admin handler, with `pairs` the decoded query string's (name, value) pairs:
//! let query = UsageQuery::from_params(pairs, chrono::Utc::now())?; // a 400 naming the parameter
//! let report = db.usage_report(&query).await.map_err(|e| GatewayError::internal(...))?;
//! json_response(StatusCode::OK, &report) // UsageReport is Serialize; costs are strings
//! ```
//!
//! The roll-up is summed per hour, so a range starts and ends on whole hours (the parameters
//! refuse others). Sums are read in two parts (the quotient and the remainder by 1e9) so that
//! no sum overflows a BIGINT, however many saturated roll-up rows it adds up, and the parts
//! are joined in 128 bits: costs stay exact.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;

use super::{timestamp, Arg, Db, DbRow};

/// What the rows are grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// The model's public name (deployments sharing a name are summed together).
    Model,
    Provider,
    Project,
    Key,
}

impl GroupBy {
    pub const ALL: [GroupBy; 4] = [
        GroupBy::Model,
        GroupBy::Provider,
        GroupBy::Project,
        GroupBy::Key,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Model => "model",
            GroupBy::Provider => "provider",
            GroupBy::Project => "project",
            GroupBy::Key => "key",
        }
    }

    pub fn parse(s: &str) -> Option<GroupBy> {
        GroupBy::ALL.into_iter().find(|g| g.as_str() == s)
    }

    /// The group's label and id, as SQL over the roll-up row `h` and its joined rows. A
    /// dimension the request had none of is `(none)`; one whose row is gone shows its id.
    fn sql(self) -> (&'static str, &'static str) {
        match self {
            GroupBy::Model => (
                "COALESCE(m.name, NULLIF(h.llm_model_id, ''), '(none)')",
                "NULL::text",
            ),
            GroupBy::Provider => (
                "COALESCE(pv.name, NULLIF(h.provider_id, ''), '(none)')",
                "NULLIF(h.provider_id, '')",
            ),
            GroupBy::Project => (
                "COALESCE(pj.name, NULLIF(h.project_id, ''), '(none)')",
                "NULLIF(h.project_id, '')",
            ),
            GroupBy::Key => (
                "COALESCE(k.name || ' (' || k.key_prefix || ')', NULLIF(h.api_key_id, ''), '(none)')",
                "NULLIF(h.api_key_id, '')",
            ),
        }
    }
}

/// The length of a row's time bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = UsagePeriod)]
pub enum Period {
    Hour,
    Day,
    Month,
}

impl Period {
    pub const ALL: [Period; 3] = [Period::Hour, Period::Day, Period::Month];

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    pub fn parse(s: &str) -> Option<Period> {
        Period::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// Only usage matching every filter given is counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageFilters {
    /// A project's name.
    pub project: Option<String>,
    /// A gateway key's id or prefix.
    pub key: Option<String>,
    /// A model's public name.
    pub model: Option<String>,
    /// A provider's name.
    pub provider: Option<String>,
}

/// One report: `since` and `until` are UTC whole hours, `since` included, `until` not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    pub by: GroupBy,
    /// None: one row per group for the whole range.
    #[schema(required = true)]
    pub period: Option<Period>,
    #[schema(value_type = String, format = DateTime)]
    pub since: DateTime<Utc>,
    /// None: up to now.
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub until: Option<DateTime<Utc>>,
    pub filters: UsageFilters,
    /// The most rows returned; the total still covers the whole range.
    pub limit: u32,
}

impl UsageQuery {
    /// Everything since `since`, by `by`, with no period, filter or end.
    pub fn new(by: GroupBy, since: DateTime<Utc>) -> UsageQuery {
        UsageQuery {
            by,
            period: None,
            since,
            until: None,
            filters: UsageFilters::default(),
            limit: super::report_params::DEFAULT_LIMIT,
        }
    }
}

/// Sums over some roll-up rows. Counts stop at the BIGINT maximum, as the roll-up's do; the
/// cost is exact (serialised as a decimal string).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct UsageTotals {
    pub requests: i64,
    pub errors: i64,
    pub input_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    /// USD, an exact decimal written as a string.
    #[schema(value_type = String, pattern = r"^\d+(\.\d+)?$")]
    pub cost_usd: Decimal,
}

/// One group (in one time bucket, when a period was asked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct UsageRow {
    /// Human-readable: the model's public name, the provider's or project's name, the key's
    /// name with its prefix; `(none)` for usage without one.
    pub group: String,
    /// The provider's, project's or key's id (None for models: a public name may span
    /// several deployments).
    #[schema(required = true)]
    pub group_id: Option<String>,
    /// The start of the hour, day or month (UTC); None without a period.
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub bucket: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct UsageReport {
    pub query: UsageQuery,
    /// Ordered by bucket, then cost (highest first), then group.
    pub rows: Vec<UsageRow>,
    /// Over the whole range and filters, including rows past the limit.
    pub total: UsageTotals,
    /// More rows matched than `limit`.
    pub truncated: bool,
}

/// The summed columns of the roll-up, in `UsageTotals` order.
const MEASURES: [&str; 8] = [
    "requests",
    "errors",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd_e10",
];

/// Each roll-up row joined to the rows its ids name, for labels and filters.
const FROM: &str = "FROM llm_usage_hourly h
    LEFT JOIN llm_models m ON m.id::text = h.llm_model_id
    LEFT JOIN llm_providers pv ON pv.id::text = h.provider_id
    LEFT JOIN projects pj ON pj.id::text = h.project_id
    LEFT JOIN api_keys k ON k.id::text = h.api_key_id";

impl Db {
    /// The report a query asks for, from the hourly roll-up.
    pub async fn usage_report(&self, query: &UsageQuery) -> anyhow::Result<UsageReport> {
        let (filter, args) = range_and_filters(query);
        let (label, id) = query.by.sql();
        let sql = format!(
            "SELECT {label} AS grp, {id} AS grp_id, {bucket} AS bucket, {sums}
             {FROM} WHERE {filter}
             GROUP BY grp, grp_id, bucket
             ORDER BY bucket, {cost} DESC, grp, grp_id
             LIMIT {limit}",
            bucket = self.bucket_sql(query.period),
            sums = sums_sql(),
            cost = self.cost_order_sql(),
            // One more than asked says whether there were more.
            limit = u64::from(query.limit) + 1,
        );
        let mut rows = Vec::new();
        for r in self.fetch_all(&sql, &args).await? {
            rows.push(UsageRow {
                group: r.text("grp")?,
                group_id: r.opt_text("grp_id")?,
                bucket: read_bucket(&r)?,
                totals: read_totals(&r)?,
            });
        }
        let truncated = rows.len() > query.limit as usize;
        rows.truncate(query.limit as usize);
        let total = if truncated {
            let sql = format!("SELECT {} {FROM} WHERE {filter}", sums_sql());
            match self.fetch_all(&sql, &args).await?.first() {
                Some(r) => read_totals(r)?,
                None => UsageTotals::default(),
            }
        } else {
            // The same rows' sum, so that the total always matches them.
            rows.iter()
                .fold(UsageTotals::default(), |t, r| t.add(&r.totals))
        };
        Ok(UsageReport {
            query: query.clone(),
            rows,
            total,
            truncated,
        })
    }

    /// The start of a roll-up hour's bucket as `YYYY-MM-DDTHH:00:00Z`. PostgreSQL formats the
    /// hour in UTC; SQLite's hours are that text already (`timestamp`), so it is cut.
    fn bucket_sql(&self, period: Option<Period>) -> &'static str {
        match (self, period) {
            (_, None) => "NULL::text",
            (Db::Postgres(_), Some(Period::Hour)) => {
                r#"to_char(h.hour AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24":00:00Z"')"#
            }
            (Db::Postgres(_), Some(Period::Day)) => {
                r#"to_char(h.hour AT TIME ZONE 'UTC', 'YYYY-MM-DD"T00:00:00Z"')"#
            }
            (Db::Postgres(_), Some(Period::Month)) => {
                r#"to_char(h.hour AT TIME ZONE 'UTC', 'YYYY-MM"-01T00:00:00Z"')"#
            }
            (Db::Sqlite(_), Some(Period::Hour)) => "substr(h.hour, 1, 13) || ':00:00Z'",
            (Db::Sqlite(_), Some(Period::Day)) => "substr(h.hour, 1, 10) || 'T00:00:00Z'",
            (Db::Sqlite(_), Some(Period::Month)) => "substr(h.hour, 1, 7) || '-01T00:00:00Z'",
        }
    }

    /// The cost to order groups by. SQLite's SUM fails on an overflow and its TOTAL is a
    /// float: near enough to order by, and the cost read is the exact sum.
    fn cost_order_sql(&self) -> &'static str {
        match self {
            Db::Postgres(_) => "SUM(h.cost_usd_e10)",
            Db::Sqlite(_) => "TOTAL(h.cost_usd_e10)",
        }
    }
}

/// The WHERE clause for the query's range and filters, with its parameters.
fn range_and_filters(query: &UsageQuery) -> (String, Vec<Arg>) {
    let mut args: Vec<Arg> = vec![timestamp(query.since).into()];
    let mut conditions = vec!["h.hour >= $1::timestamptz".to_owned()];
    // `$?` in a condition is its parameter.
    let mut add = |condition: &str, value: String| {
        args.push(value.into());
        conditions.push(condition.replace("$?", &format!("${}", args.len())));
    };
    if let Some(until) = query.until {
        add("h.hour < $?::timestamptz", timestamp(until));
    }
    let f = &query.filters;
    let filters = [
        ("pj.name = $?", &f.project),
        // a key's id, or its prefix as `tollgate keys list` shows it
        ("(h.api_key_id = $? OR k.key_prefix = $?)", &f.key),
        ("m.name = $?", &f.model),
        ("pv.name = $?", &f.provider),
    ];
    for (condition, value) in filters {
        if let Some(value) = value {
            add(condition, value.clone());
        }
    }
    (conditions.join(" AND "), args)
}

/// `SUM(c / 1e9) AS c_hi, SUM(c % 1e9) AS c_lo` for each measure (see the module comment).
fn sums_sql() -> String {
    MEASURES
        .iter()
        .map(|c| {
            format!(
                "SUM(h.{c} / 1000000000)::bigint AS {c}_hi, SUM(h.{c} % 1000000000)::bigint AS {c}_lo"
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A measure's sum from its two parts; a sum over no rows is NULL, read as 0.
fn read_sum(row: &DbRow, measure: &str) -> anyhow::Result<i128> {
    let hi = row.opt_int(&format!("{measure}_hi"))?.unwrap_or(0);
    let lo = row.opt_int(&format!("{measure}_lo"))?.unwrap_or(0);
    Ok(i128::from(hi) * 1_000_000_000 + i128::from(lo))
}

fn read_totals(row: &DbRow) -> anyhow::Result<UsageTotals> {
    let count = |measure: &str| -> anyhow::Result<i64> { Ok(saturate(read_sum(row, measure)?)) };
    Ok(UsageTotals {
        requests: count("requests")?,
        errors: count("errors")?,
        input_tokens: count("input_tokens")?,
        cache_read_tokens: count("cache_read_tokens")?,
        cache_write_tokens: count("cache_write_tokens")?,
        output_tokens: count("output_tokens")?,
        reasoning_tokens: count("reasoning_tokens")?,
        cost_usd: usd(read_sum(row, "cost_usd_e10")?),
    })
}

fn read_bucket(row: &DbRow) -> anyhow::Result<Option<DateTime<Utc>>> {
    let Some(text) = row.opt_text("bucket")? else {
        return Ok(None);
    };
    Ok(Some(DateTime::parse_from_rfc3339(&text)?.to_utc()))
}

fn saturate(n: i128) -> i64 {
    i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

/// An amount of 1e-10 USD as dollars; past what a Decimal holds (about 8e18 USD), its maximum.
fn usd(e10: i128) -> Decimal {
    Decimal::try_from_i128_with_scale(e10, 10)
        .map(|d| d.normalize())
        .unwrap_or(Decimal::MAX)
}

impl UsageTotals {
    /// Both sums together, saturating as the database's do.
    fn add(self, other: &UsageTotals) -> UsageTotals {
        let sum = |a: i64, b: i64| a.saturating_add(b);
        UsageTotals {
            requests: sum(self.requests, other.requests),
            errors: sum(self.errors, other.errors),
            input_tokens: sum(self.input_tokens, other.input_tokens),
            cache_read_tokens: sum(self.cache_read_tokens, other.cache_read_tokens),
            cache_write_tokens: sum(self.cache_write_tokens, other.cache_write_tokens),
            output_tokens: sum(self.output_tokens, other.output_tokens),
            reasoning_tokens: sum(self.reasoning_tokens, other.reasoning_tokens),
            cost_usd: self
                .cost_usd
                .checked_add(other.cost_usd)
                .unwrap_or(Decimal::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_join_their_parts_exactly_and_saturate_only_counts() {
        assert_eq!(saturate(i128::from(i64::MAX) * 2), i64::MAX);
        assert_eq!(
            usd(i128::from(i64::MAX) * 2).to_string(),
            "1844674407.3709551614"
        );
        assert_eq!(usd(3).to_string(), "0.0000000003");
        assert_eq!(usd(i128::MAX), Decimal::MAX);
    }

    #[test]
    fn totals_serialise_costs_as_exact_strings() {
        let t = UsageTotals {
            cost_usd: usd(3_000),
            ..Default::default()
        };
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["cost_usd"], "0.0000003");
        assert_eq!(json["requests"], 0);
    }
}
