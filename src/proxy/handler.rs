//! The request path, top to bottom. For the OpenAI endpoints a request goes through these
//! phases, each a function below:
//!
//! 1. `authenticate`: gateway key, master key, or anonymous when keys are not required
//! 2. `read_request`: body read once within `max_body_bytes`, parsed once, checked
//! 3. `needs_of` + `resolve`: what the request needs, and the deployments that fit it in the
//!    order the route's strategy (or priority) says; the key's own limits
//! 4. `forward`: per deployment, its limits admit the request (waiting up to the provider's
//!    queue timeout), its circuit lets it through, the adapter builds the provider request and
//!    the pooled client sends it; refusals, connect errors, timeouts, 429 and 5xx move on to
//!    the next deployment
//! 5. `respond_whole` / `respond_stream`: the answer back to the client (a stream is held
//!    until its first content), usage metered once, limit reservations settled

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use memchr::memmem::Finder;
use serde_json::json;

use super::edge::{self, Port};
use super::meter::{Guards, InFlight, RequestMeter};
use super::opening::{Opening, Verdict};
use super::stream::MeteredStream;
use super::{Gateway, Runtime};
use crate::config::Api;
use crate::error::BoxError;
use crate::error::GatewayError;
use crate::limits::{self, Admission, LimitSet, Refused};
use crate::providers::mock::{self, MockOptions};
use crate::providers::{self, chat, Endpoint, JsonObject, Kind, Prepared, StreamTranslator};
use crate::registry::{routing, CircuitState, Deployment, ModelType, Needs, NoFit, Provider};
use crate::upstream::{SendError, UpstreamBody, UpstreamRequest};

pub type ClientBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A constant, so the name is checked at compile time rather than on every answer.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Upstream error bodies are read only this far (they are small; a huge one is not relayed).
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// Headers an answer carries: content type (and cache control), six `x-ratelimit-*`,
/// `x-request-id`. Room for them up front spares the map growing twice on the way.
const ANSWER_HEADERS: usize = 9;

pub async fn handle(gw: Arc<Gateway>, req: Request<Incoming>) -> Response<ClientBody> {
    let runtime = gw.runtime.load();
    if let Err(e) = runtime.edge.admit(&req, Port::Main) {
        gw.usage.refused(e.status.as_u16(), Some(e.error_type()));
        return error_response(&e);
    }
    let path = req.uri().path();
    let endpoint = match (req.method(), path) {
        (&Method::POST, "/v1/chat/completions" | "/chat/completions") => Endpoint::ChatCompletions,
        (&Method::POST, "/v1/completions" | "/completions") => Endpoint::Completions,
        (&Method::POST, "/v1/embeddings" | "/embeddings") => Endpoint::Embeddings,
        (&Method::GET, "/healthz") => {
            return json_response(StatusCode::OK, json!({"status": "ok"}))
        }
        (&Method::GET, "/readyz") => return readyz(&gw).await,
        (&Method::GET, "/metrics") if runtime.edge.metrics_on_main_port => {
            return metrics(&runtime, &gw, &req)
        }
        (&Method::GET, "/v1/models" | "/models") => return list_models(&gw, &req, None).await,
        (&Method::GET, p) if p.starts_with("/v1/models/") => {
            let id = p["/v1/models/".len()..].to_owned();
            return list_models(&gw, &req, Some(id)).await;
        }
        _ => {
            return error_response(&GatewayError::not_found(format!(
                "Unknown request URL: {} {}.",
                req.method(),
                path
            )))
        }
    };
    if let Err(e) = edge::json_content_type(req.headers()) {
        gw.usage.refused(e.status.as_u16(), Some(e.error_type()));
        return error_response(&e);
    }
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(crate::store::new_id);
    let mut meter = RequestMeter::new(request_id.clone(), endpoint, gw.usage.clone());
    let mut response = match proxy(&gw, endpoint, req, &mut meter).await {
        Ok(resp) => resp,
        Err(e) => {
            meter.record(e.status.as_u16(), Some(e.error_type()), None, None);
            if e.status.is_server_error() {
                tracing::warn!(request_id = %request_id, model = %meter.model_name, status = e.status.as_u16(), error = %e.message, "request failed");
            }
            error_response(&e)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(X_REQUEST_ID, v);
    }
    response
}

async fn proxy(
    gw: &Gateway,
    endpoint: Endpoint,
    req: Request<Incoming>,
    meter: &mut RequestMeter,
) -> Result<Response<ClientBody>, GatewayError> {
    let runtime = gw.runtime.load();
    let deadline = tokio::time::Instant::now() + runtime.request_timeout;
    let body_limit = runtime.max_body_bytes;
    let caller = runtime.auth.authenticate(req.headers()).await?;
    drop(runtime);
    meter.caller = Some(caller.clone());
    let body = read_request(endpoint, req, body_limit, deadline).await?;
    meter.model_name = body.str("model").unwrap_or_default().into_owned();
    meter.stream = endpoint.can_stream() && body.bool("stream") == Some(true);
    let needs = needs_of(endpoint, &body);
    let plan = resolve(gw, endpoint, &meter.model_name, &needs);
    meter.known_model = !matches!(&plan, Err(e) if e.code == Some("model_not_found"));
    let plan = plan?;
    // The key's own limits are checked once per request, without waiting.
    let key_limits = gw.limits_of_key(&caller);
    let mut admission = Admission::default();
    if let Some(k) = &key_limits {
        admission = limits::admit(&[k], needs.reserve(), tokio::time::Instant::now())
            .await
            .map_err(|r| {
                gw.metrics
                    .rate_limited_total
                    .with_label_values(&[r.scope])
                    .inc();
                rate_limited(&meter.model_name, &r, &[k])
            })?;
    }
    let attempt = Attempt {
        endpoint,
        body: &body,
        needs,
        key_limits: key_limits.as_ref(),
        admission,
        deadline,
    };
    forward(gw, attempt, &plan, meter).await
}

async fn read_request(
    endpoint: Endpoint,
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
    let body = JsonObject::parse(bytes).map_err(|e| {
        GatewayError::invalid_request(format!(
            "We could not parse the JSON body of your request ({e}). The body must be a JSON object."
        ))
    })?;
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
    Ok(body)
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

fn resolve(
    gw: &Gateway,
    endpoint: Endpoint,
    model: &str,
    needs: &Needs,
) -> Result<Vec<Arc<Deployment>>, GatewayError> {
    let snapshot = gw.registry.load();
    let resolved = snapshot
        .resolve(model)
        .ok_or_else(|| GatewayError::model_not_found(model))?;
    let wants_embedding = endpoint == Endpoint::Embeddings;
    let candidates: Vec<Arc<Deployment>> = resolved
        .deployments
        .iter()
        .filter(|d| (d.model_type == ModelType::Embedding) == wants_embedding)
        .cloned()
        .collect();
    if candidates.is_empty() {
        let msg = if wants_embedding {
            format!("`{model}` is not an embedding model; it cannot serve /v1/embeddings.")
        } else {
            format!("`{model}` is an embedding model; send it to /v1/embeddings.")
        };
        return Err(GatewayError::invalid_param("model", msg));
    }
    let plan = routing::plan(&candidates, resolved.strategy, needs).map_err(|e| match e {
        NoFit::ContextTooLong { needed, largest } => GatewayError::invalid_param(
            "messages",
            format!("This request needs about {needed} tokens of context; `{model}` has at most {largest}."),
        )
        .code("context_length_exceeded"),
        NoFit::Capability(what) => {
            GatewayError::invalid_request(format!("No deployment of `{model}` supports {what}."))
        }
    })?;
    if plan.is_empty() {
        return Err(cut_off(model, &candidates, needs));
    }
    Ok(plan)
}

/// Why every deployment that fits is skipped: a provider that asked for a pause (a 429 with
/// `retry-after`) is rate limiting, not failing; otherwise their circuits are open.
fn cut_off(model: &str, candidates: &[Arc<Deployment>], needs: &Needs) -> GatewayError {
    let pause = candidates
        .iter()
        .filter(|d| routing::fits(d, needs).is_ok())
        .filter_map(|d| d.health.paused_for())
        .min();
    if let Some(wait) = pause {
        let mut e = GatewayError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            format!(
                "The providers of `{model}` are rate limiting requests; try again in {} ms.",
                wait.as_millis()
            ),
        )
        .code("rate_limit_exceeded");
        for (name, value) in limits::retry_headers(wait) {
            e = e.header(name, value);
        }
        return e;
    }
    GatewayError::unavailable(format!(
        "Every deployment of `{model}` is failing right now (circuit open); try again shortly."
    ))
    .code("no_healthy_deployment")
    .header(http::header::RETRY_AFTER, HeaderValue::from_static("5"))
}

/// One request's state across its attempts.
struct Attempt<'a> {
    endpoint: Endpoint,
    body: &'a JsonObject,
    needs: Needs,
    key_limits: Option<&'a Arc<LimitSet>>,
    /// What the key's limits granted; each attempt adds its deployment's.
    admission: Admission,
    deadline: tokio::time::Instant,
}

/// Tries the deployments in order until one answers. Only failures before anything reached
/// the client move on: refusals by our own limits, connect errors, timeouts, 429 and 5xx,
/// and for streams anything that goes wrong before the first content arrives.
async fn forward(
    gw: &Gateway,
    mut attempt: Attempt<'_>,
    plan: &[Arc<Deployment>],
    meter: &mut RequestMeter,
) -> Result<Response<ClientBody>, GatewayError> {
    let mut last_error: Option<GatewayError> = None;
    let mut refusals: Vec<(Refused, Vec<Arc<LimitSet>>)> = Vec::new();
    let mut upstream_429: Option<GatewayError> = None;
    for (i, dep) in plan.iter().enumerate() {
        if i > 0 {
            gw.metrics
                .fallbacks_total
                .with_label_values(&[&meter.model_name])
                .inc();
        }
        // Dropped on the exits that reach no verdict (our own limits refuse, the request
        // cannot be built), which releases a half-open probe for the next request.
        let Some(pass) = dep.health.try_begin() else {
            continue; // its half-open probe is out: wait for that one's verdict
        };
        let provider = &dep.provider;
        let mut sets: Vec<&Arc<LimitSet>> = vec![&provider.limits];
        sets.extend(dep.limits.as_ref());
        let queue_until = attempt
            .deadline
            .min(tokio::time::Instant::now() + Duration::from_millis(provider.queue_timeout_ms));
        let deployment_admission =
            match limits::admit(&sets, attempt.needs.reserve(), queue_until).await {
                Ok(a) => a,
                Err(refused) => {
                    gw.metrics
                        .rate_limited_total
                        .with_label_values(&[refused.scope])
                        .inc();
                    refusals.push((refused, sets.into_iter().cloned().collect()));
                    continue;
                }
            };
        let prepared = providers::prepare(dep, attempt.endpoint, attempt.body)?;
        meter.attempts += 1;
        meter.deployment = Some(dep.clone());
        let guards = Guards {
            admission: std::mem::take(&mut attempt.admission),
            deployment: deployment_admission,
            _in_flight: InFlight::new(gw.metrics.in_flight.with_label_values(&[&provider.name])),
            _busy: dep.health.start(),
        };
        let t = &provider.timeouts;
        let now = tokio::time::Instant::now();
        let total_until = t.total_ms.map_or(attempt.deadline, |ms| {
            attempt.deadline.min(now + Duration::from_millis(ms))
        });
        let first_until = t.first_token_ms.map_or(total_until, |ms| {
            total_until.min(now + Duration::from_millis(ms))
        });
        let sent = Instant::now();
        let error = match tokio::time::timeout_at(
            first_until,
            send(gw, provider, &prepared.request),
        )
        .await
        {
            Err(_) => GatewayError::timeout(format!(
                "Provider {} did not answer in time.",
                provider.name
            )),
            Ok(Err(e)) => {
                tracing::warn!(request_id = %meter.request_id, provider = %provider.name, error = %e, "upstream request failed");
                match e {
                    SendError::Connect(_) => GatewayError::upstream(format!(
                        "Could not connect to provider {}.",
                        provider.name
                    )),
                    SendError::Other(_) => GatewayError::upstream(format!(
                        "The request to provider {} failed.",
                        provider.name
                    )),
                }
            }
            Ok(Ok(resp)) if resp.status().is_success() => {
                let streamed = prepared.stream && !is_json(resp.headers());
                let answer = Answer {
                    dep,
                    prepared: &prepared,
                    resp,
                    guards,
                    sent,
                    first_until,
                    until: total_until,
                };
                let done = if streamed {
                    respond_stream(answer, meter).await
                } else {
                    respond_whole(answer, meter, gw.runtime.load().max_response_bytes).await
                };
                match done {
                    Ok(mut resp) => {
                        note_circuit(gw, dep, pass.succeeded(sent.elapsed()));
                        let mut all = sets.clone();
                        all.extend(attempt.key_limits);
                        for (name, value) in limits::rate_limit_headers(&all) {
                            resp.headers_mut().insert(name, value);
                        }
                        return Ok(resp);
                    }
                    Err(e) => e,
                }
            }
            Ok(Ok(resp)) => {
                let status = resp.status();
                if status == StatusCode::TOO_MANY_REQUESTS {
                    if let Some(wait) = retry_after(resp.headers()) {
                        dep.health.pause(wait);
                    }
                }
                let error = upstream_error(dep, resp).await;
                if status == StatusCode::TOO_MANY_REQUESTS {
                    // Rate limiting is not ill health: try elsewhere. The provider answered,
                    // so a half-open circuit closes.
                    note_circuit(gw, dep, pass.answered());
                    meter.upstream += sent.elapsed();
                    upstream_429 = Some(error);
                    continue;
                }
                if !status.is_server_error() {
                    // The provider refused the request itself: another provider would too.
                    // It answered, so it is up.
                    note_circuit(gw, dep, pass.answered());
                    meter.upstream += sent.elapsed();
                    return Err(error);
                }
                error
            }
        };
        meter.upstream += sent.elapsed();
        note_circuit(gw, dep, pass.failed(sent.elapsed()));
        if tokio::time::Instant::now() >= attempt.deadline {
            // The whole request's time is spent; there is none left for another attempt.
            return Err(GatewayError::timeout(format!(
                "No provider answered `{}` within the request timeout.",
                meter.model_name
            )));
        }
        last_error = Some(error);
    }
    if let Some(e) = last_error {
        return Err(
            if plan.len() > 1 && e.status != StatusCode::GATEWAY_TIMEOUT {
                GatewayError::upstream(format!(
                    "Every provider serving `{}` failed; the last said: {}",
                    meter.model_name, e.message
                ))
            } else {
                e
            },
        );
    }
    if let Some((refused, sets)) = refusals.iter().min_by_key(|(r, _)| r.retry_after) {
        let sets: Vec<&Arc<LimitSet>> = sets.iter().collect();
        return Err(rate_limited(&meter.model_name, refused, &sets));
    }
    Err(upstream_429.unwrap_or_else(|| {
        GatewayError::unavailable(format!(
            "No deployment of `{}` could take the request.",
            meter.model_name
        ))
    }))
}

/// Sends an attempt: the in-process mock answers `api = "mock"` providers, the upstream
/// client the others.
async fn send(
    gw: &Gateway,
    provider: &Provider,
    req: &UpstreamRequest,
) -> Result<Response<UpstreamBody>, SendError> {
    if provider.api == Api::Mock {
        let options = MockOptions::default();
        return Ok(mock::respond(req.uri.path(), req.body.clone(), &options).await);
    }
    gw.client.send(&provider.target, req).await
}

/// A provider's `retry-after-ms` or `retry-after` (seconds; an HTTP date is not worth parsing
/// for a pause of at most a minute).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let num = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    num("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| num("retry-after"))
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
}

/// Keeps `provider_up` current when an attempt's outcome changed its deployment's circuit.
fn note_circuit(gw: &Gateway, dep: &Deployment, changed: Option<CircuitState>) {
    if let Some(state) = changed {
        tracing::warn!(provider = %dep.provider.name, model = %dep.name, state = ?state, "circuit breaker changed state");
        gw.report_provider_health(&gw.registry.load(), &dep.provider.name);
    }
}

/// The 429 for a request our own limits refused, with OpenAI's headers.
fn rate_limited(model: &str, refused: &Refused, sets: &[&Arc<LimitSet>]) -> GatewayError {
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

/// Turns a provider's error answer into ours. Provider 4xx bodies are relayed when they are
/// OpenAI-shaped and cannot contain our credentials; 401/403 never are (they are about the
/// gateway's key, not the client's request).
async fn upstream_error(dep: &Deployment, resp: Response<UpstreamBody>) -> GatewayError {
    let status = resp.status();
    // The provider's own retry-after is passed on (SDKs honour it), else one second.
    let retry_after = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .cloned()
        .unwrap_or(HeaderValue::from_static("1"));
    let provider = &dep.provider.name;
    let body = tokio::time::timeout(
        Duration::from_secs(2),
        read_limited(resp.into_body(), ERROR_BODY_LIMIT),
    )
    .await
    .ok()
    .and_then(|r| r.ok())
    .unwrap_or_default();
    let relayed = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .filter(|m| !mentions_credentials(dep, m));
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => GatewayError::upstream(format!(
            "Provider {provider} rejected the gateway's credentials (HTTP {}). An admin must fix the provider's api_key.",
            status.as_u16()
        )),
        StatusCode::TOO_MANY_REQUESTS => GatewayError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded",
            format!("Provider {provider} is rate limiting requests.")).code("rate_limit_exceeded")
            .header(http::header::RETRY_AFTER, retry_after),
        // Anthropic's "overloaded" status: a 503 to clients, and worth trying elsewhere.
        s if s.as_u16() == 529 => GatewayError::unavailable(format!(
            "Provider {provider} is overloaded{}.",
            relayed.map(|m| format!(": {m}")).unwrap_or_default()
        )),
        s if s.is_client_error() => {
            let mut e = GatewayError::new(s, "invalid_request_error", relayed.unwrap_or_else(|| format!("Provider {provider} refused the request (HTTP {}).", s.as_u16())));
            e.code = Some("upstream_invalid_request");
            e
        }
        s => GatewayError::upstream(format!("Provider {provider} answered with HTTP {}.", s.as_u16())),
    }
}

/// True when a provider message might echo the key the gateway sent (providers quote a
/// masked key in auth errors: its first and last characters).
fn mentions_credentials(dep: &Deployment, message: &str) -> bool {
    let Some((_, value)) = &dep.provider.auth_header else {
        return false;
    };
    let key = value.to_str().unwrap_or_default();
    let key = key.strip_prefix("Bearer ").unwrap_or(key);
    if key.len() < 8 {
        return !key.is_empty() && message.contains(key);
    }
    message.contains(&key[..6]) || message.contains(&key[key.len() - 4..])
}

/// A provider's successful answer to one attempt, and what reading it needs.
struct Answer<'a> {
    dep: &'a Arc<Deployment>,
    prepared: &'a Prepared,
    resp: Response<UpstreamBody>,
    guards: Guards,
    sent: Instant,
    /// The first content must arrive by then, the whole answer by `until`.
    first_until: tokio::time::Instant,
    until: tokio::time::Instant,
}

/// Whether an answer is a whole JSON body (as some providers send to a streamed request).
fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.as_bytes().get(..16))
        .is_some_and(|t| t.eq_ignore_ascii_case(b"application/json"))
}

/// A whole answer, read within `max_bytes`. A streamed request that the provider answered
/// with a whole body gets that answer as a stream of one chunk.
async fn respond_whole(
    answer: Answer<'_>,
    meter: &mut RequestMeter,
    max_bytes: usize,
) -> Result<Response<ClientBody>, GatewayError> {
    let Answer {
        dep,
        prepared,
        resp,
        mut guards,
        sent,
        until,
        ..
    } = answer;
    let bytes = read_answer(&dep.provider.name, resp, until, max_bytes).await?;
    let (mut body, usage) = providers::read_response(dep, prepared, bytes)?;
    let mut content_type = "application/json";
    if prepared.stream {
        body = chat::completion_as_stream(&body, prepared.client_wants_usage).ok_or_else(|| {
            GatewayError::upstream(format!(
                "Provider {} answered a streamed request with a JSON body that is not an answer.",
                dep.provider.name
            ))
        })?;
        content_type = "text/event-stream";
    }
    // Counted here only for an answer: a failed attempt's time is counted by `forward`.
    meter.upstream += sent.elapsed();
    guards.settle(usage.as_ref());
    meter.record(200, None, usage.as_ref(), Some(meter.started.elapsed()));
    let mut resp = Response::new(full(body));
    let h = resp.headers_mut();
    h.reserve(ANSWER_HEADERS);
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(resp)
}

/// Reads a provider's whole body by `until`, refusing one larger than `max_bytes`.
async fn read_answer(
    provider: &str,
    resp: Response<UpstreamBody>,
    until: tokio::time::Instant,
    max_bytes: usize,
) -> Result<Bytes, GatewayError> {
    let too_large = || {
        GatewayError::upstream(format!(
            "The answer from provider {provider} is larger than the gateway's limit of {max_bytes} bytes."
        ))
        .code("upstream_response_too_large")
    };
    // A declared content-length is the body's size hint: refused before reading.
    if http_body::Body::size_hint(resp.body()).lower() > max_bytes as u64 {
        return Err(too_large());
    }
    match tokio::time::timeout_at(until, read_limited(resp.into_body(), max_bytes)).await {
        Err(_) => Err(GatewayError::timeout(format!(
            "Provider {provider} did not finish its answer in time."
        ))),
        Ok(Err(ReadError::TooLarge)) => Err(too_large()),
        Ok(Err(ReadError::Broken)) => Err(GatewayError::upstream(format!(
            "The answer from provider {provider} broke off."
        ))),
        Ok(Ok(b)) => Ok(b),
    }
}

/// Holds the response back until the first content arrives, so that a provider that fails
/// before it (an error event, data that is no event stream, a broken, silent or empty
/// stream) can still fall back or become a proper HTTP error; then streams the rest as it
/// comes.
async fn respond_stream(
    answer: Answer<'_>,
    meter: &mut RequestMeter,
) -> Result<Response<ClientBody>, GatewayError> {
    let provider = &answer.dep.provider.name;
    let failed = |what: &str| {
        GatewayError::upstream(format!(
            "Provider {provider} {what} before its answer began."
        ))
    };
    let mut translator = StreamTranslator::new(answer.dep, answer.prepared);
    let mut upstream = answer.resp.into_body();
    let mut opening = Opening::new();
    let ended = loop {
        let frame = tokio::time::timeout_at(answer.first_until, upstream.frame()).await;
        let (out, ended) = match frame {
            Err(_) => {
                return Err(GatewayError::timeout(format!(
                    "Provider {provider} did not start its answer in time."
                )))
            }
            Ok(Some(Err(_))) => return Err(failed("broke off its stream")),
            Ok(None) => (translator.finish(), true),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(chunk) => (translator.push(chunk), false),
                Err(_) => continue,
            },
        };
        let verdict = opening.push(&out);
        if let Some(kind) = translator.error_type() {
            return Err(failed(&format!("reported an error ({kind})")));
        }
        match verdict {
            Verdict::Begun => break ended,
            Verdict::Failed(what) => return Err(failed(&format!("sent {what}"))),
            Verdict::Waiting if ended => return Err(failed("ended its stream")),
            Verdict::Waiting => {}
        }
    };
    let body = MeteredStream::new(
        upstream,
        translator,
        meter.hand_over(),
        answer.guards,
        opening.into_held(),
        ended,
        answer.until,
        answer.sent,
    );
    let mut resp = Response::new(ClientBody::new(body));
    let h = resp.headers_mut();
    h.reserve(ANSWER_HEADERS);
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// The searchers `needs_of` looks for, built once: building one cost more than the search.
static IMAGE_URL: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"image_url\""));
static JSON_FORMAT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"json_"));

/// The only endpoint of `[server] metrics_listen`.
pub async fn serve_metrics(gw: Arc<Gateway>, req: Request<Incoming>) -> Response<ClientBody> {
    let runtime = gw.runtime.load();
    if let Err(e) = runtime.edge.admit(&req, Port::Metrics) {
        return error_response(&e);
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => metrics(&runtime, &gw, &req),
        (method, path) => error_response(&GatewayError::not_found(format!(
            "Unknown request URL: {method} {path}."
        ))),
    }
}

fn metrics(runtime: &Runtime, gw: &Gateway, req: &Request<Incoming>) -> Response<ClientBody> {
    match runtime.edge.metrics_allowed(req.headers()) {
        Ok(()) => text_response(gw.metrics.render(), "text/plain; version=0.0.4"),
        Err(e) => error_response(&e),
    }
}

async fn readyz(gw: &Gateway) -> Response<ClientBody> {
    let db = gw.db.ping().await;
    let models = gw.registry.load().deployment_count;
    let status = if db {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, json!({"database": db, "deployments": models}))
}

async fn list_models(
    gw: &Gateway,
    req: &Request<Incoming>,
    id: Option<String>,
) -> Response<ClientBody> {
    let auth = gw.runtime.load().auth.clone();
    if let Err(e) = auth.authenticate(req.headers()).await {
        return error_response(&e);
    }
    let snapshot = gw.registry.load();
    let entry = |m: &crate::registry::ListedModel| json!({"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by});
    match id {
        None => {
            let data: Vec<_> = snapshot.listed().iter().map(entry).collect();
            json_response(StatusCode::OK, json!({"object": "list", "data": data}))
        }
        Some(id) => match snapshot.listed_model(&id) {
            Some(m) => json_response(StatusCode::OK, entry(m)),
            None => match snapshot.resolve(&id) {
                // provider/model_id is not listed but can be asked about
                Some(deps) => json_response(
                    StatusCode::OK,
                    json!({"id": id, "object": "model", "created": deps.deployments[0].created_unix, "owned_by": deps.deployments[0].provider.name}),
                ),
                None => error_response(&GatewayError::model_not_found(&id)),
            },
        },
    }
}

enum ReadError {
    TooLarge,
    Broken,
}

/// Reads a whole body, giving up as soon as it grows past `limit`.
async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, ReadError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut first: Option<Bytes> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| ReadError::Broken)?.into_data() else {
            continue;
        };
        let len = first.as_ref().map_or(0, |b| b.len()) + buf.len() + data.len();
        if len > limit {
            return Err(ReadError::TooLarge);
        }
        // The usual case is one frame: keep it without copying.
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            Some(f) => {
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&data);
            }
            None => buf.extend_from_slice(&data),
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

fn full(bytes: Bytes) -> ClientBody {
    ClientBody::new(Full::new(bytes).map_err(|e| match e {}))
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<ClientBody> {
    let mut resp = Response::new(full(Bytes::from(value.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn text_response(text: String, content_type: &'static str) -> Response<ClientBody> {
    let mut resp = Response::new(full(Bytes::from(text)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub fn error_response(e: &GatewayError) -> Response<ClientBody> {
    let mut resp = Response::new(full(e.body()));
    *resp.status_mut() = e.status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in &e.headers {
        h.insert(name.clone(), value.clone());
    }
    resp
}
