//! The translators against the providers' own documented answers, not only against the mock
//! written here: each fixture in tests/fixtures (its README names the page it comes from) is
//! served as it is by a loopback upstream, in small pieces, and the client must get the
//! OpenAI-format answer it means (text, finish_reason, tool call, usage), metered and priced
//! exactly.

mod common;

use std::net::SocketAddr;

use common::*;
use http::StatusCode;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// Bytes per write: events, lines and UTF-8 characters arrive split, as they may from a
/// provider.
const PIECE: usize = 61;

/// Prices of every fixture's model, per million tokens: input, cache read, cache write, output.
const PRICES: [&str; 4] = ["2", "0.5", "2.5", "8"];

// ---------------------------------------------------------------------------------------
// What each fixture must become

/// The answer a fixture means, as the client must get it.
struct Expected {
    /// `{api}/{name}.json` (a whole answer) or `{api}/{name}.sse` (a stream).
    fixture: &'static str,
    /// The answer's text; None when it has none.
    content: Option<String>,
    finish_reason: &'static str,
    tool_call: Option<Call>,
    usage: Usage,
}

struct Call {
    id: Id,
    name: &'static str,
    arguments: Value,
}

enum Id {
    /// The provider's own id, passed on.
    Exact(&'static str),
    /// A fresh `call_...` id (Gemini's calls have none).
    Fresh,
}

/// Token counts in the usage row's terms (`input` without the cached part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tokens {
    input: i64,
    cache_read: i64,
    cache_write: i64,
    output: i64,
    reasoning: i64,
}

enum Usage {
    /// What the fixture reports, and its cost at `PRICES` (worked out by hand).
    Reported(Tokens, &'static str),
    /// The fixture reports no usage: the gateway counts it.
    Estimated,
}

fn tokens(input: i64, cache_read: i64, cache_write: i64, output: i64, reasoning: i64) -> Tokens {
    Tokens {
        input,
        cache_read,
        cache_write,
        output,
        reasoning,
    }
}

fn call(id: Id, name: &'static str, arguments: Value) -> Option<Call> {
    Some(Call {
        id,
        name,
        arguments,
    })
}

fn text(s: &str) -> Option<String> {
    Some(s.to_owned())
}

/// The text of every event of a recorded Gemini stream, joined: what its client must read.
fn recorded_gemini_text(fixture: &str) -> String {
    let recorded = std::fs::read_to_string(format!("{FIXTURES}/{fixture}")).unwrap();
    let mut out = String::new();
    for data in recorded.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let event: Value = serde_json::from_str(data).unwrap();
        for part in event["candidates"][0]["content"]["parts"]
            .as_array()
            .unwrap()
        {
            out.push_str(part["text"].as_str().unwrap_or_default());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The fixtures, provider by provider

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_documented_answers_pass_through_and_are_metered() {
    let weather_in_paris = json!({"location": "Paris, France"});
    #[rustfmt::skip]
    let cases = vec![
        Expected { fixture: "openai/chat_completion.json",
            content: text("Hello! How can I assist you today?"), finish_reason: "stop",
            tool_call: None,
            // 19 * 2 + 10 * 8 = 118 per million
            usage: Usage::Reported(tokens(19, 0, 0, 10, 0), "0.000118") },
        Expected { fixture: "openai/chat_completion_tool_calls.json",
            content: None, finish_reason: "tool_calls",
            tool_call: call(Id::Exact("call_abc123"), "get_current_weather",
                json!({"location": "Boston, MA"})),
            // 82 * 2 + 17 * 8 = 300 per million
            usage: Usage::Reported(tokens(82, 0, 0, 17, 0), "0.0003") },
        Expected { fixture: "openai/chat_completion_stream.sse",
            content: text("Hello"), finish_reason: "stop", tool_call: None,
            // 19 * 2 + 1 * 8 = 46 per million
            usage: Usage::Reported(tokens(19, 0, 0, 1, 0), "0.000046") },
        Expected { fixture: "openai/chat_completion_stream_tool_calls.sse",
            content: None, finish_reason: "tool_calls",
            tool_call: call(Id::Exact("call_DdmO9pD3xa9XTPNJ32zg2hcA"), "get_weather",
                weather_in_paris),
            usage: Usage::Estimated },
    ];
    check_fixtures("openai", cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_documented_answers_translate_exactly() {
    let san_francisco = |unit: &str| json!({"location": "San Francisco, CA", "unit": unit});
    #[rustfmt::skip]
    let cases = vec![
        Expected { fixture: "anthropic/message.json",
            content: text("Hi! My name is Claude."), finish_reason: "stop", tool_call: None,
            // 2095 * 2 + 2051 * 0.5 + 2051 * 2.5 + 503 * 8 = 14367 per million
            usage: Usage::Reported(tokens(2095, 2051, 2051, 503, 0), "0.014367") },
        Expected { fixture: "anthropic/message_tool_use.json",
            content: text("I'll check the current weather in San Francisco for you."),
            finish_reason: "tool_calls",
            tool_call: call(Id::Exact("toolu_01A09q90qw90lq917835lq9"), "get_weather",
                san_francisco("celsius")),
            usage: Usage::Estimated },
        Expected { fixture: "anthropic/stream.sse",
            content: text("Hello!"), finish_reason: "stop", tool_call: None,
            // 25 * 2 + 15 * 8 = 170 per million
            usage: Usage::Reported(tokens(25, 0, 0, 15, 0), "0.00017") },
        Expected { fixture: "anthropic/stream_tool_use.sse",
            content: text("Okay, let's check the weather for San Francisco, CA:"),
            finish_reason: "tool_calls",
            tool_call: call(Id::Exact("toolu_01T1x1fJ34qAmk2tNTrN7Up6"), "get_weather",
                san_francisco("fahrenheit")),
            // 472 * 2 + 89 * 8 = 1656 per million
            usage: Usage::Reported(tokens(472, 0, 0, 89, 0), "0.001656") },
        Expected { fixture: "anthropic/stream_thinking.sse",
            content: text("27 * 453 = 12,231"), finish_reason: "stop", tool_call: None,
            usage: Usage::Estimated },
    ];
    check_fixtures("anthropic", cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_documented_answers_translate_exactly() {
    let sorted_list = "```python\n# Example list to be sorted\nmy_list = [5, 3, 1, 2, 4]\n\n\
        # Sort the list in ascending order using the sort() method\nmy_list.sort()\n\n\
        # Print the sorted list\nprint(my_list)\n```\n\nOutput:\n\n```\n[1, 2, 3, 4, 5]\n```";
    #[rustfmt::skip]
    let cases = vec![
        Expected { fixture: "gemini/generate_content.json",
            content: text(sorted_list), finish_reason: "stop", tool_call: None,
            // 9 * 2 + 87 * 8 = 714 per million
            usage: Usage::Reported(tokens(9, 0, 0, 87, 0), "0.000714") },
        Expected { fixture: "gemini/generate_content_function_call.json",
            // the thought summary is not the answer; its 501 tokens are output all the same
            content: None, finish_reason: "tool_calls",
            tool_call: call(Id::Fresh, "now", json!({})),
            // 38 * 2 + (8 + 501) * 8 = 4148 per million
            usage: Usage::Reported(tokens(38, 0, 0, 509, 501), "0.004148") },
        Expected { fixture: "gemini/stream.sse",
            content: text("The capital of Wyoming is **Cheyenne**.\n"), finish_reason: "stop",
            tool_call: None,
            // usage comes with every event; the last one counts: 7 * 2 + 10 * 8 = 94 per million
            usage: Usage::Reported(tokens(7, 0, 0, 10, 0), "0.000094") },
        // gemini-pro put finishReason STOP on every event: every event's text still counts
        Expected { fixture: "gemini/stream_crlf.sse",
            content: text(&recorded_gemini_text("gemini/stream_crlf.sse")), finish_reason: "stop",
            tool_call: None, usage: Usage::Estimated },
    ];
    check_fixtures("gemini", cases).await;
}

// ---------------------------------------------------------------------------------------
// The upstream that serves them

/// Serves `tests/fixtures/{api}/{model}.json`, or `.sse` when a stream is asked for: the
/// api from the request's path, the fixture from the model asked for.
async fn fixture_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve_fixture(socket));
        }
    });
    addr
}

async fn serve_fixture(mut socket: tokio::net::TcpStream) {
    let Some(request) = read_upstream_request(&mut socket).await else {
        return;
    };
    let (api, stream) = match request.path.as_str() {
        "/v1/chat/completions" => ("openai", request.body["stream"] == true),
        "/v1/messages" => ("anthropic", request.body["stream"] == true),
        path => ("gemini", path.contains(":streamGenerateContent")),
    };
    let extension = if stream { "sse" } else { "json" };
    let path = format!("{FIXTURES}/{api}/{}.{extension}", request.model());
    let (head, body) = match std::fs::read(&path) {
        Ok(body) if stream => (
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
                .to_owned(),
            body,
        ),
        Ok(body) => (
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n",
                body.len()
            ),
            body,
        ),
        Err(_) => (
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned(),
            Vec::new(),
        ),
    };
    let _ = socket.set_nodelay(true);
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    for piece in body.chunks(PIECE) {
        if socket.write_all(piece).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Asking for them through the gateway

fn provider(api: &str, addr: SocketAddr) -> String {
    let base_url = match api {
        "openai" => format!("http://{addr}/v1"),
        _ => format!("http://{addr}"),
    };
    format!("[[providers]]\nname = \"{api}\"\napi = \"{api}\"\nbase_url = \"{base_url}\"\napi_key = \"k\"\n")
}

/// The fixture's file name without its extension: the model id that asks for it.
fn model_id(fixture: &str) -> &str {
    let file = fixture.rsplit('/').next().unwrap();
    file.rsplit_once('.').unwrap().0
}

fn model(api: &str, fixture: &str) -> String {
    let [input, cache_read, cache_write, output] = PRICES;
    format!(
        "[[models]]\nname = \"{api}-{id}\"\nprovider = \"{api}\"\nmodel_id = \"{id}\"\n\
         cost_input_per_million = \"{input}\"\ncost_cache_read_per_million = \"{cache_read}\"\n\
         cost_cache_write_per_million = \"{cache_write}\"\ncost_output_per_million = \"{output}\"\n",
        id = model_id(fixture)
    )
}

/// The OpenAI-format answer as the client got it, whole or streamed.
#[derive(Debug, Default)]
struct Answer {
    content: Option<String>,
    finish_reason: Option<String>,
    /// (id, name, arguments) of each call.
    tool_calls: Vec<(String, String, String)>,
    usage: Value,
}

async fn check_fixtures(api: &str, cases: Vec<Expected>) {
    let db = TestDb::new(Backend::Sqlite).await;
    let addr = fixture_upstream().await;
    let mut extra = provider(api, addr);
    for case in &cases {
        extra += &model(api, case.fixture);
    }
    let gw = start_gateway(&db, &extra).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let mut answers = Vec::new();
    for case in &cases {
        let model = format!("{api}-{}", model_id(case.fixture));
        answers.push(ask(&url, &model, case).await);
    }
    gw.running.stop().await;
    let rows = usage_rows(&db.connect().await).await;
    assert_eq!(
        rows.len(),
        cases.len(),
        "one usage row per request: {rows:?}"
    );
    for ((case, answer), row) in cases.iter().zip(answers).zip(&rows) {
        check_answer(case, &answer);
        check_usage(case, &answer.usage, row);
    }
}

async fn ask(url: &str, model: &str, case: &Expected) -> Answer {
    let stream = case.fixture.ends_with(".sse");
    let mut body = json!({"model": model, "stream": stream,
        "messages": [{"role": "user", "content": "What is the weather like in San Francisco?"}]});
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    if let Some(call) = &case.tool_call {
        body["tools"] = json!([{"type": "function", "function": {"name": call.name,
            "parameters": {"type": "object", "properties": {}}}}]);
    }
    let reply = post(url, &body, &[]).await;
    let fixture = case.fixture;
    assert_eq!(reply.status, StatusCode::OK, "{fixture}: {}", reply.text());
    if stream {
        assert_eq!(
            reply.headers["content-type"], "text/event-stream",
            "{fixture}"
        );
        streamed_answer(&reply.body, fixture)
    } else {
        whole_answer(&reply.json())
    }
}

fn whole_answer(body: &Value) -> Answer {
    let choice = &body["choices"][0];
    let calls = choice["message"]["tool_calls"].as_array().cloned();
    Answer {
        content: choice["message"]["content"].as_str().map(str::to_owned),
        finish_reason: choice["finish_reason"].as_str().map(str::to_owned),
        tool_calls: calls
            .unwrap_or_default()
            .iter()
            .map(|c| {
                let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                let f = &c["function"];
                (text(&c["id"]), text(&f["name"]), text(&f["arguments"]))
            })
            .collect(),
        usage: body["usage"].clone(),
    }
}

/// Reads a stream the way an OpenAI SDK does: deltas appended, tool calls joined by index.
fn streamed_answer(body: &[u8], fixture: &str) -> Answer {
    let mut parser = sse_parse::SseParser::new();
    parser.feed(body);
    parser.finish();
    let events: Vec<String> = std::iter::from_fn(|| parser.next_event().map(|e| e.data)).collect();
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{fixture}"
    );
    let mut answer = Answer::default();
    let mut content = String::new();
    for data in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("{fixture}: {e}"));
        if chunk["choices"].as_array().is_some_and(Vec::is_empty) {
            answer.usage = chunk["usage"].clone();
            continue;
        }
        let choice = &chunk["choices"][0];
        content += choice["delta"]["content"].as_str().unwrap_or_default();
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            add_call_delta(&mut answer.tool_calls, call);
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            answer.finish_reason = Some(reason.to_owned());
        }
    }
    answer.content = (!content.is_empty()).then_some(content);
    answer
}

fn add_call_delta(calls: &mut Vec<(String, String, String)>, delta: &Value) {
    let index = delta["index"].as_u64().unwrap() as usize;
    if calls.len() <= index {
        calls.resize(index + 1, Default::default());
    }
    let (id, name, arguments) = &mut calls[index];
    if let Some(s) = delta["id"].as_str() {
        *id = s.to_owned();
    }
    if let Some(s) = delta["function"]["name"].as_str() {
        *name = s.to_owned();
    }
    *arguments += delta["function"]["arguments"].as_str().unwrap_or_default();
}

// ---------------------------------------------------------------------------------------
// Checking them

fn check_answer(case: &Expected, answer: &Answer) {
    let fixture = case.fixture;
    assert_eq!(answer.content, case.content, "{fixture}: content");
    let finish = answer.finish_reason.as_deref();
    assert_eq!(finish, Some(case.finish_reason), "{fixture}: finish_reason");
    let Some(expected) = &case.tool_call else {
        assert!(
            answer.tool_calls.is_empty(),
            "{fixture}: {:?}",
            answer.tool_calls
        );
        return;
    };
    let [(id, name, arguments)] = answer.tool_calls.as_slice() else {
        panic!(
            "{fixture}: one tool call expected, got {:?}",
            answer.tool_calls
        )
    };
    match expected.id {
        Id::Exact(want) => assert_eq!(id, want, "{fixture}: tool call id"),
        Id::Fresh => assert!(id.starts_with("call_"), "{fixture}: tool call id {id}"),
    }
    assert_eq!(name, expected.name, "{fixture}: tool name");
    let arguments: Value = serde_json::from_str(arguments)
        .unwrap_or_else(|e| panic!("{fixture}: arguments {arguments:?} are not JSON: {e}"));
    assert_eq!(arguments, expected.arguments, "{fixture}: arguments");
}

/// The usage the client got, the usage row and its cost agree with the fixture.
fn check_usage(case: &Expected, usage: &Value, row: &UsageRow) {
    let fixture = case.fixture;
    assert_eq!(row.status_code, 200, "{fixture}");
    assert_eq!(row.stream, fixture.ends_with(".sse"), "{fixture}");
    let counted = tokens(
        row.input_tokens,
        row.cache_read_tokens,
        row.cache_write_tokens,
        row.output_tokens,
        row.reasoning_tokens,
    );
    match case.usage {
        Usage::Reported(reported, cost) => {
            assert_eq!(counted, reported, "{fixture}: the row's tokens");
            assert_eq!(row.usage_source, "provider", "{fixture}");
            assert_eq!(dec(&row.cost_usd), dec(cost), "{fixture}: the row's cost");
        }
        Usage::Estimated => {
            assert_eq!(row.usage_source, "estimated", "{fixture}");
            assert!(
                counted.input > 0 && counted.output > 0,
                "{fixture}: {counted:?}"
            );
        }
    }
    assert_eq!(
        dec(&row.cost_usd),
        priced(counted),
        "{fixture}: cost at PRICES"
    );
    if usage.is_null() {
        // An OpenAI-compatible stream goes to the client as the provider wrote it: without
        // the provider's usage chunk the client gets none, and only the row has the count.
        let passed_on = fixture.starts_with("openai/") && fixture.ends_with(".sse");
        assert!(
            passed_on && matches!(case.usage, Usage::Estimated),
            "{fixture}: no usage"
        );
        return;
    }
    // OpenAI's usage: the prompt includes cached tokens, the completion reasoning tokens
    let prompt = counted.input + counted.cache_read + counted.cache_write;
    let want = json!({
        "prompt_tokens": prompt,
        "completion_tokens": counted.output,
        "total_tokens": prompt + counted.output,
        "cached_tokens": counted.cache_read,
        "reasoning_tokens": counted.reasoning,
    });
    // (details a provider leaves out, as OpenAI's own example does, count as 0)
    let detail = |v: &Value| v.as_i64().unwrap_or(0);
    let got = json!({
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "total_tokens": usage["total_tokens"],
        "cached_tokens": detail(&usage["prompt_tokens_details"]["cached_tokens"]),
        "reasoning_tokens": detail(&usage["completion_tokens_details"]["reasoning_tokens"]),
    });
    assert_eq!(got, want, "{fixture}: the client's usage");
}

/// What `tokens` cost at `PRICES`.
fn priced(t: Tokens) -> Decimal {
    let [input, cache_read, cache_write, output] = PRICES.map(dec);
    let total = Decimal::from(t.input) * input
        + Decimal::from(t.cache_read) * cache_read
        + Decimal::from(t.cache_write) * cache_write
        + Decimal::from(t.output) * output;
    (total / Decimal::from(1_000_000)).normalize()
}
