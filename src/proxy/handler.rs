//! The request path, top to bottom. An OpenAI API request goes through these phases in order,
//! each a function with one job in its own file, all working on one [`RequestCtx`]:
//!
//! 1. read and admit (`admit::read`): the edge checks, the route and the caller's
//!    authentication are the router's (`crate::server`); here the body is read once within
//!    `max_body_bytes`, parsed once and checked, and what it needs of a model read from it;
//!    then whether the caller's key may use the model it names (`admit::allowed_model`); a
//!    body another surface built (the dashboard's query, `call`) enters here, its context made
//!    by `admit::context` as a client's is
//! 2. look up the cache (`lookup::lookup`, only when `[cache]` is on): a cacheable request
//!    of a model the registry knows is answered from the cache when it holds the answer,
//!    before any limit or budget is charged; a miss is marked to be stored once answered
//! 3. choose (`choose::plan`): the deployments that fit, in the order the route's strategy
//!    (or priority) says
//! 4. admit the key: the most the request can cost reserved in its key's and project's
//!    budgets (`admit::budgets`; the meter settles it to the actual cost when it records the
//!    request), then the caller's key's own limits, without waiting (`admit::key_limits`)
//!
//! then for each deployment in that order, until one answers (`forward`):
//!
//! 5. admit the attempt (`attempt::admit`): its circuit lets it through, its limits have room
//!    (waiting up to the provider's queue timeout); a refusal moves on
//! 6. build the upstream request (`providers::prepare`, the deployment's adapter)
//! 7. send (`send::send`): the pooled client, or the in-process mock, within the timeouts
//! 8. classify the outcome (`outcome::classify`): answered (a whole answer read, a stream's
//!    first content arrived: `answer::read`), the next deployment and why (no answer in
//!    time, a connect error, a 5xx or 429, a broken answer), or stop (the provider refused the
//!    request itself)
//! 9. conclude (`Attempt::conclude`): the verdict to the deployment's circuit and the
//!    attempt's time to the meter, whatever the outcome
//!
//! and last:
//!
//! 10. respond (`respond::answer`, `respond::error`): the answer to the client (a stream from
//!     its first content on), limit reservations settled, a looked-up miss's answer stored
//!     once complete
//! 11. log once (`RequestMeter::record`, in `meter.rs`): one usage row whichever way the request
//!     ends (a stream's when it ends, a client's that went away when its request is dropped)
//!
//! With traces on (`[telemetry]`), the request's span starts with its meter and ends when the
//! row is recorded; each attempt sent has a span of its own, from `send` to its end. The
//! phases tell it what they learn through `trace`, one branch each when traces are off.
//!
//! Whatever an attempt holds is released by guards when they are dropped (`meter::Guards`,
//! the circuit's pass). A new phase is one function taking the context and one call in
//! `phases` or `forward`.

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;

use super::context::RequestCtx;
use super::lookup::{self, Looked};
use super::meter::RequestMeter;
use super::outcome::Outcome;
use super::respond::{self, ClientBody};
use super::{admit, attempt, choose, outcome, send, trace, Gateway, Runtime};
use crate::auth::Caller;
use crate::error::GatewayError;
use crate::providers::{self, Endpoint, JsonObject};
use crate::registry::Deployment;

/// A constant, so the name is checked at compile time rather than on every answer.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// An API request the router has authenticated: its phases, and its id on the answer.
pub async fn handle(
    gw: &Gateway,
    runtime: &Runtime,
    caller: Arc<Caller>,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Response<ClientBody> {
    let mut meter = RequestMeter::new(request_id(req.headers()), endpoint, gw.usage.clone());
    meter.caller = Some(caller);
    trace::start(gw, &mut meter, Some(req.headers()), None);
    let mut response = match proxy(gw, runtime, req, &mut meter).await {
        Ok(resp) => resp,
        Err(e) => respond::error(&mut meter, &e),
    };
    if let Ok(v) = HeaderValue::from_str(&meter.request_id) {
        response.headers_mut().insert(X_REQUEST_ID, v);
    }
    response
}

/// The phases of an API request, in order.
async fn proxy(
    gw: &Gateway,
    runtime: &Runtime,
    req: Request<Incoming>,
    meter: &mut RequestMeter,
) -> Result<Response<ClientBody>, GatewayError> {
    let ctx = admit::read(runtime, req, meter).await?;
    phases(gw, ctx).await
}

/// A chat completion another surface built (a prompt, `prompt::ask`), sent along the same
/// phases as an API request and metered as one, its usage row's endpoint named `surface` and
/// its id `request_id` (`request_id` reads the client's).
/// The answer is whole: the body must not ask for a stream.
pub async fn call(
    gw: &Gateway,
    runtime: &Runtime,
    caller: Arc<Caller>,
    body: JsonObject,
    surface: &'static str,
    request_id: String,
) -> Result<Called, GatewayError> {
    let mut meter = RequestMeter::new(request_id, Endpoint::ChatCompletions, gw.usage.clone());
    meter.caller = Some(caller);
    meter.surface = Some(surface);
    trace::start(gw, &mut meter, None, Some(surface));
    let deadline = tokio::time::Instant::now() + runtime.request_timeout;
    let answered = match admit::context(runtime, body, &mut meter, deadline) {
        Ok(ctx) => phases(gw, ctx).await,
        Err(e) => Err(e),
    };
    match answered {
        Ok(response) => Ok(Called {
            response,
            cost: meter.cost.unwrap_or_default(),
        }),
        Err(e) => {
            respond::error(&mut meter, &e);
            Err(e)
        }
    }
}

/// What `call` got: the answer as the API would send it, and the cost its usage row records.
pub struct Called {
    pub response: Response<ClientBody>,
    pub cost: rust_decimal::Decimal,
}

/// A request body read whole within the runtime's size limit and time, as one JSON object.
pub async fn read_json(
    runtime: &Runtime,
    req: Request<Incoming>,
) -> Result<JsonObject, GatewayError> {
    let deadline = tokio::time::Instant::now() + runtime.request_timeout;
    admit::read_body(req, runtime.max_body_bytes, deadline).await
}

/// The phases after reading: the model allowed, the deployments chosen, budgets and the key's
/// limits admitted, then the deployments tried in order.
async fn phases(
    gw: &Gateway,
    mut ctx: RequestCtx<'_>,
) -> Result<Response<ClientBody>, GatewayError> {
    admit::allowed_model(&ctx)?;
    // Boxed, and only with a cache: without one the lookup is this branch and nothing more.
    let looked = match ctx.cache {
        Some(_) => Box::pin(lookup::lookup(gw, &mut ctx)).await,
        None => Looked::Skipped,
    };
    if let Looked::Hit(response) = looked {
        return Ok(response);
    }
    let plan = choose::plan(gw, &mut ctx)?;
    admit::budgets(gw, &mut ctx, &plan).await?;
    admit::key_limits(gw, &mut ctx).await?;
    let mut response = forward(gw, &mut ctx, &plan).await?;
    if let Looked::Missed = looked {
        response
            .headers_mut()
            .insert(lookup::X_TOLLGATE_CACHE, lookup::MISS);
    }
    Ok(response)
}

/// Tries the deployments in order until one answers.
async fn forward(
    gw: &Gateway,
    ctx: &mut RequestCtx<'_>,
    plan: &[Arc<Deployment>],
) -> Result<Response<ClientBody>, GatewayError> {
    for (i, dep) in plan.iter().enumerate() {
        if i > 0 {
            gw.metrics
                .fallbacks_total
                .with_label_values(&[&ctx.meter.model_name])
                .inc();
        }
        let Some(attempt) = attempt::admit(gw, ctx, dep).await else {
            continue;
        };
        let mut prepared =
            providers::adapter(dep.provider.api).prepare(dep, ctx.meter.endpoint, &ctx.body)?;
        let sent = send::send(gw, ctx, &attempt, &mut prepared.request).await;
        let outcome = outcome::classify(ctx, &attempt, &prepared, sent).await;
        let admitted = attempt.conclude(gw, ctx.meter, &outcome);
        match outcome {
            Outcome::Answered(answer) => return Ok(respond::answer(ctx, admitted, answer)),
            Outcome::Next(reason) => ctx.pass_over(reason)?,
            Outcome::Stop(e) => return Err(e),
        }
    }
    let passed_over = std::mem::take(&mut ctx.passed_over);
    Err(passed_over.into_error(&ctx.meter.model_name, plan.len()))
}

/// The client's `x-request-id` when it sent a usable one, else a new id.
pub fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map_or_else(crate::ids::new_id, str::to_owned)
}
