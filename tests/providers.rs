//! End to end through the gateway: OpenAI-format requests to models served by Anthropic,
//! Gemini and Azure deployments, answered by `MockUpstream` on 127.0.0.1, with the usage rows
//! checked in a SQLite database.

use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tollgate::config::Config;
use tollgate::mock::MockUpstream;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn config(mock: SocketAddr, db: &Path) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[database]
url = "sqlite://{db}?mode=rwc"

[auth]
require_api_key = false

[[providers]]
name = "claude"
api = "anthropic"
base_url = "http://{mock}"
api_key = "sk-ant-test"

[[providers]]
name = "google"
api = "gemini"
base_url = "http://{mock}"
api_key = "g-test"

[[providers]]
name = "az"
api = "azure"
base_url = "http://{mock}"
api_key = "az-test"
api_version = "2024-10-21"

[[models]]
name = "claude-chat"
provider = "claude"
model_id = "claude-mock"
supports_vision = true
cost_input_per_million = "3"
cost_output_per_million = "15"
max_output_tokens = 64

[[models]]
name = "gemini-chat"
provider = "google"
model_id = "gemini-mock"
supports_vision = true
cost_input_per_million = "1"
cost_output_per_million = "2"

[[models]]
name = "gemini-embed"
provider = "google"
model_id = "text-embedding-mock"
model_type = "embedding"
cost_input_per_million = "0.1"
cost_output_per_million = "0"

[[models]]
name = "claude-embed"
provider = "claude"
model_id = "claude-embed"
model_type = "embedding"
cost_input_per_million = "0.1"
cost_output_per_million = "0"

[[models]]
name = "azure-chat"
provider = "az"
model_id = "my-deployment"
cost_input_per_million = "1"
cost_output_per_million = "1"
"#,
        db = db.display()
    )
}

async fn post(client: &HttpClient, gw: SocketAddr, path: &str, body: Value) -> (u16, Bytes) {
    let req = http::Request::post(format!("http://{gw}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

fn sse_events(body: &[u8]) -> Vec<String> {
    let mut p = sse_parse::SseParser::new();
    p.feed(body);
    p.finish();
    std::iter::from_fn(|| p.next_event().map(|e| e.data)).collect()
}

#[tokio::test]
async fn anthropic_gemini_and_azure_through_the_gateway() {
    let mock = MockUpstream {
        record: true,
        ..Default::default()
    };
    let received = mock.clone();
    let mock_addr = mock.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let loaded = Config::from_str_at(&config(mock_addr, &dir.path().join("t.db")), &path).unwrap();
    let running = tollgate::server::start(loaded).await.unwrap();
    let gw = running.addr;
    let gateway = running.app.gateway.clone();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // Anthropic, whole answer: OpenAI shape out, Anthropic headers and body upstream.
    let (status, body) = post(&client, gw, "/v1/chat/completions", json!({
        "model": "claude-chat",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]
    })).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 4);
    let sent = received.received().pop().unwrap();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.headers["x-api-key"], "sk-ant-test");
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert_eq!(sent.json()["max_tokens"], 64);
    assert_eq!(sent.json()["system"][0]["text"], "Be brief.");

    // Anthropic, streamed tool call, then the tool round trip.
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let (status, body) = post(
        &client,
        gw,
        "/v1/chat/completions",
        json!({
            "model": "claude-chat", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": tools
        }),
    )
    .await;
    assert_eq!(status, 200);
    let events = sse_events(&body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let all = events.join("\n");
    assert!(all.contains("\"finish_reason\":\"tool_calls\""), "{all}");
    assert!(all.contains("\"id\":\"toolu_mock0\""), "{all}");
    let (status, body) = post(&client, gw, "/v1/chat/completions", json!({
        "model": "claude-chat", "tools": tools,
        "messages": [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "toolu_mock0", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"mock\"}"}}]},
            {"role": "tool", "tool_call_id": "toolu_mock0", "content": "18C"}]
    })).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    // Gemini, streamed with an image part: [DONE] is added, usage chunk only when asked.
    let (status, body) = post(
        &client,
        gw,
        "/v1/chat/completions",
        json!({
            "model": "gemini-chat", "stream": true,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]
        }),
    )
    .await;
    assert_eq!(status, 200);
    let events = sse_events(&body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert!(
        !events.iter().any(|e| e.contains("\"choices\":[]")),
        "no usage chunk unless asked"
    );
    let sent = received.received().pop().unwrap();
    assert_eq!(
        sent.path,
        "/v1beta/models/gemini-mock:streamGenerateContent"
    );
    assert_eq!(sent.headers["x-goog-api-key"], "g-test");
    assert_eq!(
        sent.json()["contents"][0]["parts"][1]["inlineData"]["mimeType"],
        "image/png"
    );

    // Gemini embeddings, and a clear 400 for an embedding model behind Anthropic.
    let (status, body) = post(
        &client,
        gw,
        "/v1/embeddings",
        json!({"model": "gemini-embed", "input": ["a b", "c"]}),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    let (status, body) = post(
        &client,
        gw,
        "/v1/embeddings",
        json!({"model": "claude-embed", "input": "x"}),
    )
    .await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["param"], "model");

    // Azure: deployment URL with api-version and the api-key header.
    let (status, _) = post(
        &client,
        gw,
        "/v1/chat/completions",
        json!({
            "model": "azure-chat", "messages": [{"role": "user", "content": "hi"}]
        }),
    )
    .await;
    assert_eq!(status, 200);
    let sent = received.received().pop().unwrap();
    assert_eq!(
        sent.path,
        "/openai/deployments/my-deployment/chat/completions"
    );
    assert_eq!(sent.headers["api-key"], "az-test");

    running.stop().await;
    let rows = gateway
        .db
        .fetch_all("SELECT endpoint, status_code, usage_source, input_tokens, output_tokens FROM llm_usage_logs ORDER BY created_at", &[])
        .await
        .unwrap();
    let sources: Vec<(String, i64, String)> = rows
        .iter()
        .map(|r| {
            (
                r.text("endpoint").unwrap(),
                r.int("status_code").unwrap(),
                r.text("usage_source").unwrap(),
            )
        })
        .collect();
    assert_eq!(sources.len(), 7, "{sources:?}");
    let count = |src: &str| sources.iter().filter(|s| s.2 == src).count();
    assert_eq!(count("provider"), 5, "{sources:?}");
    assert_eq!(
        count("estimated"),
        1,
        "Gemini embeddings are counted: {sources:?}"
    );
    assert!(rows
        .iter()
        .all(|r| r.int("status_code").unwrap() != 200 || r.int("input_tokens").unwrap() > 0));
}

#[test]
fn the_documented_provider_config_is_valid() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/providers.md")).unwrap();
    let start = doc
        .find("```toml\n")
        .expect("docs/providers.md has a toml block")
        + "```toml\n".len();
    let block = &doc[start..start + doc[start..].find("```").unwrap()];
    let text = format!("[database]\nurl = \"sqlite::memory:\"\n{block}");
    let loaded = Config::from_str_at(&text, Path::new("docs/providers.md"))
        .unwrap_or_else(|e| panic!("{e}"));
    let apis: Vec<_> = loaded
        .config
        .providers
        .iter()
        .map(|p| p.get_ref().api.as_str())
        .collect();
    assert_eq!(
        apis,
        [
            "anthropic",
            "gemini",
            "azure",
            "openai",
            "openai",
            "openai",
            "openai",
            "openai",
            "openai"
        ]
    );
}
