//! `GET /admin/usage`: the usage report of the hourly roll-up, grouped and bucketed as the
//! query string asks (the parameters of `tollgate usage`, checked by the same code:
//! `crate::store::UsageQuery::from_params`). A report is not a paginated list: `limit` caps
//! its rows and `truncated` says when it did, while the total covers the whole range.

use http::Request;
use hyper::body::Incoming;
use serde_json::Value;

use super::{internal, Ctx, Handled, Reply};
use crate::store::UsageQuery;

pub async fn report(ctx: &Ctx<'_>, req: &Request<Incoming>) -> Handled {
    let pairs = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes());
    let query = UsageQuery::from_params(pairs, chrono::Utc::now())?;
    let report = ctx.gw.db.usage_report(&query).await.map_err(internal)?;
    let mut body = serde_json::to_value(&report).map_err(|e| internal(e.into()))?;
    if let Value::Object(map) = &mut body {
        map.insert("object".into(), "usage_report".into());
    }
    Ok(Reply::read(body))
}
