//! The pooled upstream HTTP client (HTTP/1.1 and HTTP/2 by ALPN, rustls) for TLS providers, a
//! leaner HTTP/1.1 pool for plain-http ones (`http1_pool`), plus the in-process path for
//! `api = "mock"` providers.

use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::Api;
use crate::error::BoxError;
use crate::mock::{self, MockOptions};
use crate::providers::UpstreamRequest;
use crate::registry::Provider;

pub type UpstreamBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

#[derive(Debug)]
pub enum SendError {
    /// Nothing reached the provider (refused, DNS, TLS): always safe to try elsewhere.
    Connect(String),
    Other(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connect error: {e}"),
            SendError::Other(e) => write!(f, "{e}"),
        }
    }
}

pub struct UpstreamClient {
    /// One pooled client per connect timeout in use (almost always just the default).
    clients: std::sync::Mutex<std::collections::HashMap<u64, HttpsClient>>,
    mock: MockOptions,
}

const DEFAULT_CONNECT_MS: u64 = 10_000;

impl UpstreamClient {
    pub fn new() -> UpstreamClient {
        UpstreamClient {
            clients: Default::default(),
            mock: MockOptions::default(),
        }
    }

    fn client(&self, connect_ms: Option<u64>) -> HttpsClient {
        let ms = connect_ms.unwrap_or(DEFAULT_CONNECT_MS);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(ms)
            .or_insert_with(|| https_client(ms))
            .clone()
    }
}

fn https_client(connect_ms: u64) -> HttpsClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_millis(connect_ms)));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match builder
        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
    {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "no system CA certificates found; HTTPS providers will fail");
            let config = rustls::ClientConfig::builder_with_provider(
                rustls::crypto::ring::default_provider().into(),
            )
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    let connector = builder
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(512)
        .build(connector)
}

impl UpstreamClient {
    /// Sends the request and returns once the response headers arrived.
    pub async fn send(
        &self,
        provider: &Provider,
        req: &UpstreamRequest,
    ) -> Result<Response<UpstreamBody>, SendError> {
        if provider.api == Api::Mock {
            let resp = mock::respond(req.uri.path(), req.body.clone(), &self.mock).await;
            return Ok(resp);
        }
        let build = || {
            let mut request = http::Request::new(Full::new(req.body.clone()));
            *request.method_mut() = http::Method::POST;
            *request.uri_mut() = req.uri.clone();
            let h = request.headers_mut();
            h.clone_from(&req.headers);
            if let Some(host) = &provider.host_header {
                h.insert(http::header::HOST, host.clone());
            }
            request
        };
        if let Some(pool) = &provider.http1 {
            let connect = provider.timeouts.connect_ms.unwrap_or(DEFAULT_CONNECT_MS);
            return pool.send(build, Duration::from_millis(connect)).await;
        }
        let request = build();
        match self
            .client(provider.timeouts.connect_ms)
            .request(request)
            .await
        {
            Ok(resp) => Ok(resp.map(|b| b.map_err(BoxError::from).boxed_unsync())),
            Err(e) if e.is_connect() => Err(SendError::Connect(error_chain(&e))),
            Err(e) => Err(SendError::Other(error_chain(&e))),
        }
    }
}

impl Default for UpstreamClient {
    fn default() -> Self {
        UpstreamClient::new()
    }
}

/// hyper's client error says little on its own; its sources say what went wrong.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
