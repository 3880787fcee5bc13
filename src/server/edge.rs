//! Checks made on a request before anything else, from its headers alone: who may read
//! `/metrics`, and what stops a web page from driving the gateway through a visitor's browser.
//!
//! A page can make a browser send a `text/plain` or form POST anywhere without asking first
//! (a "simple" request), and DNS rebinding can make a name it controls resolve to 127.0.0.1.
//! JSON endpoints therefore take only `application/json` (which a browser sends cross-origin
//! only after a preflight the gateway never grants), and an open gateway (no keys, so nothing
//! else stands in the way) answers only requests addressed to a loopback name and coming from
//! no foreign page.

use std::net::{IpAddr, SocketAddr};

use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};
use http::{HeaderMap, Request, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::cors::Cors;
use crate::config::{Config, MAX_KEY_BYTES};
use crate::error::GatewayError;

/// The header checks of one gateway, fixed at start.
pub struct Edge {
    /// No gateway keys are required: Host and Origin are checked instead.
    open: bool,
    /// Per listener, whether it is open on a loopback address (so a Host must name loopback).
    main_local: bool,
    metrics_local: bool,
    /// `/metrics` is served on the main address (not when it has one of its own).
    pub metrics_on_main_port: bool,
    /// SHA-256 of the bearer token `/metrics` requires.
    metrics_token: Option<[u8; 32]>,
    /// The pages whose browsers may call the API (after the Origin check of an open gateway).
    pub cors: Cors,
}

/// Which listener a request came in on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Main,
    Metrics,
}

impl Edge {
    /// `bound` is the config the listeners were bound with: a reload can change the auth
    /// settings and the token, not the addresses.
    pub fn new(config: &Config, bound: &Config) -> Edge {
        let open = !config.auth.require_api_key;
        let local = |addr: Option<SocketAddr>| open && addr.is_some_and(|a| a.ip().is_loopback());
        Edge {
            open,
            main_local: local(Some(bound.listen_addr())),
            metrics_local: local(bound.metrics_addr()),
            metrics_on_main_port: bound.server.metrics_listen.is_none(),
            metrics_token: config
                .server
                .metrics_token
                .as_ref()
                .map(|t| Sha256::digest(t.as_bytes()).into()),
            cors: Cors::new(&config.server.cors_allowed_origins),
        }
    }

    /// On an open gateway: a loopback `Host` (when it listens on loopback) and no `Origin`
    /// but a loopback one. A request without `Host` (HTTP/1.0) is no browser's.
    pub fn admit<B>(&self, req: &Request<B>, port: Port) -> Result<(), GatewayError> {
        if !self.open {
            return Ok(());
        }
        let local = match port {
            Port::Main => self.main_local,
            Port::Metrics => self.metrics_local,
        };
        let host_header = req.headers().get(HOST).map(|h| h.to_str().map(host_of));
        let hosts = [req.uri().host().map(Ok), host_header];
        if local
            && hosts
                .into_iter()
                .flatten()
                .any(|h| !h.is_ok_and(is_loopback))
        {
            return Err(forbidden(
                "forbidden_host",
                "This gateway runs without API keys, so it answers only requests addressed to \
                 localhost, 127.0.0.1 or [::1] (the Host header); this protects it from web pages \
                 using DNS rebinding. Use one of those names, or require API keys.",
            ));
        }
        if let Some(origin) = req.headers().get(ORIGIN) {
            let uri = http::Uri::try_from(origin.as_bytes()).ok();
            if !uri.as_ref().and_then(|u| u.host()).is_some_and(is_loopback) {
                return Err(forbidden(
                    "forbidden_origin",
                    "This gateway runs without API keys, so it refuses requests from web pages \
                     other than local ones (the Origin header). Require API keys to serve them.",
                ));
            }
        }
        Ok(())
    }

    /// The bearer token `/metrics` requires, when one is configured.
    pub fn metrics_allowed(&self, headers: &HeaderMap) -> Result<(), GatewayError> {
        let Some(token) = &self.metrics_token else {
            return Ok(());
        };
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .filter(|t| t.len() <= MAX_KEY_BYTES);
        // Digests are compared, in constant time: the time taken tells nothing about the token.
        let digest = |t: &str| <[u8; 32]>::from(Sha256::digest(t.as_bytes()));
        match presented {
            Some(t) if bool::from(digest(t).ct_eq(token)) => Ok(()),
            _ => Err(GatewayError::unauthorized(
                "/metrics needs `Authorization: Bearer <token>` with the token set in [server] metrics_token.",
            )),
        }
    }
}

/// JSON endpoints take `application/json` (any parameters, such as a charset), as every
/// OpenAI SDK sends.
pub fn json_content_type(headers: &HeaderMap) -> Result<(), GatewayError> {
    const JSON: &[u8] = b"application/json";
    let value = headers.get(CONTENT_TYPE).map_or(&b""[..], |v| v.as_bytes());
    let is_json = value.len() >= JSON.len()
        && value[..JSON.len()].eq_ignore_ascii_case(JSON)
        && matches!(value.get(JSON.len()), None | Some(b';' | b' ' | b'\t'));
    if is_json {
        return Ok(());
    }
    Err(GatewayError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "invalid_request_error",
        "The request body must be JSON, sent with `Content-Type: application/json`.",
    )
    .code("unsupported_media_type"))
}

fn forbidden(code: &'static str, message: &str) -> GatewayError {
    GatewayError::new(StatusCode::FORBIDDEN, "invalid_request_error", message).code(code)
}

/// The host of a `Host` header value (`name`, `name:port`, `[v6]:port`), brackets kept as
/// `Uri::host` keeps them.
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

fn is_loopback(host: &str) -> bool {
    let ip = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost") || ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let cases = [
            (Some("application/json"), true),
            (Some("application/json; charset=utf-8"), true),
            (Some("Application/JSON;charset=UTF-8"), true),
            (Some("application/json-patch+json"), false),
            (Some("application/jsonx"), false),
            (Some("text/plain"), false),
            (Some("text/plain; charset=utf-8"), false),
            (Some("application/x-www-form-urlencoded"), false),
            (Some("multipart/form-data; boundary=x"), false),
            (None, false),
        ];
        for (value, ok) in cases {
            let mut h = HeaderMap::new();
            if let Some(v) = value {
                h.insert(CONTENT_TYPE, v.parse().unwrap());
            }
            let r = json_content_type(&h);
            assert_eq!(r.is_ok(), ok, "{value:?}");
            if let Err(e) = r {
                assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
                assert_eq!(e.code, Some("unsupported_media_type"));
            }
        }
    }

    #[test]
    fn hosts() {
        for (authority, host, loopback) in [
            ("localhost", "localhost", true),
            ("LOCALHOST:8080", "LOCALHOST", true),
            ("127.0.0.1:8080", "127.0.0.1", true),
            ("127.3.2.1", "127.3.2.1", true),
            ("[::1]:8080", "[::1]", true),
            ("[::1]", "[::1]", true),
            ("evil.example:8080", "evil.example", false),
            ("localhost.evil.example", "localhost.evil.example", false),
            ("10.0.0.5:8080", "10.0.0.5", false),
            ("[::2]:80", "[::2]", false),
            ("", "", false),
        ] {
            assert_eq!(host_of(authority), host, "{authority}");
            assert_eq!(is_loopback(host_of(authority)), loopback, "{authority}");
        }
    }
}
