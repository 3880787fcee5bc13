//! `/admin/keys` (GET list, `?project=` filter; POST create) and `/admin/keys/{id}` (GET,
//! PATCH, DELETE = revoke). A created key's plaintext is in the create answer only: the
//! database keeps its SHA-256, and no other answer nor audit row shows more than its prefix.
//! Gateways see a change or a revocation within `auth.key_cache_ttl_secs`.

use chrono::{DateTime, Utc};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::input::{merge, object, query, read_only, typed};
use super::page::{Page, SortKey};
use super::price::Usd;
use super::refusal::{conflict, not_found, store_error};
use super::views::{ApiKey, KeyRevoked, List};
use super::{internal, method_not_allowed, Ctx, Handled, Reply};
use crate::error::{ErrorBody, GatewayError};
use crate::store::{JsonRow, Tx};

const READ_ONLY: &[&str] = &[
    "object",
    "id",
    "key_prefix",
    "project_id",
    "revoked_at",
    "created_at",
];
const LIST_PARAMS: &[&str] = &["limit", "after", "project"];

#[derive(Debug, Clone, Copy, Deserialize, Default, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = KeyRole)]
pub enum Role {
    Admin,
    #[default]
    User,
}

/// A gateway key as POST creates it (PATCH takes any of these fields).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyInput {
    name: String,
    /// The project's name (it must exist); its budget is shared by its keys.
    project: Option<String>,
    #[serde(default)]
    role: Role,
    /// Model names this key may use; null: every model.
    allowed_models: Option<Vec<String>>,
    rpm: Option<u32>,
    tpm: Option<u32>,
    budget_usd: Option<Usd>,
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<DateTime<Utc>>,
}

pub async fn route(ctx: &Ctx<'_>, id: Option<&str>, req: Request<Incoming>) -> Handled {
    match (req.method().clone(), id) {
        (Method::GET, None) => list(ctx, &req).await,
        (Method::POST, None) => create(ctx, req).await,
        (m, Some(id)) if uuid::Uuid::parse_str(id).is_err() => match m {
            Method::GET | Method::PATCH | Method::DELETE => Err(unknown(id)),
            m => Err(method_not_allowed(&m, "GET, PATCH, DELETE")),
        },
        (Method::GET, Some(id)) => get(ctx, id).await,
        (Method::PATCH, Some(id)) => update(ctx, id, req).await,
        (Method::DELETE, Some(id)) => revoke(ctx, id).await,
        (m, None) => Err(method_not_allowed(&m, "GET, POST")),
        (m, Some(_)) => Err(method_not_allowed(&m, "GET, PATCH, DELETE")),
    }
}

#[utoipa::path(
    get,
    path = "/admin/keys",
    operation_id = "list_keys",
    tag = "keys",
    summary = "List gateway keys",
    params(Page, ("project" = Option<String>, Query, description = "A project's name.")),
    responses(
        (status = 200, description = "A page of keys, by id.", body = List<ApiKey>),
        (status = 400, description = "A field or parameter is wrong; `param` names it.", body = ErrorBody),
    )
)]
async fn list(ctx: &Ctx<'_>, req: &Request<Incoming>) -> Handled {
    let q = query(req.uri().query(), LIST_PARAMS)?;
    let page = Page::from_query(&q, SortKey::Id)?;
    let project = q.get("project").map(String::as_str);
    let rows = ctx
        .gw
        .db
        .list_key_rows(project, page.after.as_deref(), page.fetch());
    let rows = rows.await.map_err(internal)?;
    Ok(Reply::read(
        page.answer(rows.into_iter().map(view).collect(), "id"),
    ))
}

#[utoipa::path(
    get,
    path = "/admin/keys/{id}",
    operation_id = "get_key",
    tag = "keys",
    summary = "Get a gateway key",
    params(("id" = String, Path, format = Uuid)),
    responses(
        (status = 200, description = "The key (never its plaintext).", body = ApiKey),
        (status = 404, description = "No key of that id.", body = ErrorBody),
    )
)]
async fn get(ctx: &Ctx<'_>, id: &str) -> Handled {
    match ctx.gw.db.key_row(id).await.map_err(internal)? {
        Some(row) => Ok(Reply::read(view(row))),
        None => Err(unknown(id)),
    }
}

/// Creates a key; the answer is the only place its plaintext is ever shown.
#[utoipa::path(
    post,
    path = "/admin/keys",
    operation_id = "create_key",
    tag = "keys",
    summary = "Create a gateway key",
    request_body = KeyInput,
    responses(
        (status = 201, description = "The key, with its plaintext in `key`: shown this once only.", body = ApiKey),
        (status = 400, description = "A field or parameter is wrong; `param` names it.", body = ErrorBody),
        (status = 404, description = "No project of that name.", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB.", body = ErrorBody),
    )
)]
async fn create(ctx: &Ctx<'_>, req: Request<Incoming>) -> Handled {
    let body = object(ctx.body(req).await?)?;
    let input: KeyInput = typed(body.clone())?;
    input.check()?;
    let (key, prefix, hash) = crate::auth::generate_key();
    let mut tx = ctx.begin().await?;
    let mut values = columns(&input, project_id(&mut tx, input.project.as_deref()).await?);
    values.insert("key_prefix".into(), prefix.into());
    let id = tx.insert_key(&values, &hash).await;
    let id = id.map_err(|e| store_error(e, &body))?;
    let after = read_back(&mut tx, &id).await?;
    ctx.audit(&mut tx, "create", "key", &id, None, Some(&after))
        .await?;
    tx.commit().await.map_err(|e| store_error(e, &body))?;
    let mut shown = after;
    shown["key"] = Value::from(key);
    Ok(Reply::other(StatusCode::CREATED, shown))
}

#[utoipa::path(
    patch,
    path = "/admin/keys/{id}",
    operation_id = "update_key",
    tag = "keys",
    summary = "Change a gateway key",
    params(("id" = String, Path, format = Uuid)),
    request_body(content = Object, description = "Any fields of `KeyInput`; the others keep their values."),
    responses(
        (status = 200, description = "The key changed; gateways see it within `auth.key_cache_ttl_secs`.", body = ApiKey),
        (status = 400, description = "A field or parameter is wrong; `param` names it.", body = ErrorBody),
        (status = 404, description = "No key of that id.", body = ErrorBody),
        (status = 409, description = "The key is revoked.", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB.", body = ErrorBody),
    )
)]
async fn update(ctx: &Ctx<'_>, id: &str, req: Request<Incoming>) -> Handled {
    let patch = object(ctx.body(req).await?)?;
    let mut tx = ctx.begin().await?;
    let before = view(locked_live_key(&mut tx, id).await?);
    let merged = merge(
        before.as_object().expect("an object"),
        patch.clone(),
        READ_ONLY,
        read_only,
    )?;
    let input: KeyInput = typed(merged)?;
    input.check()?;
    let project = project_id(&mut tx, input.project.as_deref()).await?;
    let updated = tx.update_key(id, &columns(&input, project)).await;
    updated.map_err(|e| store_error(e, &patch))?;
    let after = read_back(&mut tx, id).await?;
    ctx.audit(&mut tx, "update", "key", id, Some(&before), Some(&after))
        .await?;
    tx.commit().await.map_err(|e| store_error(e, &patch))?;
    Ok(Reply::other(StatusCode::OK, after))
}

#[utoipa::path(
    delete,
    path = "/admin/keys/{id}",
    operation_id = "revoke_key",
    tag = "keys",
    summary = "Revoke a gateway key",
    params(("id" = String, Path, format = Uuid)),
    responses(
        (status = 200, description = "Revoked; gateways refuse it within `auth.key_cache_ttl_secs`.", body = KeyRevoked),
        (status = 404, description = "No key of that id.", body = ErrorBody),
        (status = 409, description = "The key is already revoked.", body = ErrorBody),
    )
)]
async fn revoke(ctx: &Ctx<'_>, id: &str) -> Handled {
    let mut tx = ctx.begin().await?;
    let before = view(locked_live_key(&mut tx, id).await?);
    tx.revoke_key(id).await.map_err(internal)?;
    let after = read_back(&mut tx, id).await?;
    ctx.audit(&mut tx, "revoke", "key", id, Some(&before), Some(&after))
        .await?;
    tx.commit().await.map_err(internal)?;
    let body = json!({"object": "api_key", "id": id, "revoked": true});
    Ok(Reply::other(StatusCode::OK, body))
}

/// The key `id`, locked, unless it is revoked.
async fn locked_live_key(tx: &mut Tx, id: &str) -> Result<JsonRow, GatewayError> {
    let row = tx.lock_key(id).await.map_err(internal)?;
    let row = row.ok_or_else(|| unknown(id))?;
    if !row.get("revoked_at").is_none_or(Value::is_null) {
        let message = format!("The key {id} is revoked; a revoked key is kept as it was.");
        return Err(conflict("id", "revoked", message));
    }
    Ok(row)
}

/// The id of the project a key names (which must exist).
async fn project_id(tx: &mut Tx, project: Option<&str>) -> Result<Value, GatewayError> {
    let Some(name) = project else {
        return Ok(Value::Null);
    };
    match tx.lock_project(name).await.map_err(internal)? {
        Some(p) => Ok(p["id"].clone()),
        None => Err(not_found(
            "project",
            format!("No project is named `{name}`; create it with POST /admin/projects."),
        )),
    }
}

async fn read_back(tx: &mut Tx, id: &str) -> Result<Value, GatewayError> {
    let row = tx.lock_key(id).await.map_err(internal)?;
    row.map(view)
        .ok_or_else(|| GatewayError::internal("The key vanished while it was being written."))
}

fn unknown(id: &str) -> GatewayError {
    not_found("id", format!("No key has the id `{id}`."))
}

fn view(mut row: JsonRow) -> Value {
    row.insert("object".into(), "api_key".into());
    Value::Object(row)
}

/// The columns an input sets, with the project's id.
fn columns(k: &KeyInput, project_id: Value) -> JsonRow {
    let v = json!({
        "name": k.name,
        "project_id": project_id,
        "role": match k.role { Role::Admin => "admin", Role::User => "user" },
        "allowed_models": k.allowed_models,
        "rpm": k.rpm, "tpm": k.tpm,
        "budget_usd": k.budget_usd.map(|b| b.0.to_string()),
        "expires_at": k.expires_at.map(crate::store::timestamp),
    });
    match v {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object"),
    }
}

impl KeyInput {
    fn check(&self) -> Result<(), GatewayError> {
        if self.name.trim().is_empty() || self.name.len() > 128 {
            return Err(GatewayError::invalid_param(
                "name",
                "`name` must be 1 to 128 characters.",
            ));
        }
        let models = self.allowed_models.as_deref().unwrap_or_default();
        if models.iter().any(|m| m.trim().is_empty()) || models.len() > 1000 {
            return Err(GatewayError::invalid_param(
                "allowed_models",
                "`allowed_models` is a list of up to 1000 model names, none empty (null: every model).",
            ));
        }
        Ok(())
    }
}
