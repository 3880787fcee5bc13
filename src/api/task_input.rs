//! The checks of what a client sends to `/api/v1/tasks`: every field it controls is bounded,
//! and a refusal names the field.

use http::StatusCode;

use crate::auth::Caller;
use crate::config::TasksConfig;
use crate::error::GatewayError;
use crate::proxy::Gateway;
use crate::tasks::model::{CreateTask, ModelsField, Status, UpdateTask};

/// The seed's default when a task sets no `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u64 = 100;
pub const MAX_TOKENS: u64 = 1_000_000;
pub const MAX_MODELS: usize = 16;
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 2000;

/// A create request, checked: its models are public names this caller may use.
pub struct Checked {
    pub models: Vec<String>,
    pub max_tokens: u64,
}

pub fn check_create(
    input: &CreateTask,
    config: &TasksConfig,
    gw: &Gateway,
    caller: &Caller,
) -> Result<Checked, GatewayError> {
    check_name(&input.name)?;
    check_description(&input.description)?;
    check_prompt(&input.prompt, config.max_prompt_bytes)?;
    let max_tokens = input.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    if !(1..=MAX_TOKENS).contains(&max_tokens) {
        return Err(GatewayError::invalid_param(
            "max_tokens",
            format!("`max_tokens` must be a whole number from 1 to {MAX_TOKENS}."),
        ));
    }
    let models = check_models(&input.models, gw, caller)?;
    Ok(Checked { models, max_tokens })
}

pub fn check_update(input: &UpdateTask) -> Result<(), GatewayError> {
    if let Some(name) = &input.name {
        check_name(name)?;
    }
    if let Some(description) = &input.description {
        check_description(description)?;
    }
    match input.status {
        None | Some(Status::Cancelled) => Ok(()),
        Some(_) => Err(GatewayError::invalid_param(
            "status",
            "`status` may only be set to `cancelled`; the workers set the others.",
        )),
    }
}

fn check_name(name: &str) -> Result<(), GatewayError> {
    let chars = name.chars().count();
    if name.trim().is_empty() || chars > MAX_NAME_CHARS {
        return Err(GatewayError::invalid_param(
            "name",
            format!("`name` must be 1 to {MAX_NAME_CHARS} characters, not blank."),
        ));
    }
    Ok(())
}

fn check_description(description: &str) -> Result<(), GatewayError> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(GatewayError::invalid_param(
            "description",
            format!("`description` must be at most {MAX_DESCRIPTION_CHARS} characters."),
        ));
    }
    Ok(())
}

fn check_prompt(prompt: &str, max_bytes: usize) -> Result<(), GatewayError> {
    if prompt.trim().is_empty() {
        return Err(GatewayError::invalid_param(
            "prompt",
            "`prompt` must not be empty.",
        ));
    }
    if prompt.len() > max_bytes {
        return Err(GatewayError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!(
                "`prompt` is {} bytes; tasks take at most {max_bytes} ([tasks] max_prompt_bytes).",
                prompt.len()
            ),
        )
        .param("prompt"));
    }
    Ok(())
}

/// One to `MAX_MODELS` distinct names, each known to the registry and allowed to the
/// caller's key; refused as a chat completion naming it would be.
fn check_models(
    models: &ModelsField,
    gw: &Gateway,
    caller: &Caller,
) -> Result<Vec<String>, GatewayError> {
    let models = match models {
        ModelsField::One(m) => vec![m.clone()],
        ModelsField::Several(ms) => ms.clone(),
    };
    if models.is_empty() || models.len() > MAX_MODELS {
        return Err(GatewayError::invalid_param(
            "models",
            format!("`models` must name 1 to {MAX_MODELS} models."),
        ));
    }
    let snapshot = gw.registry.load();
    for (i, model) in models.iter().enumerate() {
        if models[..i].contains(model) {
            let message = format!("`models` names `{}` twice.", shown(model));
            return Err(GatewayError::invalid_param("models", message));
        }
        if snapshot.resolve(model).is_none() {
            return Err(GatewayError::model_not_found(&shown(model)).param("models"));
        }
        if !caller.may_use(model) {
            return Err(GatewayError::new(
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                format!(
                    "This API key may not use the model `{}`; it is limited to its allowed models.",
                    shown(model)
                ),
            )
            .code("model_not_allowed")
            .param("models"));
        }
    }
    Ok(models)
}

/// A client's name, cut short enough to quote in a message.
fn shown(model: &str) -> String {
    model.chars().take(128).collect()
}
