//! `POST /api/v1/llm/query`: `{model, prompt, max_tokens = 100}` → `{model, text, usage}`.

use std::sync::Arc;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ErrorBody, GatewayError};
use crate::providers::{JsonObject, Kind};
use crate::proxy::{
    self, error_response, json_response, Answered, ClientBody, Gateway, Prompt, Runtime,
};

/// The seed's default when a query sets no `max_tokens`.
const DEFAULT_MAX_TOKENS: u64 = 100;
/// The usage row's `endpoint` for a query, so reports tell dashboard calls from SDK ones.
pub const SURFACE: &str = "api.llm.query";

type Response = http::Response<ClientBody>;

/// A query: its fields checked, sent as a chat completion, the answer reduced to the seed's.
#[utoipa::path(
    post,
    path = "/api/v1/llm/query",
    operation_id = "llm_query",
    tag = "dashboard",
    summary = "Run one prompt on one model",
    description = "Sent as a chat completion with one user message, through the same routing, limits, budgets, fallback and metering as `POST /v1/chat/completions`; one usage row (endpoint `api.llm.query`).",
    request_body = Query,
    responses(
        (status = 200, description = "The answer's text, its token counts and cost.", body = QueryAnswer),
        (status = 400, description = "A missing or wrong field, named in `param`.", body = ErrorBody),
        (status = 404, description = "No model of that name (`code` `model_not_found`).", body = ErrorBody),
        (status = 429, description = "A limit or budget refused it; `retry-after` says when to retry.", body = ErrorBody),
        (status = 502, description = "Every deployment of the model failed.", body = ErrorBody),
        (status = 504, description = "The provider did not answer in time.", body = ErrorBody),
    )
)]
pub async fn query(
    gw: &Gateway,
    runtime: &Runtime,
    caller: Arc<Caller>,
    req: Request<Incoming>,
) -> Response {
    let request_id = proxy::request_id(req.headers());
    let mut resp = match run(gw, runtime, caller, req, request_id.clone()).await {
        Ok((answer, limits)) => {
            let mut resp = json_response(StatusCode::OK, answer);
            resp.headers_mut().extend(limits);
            resp
        }
        Err(e) => error_response(&e),
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The query's answer, and the `x-ratelimit-*` headers of the limits that admitted it.
async fn run(
    gw: &Gateway,
    runtime: &Runtime,
    caller: Arc<Caller>,
    req: Request<Incoming>,
    request_id: String,
) -> Result<(Value, HeaderMap), GatewayError> {
    let fields = proxy::read_json(runtime, req).await?;
    let asked = Query::read(&fields)?;
    let prompt = Prompt {
        model: &asked.model,
        text: &asked.prompt,
        max_tokens: asked.max_tokens,
    };
    let mut answered = proxy::ask(gw, runtime, caller, &prompt, SURFACE, request_id).await?;
    answered.headers.remove(CONTENT_TYPE);
    let reply = reply(&asked.model, &answered);
    Ok((reply, answered.headers))
}

/// A query: seed 003's `{model, prompt, max_tokens}`.
#[derive(ToSchema)]
#[schema(as = LlmQuery)]
pub struct Query {
    /// A model's public name, `provider/model_id`, or a route.
    #[schema(min_length = 1)]
    model: String,
    /// Sent as the one user message.
    prompt: String,
    #[schema(required = false, default = 100, minimum = 1)]
    max_tokens: u64,
}

impl Query {
    fn read(body: &JsonObject) -> Result<Query, GatewayError> {
        let model = match (body.kind("model"), body.str("model")) {
            (None | Some(Kind::Null), _) => {
                return Err(GatewayError::invalid_param(
                    "model",
                    "You must provide a model parameter.",
                ))
            }
            (Some(Kind::String), Some(m)) if !m.is_empty() => m.into_owned(),
            _ => {
                return Err(GatewayError::invalid_param(
                    "model",
                    "`model` must be a non-empty string.",
                ))
            }
        };
        let prompt = match (body.kind("prompt"), body.str("prompt")) {
            (Some(Kind::String), Some(p)) => p.into_owned(),
            _ => {
                return Err(GatewayError::invalid_param(
                    "prompt",
                    "`prompt` is required and must be a string.",
                ))
            }
        };
        let max_tokens = match body.get::<u64>("max_tokens") {
            Ok(None) => DEFAULT_MAX_TOKENS,
            Ok(Some(n)) if n > 0 => n,
            _ => {
                return Err(GatewayError::invalid_param(
                    "max_tokens",
                    "`max_tokens` must be a positive integer.",
                ))
            }
        };
        Ok(Query {
            model,
            prompt,
            max_tokens,
        })
    }
}

/// The seed's `{model, text, usage}`: the first choice's text, OpenAI's token counts and the
/// cost the usage row records, as an exact decimal string.
fn reply(model: &str, answered: &Answered) -> Value {
    let reply = QueryAnswer {
        model,
        text: answered.text(),
        usage: QueryUsage {
            prompt_tokens: answered.tokens("prompt_tokens"),
            completion_tokens: answered.tokens("completion_tokens"),
            total_tokens: answered.tokens("total_tokens"),
            cost_usd: answered.cost.normalize().to_string(),
        },
    };
    serde_json::to_value(reply).unwrap_or_default()
}

/// A query's answer: the model asked for, the first choice's text, and its usage.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryAnswer<'a> {
    model: &'a str,
    text: &'a str,
    usage: QueryUsage,
}

/// OpenAI's token counts, and the cost the usage row records.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    /// USD, an exact decimal written as a string (e.g. `"0.000123"`).
    #[schema(pattern = r"^\d+(\.\d+)?$")]
    cost_usd: String,
}
