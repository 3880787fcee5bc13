//! The request path, top to bottom. For the OpenAI endpoints a request goes through these
//! phases, each a function below:
//!
//! 1. `authenticate`: gateway key, master key, or anonymous when keys are not required
//! 2. `read_request`: body read once within `max_body_bytes`, parsed once, checked
//! 3. `resolve`: public name / `provider/model_id` / route -> deployments, in order
//! 4. `forward`: per deployment, the adapter builds the request and the pooled client sends
//!    it; connect errors, timeouts, 429 and 5xx move on to the next deployment
//! 5. `respond_*`: whole answer or stream back to the client, usage metered once

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::json;

use super::meter::{InFlight, RequestMeter};
use super::stream::MeteredStream;
use super::upstream::{SendError, UpstreamBody};
use super::Gateway;
use crate::error::GatewayError;
use crate::providers::mock::BoxError;
use crate::providers::{self, Endpoint, JsonObject, Kind, Prepared, StreamTranslator};
use crate::registry::{Deployment, ModelType};

pub type ClientBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Upstream error bodies are read only this far (they are small; a huge one is not relayed).
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// A whole non-streamed answer may be at most this large.
const RESPONSE_LIMIT: usize = 256 * 1024 * 1024;

pub async fn handle(gw: Arc<Gateway>, req: Request<Incoming>) -> Response<ClientBody> {
    let path = req.uri().path();
    let endpoint = match (req.method(), path) {
        (&Method::POST, "/v1/chat/completions" | "/chat/completions") => Endpoint::ChatCompletions,
        (&Method::POST, "/v1/completions" | "/completions") => Endpoint::Completions,
        (&Method::POST, "/v1/embeddings" | "/embeddings") => Endpoint::Embeddings,
        (&Method::GET, "/healthz") => {
            return json_response(StatusCode::OK, json!({"status": "ok"}))
        }
        (&Method::GET, "/readyz") => return readyz(&gw).await,
        (&Method::GET, "/metrics") => {
            return text_response(gw.metrics.render(), "text/plain; version=0.0.4")
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
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

async fn proxy(
    gw: &Gateway,
    endpoint: Endpoint,
    req: Request<Incoming>,
    meter: &mut RequestMeter,
) -> Result<Response<ClientBody>, GatewayError> {
    let deadline = tokio::time::Instant::now() + gw.request_timeout;
    meter.caller = Some(gw.auth.authenticate(req.headers()).await?);
    let body = read_request(gw, endpoint, req, deadline).await?;
    meter.model_name = body.str("model").unwrap_or_default().into_owned();
    meter.stream = endpoint.can_stream() && body.bool("stream") == Some(true);
    let deployments = resolve(gw, endpoint, &meter.model_name)?;
    forward(gw, endpoint, &body, &deployments, meter, deadline).await
}

async fn read_request(
    gw: &Gateway,
    endpoint: Endpoint,
    req: Request<Incoming>,
    deadline: tokio::time::Instant,
) -> Result<JsonObject, GatewayError> {
    let limit = gw.max_body_bytes;
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

fn resolve(
    gw: &Gateway,
    endpoint: Endpoint,
    model: &str,
) -> Result<Vec<Arc<Deployment>>, GatewayError> {
    let snapshot = gw.registry.load();
    let all = snapshot
        .resolve(model)
        .ok_or_else(|| GatewayError::model_not_found(model))?;
    let wants_embedding = endpoint == Endpoint::Embeddings;
    let fit: Vec<Arc<Deployment>> = all
        .iter()
        .filter(|d| (d.model_type == ModelType::Embedding) == wants_embedding)
        .cloned()
        .collect();
    if fit.is_empty() {
        let msg = if wants_embedding {
            format!("`{model}` is not an embedding model; it cannot serve /v1/embeddings.")
        } else {
            format!("`{model}` is an embedding model; send it to /v1/embeddings.")
        };
        return Err(GatewayError::invalid_param("model", msg));
    }
    Ok(fit)
}

/// Tries the deployments in order until one answers. Only failures before anything reached
/// the client move on: connect errors, timeouts, 429 and 5xx.
async fn forward(
    gw: &Gateway,
    endpoint: Endpoint,
    body: &JsonObject,
    deployments: &[Arc<Deployment>],
    meter: &mut RequestMeter,
    deadline: tokio::time::Instant,
) -> Result<Response<ClientBody>, GatewayError> {
    let mut last_error: Option<GatewayError> = None;
    let mut all_rate_limited = true;
    for (i, dep) in deployments.iter().enumerate() {
        if i > 0 {
            gw.metrics
                .fallbacks_total
                .with_label_values(&[&meter.model_name])
                .inc();
        }
        let prepared = providers::prepare(dep, endpoint, body)?;
        meter.attempts += 1;
        meter.deployment = Some(dep.clone());
        let provider = &dep.provider;
        let in_flight = InFlight::new(gw.metrics.in_flight.with_label_values(&[&provider.name]));
        let sent = Instant::now();
        let result =
            tokio::time::timeout_at(deadline, gw.client.send(provider.api, &prepared.request))
                .await;
        let error = match result {
            Err(_) => {
                all_rate_limited = false;
                GatewayError::timeout(format!(
                    "Provider {} did not answer within the request timeout.",
                    provider.name
                ))
            }
            Ok(Err(e)) => {
                all_rate_limited = false;
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
            Ok(Ok(resp)) => {
                let status = resp.status();
                if status.is_success() {
                    return if prepared.stream {
                        Ok(respond_stream(
                            dep,
                            &prepared,
                            resp,
                            meter.hand_over(),
                            in_flight,
                            deadline,
                            sent,
                        ))
                    } else {
                        respond_whole(dep, &prepared, resp, meter, deadline, sent).await
                    };
                }
                meter.upstream += sent.elapsed();
                if status != StatusCode::TOO_MANY_REQUESTS {
                    all_rate_limited = false;
                }
                let error = upstream_error(dep, resp).await;
                if !(status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()) {
                    // The provider refused the request itself: another provider would too.
                    return Err(error);
                }
                error
            }
        };
        drop(in_flight);
        if error.status == StatusCode::GATEWAY_TIMEOUT {
            meter.upstream += sent.elapsed();
            // The whole request's time is spent; there is none left for another attempt.
            return Err(error);
        }
        last_error = Some(error);
    }
    let mut error = last_error
        .unwrap_or_else(|| GatewayError::upstream("No deployment could serve the request."));
    if all_rate_limited {
        error = GatewayError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            format!(
                "Every provider serving `{}` is rate limited right now; try again shortly.",
                meter.model_name
            ),
        )
        .code("rate_limit_exceeded")
        .header("retry-after", HeaderValue::from_static("1"));
    } else if error.status == StatusCode::TOO_MANY_REQUESTS {
        // Some providers were rate limited and the others failed: the request failed upstream.
        error = GatewayError::upstream(format!(
            "Every provider serving `{}` failed.",
            meter.model_name
        ));
    }
    Err(error)
}

/// Turns a provider's error answer into ours. Provider 4xx bodies are relayed when they are
/// OpenAI-shaped and cannot contain our credentials; 401/403 never are (they are about the
/// gateway's key, not the client's request).
async fn upstream_error(dep: &Deployment, resp: Response<UpstreamBody>) -> GatewayError {
    let status = resp.status();
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
            format!("Provider {provider} is rate limiting requests.")).code("rate_limit_exceeded"),
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

async fn respond_whole(
    dep: &Arc<Deployment>,
    prepared: &Prepared,
    resp: Response<UpstreamBody>,
    meter: &mut RequestMeter,
    deadline: tokio::time::Instant,
    sent: Instant,
) -> Result<Response<ClientBody>, GatewayError> {
    let collected =
        tokio::time::timeout_at(deadline, read_limited(resp.into_body(), RESPONSE_LIMIT)).await;
    meter.upstream += sent.elapsed();
    let bytes = match collected {
        Err(_) => {
            return Err(GatewayError::timeout(format!(
                "Provider {} did not finish its answer within the request timeout.",
                dep.provider.name
            )))
        }
        Ok(Err(_)) => {
            return Err(GatewayError::upstream(format!(
                "The answer from provider {} broke off or was too large.",
                dep.provider.name
            )))
        }
        Ok(Ok(b)) => b,
    };
    let (body, usage) = providers::read_response(dep, prepared, bytes)?;
    meter.record(200, None, usage.as_ref(), Some(meter.started.elapsed()));
    let mut resp = Response::new(full(body));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

fn respond_stream(
    dep: &Arc<Deployment>,
    prepared: &Prepared,
    resp: Response<UpstreamBody>,
    meter: RequestMeter,
    in_flight: InFlight,
    deadline: tokio::time::Instant,
    sent: Instant,
) -> Response<ClientBody> {
    let translator = StreamTranslator::new(dep, prepared);
    let body = MeteredStream::new(
        resp.into_body(),
        translator,
        meter,
        in_flight,
        deadline,
        sent,
    );
    let mut resp = Response::new(ClientBody::new(body));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
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
    if let Err(e) = gw.auth.authenticate(req.headers()).await {
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
                    json!({"id": id, "object": "model", "created": deps[0].created_unix, "owned_by": deps[0].provider.name}),
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
        h.insert(*name, value.clone());
    }
    resp
}
