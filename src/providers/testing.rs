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

/// Feeds `stream` cut at `cuts` (as the network may split it), then finishes; returns all
/// the translator wrote.
pub fn feed(t: &mut impl StreamTranslator, stream: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut from = 0;
    for &c in cuts.iter().chain([stream.len()].iter()) {
        out.extend_from_slice(&t.push(Bytes::copy_from_slice(&stream[from..c])));
        from = c;
    }
    out.extend_from_slice(&t.finish());
    out
}

/// A prepared chat request for `body`, streamed when the body says so.
pub fn prepared_for(dep: &Deployment, body: &str, include_usage: bool) -> Prepared {
    let obj = JsonObject::parse(Bytes::copy_from_slice(body.as_bytes())).unwrap();
    let mut p = adapter(dep.provider.api)
        .prepare(dep, Endpoint::ChatCompletions, &obj)
        .unwrap();
    p.client_wants_usage = include_usage;
    p
}
