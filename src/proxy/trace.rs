//! What the request path tells the request's trace (`crate::telemetry`) when traces are on:
//! one function per moment of the request, each a single branch when the request has no
//! span (traces off, `RequestMeter::trace` is `None`), inlined where it is called. The
//! request span itself ends in the meter (`RequestMeter::record`), where the usage row's
//! final counts are known.

use http::HeaderMap;

use super::meter::RequestMeter;
use super::outcome::{Outcome, Reason};
use super::Gateway;
use crate::providers::{Endpoint, JsonObject};
use crate::registry::{Deployment, Needs};
use crate::telemetry::{Requested, Upstream, Verdict};
use crate::upstream::UpstreamRequest;

/// `gen_ai.operation.name` of an endpoint, in the conventions' words.
pub fn operation(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions => "chat",
        Endpoint::Completions => "text_completion",
        Endpoint::Embeddings => "embeddings",
    }
}

/// Starts the request's span when traces are on: an API request's continues the trace in
/// `client_headers`; a prompt from another surface (`surface`) starts its own.
#[inline]
pub fn start(
    gw: &Gateway,
    meter: &mut RequestMeter,
    client_headers: Option<&HeaderMap>,
    surface: Option<&'static str>,
) {
    if let Some(telemetry) = &gw.telemetry {
        let operation = operation(meter.endpoint);
        meter.trace =
            Some(telemetry.request(client_headers, operation, &meter.request_id, surface));
    }
}

/// The body is read: the model asked for and the parameters the conventions name.
#[inline]
pub fn requested(meter: &RequestMeter, needs: &Needs, body: &JsonObject) {
    let Some(trace) = meter.trace.as_deref() else {
        return;
    };
    let number = |key: &str| body.get::<f64>(key).ok().flatten();
    trace.requested(&Requested {
        model: &meter.model_name,
        stream: meter.stream,
        max_tokens: needs.max_tokens,
        temperature: number("temperature"),
        top_p: number("top_p"),
    });
}

/// The deployment as its spans name it.
pub fn upstream(dep: &Deployment) -> Upstream<'_> {
    Upstream {
        provider: &dep.provider.name,
        api: dep.provider.api,
        model_id: &dep.model_id,
        deployment: &dep.name,
    }
}

/// A deployment passed over before an attempt was sent, and why.
#[inline]
pub fn skipped(meter: &RequestMeter, dep: &Deployment, why: &'static str) {
    if let Some(trace) = meter.trace.as_deref() {
        trace.skipped(&dep.provider.name, why);
    }
}

/// Why a deployment's limits passed it over, by the scope that refused.
pub fn limit_reason(scope: &'static str) -> &'static str {
    match scope {
        "provider" => "provider_limit",
        "model" => "model_limit",
        _ => "limit",
    }
}

/// An attempt is sent: its span starts, and its request may carry `traceparent`.
#[inline]
pub fn attempt_sent(meter: &mut RequestMeter, dep: &Deployment, req: &mut UpstreamRequest) {
    if let Some(trace) = meter.trace.as_deref_mut() {
        trace.attempt_sent(&upstream(dep), &req.uri, &mut req.headers);
    }
}

/// The provider's response headers arrived.
#[inline]
pub fn attempt_status(meter: &mut RequestMeter, status: http::StatusCode) {
    if let Some(trace) = meter.trace.as_deref_mut() {
        trace.attempt_status(status.as_u16());
    }
}

/// How the attempt came out.
#[inline]
pub fn concluded(meter: &mut RequestMeter, outcome: &Outcome) {
    let Some(trace) = meter.trace.as_deref_mut() else {
        return;
    };
    let (verdict, error) = match outcome {
        Outcome::Answered(_) => (Verdict::Answered, None),
        Outcome::Next(Reason::Failed(e)) => (Verdict::Failed, Some(e)),
        Outcome::Next(Reason::RateLimited { error, .. }) => (Verdict::RateLimited, Some(error)),
        Outcome::Stop(e) => (Verdict::Refused, Some(e)),
    };
    trace.attempt_concluded(verdict, error.map(|e| e.error_type()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_refusals_are_named_in_few_words() {
        assert_eq!(operation(Endpoint::ChatCompletions), "chat");
        assert_eq!(operation(Endpoint::Completions), "text_completion");
        assert_eq!(operation(Endpoint::Embeddings), "embeddings");
        for scope in crate::limits::SCOPES {
            assert!(limit_reason(scope).ends_with("limit"), "{scope}");
        }
    }
}
