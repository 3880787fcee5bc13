//! The client the request path sends with: the pooled HTTPS client (HTTP/1.1 and HTTP/2 by
//! ALPN, rustls) for TLS providers, a plain-http provider's own `http1_pool`.

use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{error_chain, SendError, Target, UpstreamBody, UpstreamRequest};
use crate::error::BoxError;

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub struct UpstreamClient {
    /// One pooled client per connect timeout in use (almost always just the default).
    clients: std::sync::Mutex<std::collections::HashMap<u64, HttpsClient>>,
}

const DEFAULT_CONNECT_MS: u64 = 10_000;

impl UpstreamClient {
    pub fn new() -> UpstreamClient {
        UpstreamClient {
            clients: Default::default(),
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
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(512)
        .build(https_connector(connect_ms))
}

/// A connector for http and https URLs: rustls with ring and the system's CA certificates,
/// HTTP/1.1 or HTTP/2 by ALPN. The providers' client and the trace exporter share it.
pub fn https_connector(connect_ms: u64) -> HttpsConnector<HttpConnector> {
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
    builder
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http)
}

impl UpstreamClient {
    /// Sends the request and returns once the response headers arrived.
    pub async fn send(
        &self,
        target: &Target,
        req: &UpstreamRequest,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let build = || {
            let mut request = http::Request::new(Full::new(req.body.clone()));
            *request.method_mut() = http::Method::POST;
            *request.uri_mut() = req.uri.clone();
            let h = request.headers_mut();
            h.clone_from(&req.headers);
            if let Some(plain) = &target.plain_http {
                h.insert(http::header::HOST, plain.host.clone());
            }
            request
        };
        if let Some(plain) = &target.plain_http {
            let connect = target.connect_ms.unwrap_or(DEFAULT_CONNECT_MS);
            return plain.pool.send(build, Duration::from_millis(connect)).await;
        }
        let request = build();
        match self.client(target.connect_ms).request(request).await {
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
