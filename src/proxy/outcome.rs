//! Classify: what an attempt came to. Answered (its answer read, see `answer`), the next
//! deployment to be tried and why (no answer in time, a connect error, a 5xx, a broken or
//! unusable answer, a 429), or stop (the provider refused the request itself, as any other
//! would). Only failures before anything reached the client move on; when none answers,
//! `PassedOver` makes the error from why.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode};

use super::admit::rate_limited;
use super::answer::{self, Answer};
use super::attempt::Attempt;
use super::context::RequestCtx;
use crate::error::GatewayError;
use crate::limits::{LimitSet, Refused};
use crate::providers::Prepared;
use crate::registry::Deployment;
use crate::upstream::{read_limited, UpstreamBody};

/// Upstream error bodies are read only this far (they are small; a huge one is not relayed).
const ERROR_BODY_LIMIT: usize = 64 * 1024;

// Moved once per attempt; boxing a stream's state to make it smaller would allocate on every
// streamed request.
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    /// A good answer, to relay.
    Answered(Answer),
    /// Try the next deployment, for this reason.
    Next(Reason),
    /// The provider refused the request itself (a 4xx other than 429): another provider would
    /// too, so this error is the answer.
    Stop(GatewayError),
}

pub enum Reason {
    /// No answer in time, a connect error, a 5xx, a broken or unusable answer: counts
    /// against the deployment's circuit.
    Failed(GatewayError),
    /// A 429: the provider is up but rate limiting, for `pause` when it said how long.
    RateLimited {
        error: GatewayError,
        pause: Option<Duration>,
    },
}

/// What the attempt's response (or its failure to come) amounts to.
pub async fn classify(
    ctx: &RequestCtx<'_>,
    attempt: &Attempt<'_>,
    prepared: &Prepared,
    sent: Result<Response<UpstreamBody>, GatewayError>,
) -> Outcome {
    let resp = match sent {
        Ok(resp) => resp,
        Err(e) => return Outcome::Next(Reason::Failed(e)),
    };
    let status = resp.status();
    if status.is_success() {
        return match answer::read(attempt, prepared, resp, ctx.max_response_bytes).await {
            Ok(answer) => Outcome::Answered(answer),
            Err(e) => Outcome::Next(Reason::Failed(e)),
        };
    }
    let pause = match status {
        StatusCode::TOO_MANY_REQUESTS => retry_after(resp.headers()),
        _ => None,
    };
    let error = upstream_error(attempt.dep, resp).await;
    match status {
        // Rate limiting is not ill health: try elsewhere.
        StatusCode::TOO_MANY_REQUESTS => Outcome::Next(Reason::RateLimited { error, pause }),
        s if s.is_server_error() => Outcome::Next(Reason::Failed(error)),
        _ => Outcome::Stop(error),
    }
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

/// Why the deployments tried so far did not answer, for the error when none does.
#[derive(Default)]
pub struct PassedOver {
    /// The last failure.
    failed: Option<GatewayError>,
    /// The last provider 429.
    rate_limited: Option<GatewayError>,
    /// Our own limits' refusals, each with the limits that refused.
    refused: Vec<(Refused, Vec<Arc<LimitSet>>)>,
}

impl PassedOver {
    pub fn note(&mut self, reason: Reason) {
        match reason {
            Reason::Failed(e) => self.failed = Some(e),
            Reason::RateLimited { error, .. } => self.rate_limited = Some(error),
        }
    }

    pub fn limits_refused(&mut self, refused: Refused, sets: &[&Arc<LimitSet>]) {
        self.refused
            .push((refused, sets.iter().map(|s| (*s).clone()).collect()));
    }

    /// The answer when none of the `planned` deployments of `model` answered: the last
    /// failure, summed up when there were others; else our own limits' refusal that frees up
    /// first; else the provider's 429.
    pub fn into_error(self, model: &str, planned: usize) -> GatewayError {
        if let Some(e) = self.failed {
            return if planned > 1 && e.status != StatusCode::GATEWAY_TIMEOUT {
                GatewayError::upstream(format!(
                    "Every provider serving `{model}` failed; the last said: {}",
                    e.message
                ))
            } else {
                e
            };
        }
        if let Some((refused, sets)) = self.refused.iter().min_by_key(|(r, _)| r.retry_after) {
            let sets: Vec<&Arc<LimitSet>> = sets.iter().collect();
            return rate_limited(model, refused, &sets);
        }
        self.rate_limited.unwrap_or_else(|| {
            GatewayError::unavailable(format!(
                "No deployment of `{model}` could take the request."
            ))
        })
    }
}
