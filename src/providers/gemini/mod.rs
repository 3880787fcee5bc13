//! Google's Gemini API (`{base_url}/v1beta/models/{model}:generateContent`,
//! `:streamGenerateContent?alt=sse`, `:embedContent`, `:batchEmbedContents`), translated to
//! and from the OpenAI format: the request in `request.rs` (its JSON Schemas through
//! `openapi.rs`), a whole answer in `response.rs`, a stream in `stream.rs`, embeddings in
//! `embeddings.rs`, Gemini's own types in `schema.rs`.

mod embeddings;
mod openapi;
mod request;
mod response;
mod schema;
mod stream;

use bytes::Bytes;

use super::{Adapter, Endpoint, JsonObject, Prepared, ReportedUsage, StreamTranslator};
use crate::error::GatewayError;
use crate::registry::Deployment;

/// Google's Gemini API.
pub struct Gemini;

impl Adapter for Gemini {
    fn prepare(
        &self,
        dep: &Deployment,
        endpoint: Endpoint,
        body: &JsonObject,
    ) -> Result<Prepared, GatewayError> {
        prepare(dep, endpoint, body)
    }

    fn read_response(
        &self,
        dep: &Deployment,
        prepared: &Prepared,
        body: Bytes,
    ) -> Result<(Bytes, Option<ReportedUsage>), GatewayError> {
        match prepared.endpoint {
            Endpoint::Embeddings => embeddings::read_response(dep, prepared, &body),
            _ => response::read_response(dep, prepared, &body),
        }
    }

    fn stream_translator(
        &self,
        dep: &Deployment,
        prepared: &Prepared,
    ) -> Box<dyn StreamTranslator> {
        Box::new(stream::Translator::new(dep, prepared))
    }
}

/// Thinking models sign their function calls (`thoughtSignature`) and refuse a later turn
/// that does not send the signature back. OpenAI clients keep nothing but the tool call id,
/// so the signature travels inside it: `call_<random>__thought__<signature>`.
const THOUGHT_SIGNATURE_MARK: &str = "__thought__";

fn tool_call_id(signature: Option<&str>) -> String {
    let id = crate::ids::new_tool_call_id();
    match signature {
        Some(s) if !s.is_empty() => format!("{id}{THOUGHT_SIGNATURE_MARK}{s}"),
        _ => id,
    }
}

fn model_path(dep: &Deployment) -> &str {
    dep.model_id
        .strip_prefix("models/")
        .unwrap_or(&dep.model_id)
}

fn prepare(
    dep: &Deployment,
    endpoint: Endpoint,
    body: &JsonObject,
) -> Result<Prepared, GatewayError> {
    let stream = endpoint == Endpoint::ChatCompletions && body.bool("stream") == Some(true);
    let (method, request) = match endpoint {
        Endpoint::ChatCompletions if stream => {
            ("streamGenerateContent?alt=sse", request::request_body(dep, body)?)
        }
        Endpoint::ChatCompletions => ("generateContent", request::request_body(dep, body)?),
        Endpoint::Embeddings => embeddings::request_body(dep, body)?,
        Endpoint::Completions => {
            return Err(GatewayError::invalid_param(
                "model",
                format!(
                    "`{}` is served by Gemini, which has no legacy completions API; use /v1/chat/completions.",
                    dep.name
                ),
            ))
        }
    };
    let uri: http::Uri = format!(
        "{}/v1beta/models/{}:{method}",
        dep.provider.base_url,
        model_path(dep)
    )
    .parse()
    .map_err(|_| {
        GatewayError::internal(format!(
            "provider {} has a base_url or model_id that does not form a valid URL",
            dep.provider.name
        ))
    })?;
    Ok(Prepared::translated(
        dep,
        endpoint,
        body,
        uri,
        request.to_string(),
        stream,
        &[],
    ))
}

#[cfg(test)]
pub(super) mod tests {
    use serde_json::{json, Value};

    use super::response::tests::{read, RESPONSE};
    use super::stream::tests::{run, STREAM};
    use super::*;
    use crate::config::Api;
    use crate::providers::chat::testing::{assert_same_choices, choices_of, collect};
    use crate::providers::testing::deployment;

    pub(crate) fn dep() -> Deployment {
        deployment(Api::Gemini, "gemini-x")
    }

    fn prepared(body: &str) -> Prepared {
        prepare(
            &dep(),
            Endpoint::ChatCompletions,
            &JsonObject::parse(Bytes::copy_from_slice(body.as_bytes())).unwrap(),
        )
        .unwrap()
    }

    pub(crate) fn translate(body: &str) -> Value {
        let p = prepared(body);
        assert_eq!(p.request.headers["x-goog-api-key"], "sk-test");
        serde_json::from_slice(&p.request.body).unwrap()
    }

    pub(crate) fn translate_err(body: &str) -> GatewayError {
        prepare(
            &dep(),
            Endpoint::ChatCompletions,
            &JsonObject::parse(Bytes::copy_from_slice(body.as_bytes())).unwrap(),
        )
        .unwrap_err()
    }

    #[test]
    fn urls_for_whole_streamed_and_embedding_requests() {
        let p = prepared(r#"{"model":"g","messages":[{"role":"user","content":"x"}]}"#);
        assert_eq!(
            p.request.uri.to_string(),
            "http://gemini.test/v1beta/models/gemini-x:generateContent"
        );
        assert!(!p.stream);
        let p = prepared(
            r#"{"model":"g","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true}}"#,
        );
        assert_eq!(
            p.request.uri.to_string(),
            "http://gemini.test/v1beta/models/gemini-x:streamGenerateContent?alt=sse"
        );
        assert!(p.stream && p.client_wants_usage);
        let d = deployment(Api::Gemini, "models/text-embedding-004");
        let one = prepare(
            &d,
            Endpoint::Embeddings,
            &JsonObject::parse(Bytes::from_static(
                br#"{"model":"e","input":"hi","dimensions":8}"#,
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            one.request.uri.path(),
            "/v1beta/models/text-embedding-004:embedContent"
        );
        let v: Value = serde_json::from_slice(&one.request.body).unwrap();
        assert_eq!(
            v,
            json!({"content":{"parts":[{"text":"hi"}]},"outputDimensionality":8})
        );
        let many = prepare(
            &d,
            Endpoint::Embeddings,
            &JsonObject::parse(Bytes::from_static(br#"{"model":"e","input":["a","b"]}"#)).unwrap(),
        )
        .unwrap();
        assert_eq!(
            many.request.uri.path(),
            "/v1beta/models/text-embedding-004:batchEmbedContents"
        );
        let v: Value = serde_json::from_slice(&many.request.body).unwrap();
        assert_eq!(
            v["requests"][1],
            json!({"model":"models/text-embedding-004","content":{"parts":[{"text":"b"}]}})
        );
        let e = prepare(
            &d,
            Endpoint::Embeddings,
            &JsonObject::parse(Bytes::from_static(br#"{"model":"e","input":[[1,2]]}"#)).unwrap(),
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input"));
    }

    #[test]
    fn thought_signatures_travel_in_the_tool_call_id() {
        let (v, _) = read(
            r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{}},"thoughtSignature":"c2lnbmF0dXJl"}]},"finishReason":"STOP"}]}"#,
        );
        let id = v["choices"][0]["message"]["tool_calls"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            id.starts_with("call_") && id.ends_with("__thought__c2lnbmF0dXJl"),
            "{id}"
        );
        let req = format!(
            r#"{{"model":"g","messages":[{{"role":"user","content":"x"}},
            {{"role":"assistant","tool_calls":[{{"id":"{id}","type":"function","function":{{"name":"f","arguments":"{{}}"}}}}]}},
            {{"role":"tool","tool_call_id":"{id}","content":"ok"}}]}}"#
        );
        let v = translate(&req);
        assert_eq!(
            v["contents"][1]["parts"][0]["thoughtSignature"],
            "c2lnbmF0dXJl"
        );
        assert_eq!(
            v["contents"][2]["parts"][0]["functionResponse"]["name"],
            "f"
        );
    }

    #[test]
    fn streamed_and_whole_answers_agree() {
        let (out, t) = run(STREAM.as_bytes(), false, &[]);
        let c = collect(&out);
        assert!(c.usage.is_none());
        let (whole, u) = read(RESPONSE);
        assert_same_choices(&c.choices, &choices_of(&whole));
        assert_eq!(t.usage().unwrap().tokens, u.unwrap().tokens);
    }
}
