//! `/admin/models` (GET list with filters, POST create) and `/admin/models/{id}` (GET,
//! PATCH, DELETE). A model stays at its provider with its `model_id` (the database refuses a
//! change of either); DELETE is soft: the row stays, inactive, with `deleted_at`, so usage
//! history keeps its foreign key, and `GET /admin/models?include_deleted=true` still lists it.

use std::num::NonZeroU32;

use chrono::NaiveDate;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::input::{flag, merge, object, query, read_only, typed};
use super::page::{Page, SortKey};
use super::price::Price;
use super::refusal::{conflict, immutable, managed_by_config, not_found, store_error};
use super::views::{List, Model, ModelDeleted};
use super::{internal, method_not_allowed, Ctx, Handled, Reply};
use crate::config::{ModelStatus, ModelType};
use crate::error::{ErrorBody, GatewayError};
use crate::store::{JsonRow, ModelFilter, Tx};

const READ_ONLY: &[&str] = &[
    "object",
    "id",
    "provider_id",
    "managed_by",
    "created_at",
    "updated_at",
    "deleted_at",
];
const LIST_PARAMS: &[&str] = &[
    "limit",
    "after",
    "provider",
    "status",
    "name",
    "include_deleted",
];

/// A model as POST creates it (PATCH takes any of these fields; `provider` and `model_id`
/// are fixed at creation).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelInput {
    name: String,
    provider: String,
    model_id: String,
    display_name: Option<String>,
    #[serde(default)]
    model_type: ModelType,
    family: Option<String>,
    version: Option<String>,
    tier: Option<String>,
    #[schema(value_type = Option<u32>, minimum = 1)]
    context_window: Option<NonZeroU32>,
    #[schema(value_type = Option<u32>, minimum = 1)]
    max_output_tokens: Option<NonZeroU32>,
    supports_streaming: Option<bool>,
    supports_json: Option<bool>,
    supports_function_calling: Option<bool>,
    supports_vision: Option<bool>,
    supports_audio: Option<bool>,
    supports_system_prompt: Option<bool>,
    #[serde(default = "free")]
    cost_input_per_million: Price,
    #[serde(default = "free")]
    cost_output_per_million: Price,
    cost_cache_read_per_million: Option<Price>,
    cost_cache_write_per_million: Option<Price>,
    /// Default request parameters, merged under the client's.
    #[serde(default)]
    #[schema(value_type = Object)]
    parameters: Map<String, Value>,
    #[serde(default)]
    #[schema(value_type = Object)]
    rate_limits: Map<String, Value>,
    #[serde(default)]
    #[schema(value_type = Object)]
    capabilities: Map<String, Value>,
    #[serde(default)]
    #[schema(value_type = Object)]
    metadata: Map<String, Value>,
    #[serde(default)]
    status: ModelStatus,
    #[serde(default)]
    is_default: bool,
    #[serde(default)]
    priority: i32,
    #[serde(default = "one")]
    weight: u32,
    #[schema(value_type = Option<String>, format = Date)]
    release_date: Option<NaiveDate>,
    #[schema(value_type = Option<String>, format = Date)]
    deprecation_date: Option<NaiveDate>,
    typical_latency_ms: Option<u32>,
}

fn free() -> Price {
    Price(Default::default())
}
fn one() -> u32 {
    1
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
        (Method::DELETE, Some(id)) => delete(ctx, id).await,
        (m, None) => Err(method_not_allowed(&m, "GET, POST")),
        (m, Some(_)) => Err(method_not_allowed(&m, "GET, PATCH, DELETE")),
    }
}

#[utoipa::path(
    get,
    path = "/admin/models",
    operation_id = "list_models",
    tag = "models",
    summary = "List models",
    params(Page, ("provider" = Option<String>, Query, description = "A provider's name."), ("status" = Option<ModelStatus>, Query), ("name" = Option<String>, Query, description = "A public name."), ("include_deleted" = Option<bool>, Query, description = "Also list deleted models.")),
    responses(
        (status = 200, description = "A page of models, by id.", body = List<Model>),
        (status = 400, description = "A field or parameter is wrong; `param` names it.", body = ErrorBody),
    )
)]
async fn list(ctx: &Ctx<'_>, req: &Request<Incoming>) -> Handled {
    let q = query(req.uri().query(), LIST_PARAMS)?;
    let page = Page::from_query(&q, SortKey::Id)?;
    let status = q.get("status").cloned();
    if status
        .as_deref()
        .is_some_and(|s| !["active", "inactive", "deprecated"].contains(&s))
    {
        return Err(GatewayError::invalid_param(
            "status",
            "`status` must be active, inactive or deprecated.",
        ));
    }
    let filter = ModelFilter {
        provider: q.get("provider").cloned(),
        status,
        name: q.get("name").cloned(),
        include_deleted: flag(&q, "include_deleted")?,
    };
    let rows = ctx
        .gw
        .db
        .list_models(&filter, page.after.as_deref(), page.fetch());
    let rows = rows.await.map_err(internal)?;
    Ok(Reply::read(
        page.answer(rows.into_iter().map(view).collect(), "id"),
    ))
}

#[utoipa::path(
    get,
    path = "/admin/models/{id}",
    operation_id = "get_model",
    tag = "models",
    summary = "Get a model",
    params(("id" = String, Path, format = Uuid)),
    responses(
        (status = 200, description = "The model.", body = Model),
        (status = 404, description = "No model of that id.", body = ErrorBody),
    )
)]
async fn get(ctx: &Ctx<'_>, id: &str) -> Handled {
    match ctx.gw.db.model(id).await.map_err(internal)? {
        Some(row) => Ok(Reply::read(view(row))),
        None => Err(unknown(id)),
    }
}

#[utoipa::path(
    post,
    path = "/admin/models",
    operation_id = "create_model",
    tag = "models",
    summary = "Create a model",
    request_body = ModelInput,
    responses(
        (status = 201, description = "The model created; the registry serves it before this answer.", body = Model),
        (status = 400, description = "A field or parameter is wrong; `param` names it.", body = ErrorBody),
        (status = 404, description = "No provider of that name.", body = ErrorBody),
        (status = 409, description = "The provider has a model with that `model_id`, or a default model already.", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB.", body = ErrorBody),
    )
)]
async fn create(ctx: &Ctx<'_>, req: Request<Incoming>) -> Handled {
    let body = object(ctx.body(req).await?)?;
    let input: ModelInput = typed(body.clone())?;
    input.check()?;
    let mut tx = ctx.begin().await?;
    let provider = tx.lock_provider(&input.provider).await.map_err(internal)?;
    let Some(provider) = provider else {
        let message = format!("No provider is named `{}`.", input.provider);
        return Err(not_found("provider", message));
    };
    let mut values = columns(&input);
    values.insert("provider_id".into(), provider["id"].clone());
    let inserted = tx.insert_model(&values).await;
    let id = inserted.map_err(|e| store_error(e, &body))?;
    let after = read_back(&mut tx, &id).await?;
    ctx.audit(&mut tx, "create", "model", &id, None, Some(&after))
        .await?;
    tx.commit().await.map_err(|e| store_error(e, &body))?;
    Ok(Reply::registry(StatusCode::CREATED, after))
}

#[utoipa::path(
    patch,
    path = "/admin/models/{id}",
    operation_id = "update_model",
    tag = "models",
    summary = "Change a model",
    params(("id" = String, Path, format = Uuid)),
    request_body(content = Object, description = "Any fields of `ModelInput`; the others keep their values. `provider` and `model_id` cannot change."),
    responses(
        (status = 200, description = "The model changed.", body = Model),
        (status = 400, description = "A field or parameter is wrong; `param` names it.", body = ErrorBody),
        (status = 404, description = "No model of that id.", body = ErrorBody),
        (status = 409, description = "The row is managed by config.toml (`code` `managed_by_config`), or the change breaks a rule (`already_exists`, `default_exists`).", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB.", body = ErrorBody),
    )
)]
async fn update(ctx: &Ctx<'_>, id: &str, req: Request<Incoming>) -> Handled {
    let patch = object(ctx.body(req).await?)?;
    let mut tx = ctx.begin().await?;
    let before = view(locked_api_model(&mut tx, id).await?);
    let merged = merge(
        before.as_object().expect("an object"),
        patch.clone(),
        READ_ONLY,
        read_only,
    )?;
    let input: ModelInput = typed(merged)?;
    input.check()?;
    if before["provider"] != input.provider.as_str() {
        return Err(immutable("provider"));
    }
    // model_id goes to the database as given: the database refuses a change of it.
    let updated = tx.update_model(id, &columns(&input)).await;
    updated.map_err(|e| store_error(e, &patch))?;
    let after = read_back(&mut tx, id).await?;
    ctx.audit(&mut tx, "update", "model", id, Some(&before), Some(&after))
        .await?;
    tx.commit().await.map_err(|e| store_error(e, &patch))?;
    Ok(Reply::registry(StatusCode::OK, after))
}

#[utoipa::path(
    delete,
    path = "/admin/models/{id}",
    operation_id = "delete_model",
    tag = "models",
    summary = "Delete a model",
    params(("id" = String, Path, format = Uuid)),
    responses(
        (status = 200, description = "Deleted (soft: the row stays, inactive).", body = ModelDeleted),
        (status = 404, description = "No model of that id.", body = ErrorBody),
        (status = 409, description = "The model is managed by config.toml, or already deleted.", body = ErrorBody),
    )
)]
async fn delete(ctx: &Ctx<'_>, id: &str) -> Handled {
    let mut tx = ctx.begin().await?;
    let before = view(locked_api_model(&mut tx, id).await?);
    tx.delete_model(id).await.map_err(internal)?;
    let after = read_back(&mut tx, id).await?;
    ctx.audit(&mut tx, "delete", "model", id, Some(&before), Some(&after))
        .await?;
    tx.commit().await.map_err(internal)?;
    let body = json!({"object": "model", "id": id, "deleted": true});
    Ok(Reply::registry(StatusCode::OK, body))
}

/// The live model `id`, locked, when the API may change it.
async fn locked_api_model(tx: &mut Tx, id: &str) -> Result<JsonRow, GatewayError> {
    let row = tx.lock_model(id).await.map_err(internal)?;
    let row = row.ok_or_else(|| unknown(id))?;
    if row.get("managed_by") == Some(&json!("config")) {
        return Err(managed_by_config(&format!("The model {id}")));
    }
    if !row.get("deleted_at").is_none_or(Value::is_null) {
        let message = format!("The model {id} is deleted; deleted models are kept as they were.");
        return Err(conflict("id", "deleted", message));
    }
    Ok(row)
}

/// The model `id` as the transaction sees it, as the API shows it.
pub async fn read_back(tx: &mut Tx, id: &str) -> Result<Value, GatewayError> {
    let row = tx.lock_model(id).await.map_err(internal)?;
    row.map(view)
        .ok_or_else(|| GatewayError::internal("The model vanished while it was being written."))
}

fn unknown(id: &str) -> GatewayError {
    not_found("id", format!("No model has the id `{id}`."))
}

pub fn view(mut row: JsonRow) -> Value {
    row.insert("object".into(), "model".into());
    Value::Object(row)
}

/// The columns an input sets (all but the provider's id).
fn columns(m: &ModelInput) -> JsonRow {
    let price = |p: &Option<Price>| p.map(|p| p.0.to_string());
    let v = json!({
        "model_id": m.model_id,
        "name": m.name,
        "display_name": m.display_name.clone().unwrap_or_else(|| m.name.clone()),
        "model_type": m.model_type.as_str(),
        "family": m.family, "version": m.version, "tier": m.tier,
        "context_window": m.context_window, "max_output_tokens": m.max_output_tokens,
        "supports_streaming": m.supports_streaming, "supports_json": m.supports_json,
        "supports_function_calling": m.supports_function_calling,
        "supports_vision": m.supports_vision, "supports_audio": m.supports_audio,
        "supports_system_prompt": m.supports_system_prompt,
        "cost_input_per_million": m.cost_input_per_million.0.to_string(),
        "cost_output_per_million": m.cost_output_per_million.0.to_string(),
        "cost_cache_read_per_million": price(&m.cost_cache_read_per_million),
        "cost_cache_write_per_million": price(&m.cost_cache_write_per_million),
        "parameters": m.parameters, "rate_limits": m.rate_limits,
        "capabilities": m.capabilities, "metadata": m.metadata,
        "status": m.status.as_str(), "is_default": m.is_default,
        "priority": m.priority, "weight": m.weight,
        "release_date": m.release_date.map(|d| d.to_string()),
        "deprecation_date": m.deprecation_date.map(|d| d.to_string()),
        "typical_latency_ms": m.typical_latency_ms,
    });
    match v {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object"),
    }
}

impl ModelInput {
    /// The checks beyond the types.
    fn check(&self) -> Result<(), GatewayError> {
        for (field, value) in [("name", &self.name), ("model_id", &self.model_id)] {
            if value.trim().is_empty() || value.len() > 256 {
                let message = format!("`{field}` must be 1 to 256 characters.");
                return Err(GatewayError::invalid_param(field, message));
            }
        }
        Ok(())
    }
}
