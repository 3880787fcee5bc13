//! `/admin/projects` (GET list, POST create) and `/admin/projects/{name}` (GET, PATCH). A
//! project has a budget in USD over its whole life (`total`) or per calendar month (UTC,
//! `monthly`), shared by its keys. Projects are not deleted: keys and usage refer to them.

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::de::{Deserializer, Error};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::input::{merge, object, query, read_only, typed};
use super::page::{Page, SortKey, PARAMS};
use super::price::Usd;
use super::refusal::{not_found, store_error};
use super::views::{List, Project};
use super::{internal, method_not_allowed, Ctx, Handled, Reply};
use crate::error::{ErrorBody, GatewayError};
use crate::limits::budget::Period;
use crate::store::{JsonRow, Tx};

const READ_ONLY: &[&str] = &["object", "id", "created_at"];

/// A project as POST creates it (PATCH takes any of these fields).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectInput {
    name: String,
    /// Shared by the project's keys; null: no budget.
    budget_usd: Option<Usd>,
    #[serde(default, deserialize_with = "period")]
    budget_period: Period,
}

fn period<'de, D: Deserializer<'de>>(d: D) -> Result<Period, D::Error> {
    let text = String::deserialize(d)?;
    text.parse()
        .map_err(|_| D::Error::custom(format!("{text:?} is not total or monthly")))
}

pub async fn route(ctx: &Ctx<'_>, name: Option<&str>, req: Request<Incoming>) -> Handled {
    match (req.method().clone(), name) {
        (Method::GET, None) => list(ctx, &req).await,
        (Method::POST, None) => create(ctx, req).await,
        (Method::GET, Some(n)) => get(ctx, n).await,
        (Method::PATCH, Some(n)) => update(ctx, n, req).await,
        (m, None) => Err(method_not_allowed(&m, "GET, POST")),
        (m, Some(_)) => Err(method_not_allowed(
            &m,
            "GET, PATCH (projects are kept: keys and usage refer to them)",
        )),
    }
}

#[utoipa::path(
    get,
    path = "/admin/projects",
    operation_id = "list_projects",
    tag = "projects",
    summary = "List projects",
    params(Page),
    responses(
        (status = 200, description = "A page of projects, by name.", body = List<Project>),
        (status = 400, description = "A field or parameter is wrong; `param` names it.", body = ErrorBody),
    )
)]
async fn list(ctx: &Ctx<'_>, req: &Request<Incoming>) -> Handled {
    let q = query(req.uri().query(), &PARAMS)?;
    let page = Page::from_query(&q, SortKey::Name)?;
    let rows = ctx
        .gw
        .db
        .list_project_rows(page.after.as_deref(), page.fetch());
    let rows = rows.await.map_err(internal)?;
    Ok(Reply::read(
        page.answer(rows.into_iter().map(view).collect(), "name"),
    ))
}

#[utoipa::path(
    get,
    path = "/admin/projects/{name}",
    operation_id = "get_project",
    tag = "projects",
    summary = "Get a project",
    params(("name" = String, Path)),
    responses(
        (status = 200, description = "The project.", body = Project),
        (status = 404, description = "No project of that name.", body = ErrorBody),
    )
)]
async fn get(ctx: &Ctx<'_>, name: &str) -> Handled {
    match ctx.gw.db.project_row(name).await.map_err(internal)? {
        Some(row) => Ok(Reply::read(view(row))),
        None => Err(unknown(name)),
    }
}

#[utoipa::path(
    post,
    path = "/admin/projects",
    operation_id = "create_project",
    tag = "projects",
    summary = "Create a project",
    request_body = ProjectInput,
    responses(
        (status = 201, description = "The project created.", body = Project),
        (status = 400, description = "A field or parameter is wrong; `param` names it.", body = ErrorBody),
        (status = 409, description = "A project of that name exists.", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB.", body = ErrorBody),
    )
)]
async fn create(ctx: &Ctx<'_>, req: Request<Incoming>) -> Handled {
    let body = object(ctx.body(req).await?)?;
    let input: ProjectInput = typed(body.clone())?;
    input.check()?;
    let mut tx = ctx.begin().await?;
    let inserted = tx.insert_project(&columns(&input)).await;
    let id = inserted.map_err(|e| store_error(e, &body))?;
    let after = read_back(&mut tx, &id).await?;
    ctx.audit(
        &mut tx,
        "create",
        "project",
        &input.name,
        None,
        Some(&after),
    )
    .await?;
    tx.commit().await.map_err(|e| store_error(e, &body))?;
    Ok(Reply::other(StatusCode::CREATED, after))
}

#[utoipa::path(
    patch,
    path = "/admin/projects/{name}",
    operation_id = "update_project",
    tag = "projects",
    summary = "Change a project",
    params(("name" = String, Path)),
    request_body(content = Object, description = "Any fields of `ProjectInput`; the others keep their values."),
    responses(
        (status = 200, description = "The project changed.", body = Project),
        (status = 400, description = "A field or parameter is wrong; `param` names it.", body = ErrorBody),
        (status = 404, description = "No project of that name.", body = ErrorBody),
        (status = 409, description = "The new name is taken.", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB.", body = ErrorBody),
    )
)]
async fn update(ctx: &Ctx<'_>, name: &str, req: Request<Incoming>) -> Handled {
    let patch = object(ctx.body(req).await?)?;
    let mut tx = ctx.begin().await?;
    let row = tx.lock_project(name).await.map_err(internal)?;
    let before = view(row.ok_or_else(|| unknown(name))?);
    let merged = merge(
        before.as_object().expect("an object"),
        patch.clone(),
        READ_ONLY,
        read_only,
    )?;
    let input: ProjectInput = typed(merged)?;
    input.check()?;
    let id = before["id"].as_str().unwrap_or_default().to_owned();
    let updated = tx.update_project(&id, &columns(&input)).await;
    updated.map_err(|e| store_error(e, &patch))?;
    let after = read_back(&mut tx, &id).await?;
    ctx.audit(
        &mut tx,
        "update",
        "project",
        name,
        Some(&before),
        Some(&after),
    )
    .await?;
    tx.commit().await.map_err(|e| store_error(e, &patch))?;
    Ok(Reply::other(StatusCode::OK, after))
}

async fn read_back(tx: &mut Tx, id: &str) -> Result<Value, GatewayError> {
    let row = tx.project_by_id(id).await.map_err(internal)?;
    row.map(view)
        .ok_or_else(|| GatewayError::internal("The project vanished while it was being written."))
}

fn unknown(name: &str) -> GatewayError {
    not_found("name", format!("No project is named `{name}`."))
}

fn view(mut row: JsonRow) -> Value {
    row.insert("object".into(), "project".into());
    Value::Object(row)
}

fn columns(p: &ProjectInput) -> JsonRow {
    let v = json!({
        "name": p.name,
        "budget_usd": p.budget_usd.map(|b| b.0.to_string()),
        "budget_period": p.budget_period.as_str(),
    });
    match v {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object"),
    }
}

impl ProjectInput {
    fn check(&self) -> Result<(), GatewayError> {
        if self.name.trim().is_empty() || self.name.len() > 128 {
            return Err(GatewayError::invalid_param(
                "name",
                "`name` must be 1 to 128 characters.",
            ));
        }
        Ok(())
    }
}
