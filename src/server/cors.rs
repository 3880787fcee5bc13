//! CORS for browser dashboards (`[server] cors_allowed_origins`): which web pages may call
//! `/v1/*` and `/api/v1/*` from a visitor's browser. Off by default (an empty list): no CORS
//! headers at all, and a preflight is an unknown route, as before.
//!
//! Callers authenticate with bearer tokens, never cookies, so credentials are never allowed
//! (`access-control-allow-credentials` is never sent): a page can only use a key it holds.
//! The origin is echoed rather than `*`, with `vary: origin`, so caches keep answers apart.
//! On an open gateway (no keys) the edge's Origin check runs first and still refuses every
//! page but a local one, whatever this list says: there, nothing else guards the providers.

use http::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ORIGIN, VARY,
};
use http::{HeaderMap, Method, Response, StatusCode};

use crate::error::GatewayError;
use crate::proxy::{full, ClientBody};

/// Headers a page may send when its preflight names none (the SDKs' own, mirrored, otherwise).
const ALLOW_HEADERS: &str = "authorization, content-type, x-request-id, x-tollgate-cache";
/// Headers a page may read from an answer: its id and the limits' state.
const EXPOSE_HEADERS: &str = "x-request-id, retry-after, x-ratelimit-limit-requests, \
    x-ratelimit-limit-tokens, x-ratelimit-remaining-requests, x-ratelimit-remaining-tokens, \
    x-ratelimit-reset-requests, x-ratelimit-reset-tokens";
/// How long a browser may reuse a preflight's answer, in seconds.
const MAX_AGE: &str = "600";

/// The origins allowed, as the config lists them.
#[derive(Default)]
pub struct Cors {
    origins: Vec<String>,
    any: bool,
}

impl Cors {
    pub fn new(origins: &[String]) -> Cors {
        Cors {
            any: origins.iter().any(|o| o == "*"),
            origins: origins.to_vec(),
        }
    }

    /// Whether CORS is configured at all; when not, nothing here runs.
    pub fn is_on(&self) -> bool {
        !self.origins.is_empty()
    }

    /// CORS covers the OpenAI API and the dashboard API, not `/admin` nor ops endpoints.
    pub fn covers(path: &str) -> bool {
        path.starts_with("/v1/") || path.starts_with("/api/v1/")
    }

    /// The request's `Origin` when it is an allowed one.
    fn allowed<'h>(&self, origin: Option<&'h HeaderValue>) -> Option<&'h HeaderValue> {
        let origin = origin?;
        let listed = self
            .origins
            .iter()
            .any(|o| o.as_bytes() == origin.as_bytes());
        (self.any || listed).then_some(origin)
    }

    /// The answer to a preflight (`OPTIONS`): 204 with what the page may do, or 403 without
    /// any CORS header for an origin not listed.
    pub fn preflight(&self, headers: &HeaderMap) -> Result<Response<ClientBody>, GatewayError> {
        let Some(origin) = self.allowed(headers.get(ORIGIN)) else {
            return Err(GatewayError::new(
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                "This origin is not in the gateway's [server] cors_allowed_origins.",
            )
            .code("cors_origin_not_allowed"));
        };
        let mut resp = Response::new(full(bytes::Bytes::new()));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let allow_headers = headers
            .get(ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or(HeaderValue::from_static(ALLOW_HEADERS));
        let h = resp.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        // PUT and DELETE: a dashboard renames, cancels and deletes its tasks.
        h.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
        );
        h.insert(ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
        h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
        h.insert(VARY, HeaderValue::from_static("origin"));
        Ok(resp)
    }

    /// An actual answer to an allowed origin says so; others are left as they are (the
    /// browser then keeps the answer from the page).
    pub fn decorate(&self, origin: Option<&HeaderValue>, resp: &mut Response<ClientBody>) {
        let Some(origin) = self.allowed(origin) else {
            return;
        };
        let h = resp.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
        h.append(VARY, HeaderValue::from_static("origin"));
    }

    /// Whether this request is a preflight CORS answers.
    pub fn is_preflight(&self, method: &Method, path: &str) -> bool {
        self.is_on() && method == Method::OPTIONS && Cors::covers(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_origin(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, origin.parse().unwrap());
        h
    }

    #[test]
    fn only_listed_origins_are_echoed_and_credentials_never_allowed() {
        let cors = Cors::new(&["https://dash.example.com".into()]);
        let ok = cors
            .preflight(&with_origin("https://dash.example.com"))
            .unwrap();
        assert_eq!(ok.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            ok.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://dash.example.com"
        );
        assert!(!ok
            .headers()
            .contains_key("access-control-allow-credentials"));
        for refused in [
            "https://dash.example.com.evil",
            "http://dash.example.com",
            "null",
        ] {
            assert!(cors.preflight(&with_origin(refused)).is_err(), "{refused}");
        }
        assert!(cors.preflight(&HeaderMap::new()).is_err());
        let any = Cors::new(&["*".into()]);
        let ok = any.preflight(&with_origin("https://a.example")).unwrap();
        assert_eq!(
            ok.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://a.example"
        );
        assert!(!Cors::new(&[]).is_preflight(&Method::OPTIONS, "/v1/models"));
        assert!(any.is_preflight(&Method::OPTIONS, "/api/v1/llm/query"));
        assert!(!any.is_preflight(&Method::OPTIONS, "/admin/keys"));
    }
}
