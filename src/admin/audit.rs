//! `GET /admin/audit`: the changes made through the admin API, newest first, filtered by
//! `resource` (provider, model, setting, project, key), `resource_id` and `actor`.

use http::Request;
use hyper::body::Incoming;
use serde_json::Value;

use super::input::query;
use super::page::{Page, SortKey};
use super::{internal, Ctx, Handled, Reply};
use crate::store::AuditFilter;

const PARAMS: &[&str] = &["limit", "after", "resource", "resource_id", "actor"];

pub async fn list(ctx: &Ctx<'_>, req: &Request<Incoming>) -> Handled {
    let q = query(req.uri().query(), PARAMS)?;
    let page = Page::from_query(&q, SortKey::Id)?;
    let filter = AuditFilter {
        resource: q.get("resource").cloned(),
        actor: q.get("actor").cloned(),
        resource_id: q.get("resource_id").cloned(),
    };
    let rows = ctx
        .gw
        .db
        .list_audit(&filter, page.after.as_deref(), page.fetch())
        .await
        .map_err(internal)?;
    let rows = rows
        .into_iter()
        .map(|mut r| {
            r.insert("object".into(), "audit_entry".into());
            Value::Object(r)
        })
        .collect();
    Ok(Reply::read(page.answer(rows, "id")))
}
