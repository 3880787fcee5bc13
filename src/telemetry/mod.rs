//! OpenTelemetry traces, exported over OTLP/HTTP to a collector (Jaeger, Tempo, an
//! OpenTelemetry Collector): `[telemetry] otlp_endpoint`, off unless set.
//!
//! A request gets one span (`chat gpt-4o`, SERVER) with the GenAI semantic conventions'
//! attributes, and a CLIENT child per attempt at a deployment; a client's W3C `traceparent`
//! (and `tracestate`) is continued, and the attempts pass theirs on to the provider. What the
//! spans carry is in `attrs`; how a request's span learns it is in `span`; how spans reach
//! the collector, bounded in memory and in time, is in `export`.
//!
//! Off, nothing of it runs: the request path holds `Option<Box<RequestSpan>>`, `None`, and
//! checks it where it would tell the span something. There is no global tracer and no
//! `tracing` layer: the request path calls the OpenTelemetry API itself.
//!
//! This module knows nothing of the request path: it is told plain names and counts, so it
//! sits low in the layers, beside `metering`.

mod attrs;
mod export;
mod span;

pub use attrs::{Finished, Requested, Tokens, Upstream, Verdict};
pub use span::RequestSpan;

use std::time::Duration;

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use crate::config::TelemetryConfig;

/// Traces being exported: what makes a request's spans, and what sends them.
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagate_upstream: bool,
    /// Where spans go, for the start-up log.
    pub url: String,
}

impl Telemetry {
    /// Starts exporting, when `config` has an endpoint (None: traces are off). Must run on
    /// the gateway's runtime, where the exporter's requests will run.
    pub fn start(config: &TelemetryConfig) -> anyhow::Result<Option<Telemetry>> {
        let Some(url) = config.traces_url() else {
            return Ok(None);
        };
        let provider = export::provider(config, url.clone())?;
        let scope = InstrumentationScope::builder("tollgate")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let tracer = provider.tracer_with_scope(scope);
        Ok(Some(Telemetry {
            provider,
            tracer,
            propagate_upstream: config.propagate_upstream,
            url,
        }))
    }

    /// A request's span, started now. An API request's (`client_headers` given) is a SERVER
    /// span that continues the client's `traceparent` when it sent a valid one (a malformed
    /// one is ignored: a new trace starts); a prompt another surface sent is an INTERNAL span
    /// of a trace of its own. Boxed: the request path keeps one pointer for it.
    pub fn request(
        &self,
        client_headers: Option<&HeaderMap>,
        operation: &'static str,
        request_id: &str,
        surface: Option<&'static str>,
    ) -> Box<RequestSpan> {
        let (parent, kind) = match client_headers {
            Some(h) => (
                TraceContextPropagator::new().extract(&HeaderExtractor(h)),
                SpanKind::Server,
            ),
            None => (Context::new(), SpanKind::Internal),
        };
        let mut attributes = vec![
            KeyValue::new(attrs::OPERATION, operation),
            KeyValue::new(attrs::REQUEST_ID, attrs::bounded(request_id).to_owned()),
        ];
        if let Some(s) = surface {
            attributes.push(KeyValue::new(attrs::SURFACE, s));
        }
        let span = self
            .tracer
            .span_builder(operation)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        let cx = parent.with_span(span);
        Box::new(RequestSpan::new(
            cx,
            self.tracer.clone(),
            operation,
            self.propagate_upstream,
        ))
    }

    /// Sends the spans still queued and stops, waiting at most `within` (a collector that is
    /// down does not hold the gateway's shutdown). Blocking work, off the runtime's threads.
    pub async fn shutdown(&self, within: Duration) {
        let provider = self.provider.clone();
        let stopped =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(within)).await;
        match stopped {
            Ok(Ok(())) => tracing::debug!("trace exporter flushed and stopped"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "trace exporter did not flush in time; spans still queued are lost")
            }
            Err(e) => tracing::warn!(error = %e, "trace exporter shutdown failed"),
        }
    }
}
