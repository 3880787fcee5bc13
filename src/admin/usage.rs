//! `GET /admin/usage`: the usage report of the hourly roll-up, grouped and bucketed as the
//! query string asks (the parameters of `tollgate usage`, checked by the same code:
//! `crate::store::UsageQuery::from_params`). A report is not a paginated list: `limit` caps
//! its rows and `truncated` says when it did, while the total covers the whole range.

use http::Request;
use hyper::body::Incoming;
use serde::Serialize;
use utoipa::ToSchema;

use super::{internal, Ctx, Handled, Reply};
use crate::error::ErrorBody;
use crate::store::{GroupBy, Period as UsagePeriod, UsageQuery, UsageReport};

/// The report, marked as one.
#[derive(Serialize, ToSchema)]
pub struct UsageAnswer {
    /// Always `usage_report`.
    object: &'static str,
    #[serde(flatten)]
    report: UsageReport,
}

#[utoipa::path(
    get,
    path = "/admin/usage",
    operation_id = "usage_report",
    tag = "usage",
    summary = "Usage and cost, grouped and bucketed",
    description = "From the hourly roll-up; the parameters of `tollgate usage`. A range starts and ends on whole UTC hours.",
    params(
        ("by" = Option<GroupBy>, Query, description = "What rows are grouped by (default model)."),
        ("period" = Option<UsagePeriod>, Query, description = "One row per group and hour, day or month; absent: one per group over the range."),
        ("since" = Option<String>, Query, description = "A UTC whole hour (RFC 3339) or a date; default: the start of this month."),
        ("until" = Option<String>, Query, description = "Excluded; default: now."),
        ("project" = Option<String>, Query, description = "Only this project's usage."),
        ("key" = Option<String>, Query, description = "Only this key's (id or prefix)."),
        ("model" = Option<String>, Query, description = "Only this public model name's."),
        ("provider" = Option<String>, Query, description = "Only this provider's."),
        ("limit" = Option<u32>, Query, description = "The most rows; the total still covers every row."),
    ),
    responses(
        (status = 200, description = "The report.", body = UsageAnswer),
        (status = 400, description = "A parameter is wrong; `param` names it.", body = ErrorBody),
    )
)]
pub async fn report(ctx: &Ctx<'_>, req: &Request<Incoming>) -> Handled {
    let pairs = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes());
    let query = UsageQuery::from_params(pairs, chrono::Utc::now())?;
    let report = ctx.gw.db.usage_report(&query).await.map_err(internal)?;
    let answer = UsageAnswer {
        object: "usage_report",
        report,
    };
    let body = serde_json::to_value(&answer).map_err(|e| internal(e.into()))?;
    Ok(Reply::read(body))
}
