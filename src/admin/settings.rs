//! `/admin/settings` (GET list) and `/admin/settings/{key}` (GET, PUT, DELETE). A setting's
//! value is any JSON: PUT's body is the value itself. A value that names a deployment
//! (`{"provider": "openai", "model_id": "gpt-4o-mini"}`) can be requested as a model name,
//! so every change rebuilds the registry.

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use super::input::query;
use super::page::{Page, SortKey, PARAMS};
use super::refusal::{managed_by_config, not_found};
use super::views::{List, Setting, SettingDeleted};
use super::{internal, method_not_allowed, Ctx, Handled, Reply};
use crate::error::{ErrorBody, GatewayError};
use crate::store::{JsonRow, Tx};

pub async fn route(ctx: &Ctx<'_>, key: Option<&str>, req: Request<Incoming>) -> Handled {
    match (req.method().clone(), key) {
        (Method::GET, None) => list(ctx, &req).await,
        (Method::GET, Some(k)) => get(ctx, k).await,
        (Method::PUT, Some(k)) => put(ctx, k, req).await,
        (Method::DELETE, Some(k)) => delete(ctx, k).await,
        (m, None) => Err(method_not_allowed(&m, "GET")),
        (m, Some(_)) => Err(method_not_allowed(&m, "GET, PUT, DELETE")),
    }
}

#[utoipa::path(
    get,
    path = "/admin/settings",
    operation_id = "list_settings",
    tag = "settings",
    summary = "List settings",
    params(Page),
    responses(
        (status = 200, description = "A page of settings, by key.", body = List<Setting>),
        (status = 400, description = "A field or parameter is wrong; `param` names it.", body = ErrorBody),
    )
)]
async fn list(ctx: &Ctx<'_>, req: &Request<Incoming>) -> Handled {
    let q = query(req.uri().query(), &PARAMS)?;
    let page = Page::from_query(&q, SortKey::Name)?;
    let rows = ctx.gw.db.list_settings(page.after.as_deref(), page.fetch());
    let rows = rows.await.map_err(internal)?;
    Ok(Reply::read(
        page.answer(rows.into_iter().map(view).collect(), "key"),
    ))
}

#[utoipa::path(
    get,
    path = "/admin/settings/{key}",
    operation_id = "get_setting",
    tag = "settings",
    summary = "Get a setting",
    params(("key" = String, Path)),
    responses(
        (status = 200, description = "The setting.", body = Setting),
        (status = 404, description = "No setting of that key.", body = ErrorBody),
    )
)]
async fn get(ctx: &Ctx<'_>, key: &str) -> Handled {
    match ctx.gw.db.setting(key).await.map_err(internal)? {
        Some(row) => Ok(Reply::read(view(row))),
        None => Err(unknown(key)),
    }
}

/// Creates or replaces the setting: 201 when it is new, 200 when it replaced one.
#[utoipa::path(
    put,
    path = "/admin/settings/{key}",
    operation_id = "put_setting",
    tag = "settings",
    summary = "Create or replace a setting",
    params(("key" = String, Path, description = "1 to 128 letters, digits, '.', '_' or '-'.")),
    request_body(content = Value, description = "The setting's value: any JSON but null. `{\"provider\": P, \"model_id\": M}` makes the key a model name clients can request."),
    responses(
        (status = 200, description = "Replaced.", body = Setting),
        (status = 201, description = "Created.", body = Setting),
        (status = 400, description = "A field or parameter is wrong; `param` names it.", body = ErrorBody),
        (status = 409, description = "The setting is managed by config.toml.", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB.", body = ErrorBody),
    )
)]
async fn put(ctx: &Ctx<'_>, key: &str, req: Request<Incoming>) -> Handled {
    let value = ctx.body(req).await?;
    if value.is_null() {
        return Err(GatewayError::invalid_request(
            "The body is the setting's JSON value; to remove a setting, DELETE it.",
        ));
    }
    let mut tx = ctx.begin().await?;
    let before = api_setting(&mut tx, key).await?;
    if before.is_none() {
        check_key(key)?;
    }
    tx.put_setting(key, &value).await.map_err(internal)?;
    let after = tx.lock_setting(key).await.map_err(internal)?.map(view);
    let action = if before.is_some() { "update" } else { "create" };
    ctx.audit(
        &mut tx,
        action,
        "setting",
        key,
        before.as_ref(),
        after.as_ref(),
    )
    .await?;
    tx.commit().await.map_err(internal)?;
    let status = match before {
        Some(_) => StatusCode::OK,
        None => StatusCode::CREATED,
    };
    Ok(Reply::registry(status, after.unwrap_or(Value::Null)))
}

#[utoipa::path(
    delete,
    path = "/admin/settings/{key}",
    operation_id = "delete_setting",
    tag = "settings",
    summary = "Remove a setting",
    params(("key" = String, Path)),
    responses(
        (status = 200, description = "Removed.", body = SettingDeleted),
        (status = 404, description = "No setting of that key.", body = ErrorBody),
        (status = 409, description = "The setting is managed by config.toml.", body = ErrorBody),
    )
)]
async fn delete(ctx: &Ctx<'_>, key: &str) -> Handled {
    let mut tx = ctx.begin().await?;
    let Some(before) = api_setting(&mut tx, key).await? else {
        return Err(unknown(key));
    };
    tx.delete_setting(key).await.map_err(internal)?;
    ctx.audit(&mut tx, "delete", "setting", key, Some(&before), None)
        .await?;
    tx.commit().await.map_err(internal)?;
    let body = json!({"object": "setting", "key": key, "deleted": true});
    Ok(Reply::registry(StatusCode::OK, body))
}

/// The setting `key` as it is, locked, unless config.toml wrote it (`[[routes]]`).
async fn api_setting(tx: &mut Tx, key: &str) -> Result<Option<Value>, GatewayError> {
    let row = tx.lock_setting(key).await.map_err(internal)?;
    if row.as_ref().and_then(|r| r.get("managed_by")) == Some(&json!("config")) {
        return Err(managed_by_config(&format!("The setting `{key}`")));
    }
    Ok(row.map(view))
}

/// Keys are names: letters, digits, '.', '_' and '-', so a key is its URL as it is.
fn check_key(key: &str) -> Result<(), GatewayError> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    match ok {
        true => Ok(()),
        false => Err(GatewayError::invalid_param(
            "key",
            "A setting's key must be 1 to 128 letters, digits, '.', '_' or '-'.",
        )),
    }
}

fn unknown(key: &str) -> GatewayError {
    not_found("key", format!("No setting has the key `{key}`."))
}

fn view(mut row: JsonRow) -> Value {
    let mut out = Map::with_capacity(row.len() + 1);
    out.insert("object".into(), "setting".into());
    out.append(&mut row);
    Value::Object(out)
}
