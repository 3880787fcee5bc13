//! The upstream HTTP client: how the gateway reaches providers. TLS providers share one pooled
//! client (HTTP/1.1 and HTTP/2 by ALPN, rustls, in `client`); each plain-http provider gets a
//! leaner pool of kept-alive HTTP/1.1 connections (`http1_pool`). It sends a request to a
//! [`Target`] and hands back the response headers and a body to read (`read_limited` reads
//! one whole).
//!
//! It sits low in the module layers: it knows nothing of providers' wire formats, the
//! registry or the request path, which build on it.

mod body;
mod client;
mod http1_pool;

pub use body::{read_limited, ReadError};
pub use client::{https_connector, UpstreamClient};

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

use crate::error::BoxError;
use http1_pool::Http1Pool;

/// A provider's response body as the request path reads it, whichever pool it came from.
pub type UpstreamBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// An upstream request ready for the client.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub uri: http::Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why a request got no response.
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

/// How one provider is reached: made once with the registry snapshot, which keeps it beside
/// the provider's data (a reload makes a new one). The default is a TLS provider with the
/// default connect timeout.
#[derive(Debug, Default)]
pub struct Target {
    /// A plain-http base URL's own connections; TLS providers use the shared client.
    plain_http: Option<PlainHttp>,
    /// None: the default (10 s).
    connect_ms: Option<u64>,
}

#[derive(Debug)]
struct PlainHttp {
    /// hyper's bare HTTP/1.1 connections send only the headers given, so the Host header is
    /// made once here. (Over TLS the shared client sets it, as it may speak HTTP/2 there,
    /// where the authority travels as `:authority`.)
    host: HeaderValue,
    pool: Arc<Http1Pool>,
}

impl Target {
    pub fn new(base_url: &str, connect_ms: Option<u64>) -> Target {
        Target {
            plain_http: plain_http_host(base_url).map(|host| PlainHttp {
                host,
                pool: Arc::default(),
            }),
            connect_ms,
        }
    }
}

/// The Host header of a plain-http base URL; None for any other.
fn plain_http_host(base_url: &str) -> Option<HeaderValue> {
    let uri: http::Uri = base_url.parse().ok()?;
    if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
        return None;
    }
    let host = uri.host()?;
    let value = match uri.port_u16() {
        Some(port) if port != 80 => format!("{host}:{port}"),
        _ => host.to_owned(),
    };
    HeaderValue::from_str(&value).ok()
}

/// hyper's client error says little on its own; its sources say what went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_providers_get_their_host_header_made_once() {
        let host = |url: &str| plain_http_host(url).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            host("http://127.0.0.1:18080/v1").as_deref(),
            Some("127.0.0.1:18080")
        );
        assert_eq!(
            host("http://vllm.internal/v1").as_deref(),
            Some("vllm.internal")
        );
        assert_eq!(
            host("http://vllm.internal:80/v1").as_deref(),
            Some("vllm.internal")
        );
        assert_eq!(
            host("http://user:pw@[::1]:8000").as_deref(),
            Some("[::1]:8000")
        );
        assert_eq!(host("https://api.openai.com/v1"), None, "TLS may be HTTP/2");
        assert_eq!(host("mock://mock"), None);
    }
}
