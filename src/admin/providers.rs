//! `/admin/providers` (GET list, POST create) and `/admin/providers/{name}` (GET, PATCH,
//! DELETE). A provider's API key is write-only: `env:NAME` is kept as the reference it is,
//! any other key is sealed with the master key (`crate::secrets`), and answers (and audit
//! rows) show only `env:NAME`, `"[sealed]"` or null. Deleting a provider soft-deletes it and
//! its models (a trigger does the models); its name may then be taken again.

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::input::{merge, object, query, read_only, typed};
use super::page::{Page, SortKey, PARAMS};
use super::refusal::{managed_by_config, not_found, store_error};
use super::views::{List, Provider, ProviderDeleted};
use super::{internal, method_not_allowed, models, Ctx, Handled, Reply};
use crate::config::{Api, ProviderTimeouts};
use crate::error::{ErrorBody, GatewayError};
use crate::secrets::{is_sealed, Sealer};
use crate::store::{JsonRow, Tx, KEY_IN_CONFIG};

/// What GET shows for a sealed key, and what PATCH takes back as "keep it".
const SEALED: &str = "[sealed]";
/// What GET shows for a key written in config.toml.
const IN_CONFIG: &str = "[config.toml]";
const READ_ONLY: &[&str] = &[
    "object",
    "id",
    "managed_by",
    "created_at",
    "updated_at",
    "deleted_at",
];

/// A provider as POST creates it (PATCH takes any of these fields).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderInput {
    /// Letters, digits, '.', '_' or '-': the first part of `provider/model_id`.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    name: String,
    display_name: Option<String>,
    api: Api,
    /// The provider's API base URL (not needed for `mock`).
    #[serde(default)]
    base_url: String,
    /// The key itself (stored encrypted with the master key), `env:NAME`, or null; never
    /// shown again.
    #[serde(default)]
    #[schema(write_only)]
    api_key: Option<String>,
    api_version: Option<String>,
    #[serde(default = "one")]
    max_parallel_requests: u32,
    #[serde(default = "sixty")]
    requests_per_minute: u32,
    #[serde(default)]
    tokens_per_minute: u32,
    #[serde(default)]
    queue_timeout_ms: u32,
    #[serde(default)]
    timeouts: ProviderTimeouts,
    #[serde(default = "yes")]
    is_enabled: bool,
    description: Option<String>,
}

fn one() -> u32 {
    1
}
fn sixty() -> u32 {
    60
}
fn yes() -> bool {
    true
}

pub async fn route(ctx: &Ctx<'_>, name: Option<&str>, req: Request<Incoming>) -> Handled {
    match (req.method().clone(), name) {
        (Method::GET, None) => list(ctx, &req).await,
        (Method::POST, None) => create(ctx, req).await,
        (Method::GET, Some(n)) => get(ctx, n).await,
        (Method::PATCH, Some(n)) => update(ctx, n, req).await,
        (Method::DELETE, Some(n)) => delete(ctx, n).await,
        (m, None) => Err(method_not_allowed(&m, "GET, POST")),
        (m, Some(_)) => Err(method_not_allowed(&m, "GET, PATCH, DELETE")),
    }
}

#[utoipa::path(
    get,
    path = "/admin/providers",
    operation_id = "list_providers",
    tag = "providers",
    summary = "List providers",
    params(Page),
    responses(
        (status = 200, description = "A page of providers, by name.", body = List<Provider>),
        (status = 400, description = "A field or parameter is wrong; `param` names it.", body = ErrorBody),
    )
)]
async fn list(ctx: &Ctx<'_>, req: &Request<Incoming>) -> Handled {
    let q = query(req.uri().query(), &PARAMS)?;
    let page = Page::from_query(&q, SortKey::Name)?;
    let rows = ctx
        .gw
        .db
        .list_providers(page.after.as_deref(), page.fetch());
    let rows = rows.await.map_err(internal)?;
    Ok(Reply::read(
        page.answer(rows.into_iter().map(view).collect(), "name"),
    ))
}

#[utoipa::path(
    get,
    path = "/admin/providers/{name}",
    operation_id = "get_provider",
    tag = "providers",
    summary = "Get a provider",
    params(("name" = String, Path)),
    responses(
        (status = 200, description = "The provider.", body = Provider),
        (status = 404, description = "No provider of that name.", body = ErrorBody),
    )
)]
async fn get(ctx: &Ctx<'_>, name: &str) -> Handled {
    match ctx.gw.db.provider(name).await.map_err(internal)? {
        Some(row) => Ok(Reply::read(view(row))),
        None => Err(unknown(name)),
    }
}

#[utoipa::path(
    post,
    path = "/admin/providers",
    operation_id = "create_provider",
    tag = "providers",
    summary = "Create a provider",
    request_body = ProviderInput,
    responses(
        (status = 201, description = "The provider created; the registry serves it before this answer.", body = Provider),
        (status = 400, description = "A field or parameter is wrong; `param` names it.", body = ErrorBody),
        (status = 409, description = "A provider of that name exists (`code` `already_exists`).", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB.", body = ErrorBody),
    )
)]
async fn create(ctx: &Ctx<'_>, req: Request<Incoming>) -> Handled {
    let body = object(ctx.body(req).await?)?;
    let input: ProviderInput = typed(body.clone())?;
    input.check()?;
    let mut values = columns(&input);
    let key = key_ref(input.api_key.as_deref(), None, ctx.sealer)?;
    values.insert("api_key_ref".into(), key.into());
    let mut tx = ctx.begin().await?;
    let id = tx
        .insert_provider(&values)
        .await
        .map_err(|e| store_error(e, &body))?;
    let after = read_back(&mut tx, &id).await?;
    ctx.audit(
        &mut tx,
        "create",
        "provider",
        &input.name,
        None,
        Some(&after),
    )
    .await?;
    tx.commit().await.map_err(|e| store_error(e, &body))?;
    Ok(Reply::registry(StatusCode::CREATED, after))
}

#[utoipa::path(
    patch,
    path = "/admin/providers/{name}",
    operation_id = "update_provider",
    tag = "providers",
    summary = "Change a provider",
    params(("name" = String, Path)),
    request_body(content = Object, description = "Any fields of `ProviderInput`; the others keep their values. `api_key` `[sealed]` keeps the stored key."),
    responses(
        (status = 200, description = "The provider changed.", body = Provider),
        (status = 400, description = "A field or parameter is wrong; `param` names it.", body = ErrorBody),
        (status = 404, description = "No provider of that name.", body = ErrorBody),
        (status = 409, description = "The row is managed by config.toml (`code` `managed_by_config`), or the change breaks a rule (`already_exists`, `default_exists`).", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB.", body = ErrorBody),
    )
)]
async fn update(ctx: &Ctx<'_>, name: &str, req: Request<Incoming>) -> Handled {
    let patch = object(ctx.body(req).await?)?;
    let mut tx = ctx.begin().await?;
    let row = locked_api_provider(&mut tx, name).await?;
    let id = text(&row, "id");
    let stored_key = row
        .get("api_key_ref")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let before = view(row);
    let merged = merge(as_map(&before), patch.clone(), READ_ONLY, read_only)?;
    let input: ProviderInput = typed(merged)?;
    input.check()?;
    let mut values = columns(&input);
    if let Some(key) = patch.get("api_key") {
        let key = key_ref(key.as_str(), stored_key.as_deref(), ctx.sealer)?;
        values.insert("api_key_ref".into(), key.into());
    }
    let updated = tx.update_provider(&id, &values).await;
    updated.map_err(|e| store_error(e, &patch))?;
    let after = read_back(&mut tx, &id).await?;
    ctx.audit(
        &mut tx,
        "update",
        "provider",
        name,
        Some(&before),
        Some(&after),
    )
    .await?;
    tx.commit().await.map_err(|e| store_error(e, &patch))?;
    Ok(Reply::registry(StatusCode::OK, after))
}

/// Soft-deletes the provider and its models, with an audit row for each.
#[utoipa::path(
    delete,
    path = "/admin/providers/{name}",
    operation_id = "delete_provider",
    tag = "providers",
    summary = "Delete a provider and its models",
    params(("name" = String, Path)),
    responses(
        (status = 200, description = "Deleted (soft: the rows stay for usage history).", body = ProviderDeleted),
        (status = 404, description = "No provider of that name.", body = ErrorBody),
        (status = 409, description = "The provider is managed by config.toml.", body = ErrorBody),
    )
)]
async fn delete(ctx: &Ctx<'_>, name: &str) -> Handled {
    let mut tx = ctx.begin().await?;
    let row = locked_api_provider(&mut tx, name).await?;
    let id = text(&row, "id");
    let before = view(row);
    let model_ids = tx.live_models_of(&id).await.map_err(internal)?;
    let mut models_before = Vec::with_capacity(model_ids.len());
    for m in &model_ids {
        models_before.push(models::read_back(&mut tx, m).await?);
    }
    tx.delete_provider(&id).await.map_err(internal)?;
    let after = read_back(&mut tx, &id).await?;
    ctx.audit(
        &mut tx,
        "delete",
        "provider",
        name,
        Some(&before),
        Some(&after),
    )
    .await?;
    for (m, model_before) in model_ids.iter().zip(&models_before) {
        let model_after = models::read_back(&mut tx, m).await?;
        ctx.audit(
            &mut tx,
            "delete",
            "model",
            m,
            Some(model_before),
            Some(&model_after),
        )
        .await?;
    }
    tx.commit().await.map_err(internal)?;
    let body =
        json!({"object": "provider", "name": name, "deleted": true, "deleted_models": model_ids});
    Ok(Reply::registry(StatusCode::OK, body))
}

/// The live provider `name`, locked, when the API may change it.
async fn locked_api_provider(tx: &mut Tx, name: &str) -> Result<JsonRow, GatewayError> {
    let row = tx.lock_provider(name).await.map_err(internal)?;
    let row = row.ok_or_else(|| unknown(name))?;
    if row.get("managed_by") == Some(&json!("config")) {
        return Err(managed_by_config(&format!("The provider `{name}`")));
    }
    Ok(row)
}

/// The provider `id` as the transaction sees it, as the API shows it.
async fn read_back(tx: &mut Tx, id: &str) -> Result<Value, GatewayError> {
    let row = tx.provider_by_id(id).await.map_err(internal)?;
    row.map(view)
        .ok_or_else(|| GatewayError::internal("The provider vanished while it was being written."))
}

fn unknown(name: &str) -> GatewayError {
    not_found("name", format!("No provider is named `{name}`."))
}

fn text(row: &JsonRow, field: &str) -> String {
    row.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn as_map(v: &Value) -> &Map<String, Value> {
    v.as_object().expect("a provider's view is an object")
}

/// A provider row as the API shows it: the stored key replaced by what may be shown of it.
fn view(mut row: JsonRow) -> Value {
    let stored = row.remove("api_key_ref");
    let shown = match stored.as_ref().and_then(Value::as_str) {
        None => Value::Null,
        Some(r) if r.starts_with("env:") => Value::from(r),
        Some(KEY_IN_CONFIG) => Value::from(IN_CONFIG),
        Some(_) => Value::from(SEALED),
    };
    row.insert("api_key".into(), shown);
    row.insert("object".into(), "provider".into());
    Value::Object(row)
}

/// The columns an input sets (all but the key).
fn columns(p: &ProviderInput) -> JsonRow {
    let v = json!({
        "name": p.name,
        "display_name": p.display_name.clone().unwrap_or_else(|| p.name.clone()),
        "api": p.api.as_str(),
        "base_url": p.base_url,
        "api_version": p.api_version,
        "max_parallel_requests": p.max_parallel_requests,
        "requests_per_minute": p.requests_per_minute,
        "tokens_per_minute": p.tokens_per_minute,
        "queue_timeout_ms": p.queue_timeout_ms,
        "timeouts": p.timeouts,
        "is_enabled": p.is_enabled,
        "description": p.description,
    });
    match v {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object"),
    }
}

impl ProviderInput {
    /// The checks beyond the types (the same as config.toml's).
    fn check(&self) -> Result<(), GatewayError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !name_ok {
            return Err(GatewayError::invalid_param(
                "name",
                "`name` must be 1 to 64 letters, digits, '.', '_' or '-' (it is the first part of `provider/model_id`).",
            ));
        }
        let is_http_url = self.base_url.parse::<http::Uri>().is_ok_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
        });
        if self.api != Api::Mock && !is_http_url {
            return Err(GatewayError::invalid_param(
                "base_url",
                format!("`base_url` {:?} is not an http(s) URL.", self.base_url),
            ));
        }
        if self.api == Api::Azure && self.api_version.is_none() {
            return Err(GatewayError::invalid_param(
                "api_version",
                "azure providers need `api_version` (e.g. \"2024-10-21\").",
            ));
        }
        Ok(())
    }
}

/// What `api_key_ref` stores for a key given as `given`: an `env:NAME` reference as it is, a
/// key sealed with the master key, the stored one again for `"[sealed]"`, or nothing.
fn key_ref(
    given: Option<&str>,
    stored: Option<&str>,
    sealer: Option<&Sealer>,
) -> Result<Option<String>, GatewayError> {
    let bad = |m: &str| GatewayError::invalid_param("api_key", m);
    let Some(key) = given else {
        return Ok(None);
    };
    if let Some(var) = key.strip_prefix("env:") {
        let ok = !var.is_empty() && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        return match ok {
            true => Ok(Some(key.to_owned())),
            false => Err(bad(
                "`api_key` `env:NAME` needs a variable name of letters, digits and '_'.",
            )),
        };
    }
    match (key, stored) {
        (SEALED, Some(s)) if is_sealed(s) => return Ok(Some(s.to_owned())),
        (SEALED | IN_CONFIG | KEY_IN_CONFIG | "", _) => {
            return Err(bad(
                "`api_key` must be the key itself, `env:NAME`, or null.",
            ))
        }
        _ => {}
    }
    if http::HeaderValue::from_str(key).is_err() {
        return Err(bad("`api_key` has characters an HTTP header cannot carry."));
    }
    let sealer = sealer.ok_or_else(|| bad(
        "No master key is configured ([auth] master_key), so a provider key cannot be stored encrypted: send `env:NAME` instead and set NAME on every instance.",
    ))?;
    Ok(Some(sealer.seal(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kept_as_references_or_sealed_never_as_given() {
        let sealer = Sealer::new("m");
        assert_eq!(
            key_ref(Some("env:OPENAI_KEY"), None, None).unwrap(),
            Some("env:OPENAI_KEY".into())
        );
        let sealed = key_ref(Some("sk-123"), None, Some(&sealer))
            .unwrap()
            .unwrap();
        assert!(is_sealed(&sealed) && !sealed.contains("sk-123"));
        assert_eq!(
            key_ref(Some(SEALED), Some(&sealed), None).unwrap(),
            Some(sealed.clone())
        );
        let e = key_ref(Some("sk-123"), None, None).unwrap_err();
        assert!(e.message.contains("env:NAME"), "{}", e.message);
        assert_eq!(e.param.as_deref(), Some("api_key"));
        assert!(key_ref(Some(SEALED), None, Some(&sealer)).is_err());
        assert!(key_ref(Some("env:"), None, None).is_err());
        let mut row = JsonRow::new();
        row.insert("api_key_ref".into(), sealed.into());
        assert_eq!(view(row)["api_key"], SEALED);
    }
}
