//! `GET /admin/audit`: the changes made through the admin API, newest first, filtered by
//! `resource` (provider, model, setting, project, key), `resource_id` and `actor`.

use http::Request;
use hyper::body::Incoming;
use serde_json::Value;

use super::input::query;
use super::page::{Page, SortKey};
use super::views::{AuditEntry, List};
use super::{internal, Ctx, Handled, Reply};
use crate::error::ErrorBody;
use crate::store::AuditFilter;

const PARAMS: &[&str] = &["limit", "after", "resource", "resource_id", "actor"];

#[utoipa::path(
    get,
    path = "/admin/audit",
    operation_id = "list_audit",
    tag = "audit",
    summary = "The changes made through the admin API",
    params(Page, ("resource" = Option<String>, Query, description = "provider, model, setting, project or key."), ("resource_id" = Option<String>, Query), ("actor" = Option<String>, Query)),
    responses(
        (status = 200, description = "A page of changes, newest first.", body = List<AuditEntry>),
        (status = 400, description = "A field or parameter is wrong; `param` names it.", body = ErrorBody),
    )
)]
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
