//! Read and admit: the body read once within `max_body_bytes`, parsed once and checked, and
//! what it needs of a model; whether the caller's key may use that model; once the
//! deployments are chosen, the most the request can cost reserved in the key's and project's
//! budgets, and the key's own limits.

use std::sync::{Arc, LazyLock};

use http::header::CONTENT_LENGTH;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use memchr::memmem::Finder;

use super::context::RequestCtx;
use super::meter::RequestMeter;
use super::outcome::PassedOver;
use super::{Gateway, Runtime};
use crate::cache;
use crate::error::GatewayError;
use crate::limits::budget::{self, Budgets, Nanos, Refusal};
use crate::limits::{self, Admission, LimitSet, Refused};
use crate::providers::{Endpoint, JsonObject, Kind};
use crate::registry::{Deployment, Needs};
use crate::upstream::{read_limited, ReadError};

/// Reads the request of an authenticated caller: the context every later phase works on.
pub async fn read<'m>(
    runtime: &Runtime,
    req: Request<Incoming>,
    meter: &'m mut RequestMeter,
) -> Result<RequestCtx<'m>, GatewayError> {
    let deadline = tokio::time::Instant::now() + runtime.request_timeout;
    let cache_mode = match runtime.cache {
        Some(_) => cache::Mode::of(req.headers()),
        None => cache::Mode::Default,
    };
    let body = read_body(req, runtime.max_body_bytes, deadline).await?;
    let mut ctx = context(runtime, body, meter, deadline)?;
    ctx.cache_mode = cache_mode;
    Ok(ctx)
}

/// The context of a request whose body is read (from the client, or built by another surface
/// such as the dashboard's query): its fields checked, what it needs of a model read from it.
pub fn context<'m>(
    runtime: &Runtime,
    body: JsonObject,
    meter: &'m mut RequestMeter,
    deadline: tokio::time::Instant,
) -> Result<RequestCtx<'m>, GatewayError> {
    let max_response_bytes = runtime.max_response_bytes;
    check_fields(meter.endpoint, &body)?;
    meter.model_name = body.str("model").unwrap_or_default().into_owned();
    meter.stream = meter.endpoint.can_stream() && body.bool("stream") == Some(true);
    let needs = needs_of(meter.endpoint, &body);
    super::trace::requested(meter, &needs, &body);
    Ok(RequestCtx {
        meter,
        body,
        needs,
        deadline,
        max_response_bytes,
        key_limits: None,
        key_admission: Admission::default(),
        passed_over: PassedOver::default(),
        cache: runtime.cache.clone(),
        cache_mode: cache::Mode::Default,
        cache_store: None,
    })
}

/// A key limited to some models may ask only for those (by the name it sends).
pub fn allowed_model(ctx: &RequestCtx<'_>) -> Result<(), GatewayError> {
    let model = &ctx.meter.model_name;
    match ctx.meter.caller.as_deref() {
        Some(caller) if !caller.may_use(model) => Err(model_not_allowed(model)),
        _ => Ok(()),
    }
}

pub fn model_not_allowed(model: &str) -> GatewayError {
    GatewayError::new(
        StatusCode::FORBIDDEN,
        "invalid_request_error",
        format!("This API key may not use the model `{model}`; it is limited to its allowed models (GET /v1/models lists them)."),
    )
    .code("model_not_allowed")
    .param("model")
}

/// Output tokens reserved for a request that sets no `max_tokens` at a model that declares no
/// `max_output_tokens` (neither in the request nor in the model's default parameters).
pub const FALLBACK_OUTPUT_TOKENS: u64 = 4096;
/// How long a reservation in Redis may outlive its request's deadline before it expires by
/// itself (in case this instance dies before settling it).
const RESERVATION_MARGIN: std::time::Duration = std::time::Duration::from_secs(60);

/// Reserves the most the request can cost (`worst_case`) in the caller's key's and project's
/// budgets, or refuses it when one has no room; the reservation is held by the meter until
/// the request's usage is recorded. A request without budgets passes on one branch.
pub async fn budgets(
    gw: &Gateway,
    ctx: &mut RequestCtx<'_>,
    plan: &[Arc<Deployment>],
) -> Result<(), GatewayError> {
    let meter = &mut *ctx.meter;
    let Some(budgets) = meter.caller.as_deref().map(|c| &c.budgets) else {
        return Ok(());
    };
    if budgets.is_empty() {
        return Ok(());
    }
    let cost = budget::nanos_ceil(worst_case(meter.endpoint, &ctx.needs, plan));
    let ttl = ctx
        .deadline
        .saturating_duration_since(tokio::time::Instant::now())
        + RESERVATION_MARGIN;
    // Boxed: the reservation's future (Redis, a database read) stays out of the request's
    // own future, which every request carries whether it has a budget or not.
    match Box::pin(gw.budgets.reserve(budgets, cost, ttl)).await {
        Ok(hold) => {
            meter.budget = Some(hold);
            Ok(())
        }
        Err(refusal) => Err(budget_refused(gw, budgets, cost, refusal)),
    }
}

/// The most the request can cost at any deployment of the plan: its prompt estimate (about
/// four bytes of JSON a token) and all the output it allows, at that deployment's prices.
fn worst_case(
    endpoint: Endpoint,
    needs: &Needs,
    plan: &[Arc<Deployment>],
) -> rust_decimal::Decimal {
    plan.iter()
        .map(|d| {
            d.prices
                .most(needs.prompt_tokens, output_allowed(endpoint, needs, d))
        })
        .max()
        .unwrap_or_default()
}

/// The output tokens a request may get from `d`: its `max_tokens` (or
/// `max_completion_tokens`, or the model's default parameter) within the model's
/// `max_output_tokens`; without either, `FALLBACK_OUTPUT_TOKENS`. Embeddings have none.
fn output_allowed(endpoint: Endpoint, needs: &Needs, d: &Deployment) -> u64 {
    if endpoint == Endpoint::Embeddings {
        return 0;
    }
    let default = || {
        ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|p| d.parameters.get(*p)?.as_u64())
    };
    match (needs.max_tokens.or_else(default), d.max_output_tokens) {
        (Some(asked), Some(most)) => asked.min(most),
        (Some(asked), None) => asked,
        (None, Some(most)) => most,
        (None, None) => FALLBACK_OUTPUT_TOKENS,
    }
}

/// The 429 of a budget with no room (counted in `tollgate_budget_exceeded_total`), or the
/// 503 of a budget that could not be checked.
fn budget_refused(gw: &Gateway, budgets: &Budgets, cost: Nanos, refusal: Refusal) -> GatewayError {
    let (scope, committed) = match refusal {
        Refusal::Over { scope, committed } => (scope, committed),
        Refusal::Unavailable(why) => {
            return GatewayError::unavailable(format!(
                "The gateway cannot check this key's budget right now ({why}); try again shortly."
            ))
            .code("budget_unavailable")
        }
    };
    gw.metrics
        .budget_exceeded_total
        .with_label_values(&[scope.as_str()])
        .inc();
    let Some(b) = budgets.of(scope) else {
        return GatewayError::internal("a budget refused a request it does not hold");
    };
    let this_month = match b.period {
        budget::Period::Monthly => " this month",
        budget::Period::Total => "",
    };
    GatewayError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "insufficient_quota",
        format!(
            "The budget of {} is used up: ${} of its ${} are spent{this_month} or reserved by requests in flight, and this request may cost up to ${}.",
            b.label,
            budget::usd(committed),
            budget::usd(b.limit),
            budget::usd(cost)
        ),
    )
    .code("budget_exceeded")
}

/// The caller's key's own limits, checked once per request and without waiting.
pub async fn key_limits(gw: &Gateway, ctx: &mut RequestCtx<'_>) -> Result<(), GatewayError> {
    let caller = ctx.meter.caller.as_deref();
    let Some(key) = caller.and_then(|c| gw.limits_of_key(c)) else {
        return Ok(());
    };
    let now = tokio::time::Instant::now();
    ctx.key_admission = limits::admit(&[&key], ctx.needs.reserve(), now)
        .await
        .map_err(|r| {
            gw.metrics
                .rate_limited_total
                .with_label_values(&[r.scope])
                .inc();
            rate_limited(&ctx.meter.model_name, &r, &[&key])
        })?;
    ctx.key_limits = Some(key);
    Ok(())
}

/// The body, whole, by the request's deadline, as one JSON object.
pub async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    deadline: tokio::time::Instant,
) -> Result<JsonObject, GatewayError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::body_too_large(limit));
    }
    let collected = tokio::time::timeout_at(deadline, read_limited(req.into_body(), limit))
        .await
        .map_err(|_| {
            GatewayError::new(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                "The request body did not arrive in time.",
            )
        })?;
    let bytes = match collected {
        Ok(b) => b,
        Err(ReadError::TooLarge) => return Err(GatewayError::body_too_large(limit)),
        Err(ReadError::Broken) => {
            return Err(GatewayError::invalid_request(
                "The request body could not be read.",
            ))
        }
    };
    JsonObject::parse(bytes).map_err(|e| {
        GatewayError::invalid_request(format!(
            "We could not parse the JSON body of your request ({e}). The body must be a JSON object."
        ))
    })
}

/// The fields every request of the endpoint must have, of the right types.
fn check_fields(endpoint: Endpoint, body: &JsonObject) -> Result<(), GatewayError> {
    match body.kind("model") {
        Some(Kind::String) if body.str("model").is_some_and(|m| !m.is_empty()) => {}
        None | Some(Kind::Null) => {
            return Err(GatewayError::invalid_param(
                "model",
                "You must provide a model parameter.",
            ))
        }
        _ => {
            return Err(GatewayError::invalid_param(
                "model",
                "`model` must be a non-empty string.",
            ))
        }
    }
    let (field, kinds): (&str, &[Kind]) = match endpoint {
        Endpoint::ChatCompletions => ("messages", &[Kind::Array]),
        Endpoint::Completions => ("prompt", &[Kind::String, Kind::Array]),
        Endpoint::Embeddings => ("input", &[Kind::String, Kind::Array]),
    };
    match body.kind(field) {
        Some(k) if kinds.contains(&k) => {}
        None | Some(Kind::Null) => {
            return Err(GatewayError::invalid_param(
                field,
                format!("Missing required parameter: '{field}'."),
            ))
        }
        _ => {
            return Err(GatewayError::invalid_param(
                field,
                format!("Invalid type for '{field}'."),
            ))
        }
    }
    if endpoint == Endpoint::ChatCompletions
        && body.raw("messages").is_some_and(|m| {
            m.iter()
                .filter(|b| !b.is_ascii_whitespace())
                .eq(b"[]".iter())
        })
    {
        return Err(GatewayError::invalid_param(
            "messages",
            "'messages' must contain at least one message.",
        ));
    }
    if !matches!(
        body.kind("stream"),
        None | Some(Kind::Bool) | Some(Kind::Null)
    ) {
        return Err(GatewayError::invalid_param(
            "stream",
            "`stream` must be a boolean.",
        ));
    }
    Ok(())
}

/// What a request needs from a model, read cheaply (byte scans, no extra parse).
fn needs_of(endpoint: Endpoint, body: &JsonObject) -> Needs {
    let prompt = match endpoint {
        Endpoint::ChatCompletions => body.raw("messages"),
        Endpoint::Completions => body.raw("prompt"),
        Endpoint::Embeddings => body.raw("input"),
    }
    .unwrap_or_default();
    let non_empty =
        |k: &str| body.kind(k) == Some(Kind::Array) && body.raw(k).is_some_and(|r| r.len() > 2);
    Needs {
        // About four bytes of JSON per token: enough to reserve and route by; settled later.
        prompt_tokens: (prompt.len() as u64).div_ceil(4),
        max_tokens: body
            .get::<u64>("max_completion_tokens")
            .ok()
            .flatten()
            .or_else(|| body.get::<u64>("max_tokens").ok().flatten()),
        vision: IMAGE_URL.find(prompt).is_some(),
        tools: non_empty("tools") || non_empty("functions"),
        json: body
            .raw("response_format")
            .is_some_and(|r| JSON_FORMAT.find(r).is_some()),
    }
}

/// The searchers `needs_of` looks for, built once: building one cost more than the search.
static IMAGE_URL: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"image_url\""));
static JSON_FORMAT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"json_"));

/// The 429 for a request our own limits refused, with OpenAI's headers.
pub fn rate_limited(model: &str, refused: &Refused, sets: &[&Arc<LimitSet>]) -> GatewayError {
    let mut e = GatewayError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_exceeded",
        format!(
            "Rate limit reached for `{model}`: the {} limit on {} is used up; try again in {} ms.",
            refused.scope,
            refused.what,
            refused.retry_after.as_millis().max(1)
        ),
    )
    .code("rate_limit_exceeded");
    for (name, value) in limits::retry_headers(refused.retry_after)
        .into_iter()
        .chain(limits::rate_limit_headers(sets))
    {
        e = e.header(name, value);
    }
    e
}
