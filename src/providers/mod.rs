//! Provider adapters: pure translations between the OpenAI wire format clients speak and
//! each provider's own. An adapter never touches the network: `prepare` turns a client
//! request into an upstream request, `read_response` turns a whole upstream body into the
//! client's body plus usage, and a `StreamTranslator` does the same chunk by chunk.

pub mod anthropic;
pub mod body;
pub mod chat;
pub mod estimate;
pub mod gemini;
pub mod mock;
pub mod openai;

#[cfg(test)]
mod equivalence_tests;

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

/// Usage as the provider reported it: normalised tokens plus the raw JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedUsage {
    pub tokens: TokenUsage,
    pub raw: String,
    /// Counted by the gateway's tokenizer because the provider reported none (or not all).
    pub estimated: bool,
}

pub fn prepare(
    dep: &Deployment,
    endpoint: Endpoint,
    body: &JsonObject,
) -> Result<Prepared, GatewayError> {
    match dep.provider.api {
        Api::Openai | Api::Azure | Api::Mock => openai::prepare(dep, endpoint, body),
        Api::Anthropic => anthropic::prepare(dep, endpoint, body),
        Api::Gemini => gemini::prepare(dep, endpoint, body),
    }
}

/// Reads a whole (non-streamed) successful upstream body: the client's body and the usage
/// (the provider's, else an estimate).
pub fn read_response(
    dep: &Deployment,
    prepared: &Prepared,
    body: Bytes,
) -> Result<(Bytes, Option<ReportedUsage>), GatewayError> {
    match dep.provider.api {
        Api::Openai | Api::Azure | Api::Mock => openai::read_response(dep, prepared, body),
        Api::Anthropic => anthropic::read_response(dep, prepared, &body),
        Api::Gemini => gemini::read_response(dep, prepared, &body),
    }
}

/// The largest single stream event a provider may send (a line of `data:` without its blank
/// line is buffered until it ends). One larger ends the stream with an error event: the
/// gateway does not buffer without bound for a provider that never ends an event.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// The most choices (Gemini candidates) or content blocks (Anthropic) a stream may address:
/// state is kept per index, so an index from the provider is checked before it is used.
pub const MAX_STREAM_INDEX: usize = 1024;

/// Turns upstream stream chunks into client stream chunks and picks up usage on the way.
pub enum StreamTranslator {
    OpenAi(openai::PassThrough),
    Anthropic(anthropic::Translator),
    Gemini(gemini::Translator),
}

impl StreamTranslator {
    pub fn new(dep: &Deployment, prepared: &Prepared) -> StreamTranslator {
        match dep.provider.api {
            Api::Openai | Api::Azure | Api::Mock => {
                StreamTranslator::OpenAi(openai::PassThrough::new(dep, prepared))
            }
            Api::Anthropic => {
                StreamTranslator::Anthropic(anthropic::Translator::new(dep, prepared))
            }
            Api::Gemini => StreamTranslator::Gemini(gemini::Translator::new(dep, prepared)),
        }
    }

    /// What to send the client for this upstream chunk (possibly nothing yet).
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        match self {
            StreamTranslator::OpenAi(t) => t.push(chunk),
            StreamTranslator::Anthropic(t) => t.push(&chunk),
            StreamTranslator::Gemini(t) => t.push(&chunk),
        }
    }

    /// What is left to send when the upstream stream ended.
    pub fn finish(&mut self) -> Bytes {
        match self {
            StreamTranslator::OpenAi(t) => t.finish(),
            StreamTranslator::Anthropic(t) => t.finish(),
            StreamTranslator::Gemini(t) => t.finish(),
        }
    }

    /// The usage to record: the provider's, or an estimate when it reported none or the
    /// stream ended early (counted only then).
    pub fn usage(&self) -> Option<ReportedUsage> {
        match self {
            StreamTranslator::OpenAi(t) => t.usage(),
            StreamTranslator::Anthropic(t) => t.usage(),
            StreamTranslator::Gemini(t) => t.usage(),
        }
    }

    /// Set when the provider reported an error inside the stream, or the stream broke a
    /// limit (told to the client as an error event; the stream ends there).
    pub fn error_type(&self) -> Option<&'static str> {
        match self {
            StreamTranslator::OpenAi(t) => t.error_type(),
            StreamTranslator::Anthropic(t) => t.error_type(),
            StreamTranslator::Gemini(t) => t.error_type(),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Deployments and prepared requests for adapter tests.

    use std::sync::Arc;

    use super::*;
    use crate::registry::{ModelType, Provider};

    pub fn deployment(api: Api, model_id: &str) -> Deployment {
        let (base_url, header) = match api {
            Api::Anthropic => ("http://anthropic.test", "x-api-key"),
            Api::Gemini => ("http://gemini.test", "x-goog-api-key"),
            Api::Azure => ("https://res.openai.azure.com", "api-key"),
            _ => ("http://openai.test/v1", "authorization"),
        };
        let value = if header == "authorization" {
            "Bearer sk-test"
        } else {
            "sk-test"
        };
        Deployment {
            id: "dep-1".into(),
            name: "public-name".into(),
            display_name: "Public".into(),
            model_id: model_id.into(),
            provider: Arc::new(Provider {
                id: "prov-1".into(),
                name: api.as_str().into(),
                api,
                base_url: base_url.into(),
                api_version: (api == Api::Azure).then(|| "2024-10-21".to_owned()),
                auth_header: Some((
                    http::HeaderName::from_static(header),
                    http::HeaderValue::from_static(value),
                )),
                target: Default::default(),
                queue_timeout_ms: 0,
                timeouts: Default::default(),
                limits: Arc::new(crate::limits::LimitSet::new("provider", Default::default())),
            }),
            model_type: ModelType::Chat,
            prices: crate::metering::Prices {
                input: "3".parse().unwrap(),
                output: "15".parse().unwrap(),
                cache_read: "0.3".parse().unwrap(),
                cache_write: "3.75".parse().unwrap(),
            },
            parameters: Default::default(),
            context_window: Some(200_000),
            max_output_tokens: Some(1000),
            supports_streaming: Some(true),
            supports_json: Some(true),
            supports_tools: Some(true),
            supports_vision: Some(true),
            priority: 0,
            weight: 1,
            created_unix: 0,
            limits: None,
            health: Arc::new(crate::registry::Health::new(Default::default())),
            upstream_uris: Default::default(),
        }
    }

    /// A stream translator, for feeding recorded streams in pieces.
    pub trait Translate {
        fn push(&mut self, chunk: &[u8]) -> Bytes;
        fn finish(&mut self) -> Bytes;
    }

    impl Translate for super::anthropic::Translator {
        fn push(&mut self, chunk: &[u8]) -> Bytes {
            super::anthropic::Translator::push(self, chunk)
        }
        fn finish(&mut self) -> Bytes {
            super::anthropic::Translator::finish(self)
        }
    }

    impl Translate for super::gemini::Translator {
        fn push(&mut self, chunk: &[u8]) -> Bytes {
            super::gemini::Translator::push(self, chunk)
        }
        fn finish(&mut self) -> Bytes {
            super::gemini::Translator::finish(self)
        }
    }

    /// Feeds `stream` cut at `cuts` (as the network may split it), then finishes; returns all
    /// the translator wrote.
    pub fn feed(t: &mut impl Translate, stream: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut from = 0;
        for &c in cuts.iter().chain([stream.len()].iter()) {
            out.extend_from_slice(&t.push(&stream[from..c]));
            from = c;
        }
        out.extend_from_slice(&t.finish());
        out
    }

    /// A prepared chat request for `body`, streamed when the body says so.
    pub fn prepared_for(dep: &Deployment, body: &str, include_usage: bool) -> Prepared {
        let obj = JsonObject::parse(Bytes::copy_from_slice(body.as_bytes())).unwrap();
        let mut p = prepare(dep, Endpoint::ChatCompletions, &obj).unwrap();
        p.client_wants_usage = include_usage;
        p
    }
}
