//! `GET /api/v1/llm/models`: the models a dashboard offers, with what it shows of them.
//! Every caller reads the active ones that are served now (seed 000's row-level rule; a model
//! of a disabled provider is not offered); `?all=true` adds every other live one (inactive,
//! deprecated, at a disabled provider), for admins only. A key limited to some models sees only those.

use http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::{Caller, Role};
use crate::error::{ErrorBody, GatewayError};
use crate::proxy::{error_response, json_response, ClientBody, Gateway};
use crate::registry::Snapshot;
use crate::store::{JsonRow, ModelFilter};

type Response = http::Response<ClientBody>;

/// Models are read a page at a time, in id order, until a page comes back short.
const PAGE: usize = 500;

#[utoipa::path(
    get,
    path = "/api/v1/llm/models",
    operation_id = "llm_models",
    tag = "dashboard",
    summary = "The models a dashboard offers",
    description = "Active models that are served now; a key limited to some models sees only those. `all=true` (admins only) adds every other live model: inactive, deprecated, or at a disabled provider.",
    params(("all" = Option<bool>, Query, description = "Also list models that are not served now (admins only).")),
    responses(
        (status = 200, description = "The models.", body = DashboardModels),
        (status = 400, description = "`all` is not `true` or `false`.", body = ErrorBody),
        (status = 403, description = "`all=true` from a caller who is not an admin.", body = ErrorBody),
        (status = 503, description = "The database could not be read.", body = ErrorBody),
    )
)]
pub async fn list_models(gw: &Gateway, caller: &Caller, query: Option<&str>) -> Response {
    let all = match wants_all(query) {
        Ok(all) => all,
        Err(e) => return error_response(&e),
    };
    if all && caller.role != Role::Admin {
        return error_response(&GatewayError::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            "`all=true` lists inactive models too, which only admins may see.",
        ));
    }
    match rows(gw, all).await {
        Ok(rows) => {
            let snapshot = gw.registry.load();
            let data: Vec<DashboardModel> = rows
                .iter()
                .filter(|r| all || serving(&snapshot, r))
                .filter(|r| caller.may_use(r["name"].as_str().unwrap_or_default()))
                .map(entry)
                .collect();
            let list = DashboardModels {
                object: "list",
                data,
            };
            json_response(
                StatusCode::OK,
                serde_json::to_value(&list).unwrap_or_default(),
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "the model list could not be read");
            error_response(&GatewayError::unavailable(
                "The model list could not be read from the database; try again shortly.",
            ))
        }
    }
}

/// Whether the model is served now: an active model of a disabled provider, or of one whose
/// key is missing, would only fail when called, so it is not offered.
fn serving(snapshot: &Snapshot, r: &JsonRow) -> bool {
    let (provider, model_id) = (r["provider"].as_str(), r["model_id"].as_str());
    let qualified = format!(
        "{}/{}",
        provider.unwrap_or_default(),
        model_id.unwrap_or_default()
    );
    snapshot.resolve(&qualified).is_some()
}

/// `all=true` or `all=false` (absent is false); anything else is a 400 naming `all`.
fn wants_all(query: Option<&str>) -> Result<bool, GatewayError> {
    let mut all = false;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k == "all" {
            all = match v.as_ref() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(GatewayError::invalid_param(
                        "all",
                        "`all` must be `true` or `false`.",
                    ))
                }
            };
        }
    }
    Ok(all)
}

/// The live (not deleted) models: only active ones unless `all`.
async fn rows(gw: &Gateway, all: bool) -> anyhow::Result<Vec<JsonRow>> {
    let filter = ModelFilter {
        status: (!all).then(|| "active".to_owned()),
        ..ModelFilter::default()
    };
    let mut rows = Vec::new();
    loop {
        let after = rows
            .last()
            .and_then(|r: &JsonRow| r["id"].as_str().map(str::to_owned));
        let page = gw.db.list_models(&filter, after.as_deref(), PAGE).await?;
        let done = page.len() < PAGE;
        rows.extend(page);
        if done {
            return Ok(rows);
        }
    }
}

/// What a dashboard shows of a model: names, provider, type, context, prices as exact decimal
/// strings (USD per million tokens) and capability flags (`null`: unknown).
fn entry(r: &JsonRow) -> DashboardModel<'_> {
    DashboardModel {
        id: &r["name"],
        display_name: &r["display_name"],
        provider: &r["provider"],
        kind: &r["model_type"],
        status: &r["status"],
        context_window: &r["context_window"],
        max_output_tokens: &r["max_output_tokens"],
        prices: Prices {
            input_per_million: &r["cost_input_per_million"],
            output_per_million: &r["cost_output_per_million"],
            cache_read_per_million: &r["cost_cache_read_per_million"],
            cache_write_per_million: &r["cost_cache_write_per_million"],
        },
        capabilities: Capabilities {
            streaming: &r["supports_streaming"],
            json: &r["supports_json"],
            tools: &r["supports_function_calling"],
            vision: &r["supports_vision"],
        },
    }
}

/// `GET /api/v1/llm/models`'s answer.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DashboardModels<'a> {
    /// Always `list`.
    object: &'static str,
    data: Vec<DashboardModel<'a>>,
}

/// A model as a dashboard shows it; the values are the registry row's.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DashboardModel<'a> {
    /// The public name clients send as `model`.
    #[schema(value_type = String)]
    id: &'a Value,
    #[schema(value_type = String)]
    display_name: &'a Value,
    /// The provider's name.
    #[schema(value_type = String)]
    provider: &'a Value,
    #[serde(rename = "type")]
    #[schema(value_type = crate::config::ModelType)]
    kind: &'a Value,
    #[schema(value_type = crate::config::ModelStatus)]
    status: &'a Value,
    #[schema(value_type = Option<u32>, required = true)]
    context_window: &'a Value,
    #[schema(value_type = Option<u32>, required = true)]
    max_output_tokens: &'a Value,
    prices: Prices<'a>,
    capabilities: Capabilities<'a>,
}

/// USD per million tokens, exact decimals written as strings; the cache prices are null when
/// they are the input price.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Prices<'a> {
    #[schema(value_type = String, pattern = r"^\d+(\.\d+)?$")]
    input_per_million: &'a Value,
    #[schema(value_type = String, pattern = r"^\d+(\.\d+)?$")]
    output_per_million: &'a Value,
    #[schema(value_type = Option<String>, required = true, pattern = r"^\d+(\.\d+)?$")]
    cache_read_per_million: &'a Value,
    #[schema(value_type = Option<String>, required = true, pattern = r"^\d+(\.\d+)?$")]
    cache_write_per_million: &'a Value,
}

/// What the model supports; null: unknown (never a reason to refuse a request).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Capabilities<'a> {
    #[schema(value_type = Option<bool>, required = true)]
    streaming: &'a Value,
    #[schema(value_type = Option<bool>, required = true)]
    json: &'a Value,
    #[schema(value_type = Option<bool>, required = true)]
    tools: &'a Value,
    #[schema(value_type = Option<bool>, required = true)]
    vision: &'a Value,
}
