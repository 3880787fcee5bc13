//! One prompt sent as a chat completion with one user message, answered whole: what the
//! dashboard's query and each model of a background task send. It goes along the API's own
//! phases (`call`), so it is routed, limited, budgeted, falls back and is metered as an SDK's
//! request is.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::handler::call;
use super::{Gateway, Runtime};
use crate::auth::Caller;
use crate::error::GatewayError;
use crate::providers::JsonObject;

/// One prompt for one model.
pub struct Prompt<'a> {
    pub model: &'a str,
    pub text: &'a str,
    pub max_tokens: u64,
}

/// The answer to a prompt: the chat completion as the API would send it, its headers (the
/// `x-ratelimit-*` of the limits that admitted it), and the cost its usage row records.
pub struct Answered {
    pub answer: Value,
    pub headers: HeaderMap,
    pub cost: rust_decimal::Decimal,
}

impl Answered {
    /// The first choice's text ("" when it has none).
    pub fn text(&self) -> &str {
        self.answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
    }

    /// One of OpenAI's token counts (`prompt_tokens`, ...), 0 when the answer has none.
    pub fn tokens(&self, count: &str) -> u64 {
        self.answer["usage"][count].as_u64().unwrap_or(0)
    }
}

/// Sends `prompt` for `caller`; its usage row's endpoint is `surface` and its id
/// `request_id`.
pub async fn ask(
    gw: &Gateway,
    runtime: &Runtime,
    caller: Arc<Caller>,
    prompt: &Prompt<'_>,
    surface: &'static str,
    request_id: String,
) -> Result<Answered, GatewayError> {
    let body = json!({
        "model": prompt.model,
        "messages": [{"role": "user", "content": prompt.text}],
        "max_tokens": prompt.max_tokens,
    });
    let body = JsonObject::parse(Bytes::from(body.to_string()))
        .map_err(|_| GatewayError::internal("A prompt's chat body could not be built."))?;
    let called = call(gw, runtime, caller, body, surface, request_id).await?;
    let (parts, body) = called.response.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|_| GatewayError::upstream("The provider's answer could not be read."))?
        .to_bytes();
    let answer = serde_json::from_slice(&bytes)
        .map_err(|_| GatewayError::upstream("The provider's answer was not JSON."))?;
    Ok(Answered {
        answer,
        headers: parts.headers,
        cost: called.cost,
    })
}
