//! `GET /api/v1/llm/models`: the models a dashboard offers, with what it shows of them.
//! Every caller reads the active ones that are served now (seed 000's row-level rule; a model
//! of a disabled provider is not offered); `?all=true` adds every other live one (inactive,
//! deprecated, at a disabled provider), for admins only. A key limited to some models sees only those.

use http::StatusCode;
use serde_json::{json, Value};

use crate::auth::{Caller, Role};
use crate::error::GatewayError;
use crate::proxy::{error_response, json_response, ClientBody, Gateway};
use crate::registry::Snapshot;
use crate::store::{JsonRow, ModelFilter};

type Response = http::Response<ClientBody>;

/// Models are read a page at a time, in id order, until a page comes back short.
const PAGE: usize = 500;

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
            let data: Vec<Value> = rows
                .iter()
                .filter(|r| all || serving(&snapshot, r))
                .filter(|r| caller.may_use(r["name"].as_str().unwrap_or_default()))
                .map(entry)
                .collect();
            json_response(StatusCode::OK, json!({"object": "list", "data": data}))
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
fn entry(r: &JsonRow) -> Value {
    json!({
        "id": r["name"],
        "display_name": r["display_name"],
        "provider": r["provider"],
        "type": r["model_type"],
        "status": r["status"],
        "context_window": r["context_window"],
        "max_output_tokens": r["max_output_tokens"],
        "prices": {
            "input_per_million": r["cost_input_per_million"],
            "output_per_million": r["cost_output_per_million"],
            "cache_read_per_million": r["cost_cache_read_per_million"],
            "cache_write_per_million": r["cost_cache_write_per_million"],
        },
        "capabilities": {
            "streaming": r["supports_streaming"],
            "json": r["supports_json"],
            "tools": r["supports_function_calling"],
            "vision": r["supports_vision"],
        },
    })
}
