//! The same request answered whole and streamed must give the same final message, the same
//! usage and the same cost, through every adapter. The mock model answers each wire format
//! the same way, so one table of requests covers OpenAI, Anthropic and Gemini, with the
//! streams fed to the translators in pieces of every size.

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;

use super::chat::testing::{assert_same_choices, choices_of, collect};
use super::testing::deployment;
use super::{adapter, Endpoint, JsonObject};
use crate::config::Api;
use crate::mock::{self, MockOptions};

const REQUESTS: &[&str] = &[
    r#"{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Say hello to the world"}]}"#,
    r#"{"model":"m","messages":[{"role":"user","content":"Héllo wörld 😀, 日本語"}],"max_tokens":3}"#,
    r#"{"model":"m","messages":[{"role":"user","content":"Weather in Paris?"}],
        "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]}"#,
    r#"{"model":"m","messages":[{"role":"user","content":"Weather in Paris?"},
        {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
        {"role":"tool","tool_call_id":"call_1","content":"18C and sunny"}],
        "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]}"#,
];

async fn upstream(path: &str, body: Bytes) -> Bytes {
    let resp = mock::respond(path, body, &MockOptions::default()).await;
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap().to_bytes()
}

fn with_stream(request: &str) -> String {
    let mut v: Value = serde_json::from_str(request).unwrap();
    v["stream"] = true.into();
    v["stream_options"] = serde_json::json!({"include_usage": true});
    v.to_string()
}

#[tokio::test]
async fn streamed_and_whole_answers_have_the_same_message_usage_and_cost() {
    for api in [Api::Openai, Api::Anthropic, Api::Gemini] {
        let dep = deployment(api, "mock-model");
        for request in REQUESTS {
            let whole_req = JsonObject::parse(Bytes::copy_from_slice(request.as_bytes())).unwrap();
            let p = adapter(api)
                .prepare(&dep, Endpoint::ChatCompletions, &whole_req)
                .unwrap();
            let body = upstream(p.request.uri.path(), p.request.body.clone()).await;
            let (client_body, usage) = adapter(api).read_response(&dep, &p, body).unwrap();
            let whole: Value = serde_json::from_slice(&client_body).unwrap();
            let usage = usage.expect("the mock reports usage");
            assert!(!usage.estimated, "{api:?}");

            let stream_req = JsonObject::parse(Bytes::from(with_stream(request))).unwrap();
            let sp = adapter(api)
                .prepare(&dep, Endpoint::ChatCompletions, &stream_req)
                .unwrap();
            assert!(sp.stream && sp.client_wants_usage);
            let sse = upstream(sp.request.uri.path(), sp.request.body.clone()).await;
            // whole, and in pieces of 1, 7 and 64 bytes
            for piece in [sse.len().max(1), 1, 7, 64] {
                let mut t = adapter(api).stream_translator(&dep, &sp);
                let mut out = Vec::new();
                for c in sse.chunks(piece) {
                    out.extend_from_slice(&t.push(Bytes::copy_from_slice(c)));
                }
                out.extend_from_slice(&t.finish());
                let streamed = collect(&out);
                let what = format!("{api:?} {request} in pieces of {piece}");
                assert!(streamed.done, "{what}");
                assert_same_choices(&streamed.choices, &choices_of(&whole));
                let su = t.usage().unwrap();
                assert!(!su.estimated, "{what}");
                assert_eq!(su.tokens, usage.tokens, "{what}");
                assert_eq!(dep.prices.cost(&su.tokens), dep.prices.cost(&usage.tokens));
                // what the client sees agrees too
                assert_eq!(
                    streamed.usage.as_ref().unwrap()["total_tokens"],
                    whole["usage"]["total_tokens"],
                    "{what}"
                );
            }
            let expect_tools = request.contains("\"tools\"") && !request.contains("\"tool\"");
            assert_eq!(
                whole["choices"][0]["finish_reason"] == "tool_calls",
                expect_tools,
                "{api:?} {request}"
            );
        }
    }
}

#[tokio::test]
async fn mock_misbehaviour_reaches_every_adapter_in_its_own_shape() {
    let request = r#"{"model":"m","messages":[{"role":"user","content":"hello there world"}]}"#;
    for api in [Api::Openai, Api::Anthropic, Api::Gemini] {
        // mid-stream error: content, then an OpenAI error event, no [DONE]
        let dep = deployment(api, "mock-stream-error");
        let req = JsonObject::parse(Bytes::from(with_stream(request))).unwrap();
        let p = adapter(api)
            .prepare(&dep, Endpoint::ChatCompletions, &req)
            .unwrap();
        let sse = upstream(p.request.uri.path(), p.request.body.clone()).await;
        let mut t = adapter(api).stream_translator(&dep, &p);
        let mut out = t.push(sse).to_vec();
        out.extend_from_slice(&t.finish());
        let c = collect(&out);
        assert!(!c.done, "{api:?}");
        assert_eq!(c.errors.len(), 1, "{api:?}");
        assert!(t.usage().unwrap().estimated, "{api:?}");

        // cut stream: no [DONE], estimated usage
        let dep = deployment(api, "mock-cut");
        let p = adapter(api)
            .prepare(&dep, Endpoint::ChatCompletions, &req)
            .unwrap();
        let sse = upstream(p.request.uri.path(), p.request.body.clone()).await;
        let mut t = adapter(api).stream_translator(&dep, &p);
        let mut out = t.push(sse).to_vec();
        out.extend_from_slice(&t.finish());
        assert!(!collect(&out).done, "{api:?}");
        let u = t.usage().unwrap();
        assert!(u.estimated && u.tokens.input > 0, "{api:?}");

        // error statuses carry the provider's own error body, with a message at /error/message
        let dep = deployment(api, "mock-status-529");
        let whole = JsonObject::parse(Bytes::from_static(request.as_bytes())).unwrap();
        let p = adapter(api)
            .prepare(&dep, Endpoint::ChatCompletions, &whole)
            .unwrap();
        let mut body: Value = serde_json::from_str(request).unwrap();
        body["model"] = "mock-status-529".into();
        let resp = mock::respond(
            p.request.uri.path(),
            p.request.body.clone(),
            &MockOptions::default(),
        )
        .await;
        assert_eq!(resp.status(), 529);
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert!(v.pointer("/error/message").is_some(), "{api:?} {v}");
    }
}

#[tokio::test]
async fn gemini_embeddings_through_the_mock() {
    let mut dep = deployment(Api::Gemini, "text-embedding-004");
    dep.model_type = crate::registry::ModelType::Embedding;
    for input in [r#""hello world""#, r#"["hello world","again"]"#] {
        let req =
            JsonObject::parse(Bytes::from(format!(r#"{{"model":"e","input":{input}}}"#))).unwrap();
        let p = adapter(Api::Gemini)
            .prepare(&dep, Endpoint::Embeddings, &req)
            .unwrap();
        let body = upstream(p.request.uri.path(), p.request.body.clone()).await;
        let (out, usage) = adapter(Api::Gemini).read_response(&dep, &p, body).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let n = if input.starts_with('[') { 2 } else { 1 };
        assert_eq!(v["data"].as_array().unwrap().len(), n);
        assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
        assert!(usage.unwrap().estimated);
    }
}
