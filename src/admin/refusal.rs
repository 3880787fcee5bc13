//! The admin API's refusals. The rules live in the database, so a request racing another is
//! refused by the same rule as one that is not: a store error that broke a rule becomes a 4xx
//! naming the field (and the value, from the request's input), anything else a 500 that
//! shows nothing of the database's message (the log has it).

use http::StatusCode;
use serde_json::{Map, Value};

use crate::error::GatewayError;
use crate::store::{violation, Violation};

pub fn conflict(param: &str, code: &'static str, message: impl Into<String>) -> GatewayError {
    GatewayError::new(StatusCode::CONFLICT, "invalid_request_error", message)
        .param(param)
        .code(code)
}

/// 409 for a row config.toml owns.
pub fn managed_by_config(what: &str) -> GatewayError {
    conflict(
        "managed_by",
        "managed_by_config",
        format!("{what} is managed by config.toml; edit the file (then reload) to change it."),
    )
}

pub fn not_found(param: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::not_found(message).param(param)
}

/// A store error as the client sees it; `input` is the request's (for the values named).
pub fn store_error(e: anyhow::Error, input: &Map<String, Value>) -> GatewayError {
    match violation(&e) {
        Some(v) => refusal(v, input),
        None => {
            tracing::error!(error = format!("{e:#}"), "admin API: the database failed");
            GatewayError::internal("The database failed; the gateway's log says why.")
        }
    }
}

fn refusal(v: Violation, input: &Map<String, Value>) -> GatewayError {
    let shown = |field: &str| match input.get(field) {
        Some(Value::String(s)) => format!(" `{s}`"),
        _ => String::new(),
    };
    match v {
        Violation::ProviderNameTaken => conflict("name", "already_exists", format!(
            "A provider named{} already exists.", shown("name")
        )),
        Violation::ModelTaken => conflict("model_id", "already_exists", format!(
            "The provider already has a model with model_id{} (a deleted model keeps its model_id: usage history refers to it).",
            shown("model_id")
        )),
        Violation::SecondDefault => conflict("is_default", "default_exists",
            "The provider already has a default model: at most one model per provider has is_default = true. Unset it on the other model first.",
        ),
        Violation::ModelIdImmutable => immutable("model_id"),
        Violation::ProviderImmutable => immutable("provider"),
        Violation::ProviderDeleted => not_found("provider", format!(
            "The provider{} does not exist (it was deleted).", shown("provider")
        )),
        Violation::ProjectNameTaken => conflict("name", "already_exists", format!(
            "A project named{} already exists.", shown("name")
        )),
        Violation::Check(column) => GatewayError::invalid_param(&column, format!(
            "`{column}` is out of range: it must be >= 0."
        )),
        Violation::Unique(what) => GatewayError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            format!("This would duplicate a unique value ({what})."),
        )
        .code("already_exists"),
        Violation::ForeignKey => GatewayError::invalid_request(
            "The row refers to a row that does not exist.",
        ),
    }
}

/// 400 for a field fixed at creation.
pub fn immutable(field: &str) -> GatewayError {
    GatewayError::invalid_param(
        field,
        format!("`{field}` cannot be changed after creation; create a new model instead."),
    )
    .code("immutable_field")
}
