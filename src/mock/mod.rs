//! A fake model. It answers deterministically with real usage: prompt tokens are the words of
//! the prompt, completion tokens the words it writes (one per stream chunk). The in-process
//! `mock` provider (`api = "mock"`) and `tollgate mock-upstream` (`upstream.rs`, the same
//! answers behind a real HTTP server) share this code, so the first `curl` needs no API key
//! and the tests and benchmark need no network.
//!
//! It speaks three wire formats, each answering the same way for the same request:
//! OpenAI (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, in `openai.rs`),
//! Anthropic (`/v1/messages`, in `anthropic.rs`) and Gemini
//! (`/v1beta/models/{m}:generateContent`, `:streamGenerateContent`, `:embedContent`,
//! `:batchEmbedContents`, in `gemini.rs`). A request with tools gets a call of its first
//! tool, unless its last message is a tool result.
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
mod openai;
mod upstream;

pub use upstream::{Counters, MockUpstream, Received};

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::Value;

use crate::error::BoxError;

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
    /// Unpaced answers written a piece at a time rather than at once: each stream event, or
    /// each of `chunks` slices of a whole answer, its own write, as a provider that flushes
    /// every token sends them.
    pub split_writes: bool,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            ttft_ms: 0,
            chunk_ms: 0,
            chunks: 16,
            fail_rate: 0.0,
            split_writes: false,
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

fn full(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<MockBody> {
    let body = Full::new(body.into())
        .map_err(|e: Infallible| match e {})
        .boxed_unsync();
    response(status, content_type, body)
}

fn response(status: StatusCode, content_type: &'static str, body: MockBody) -> Response<MockBody> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(body)
        .expect("static response parts are valid")
}

/// A whole JSON answer: one write, or `chunks` of them with `split_writes`.
fn json_answer(body: String, opts: &MockOptions) -> Response<MockBody> {
    if !opts.split_writes {
        return full(StatusCode::OK, "application/json", body);
    }
    let pieces = slices(Bytes::from(body), opts.chunks);
    let body = written(pieces, Duration::ZERO, true, Duration::ZERO);
    response(StatusCode::OK, "application/json", body)
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
    openai::respond(path, body, opts).await
}

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
    let body = written(events, delay, opts.split_writes, linger);
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(body)
        .expect("static response parts are valid")
}

/// A body of `pieces`: one write when unpaced and not split; else each piece written on its
/// own, `delay` apart (or as soon as the previous one is flushed), then `linger` more.
fn written(pieces: Vec<Bytes>, delay: Duration, split: bool, linger: Duration) -> MockBody {
    if delay.is_zero() && linger.is_zero() && !split {
        // Unpaced: one write, as a fast local server would flush it.
        return Full::new(Bytes::from(pieces.concat()))
            .map_err(|e: Infallible| match e {})
            .boxed_unsync();
    }
    let frames = futures_util::stream::unfold(
        (pieces.into_iter(), true),
        move |(mut it, first)| async move {
            let next = it.next()?;
            if !first {
                if delay.is_zero() {
                    // Pending once, so hyper flushes what it holds before the next piece.
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(delay).await;
                }
            }
            Some((Ok::<_, BoxError>(http_body::Frame::data(next)), (it, false)))
        },
    );
    let end = futures_util::stream::once(tokio::time::sleep(linger))
        .filter_map(|()| std::future::ready(None));
    StreamBody::new(frames.chain(end)).boxed_unsync()
}

/// A whole answer's body in `n` slices of about equal size, for `split_writes`.
fn slices(body: Bytes, n: usize) -> Vec<Bytes> {
    let size = body.len().div_ceil(n.max(1)).max(1);
    (0..body.len())
        .step_by(size)
        .map(|at| body.slice(at..(at + size).min(body.len())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A split whole answer arrives as up to `chunks` frames that add up to the same body.
    #[tokio::test]
    async fn a_split_answer_is_the_same_bytes_in_pieces() {
        let body = r#"{"id":"chatcmpl-mock","choices":[{"message":{"content":"hi"}}]}"#;
        let opts = MockOptions {
            split_writes: true,
            ..MockOptions::default()
        };
        let mut answer = json_answer(body.to_owned(), &opts).into_body();
        let mut frames = Vec::new();
        while let Some(frame) = answer.frame().await {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        assert!(
            (2..=opts.chunks).contains(&frames.len()),
            "{} frames",
            frames.len()
        );
        assert_eq!(frames.concat(), body.as_bytes());
        let whole = json_answer(body.to_owned(), &MockOptions::default());
        let bytes = whole.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes, body.as_bytes());
    }
}
