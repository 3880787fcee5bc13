//! Getting spans to the collector: the OTLP/HTTP (protobuf) exporter behind the SDK's batch
//! processor, whose queue is bounded (a full queue drops new spans; it never grows) and whose
//! exports, retries included, are bounded in time. Exports run on their own thread, never on
//! a request's.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry::KeyValue;
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;

use crate::config::TelemetryConfig;

/// The tracer provider for `config`: its exporter, batch processor, sampler and resource.
pub fn provider(config: &TelemetryConfig, url: String) -> anyhow::Result<SdkTracerProvider> {
    let timeout = Duration::from_millis(config.export_timeout_ms);
    let client = OnRuntime {
        runtime: tokio::runtime::Handle::try_current()?,
        client: HyperClient::new(
            crate::upstream::https_connector(timeout.as_millis() as u64),
            timeout,
            None,
        ),
    };
    let exporter = SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(timeout)
        .build()?;
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(config.max_queue_spans)
        .with_max_export_batch_size(config.max_queue_spans.min(512))
        .with_scheduled_delay(Duration::from_millis(config.batch_delay_ms))
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler(config.sample_ratio))
        .with_resource(resource(&config.service_name))
        .build())
}

/// New traces are kept at `ratio`; a trace the client started keeps the client's decision
/// (its `traceparent`'s sampled flag), so a trace is whole or absent, never half.
fn sampler(ratio: f64) -> Sampler {
    Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
}

fn resource(service_name: &str) -> Resource {
    Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The exporter's HTTP client, run on the gateway's runtime: the batch processor exports from
/// a thread of its own, outside any runtime, where hyper could not run by itself.
#[derive(Debug)]
struct OnRuntime {
    runtime: tokio::runtime::Handle,
    client: HyperClient<HttpsConnector<HttpConnector>>,
}

#[async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        // A runtime that is shutting down cancels the export: an error, never a panic.
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}
