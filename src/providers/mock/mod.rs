//! A fake OpenAI-compatible model. It answers deterministically with real usage: prompt
//! tokens are the words of the prompt, completion tokens the words it writes (one per stream
//! chunk). The in-process `mock` provider and `tollgate mock-upstream` share this code, so
//! the first `curl` needs no API key and the tests and benchmark need no network.
//!
//! It speaks three wire formats, each answering the same way for the same request:
//! OpenAI (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`), Anthropic
//! (`/v1/messages`, in `anthropic.rs`) and Gemini (`/v1beta/models/{m}:generateContent`,
//! `:streamGenerateContent`, `:embedContent`, `:batchEmbedContents`, in `gemini.rs`). A request
//! with tools gets a call of its first tool, unless its last message is a tool result.
//!
//! A few model ids misbehave on purpose, for tests and demos: `mock-status-NNN` answers with
//! that HTTP status, `mock-hang` never answers, `mock-garbage` answers 200 with a non-JSON
//! body, `mock-cut` stops a stream after two chunks without its end, `mock-stream-error`
//! reports an error inside the stream after two chunks, `mock-early-error` right after the
//! role chunk, before any content, `mock-linger` keeps its stream's body open for
//! three seconds after `data: [DONE]`, and `mock-absurd-usage` reports 10^18 prompt tokens
//! (OpenAI format).

mod anthropic;
mod gemini;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{json, Value};

use super::JsonObject;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type MockBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

#[derive(Debug, Clone)]
pub struct MockOptions {
    /// Delay before the first byte of an answer.
    pub ttft_ms: u64,
    /// Delay between stream chunks.
    pub chunk_ms: u64,
    /// Words (and so completion tokens and content chunks) per answer, capped by max_tokens.
    pub chunks: usize,
    /// Share of requests answered with a 500.
    pub fail_rate: f64,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            ttft_ms: 0,
            chunk_ms: 0,
            chunks: 16,
            fail_rate: 0.0,
        }
    }
}

const WORDS: &[&str] = &[
    "This",
    "is",
    "a",
    "mock",
    "answer",
    "from",
    "Tollgate,",
    "deterministic",
    "and",
    "metered",
    "to",
    "the",
    "last",
    "token,",
    "every",
    "time.",
];

fn answer_words(n: usize) -> impl Iterator<Item = &'static str> {
    WORDS.iter().copied().cycle().take(n)
}

/// Words of a prompt in any of the three formats (messages' `content`, blocks' `text`,
/// Gemini's `parts`).
fn count_words(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(a) => a.iter().map(count_words).sum(),
        Value::Object(o) => o
            .get("content")
            .or_else(|| o.get("text"))
            .or_else(|| o.get("parts"))
            .map(count_words)
            .unwrap_or(0),
        _ => 0,
    }
}

/// What the mock answers, before it is written in a wire format.
#[derive(Debug, Clone)]
struct Answer {
    prompt_tokens: u64,
    /// Words of text, one per stream chunk.
    words: Vec<&'static str>,
    /// A call of the request's first tool: name and JSON arguments.
    tool_call: Option<(String, String)>,
    /// The answer stopped at the token limit.
    truncated: bool,
}

/// Completion tokens a tool call costs (its name and arguments).
const TOOL_CALL_TOKENS: u64 = 8;

impl Answer {
    /// `tools` are `(name, JSON schema)` pairs; `after_tool_result` when the conversation's
    /// last message is a tool result (then the mock answers in words).
    fn plan(
        prompt_tokens: u64,
        max_tokens: Option<u64>,
        tools: &[(String, Option<Value>)],
        after_tool_result: bool,
        opts: &MockOptions,
    ) -> Answer {
        if let (Some((name, schema)), false) = (tools.first(), after_tool_result) {
            // Arguments: the schema's first property set to "mock".
            let first = schema
                .as_ref()
                .and_then(|s| s.get("properties"))
                .and_then(Value::as_object)
                .and_then(|p| p.keys().next().cloned());
            let mut args = serde_json::Map::new();
            if let Some(key) = first {
                args.insert(key, "mock".into());
            }
            return Answer {
                prompt_tokens,
                words: Vec::new(),
                tool_call: Some((name.clone(), Value::Object(args).to_string())),
                truncated: false,
            };
        }
        let n = max_tokens.map_or(opts.chunks, |l| (l as usize).min(opts.chunks));
        Answer {
            prompt_tokens,
            words: answer_words(n).collect(),
            tool_call: None,
            truncated: n < opts.chunks,
        }
    }

    fn completion_tokens(&self) -> u64 {
        self.words.len() as u64
            + if self.tool_call.is_some() {
                TOOL_CALL_TOKENS
            } else {
                0
            }
    }

    fn text(&self) -> String {
        self.words.join(" ")
    }

    /// Word `i` as a stream delta: words after the first carry their leading space.
    fn piece(&self, i: usize) -> String {
        if i == 0 {
            self.words[0].to_string()
        } else {
            format!(" {}", self.words[i])
        }
    }
}

/// Misbehaviour by model id, shared by every wire format; `error` writes the format's error
/// body for a status.
async fn misbehave(
    model: &str,
    opts: &MockOptions,
    error: fn(StatusCode, &str) -> Response<MockBody>,
) -> Option<Response<MockBody>> {
    if opts.fail_rate > 0.0 && rand::random::<f64>() < opts.fail_rate {
        return Some(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "mock failure (fail-rate)",
        ));
    }
    if let Some(code) = model.strip_prefix("mock-status-") {
        let status = code.parse().ok().and_then(|c| StatusCode::from_u16(c).ok());
        return Some(error(
            status.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "mock status on request",
        ));
    }
    if model == "mock-hang" {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if opts.ttft_ms > 0 {
        tokio::time::sleep(Duration::from_millis(opts.ttft_ms)).await;
    }
    if model == "mock-garbage" {
        return Some(full(
            StatusCode::OK,
            "application/json",
            "<html>this is not json</html>",
        ));
    }
    None
}

/// OpenAI-format tools as (name, parameters) pairs.
fn openai_tools(req: &JsonObject) -> Vec<(String, Option<Value>)> {
    req.get::<Vec<Value>>("tools")
        .ok()
        .flatten()
        .unwrap_or_default()
        .iter()
        .filter_map(|t| {
            let f = t.get("function")?;
            Some((
                f.get("name")?.as_str()?.to_owned(),
                f.get("parameters").cloned(),
            ))
        })
        .collect()
}

fn full(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<MockBody> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(
            Full::new(body.into())
                .map_err(|e: Infallible| match e {})
                .boxed_unsync(),
        )
        .expect("static response parts are valid")
}

fn error(status: StatusCode, message: &str) -> Response<MockBody> {
    let body =
        json!({"error": {"message": message, "type": "mock_error", "param": null, "code": null}});
    let mut resp = full(status, "application/json", body.to_string());
    if status == StatusCode::TOO_MANY_REQUESTS {
        // as real providers do: come back in a second
        resp.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    }
    resp
}

/// Answers one request to `path` (`/v1/chat/completions`, `/v1/messages`,
/// `/v1beta/models/m:generateContent`, ...).
pub async fn respond(path: &str, body: Bytes, opts: &MockOptions) -> Response<MockBody> {
    if let Some(rest) = path.strip_prefix("/v1beta/models/") {
        return gemini::respond(rest, body, opts).await;
    }
    if path == "/v1/messages" {
        return anthropic::respond(body, opts).await;
    }
    // Azure OpenAI: /openai/deployments/{deployment}/chat/completions
    let path = match path.strip_prefix("/openai/deployments/") {
        Some(rest) => rest.find('/').map_or(path, |i| &rest[i..]),
        None => path.strip_prefix("/v1").unwrap_or(path),
    };
    if path == "/models" {
        let data: Vec<Value> = ["mock-chat", "mock-embed"]
            .iter()
            .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "mock"}))
            .collect();
        return full(
            StatusCode::OK,
            "application/json",
            json!({"object": "list", "data": data}).to_string(),
        );
    }
    let Ok(req) = JsonObject::parse(body) else {
        return error(StatusCode::BAD_REQUEST, "body is not a JSON object");
    };
    let model = req.str("model").map(|m| m.into_owned()).unwrap_or_default();
    if let Some(resp) = misbehave(&model, opts, error).await {
        return resp;
    }

    match path {
        "/chat/completions" | "/completions" => {
            let chat = path == "/chat/completions";
            let prompt_field = if chat { "messages" } else { "prompt" };
            let Ok(Some(prompt)) = req.get::<Value>(prompt_field) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("{prompt_field} is required"),
                );
            };
            let limit = req
                .get::<u64>("max_completion_tokens")
                .ok()
                .flatten()
                .or(req.get::<u64>("max_tokens").ok().flatten());
            let tools = if chat { openai_tools(&req) } else { Vec::new() };
            let after_tool_result = prompt
                .as_array()
                .and_then(|m| m.last())
                .is_some_and(|m| m.get("role").and_then(Value::as_str) == Some("tool"));
            let answer = Answer::plan(count_words(&prompt), limit, &tools, after_tool_result, opts);
            let finish = if answer.tool_call.is_some() {
                "tool_calls"
            } else if answer.truncated {
                "length"
            } else {
                "stop"
            };
            let prompt_tokens = if model == "mock-absurd-usage" {
                ABSURD_TOKENS
            } else {
                answer.prompt_tokens
            };
            let usage = json!({
                "prompt_tokens": prompt_tokens,
                "completion_tokens": answer.completion_tokens(),
                "total_tokens": prompt_tokens + answer.completion_tokens(),
            });
            if req.bool("stream") == Some(true) {
                let include_usage = req
                    .get::<Value>("stream_options")
                    .ok()
                    .flatten()
                    .and_then(|o| o.get("include_usage").and_then(Value::as_bool))
                    .unwrap_or(false);
                stream(
                    chat,
                    &model,
                    &answer,
                    finish,
                    include_usage.then_some(usage),
                    opts,
                )
            } else {
                let text = answer.text();
                let body = if chat {
                    let mut message = json!({"role": "assistant", "content": text});
                    if let Some((name, args)) = &answer.tool_call {
                        message["content"] = Value::Null;
                        message["tool_calls"] = json!([{"id": "call_mock0", "type": "function",
                            "function": {"name": name, "arguments": args}}]);
                    }
                    json!({
                        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1_700_000_000,
                        "model": model,
                        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                        "usage": usage,
                    })
                } else {
                    json!({
                        "id": "cmpl-mock", "object": "text_completion", "created": 1_700_000_000,
                        "model": model,
                        "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}],
                        "usage": usage,
                    })
                };
                full(StatusCode::OK, "application/json", body.to_string())
            }
        }
        "/embeddings" => {
            let Ok(Some(input)) = req.get::<Value>("input") else {
                return error(StatusCode::BAD_REQUEST, "input is required");
            };
            let inputs: Vec<Value> = match input {
                Value::Array(a) if a.iter().all(|v| v.is_string()) => a,
                other => vec![other],
            };
            let tokens: u64 = inputs.iter().map(count_words).sum();
            let data: Vec<Value> = inputs
                .iter()
                .enumerate()
                .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": embedding(&v.to_string())}))
                .collect();
            let body = json!({
                "object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            });
            full(StatusCode::OK, "application/json", body.to_string())
        }
        _ => error(StatusCode::NOT_FOUND, "unknown path"),
    }
}

/// What `mock-absurd-usage` reports as its prompt tokens, as a provider once did.
const ABSURD_TOKENS: u64 = 1_000_000_000_000_000_000;

/// A small deterministic vector: the same text always gets the same embedding.
fn embedding(text: &str) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    (0..8)
        .map(|i| {
            for b in text.bytes().chain([i as u8]) {
                h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
            ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn stream(
    chat: bool,
    model: &str,
    answer: &Answer,
    finish: &str,
    usage: Option<Value>,
    opts: &MockOptions,
) -> Response<MockBody> {
    let with_usage = usage.is_some();
    let chunk = |choice: Value| {
        let mut c = json!({
            "id": if chat { "chatcmpl-mock" } else { "cmpl-mock" },
            "object": if chat { "chat.completion.chunk" } else { "text_completion" },
            "created": 1_700_000_000, "model": model, "choices": [choice],
        });
        if with_usage {
            c["usage"] = Value::Null;
        }
        Bytes::from(format!("data: {c}\n\n"))
    };
    let n = answer.words.len();
    let mut events: Vec<Bytes> = Vec::with_capacity(n + 6);
    if chat {
        events.push(chunk(json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null})));
    }
    for i in 0..n {
        let text = answer.piece(i);
        events.push(if chat {
            chunk(json!({"index": 0, "delta": {"content": text}, "finish_reason": null}))
        } else {
            chunk(json!({"index": 0, "text": text, "logprobs": null, "finish_reason": null}))
        });
    }
    if let Some((name, args)) = &answer.tool_call {
        // Arguments arrive in two pieces, as real models stream them.
        let (a, b) = args.split_at(args.len() / 2);
        events.push(chunk(json!({"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_mock0",
            "type": "function", "function": {"name": name, "arguments": a}}]}, "finish_reason": null})));
        events.push(chunk(
            json!({"index": 0, "delta": {"tool_calls": [{"index": 0,
            "function": {"arguments": b}}]}, "finish_reason": null}),
        ));
    }
    events.push(if chat {
        chunk(json!({"index": 0, "delta": {}, "finish_reason": finish}))
    } else {
        chunk(json!({"index": 0, "text": "", "logprobs": null, "finish_reason": finish}))
    });
    if let Some(usage) = usage {
        let c = json!({
            "id": if chat { "chatcmpl-mock" } else { "cmpl-mock" },
            "object": if chat { "chat.completion.chunk" } else { "text_completion" },
            "created": 1_700_000_000, "model": model, "choices": [], "usage": usage,
        });
        events.push(Bytes::from(format!("data: {c}\n\n")));
    }
    if model == "mock-cut" {
        events.truncate(2);
    } else if model == "mock-stream-error" || model == "mock-early-error" {
        // after the first content chunk, or right after the role chunk (before any content)
        events.truncate(if model == "mock-early-error" { 1 } else { 2 });
        let e = json!({"error": {"message": "mock error mid-stream", "type": "server_error", "param": null, "code": null}});
        events.push(Bytes::from(format!("data: {e}\n\n")));
    } else {
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    }
    if model == "mock-linger" {
        return sse_response_lingering(events, opts, LINGER);
    }
    sse_response(events, opts)
}

/// How long `mock-linger` keeps its body open after its last event.
const LINGER: Duration = Duration::from_secs(3);

/// A `text/event-stream` answer: one write when unpaced, else one event per `chunk_ms`.
fn sse_response(events: Vec<Bytes>, opts: &MockOptions) -> Response<MockBody> {
    sse_response_lingering(events, opts, Duration::ZERO)
}

/// The same, with the body ending only `linger` after the last event.
fn sse_response_lingering(
    events: Vec<Bytes>,
    opts: &MockOptions,
    linger: Duration,
) -> Response<MockBody> {
    let delay = Duration::from_millis(opts.chunk_ms);
    let body: MockBody = if delay.is_zero() && linger.is_zero() {
        // Unpaced: one write, as a fast local server would flush it.
        let all: Vec<u8> = events.concat();
        Full::new(Bytes::from(all))
            .map_err(|e: Infallible| match e {})
            .boxed_unsync()
    } else {
        let frames = futures_util::stream::unfold(
            (events.into_iter(), true),
            move |(mut it, first)| async move {
                let next = it.next()?;
                if !first && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Some((Ok::<_, BoxError>(http_body::Frame::data(next)), (it, false)))
            },
        );
        let end = futures_util::stream::once(tokio::time::sleep(linger))
            .filter_map(|()| std::future::ready(None));
        StreamBody::new(frames.chain(end)).boxed_unsync()
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(body)
        .expect("static response parts are valid")
}
