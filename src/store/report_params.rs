//! A `UsageQuery` from named text parameters: the query string of `GET /admin/usage` or the
//! options of `tollgate usage`, checked the same way for both, each refusal naming its
//! parameter.
//!
//! | parameter | values | default |
//! |---|---|---|
//! | `by` | `model`, `provider`, `project`, `key` | `model` |
//! | `period` | `hour`, `day`, `month` | none: one row per group for the whole range |
//! | `since` | `2026-11-01` (midnight UTC) or RFC 3339 on a whole hour | the first of this month |
//! | `until` | as `since`; not included | none: up to now |
//! | `project`, `model`, `provider` | a name | none |
//! | `key` | a key's id or prefix | none |
//! | `limit` | 1 to 10000 | 1000 |
//!
//! An empty value counts as not given (what an HTML form sends for an empty field); an
//! unknown or repeated parameter is refused, so a typo is not silently ignored.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Timelike, Utc};

use super::report::{GroupBy, Period, UsageFilters, UsageQuery};
use crate::error::GatewayError;

pub const DEFAULT_LIMIT: u32 = 1000;
pub const MAX_LIMIT: u32 = 10_000;

const PARAMS: [&str; 9] = [
    "by", "period", "since", "until", "project", "key", "model", "provider", "limit",
];

/// A parameter refused, and why. Becomes a 400 `invalid_request_error` with `param` set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub param: String,
    pub problem: String,
}

impl ParamError {
    fn new(param: &str, problem: impl Into<String>) -> ParamError {
        ParamError {
            param: param.to_owned(),
            problem: problem.into(),
        }
    }
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid `{}`: {}", self.param, self.problem)
    }
}

impl std::error::Error for ParamError {}

impl From<ParamError> for GatewayError {
    fn from(e: ParamError) -> GatewayError {
        GatewayError::invalid_param(&e.param, e.to_string())
    }
}

impl UsageQuery {
    /// Reads the parameters (see the module comment); `now` decides the default `since`.
    pub fn from_params<K, V>(
        pairs: impl IntoIterator<Item = (K, V)>,
        now: DateTime<Utc>,
    ) -> Result<UsageQuery, ParamError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let given = collect(pairs)?;
        let text = |name: &str| given.get(name).cloned();
        let by = given.get("by").map(|v| parse_by(v)).transpose()?;
        let period = given.get("period").map(|v| parse_period(v)).transpose()?;
        let since = match given.get("since") {
            Some(v) => parse_time("since", v)?,
            None => month_start(now),
        };
        let until = given
            .get("until")
            .map(|v| parse_time("until", v))
            .transpose()?;
        if until.is_some_and(|until| until <= since) {
            return Err(ParamError::new(
                "until",
                format!("must be later than since ({since})"),
            ));
        }
        let limit = match given.get("limit") {
            Some(v) => parse_limit(v)?,
            None => DEFAULT_LIMIT,
        };
        let filters = UsageFilters {
            project: text("project"),
            key: text("key"),
            model: text("model"),
            provider: text("provider"),
        };
        Ok(UsageQuery {
            by: by.unwrap_or(GroupBy::Model),
            period,
            since,
            until,
            filters,
            limit,
        })
    }
}

/// The given parameters by name, refusing unknown and repeated ones; empty ones left out.
fn collect<K: AsRef<str>, V: AsRef<str>>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> Result<BTreeMap<&'static str, String>, ParamError> {
    let mut given = BTreeMap::new();
    let mut seen = Vec::new();
    for (name, value) in pairs {
        let (name, value) = (name.as_ref(), value.as_ref());
        let Some(known) = PARAMS.iter().find(|p| **p == name) else {
            let name: String = name.chars().take(64).collect();
            return Err(ParamError::new(
                &name,
                format!("unknown parameter; the report takes {}", PARAMS.join(", ")),
            ));
        };
        if seen.contains(known) {
            return Err(ParamError::new(known, "given more than once"));
        }
        seen.push(*known);
        if !value.is_empty() {
            given.insert(*known, value.to_owned());
        }
    }
    Ok(given)
}

fn parse_by(value: &str) -> Result<GroupBy, ParamError> {
    GroupBy::parse(value).ok_or_else(|| {
        let problem = format!("{} is not model, provider, project or key", shown(value));
        ParamError::new("by", problem)
    })
}

fn parse_period(value: &str) -> Result<Period, ParamError> {
    Period::parse(value).ok_or_else(|| {
        ParamError::new(
            "period",
            format!("{} is not hour, day or month", shown(value)),
        )
    })
}

/// A date (midnight UTC) or an RFC 3339 time, which must fall on a whole hour: the roll-up
/// holds hours, and a range cutting one would count all of it or none of it.
fn parse_time(param: &str, value: &str) -> Result<DateTime<Utc>, ParamError> {
    let time = match NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        Ok(date) => date.and_time(NaiveTime::MIN).and_utc(),
        Err(_) => DateTime::parse_from_rfc3339(value)
            .map_err(|_| {
                ParamError::new(
                    param,
                    format!(
                        "{} is not a date (2026-11-01) or an RFC 3339 time (2026-11-01T10:00:00Z)",
                        shown(value)
                    ),
                )
            })?
            .to_utc(),
    };
    // Both databases compare these as fixed-width text (`timestamp`).
    if !(1970..=9999).contains(&time.year()) {
        return Err(ParamError::new(
            param,
            "must be between the years 1970 and 9999",
        ));
    }
    if time.minute() != 0 || time.second() != 0 || time.nanosecond() != 0 {
        return Err(ParamError::new(
            param,
            format!(
                "{} is not on a whole hour (usage is summed per hour)",
                shown(value)
            ),
        ));
    }
    Ok(time)
}

fn parse_limit(value: &str) -> Result<u32, ParamError> {
    value
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| {
            ParamError::new(
                "limit",
                format!(
                    "{} is not a whole number from 1 to {MAX_LIMIT}",
                    shown(value)
                ),
            )
        })
}

/// Midnight UTC on the first of `now`'s month.
fn month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let first = now.date_naive().with_day(1).unwrap_or(now.date_naive());
    first.and_time(NaiveTime::MIN).and_utc()
}

/// A value as an error message quotes it: in quotes, at most 64 characters.
fn shown(value: &str) -> String {
    let cut: String = value.chars().take(64).collect();
    format!("{cut:?}")
}
