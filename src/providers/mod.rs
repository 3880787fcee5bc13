//! Provider adapters: pure translations between the OpenAI wire format clients speak and
//! each provider's own. An adapter never touches the network: `prepare` turns a client
//! request into an upstream request, `read_response` turns a whole upstream body into the
//! client's body plus usage, and a `StreamTranslator` does the same chunk by chunk.

pub mod body;
pub mod mock;
pub mod openai;

pub use body::{JsonObject, Kind};

use bytes::Bytes;
use http::HeaderMap;

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

    pub fn can_stream(self) -> bool {
        !matches!(self, Endpoint::Embeddings)
    }
}

/// An upstream request ready for the HTTP client.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub uri: http::Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A prepared attempt: the request, and what reading its answer needs to know.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub request: UpstreamRequest,
    pub stream: bool,
    /// The client asked for the usage chunk itself (`stream_options.include_usage`).
    pub client_wants_usage: bool,
}

/// Usage as the provider reported it: normalised tokens plus the raw JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedUsage {
    pub tokens: TokenUsage,
    pub raw: String,
}

pub fn prepare(
    dep: &Deployment,
    endpoint: Endpoint,
    body: &JsonObject,
) -> Result<Prepared, GatewayError> {
    match dep.provider.api {
        Api::Openai | Api::Azure | Api::Mock => openai::prepare(dep, endpoint, body),
        Api::Anthropic | Api::Gemini => Err(GatewayError::new(
            http::StatusCode::NOT_IMPLEMENTED,
            "invalid_request_error",
            format!(
                "provider {} uses the {} API, which this version of Tollgate cannot translate yet",
                dep.provider.name,
                dep.provider.api.as_str()
            ),
        )),
    }
}

/// Reads a whole (non-streamed) successful upstream body.
pub fn read_response(
    _dep: &Deployment,
    body: Bytes,
) -> Result<(Bytes, Option<ReportedUsage>), GatewayError> {
    openai::read_response(body)
}

/// Turns upstream stream chunks into client stream chunks and picks up usage on the way.
pub enum StreamTranslator {
    OpenAi(openai::PassThrough),
}

impl StreamTranslator {
    pub fn new(_dep: &Deployment, prepared: &Prepared) -> StreamTranslator {
        StreamTranslator::OpenAi(openai::PassThrough::new(!prepared.client_wants_usage))
    }

    /// What to send the client for this upstream chunk (possibly nothing yet).
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        match self {
            StreamTranslator::OpenAi(t) => t.push(chunk),
        }
    }

    /// What is left to send when the upstream stream ended.
    pub fn finish(&mut self) -> Bytes {
        match self {
            StreamTranslator::OpenAi(t) => t.finish(),
        }
    }

    pub fn usage(&self) -> Option<&ReportedUsage> {
        match self {
            StreamTranslator::OpenAi(t) => t.usage(),
        }
    }
}
