//! One model's call within a task: the task's prompt sent along the data plane
//! (`proxy::ask`), exactly as `POST /api/v1/llm/query` sends one, so it is routed,
//! limited, budgeted under the task creator's key and project, falls back and writes one
//! usage row. A call refused for a rate limit (the provider's parallel slots or its
//! requests per minute are used up) is tried again, after the `retry-after` it was given and
//! a backoff that doubles up to `MAX_RETRY_WAIT`, for up to the request timeout: a background
//! task waits for the provider's room rather than fail. Each refused call has its usage row
//! (429, no cost), as a client's has.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;

use super::queue::NewResult;
use crate::auth::Caller;
use crate::error::GatewayError;
use crate::proxy::{self, Answered, Gateway, Prompt};

/// The usage row's `endpoint` for a task's call, so reports tell them apart.
pub const SURFACE: &str = "api.tasks";
/// The first and the longest wait before a rate-limited call is tried again.
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(250);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);

/// Sends `prompt` and says how it went. `request_id` names the (last) call's usage row.
pub async fn call_model(
    gw: &Gateway,
    caller: Arc<Caller>,
    prompt: &Prompt<'_>,
    request_id: &std::sync::Mutex<String>,
) -> NewResult {
    let first = Instant::now();
    let mut backoff = FIRST_RETRY_WAIT;
    loop {
        let id = crate::ids::new_id();
        *request_id.lock().unwrap_or_else(|e| e.into_inner()) = id.clone();
        let started = Instant::now();
        let runtime = gw.runtime.load_full();
        let outcome = proxy::ask(gw, &runtime, caller.clone(), prompt, SURFACE, id.clone()).await;
        let latency = Some(started.elapsed().as_millis() as i64);
        match outcome {
            Err(e) if rate_limited(&e) && first.elapsed() < runtime.request_timeout => {
                tokio::time::sleep(retry_after(&e).max(backoff)).await;
                backoff = (backoff * 2).min(MAX_RETRY_WAIT);
            }
            Err(e) => return failed(prompt.model, &e, latency, id),
            Ok(answered) => return succeeded(prompt.model, &answered, latency, id),
        }
    }
}

/// A limit that frees up with time refused the call (not a budget, which does not).
fn rate_limited(e: &GatewayError) -> bool {
    e.status == StatusCode::TOO_MANY_REQUESTS && e.code == Some("rate_limit_exceeded")
}

/// The wait a 429 asked for (`retry-after-ms`, else `retry-after` in seconds), at most
/// `MAX_RETRY_WAIT`.
fn retry_after(e: &GatewayError) -> Duration {
    let header = |name: &str| {
        e.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str().ok()?.trim().parse::<u64>().ok())
    };
    let wait = match (header("retry-after-ms"), header("retry-after")) {
        (Some(ms), _) => Duration::from_millis(ms),
        (None, Some(secs)) => Duration::from_secs(secs),
        (None, None) => Duration::ZERO,
    };
    wait.min(MAX_RETRY_WAIT)
}

fn succeeded(
    model: &str,
    answered: &Answered,
    latency_ms: Option<i64>,
    request_id: String,
) -> NewResult {
    let count = |k: &str| i64::try_from(answered.tokens(k)).unwrap_or(i64::MAX);
    NewResult {
        model: model.to_owned(),
        status: "succeeded",
        text: Some(answered.text().to_owned()),
        prompt_tokens: count("prompt_tokens"),
        completion_tokens: count("completion_tokens"),
        cost: answered.cost,
        latency_ms,
        error_type: None,
        error: None,
        request_id: Some(request_id),
    }
}

fn failed(model: &str, e: &GatewayError, latency_ms: Option<i64>, request_id: String) -> NewResult {
    NewResult {
        model: model.to_owned(),
        status: "failed",
        text: None,
        prompt_tokens: 0,
        completion_tokens: 0,
        cost: rust_decimal::Decimal::ZERO,
        latency_ms,
        error_type: Some(e.error_type().to_owned()),
        error: Some(e.message.clone()),
        request_id: Some(request_id),
    }
}

/// A model whose call was stopped by a cancel (its usage row says 499, as a client's that
/// hung up), or that never started.
pub fn cancelled(model: &str, request_id: Option<String>) -> NewResult {
    NewResult {
        model: model.to_owned(),
        status: "cancelled",
        text: None,
        prompt_tokens: 0,
        completion_tokens: 0,
        cost: rust_decimal::Decimal::ZERO,
        latency_ms: None,
        error_type: Some("cancelled".into()),
        error: Some("The task was cancelled before this model answered.".into()),
        request_id,
    }
}
