//! Provider adapters: pure translations between the OpenAI wire format clients speak and
//! each provider's own. An [`Adapter`] never touches the network: `prepare` turns a client
//! request into an upstream request, `read_response` turns a whole upstream body into the
//! client's body plus usage, and its [`StreamTranslator`] does the same chunk by chunk.
//! [`adapter`] picks the one for a provider's `api`; nothing else matches on it.

pub mod anthropic;
pub mod body;
pub mod chat;
pub mod estimate;
pub mod gemini;
pub mod openai;

#[cfg(test)]
mod equivalence_tests;
#[cfg(test)]
pub(crate) mod testing;

pub use body::{JsonObject, Kind};

use bytes::Bytes;

use crate::config::Api;
use crate::error::GatewayError;
use crate::metering::TokenUsage;
use crate::registry::Deployment;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
}

impl Endpoint {
    /// The name used in usage rows and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat.completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
        }
    }

    /// The path below an OpenAI-style base URL (`.../v1`).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
        }
    }

    /// How many endpoints there are, and this one's place among them (for per-endpoint caches).
    pub const COUNT: usize = 3;
    pub fn index(self) -> usize {
        match self {
            Endpoint::ChatCompletions => 0,
            Endpoint::Completions => 1,
            Endpoint::Embeddings => 2,
        }
    }

    pub fn can_stream(self) -> bool {
        !matches!(self, Endpoint::Embeddings)
    }
}

pub use crate::upstream::UpstreamRequest;

/// A prepared attempt: the request, and what reading its answer needs to know.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub request: UpstreamRequest,
    pub stream: bool,
    /// The client asked for the usage chunk itself (`stream_options.include_usage`).
    pub client_wants_usage: bool,
    pub endpoint: Endpoint,
    /// The client's request body (a shared handle, not a copy), read again only to count
    /// prompt tokens when the provider reports none.
    pub client_body: Bytes,
}

impl Prepared {
    /// A request translated into another provider's JSON: the provider's key, `accept` for
    /// an event stream when streaming, and `extra` headers of its API.
    pub(crate) fn translated(
        dep: &Deployment,
        endpoint: Endpoint,
        client: &JsonObject,
        uri: http::Uri,
        body: String,
        stream: bool,
        extra: &[(&'static str, &'static str)],
    ) -> Prepared {
        let mut headers = http::HeaderMap::with_capacity(3 + extra.len());
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        for (name, value) in extra {
            headers.insert(*name, http::HeaderValue::from_static(value));
        }
        if stream {
            headers.insert(
                http::header::ACCEPT,
                http::HeaderValue::from_static("text/event-stream"),
            );
        }
        if let Some((name, value)) = &dep.provider.auth_header {
            headers.insert(name.clone(), value.clone());
        }
        Prepared {
            request: UpstreamRequest {
                uri,
                headers,
                body: Bytes::from(body),
            },
            stream,
            client_wants_usage: stream && chat::client_wants_usage(client),
            endpoint,
            client_body: client.bytes().clone(),
        }
    }
}

/// Usage as the provider reported it: normalised tokens plus the raw JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedUsage {
    pub tokens: TokenUsage,
    pub raw: String,
    /// Counted by the gateway's tokenizer because the provider reported none (or not all).
    pub estimated: bool,
}

/// The largest single stream event a provider may send (a line of `data:` without its blank
/// line is buffered until it ends). One larger ends the stream with an error event: the
/// gateway does not buffer without bound for a provider that never ends an event.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// The most choices (Gemini candidates) or content blocks (Anthropic) a stream may address:
/// state is kept per index, so an index from the provider is checked before it is used.
pub const MAX_STREAM_INDEX: usize = 1024;

/// One provider's wire format.
pub trait Adapter: Sync {
    /// The upstream request for a client's request to `endpoint`; a request the provider
    /// cannot serve is refused here, before anything is sent.
    fn prepare(
        &self,
        dep: &Deployment,
        endpoint: Endpoint,
        body: &JsonObject,
    ) -> Result<Prepared, GatewayError>;

    /// Reads a whole (non-streamed) successful upstream body: the client's body and the
    /// usage (the provider's, else an estimate).
    fn read_response(
        &self,
        dep: &Deployment,
        prepared: &Prepared,
        body: Bytes,
    ) -> Result<(Bytes, Option<ReportedUsage>), GatewayError>;

    /// The translator for one streamed answer (one allocation per stream).
    fn stream_translator(&self, dep: &Deployment, prepared: &Prepared)
        -> Box<dyn StreamTranslator>;
}

/// Turns upstream stream chunks into client stream chunks and picks up usage on the way.
pub trait StreamTranslator: Send {
    /// What to send the client for this upstream chunk (possibly nothing yet).
    fn push(&mut self, chunk: Bytes) -> Bytes;

    /// What is left to send when the upstream stream ended.
    fn finish(&mut self) -> Bytes;

    /// The usage to record: the provider's, or an estimate when it reported none or the
    /// stream ended early (counted only then).
    fn usage(&self) -> Option<ReportedUsage>;

    /// Set when the provider reported an error inside the stream, or the stream broke a
    /// limit (told to the client as an error event; the stream ends there).
    fn error_type(&self) -> Option<&'static str>;
}

/// The adapter for a provider's API. Azure and the mock speak OpenAI's format.
pub fn adapter(api: Api) -> &'static dyn Adapter {
    match api {
        Api::Openai | Api::Azure | Api::Mock => &openai::OpenAi,
        Api::Anthropic => &anthropic::Anthropic,
        Api::Gemini => &gemini::Gemini,
    }
}
