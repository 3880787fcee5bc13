//! One request's spans: the request's own (SERVER for an API request, INTERNAL for a prompt
//! another surface sent), and a CLIENT child for each attempt at a deployment. The request
//! path tells it what it learns, moment by moment; it exists only while traces are on, so
//! with them off none of this runs.

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HeaderInjector;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, Span};

use super::attrs::{self, Finished, Requested, Upstream, Verdict};

pub struct RequestSpan {
    /// The request's span, and the context its children start from.
    cx: Context,
    tracer: SdkTracer,
    /// `gen_ai.operation.name`: `chat`, `text_completion`, `embeddings`.
    operation: &'static str,
    /// Whether the attempts' requests carry `traceparent` to the provider.
    propagate_upstream: bool,
    /// The attempt running now: ended by `end_attempt` (a stream's when it ends).
    attempt: Option<Span>,
    attempts: u32,
}

impl RequestSpan {
    pub(super) fn new(
        cx: Context,
        tracer: SdkTracer,
        operation: &'static str,
        propagate_upstream: bool,
    ) -> RequestSpan {
        RequestSpan {
            cx,
            tracer,
            operation,
            propagate_upstream,
            attempt: None,
            attempts: 0,
        }
    }

    /// The body is read: the span is named for the model asked for, as the conventions name
    /// GenAI spans (`chat gpt-4o`).
    pub fn requested(&self, r: &Requested<'_>) {
        let span = self.cx.span();
        if !span.is_recording() {
            return;
        }
        span.update_name(format!("{} {}", self.operation, attrs::bounded(r.model)));
        span.set_attributes(attrs::requested(r));
    }

    /// A deployment was passed over before an attempt was sent (its circuit or its limits
    /// let nothing through): an event on the request's span.
    pub fn skipped(&self, provider: &str, why: &'static str) {
        self.cx.span().add_event(
            "tollgate.deployment_skipped",
            vec![
                KeyValue::new(attrs::PROVIDER, provider.to_owned()),
                KeyValue::new(attrs::REASON, why),
            ],
        );
    }

    /// An attempt is sent to `upstream` at `uri`: its span starts, and its request's headers
    /// get its `traceparent` (and `tracestate`) when the provider is to see them.
    pub fn attempt_sent(
        &mut self,
        upstream: &Upstream<'_>,
        uri: &http::Uri,
        headers: &mut HeaderMap,
    ) {
        self.end_attempt();
        self.attempts += 1;
        let span = self
            .tracer
            .span_builder(format!("{} {}", self.operation, upstream.model_id))
            .with_kind(SpanKind::Client)
            .with_attributes(attrs::attempt(self.operation, upstream, self.attempts, uri))
            .start_with_context(&self.tracer, &self.cx);
        if self.propagate_upstream {
            let cx = Context::new().with_remote_span_context(span.span_context().clone());
            TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
        }
        self.attempt = Some(span);
    }

    /// The provider's response headers arrived with `status`.
    pub fn attempt_status(&mut self, status: u16) {
        if let Some(span) = &mut self.attempt {
            span.set_attribute(KeyValue::new(attrs::HTTP_STATUS, i64::from(status)));
        }
    }

    /// How the attempt came out; `error_type` is why it did not answer.
    pub fn attempt_concluded(&mut self, verdict: Verdict, error_type: Option<&'static str>) {
        let Some(span) = &mut self.attempt else {
            return;
        };
        span.set_attribute(KeyValue::new(attrs::OUTCOME, verdict.as_str()));
        if let Some(e) = error_type {
            span.set_attribute(KeyValue::new(attrs::ERROR_TYPE, e));
            span.set_status(Status::error(e));
        }
    }

    /// The attempt is over (its answer read or failed; a stream's when the stream ends).
    pub fn end_attempt(&mut self) {
        if let Some(mut span) = self.attempt.take() {
            span.end();
        }
    }

    /// The request ended as its usage row says: its last attributes, and its span ends (with
    /// the attempt still running, a stream's). A server span is in error for a 5xx only: a
    /// 4xx is the client's mistake, which `error.type` names all the same.
    pub fn finish(mut self, f: &Finished<'_>) {
        self.end_attempt();
        let span = self.cx.span();
        if span.is_recording() {
            span.set_attributes(attrs::finished(f));
            if f.status >= 500 {
                span.set_status(Status::error(f.error_type.unwrap_or("error").to_owned()));
            }
        }
        span.end();
    }
}
