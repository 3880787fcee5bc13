//! Anthropic's Messages API (`POST {base_url}/v1/messages`), translated to and from the
//! OpenAI chat format.
//!
//! Request: system/developer messages become `system`; `tool` messages become `tool_result`
//! blocks and, since turns must alternate, adjacent messages of one role are merged into one
//! turn; assistant `tool_calls` become `tool_use` blocks; images become `image` blocks;
//! `max_tokens` is always sent (Anthropic requires it).
//! Answer: text blocks are joined into `content`, `tool_use` blocks become `tool_calls`.
//! Stream: `Translator` is a state machine over Anthropic's events (message_start,
//! content_block_*, message_delta, message_stop, ping, error).

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{json, Map, Number, Value};

use super::chat::{self, ChunkWriter, Content, Part, ToolChoice};
use super::estimate::{self, OutputSample};
use super::{
    Endpoint, JsonObject, Prepared, ReportedUsage, UpstreamRequest, MAX_EVENT_BYTES,
    MAX_STREAM_INDEX,
};
use crate::error::GatewayError;
use crate::metering::{token_count, TokenUsage};
use crate::registry::Deployment;

pub const API_VERSION: &str = "2023-06-01";
/// What `max_tokens` is when neither the client nor the model's entry says.
const DEFAULT_MAX_TOKENS: u64 = 4096;

pub fn prepare(
    dep: &Deployment,
    endpoint: Endpoint,
    body: &JsonObject,
) -> Result<Prepared, GatewayError> {
    match endpoint {
        Endpoint::ChatCompletions => {}
        Endpoint::Embeddings => {
            return Err(GatewayError::invalid_param(
                "model",
                format!(
                    "`{}` is served by Anthropic, which has no embeddings API.",
                    dep.name
                ),
            ))
        }
        Endpoint::Completions => {
            return Err(GatewayError::invalid_param(
                "model",
                format!(
                    "`{}` is served by Anthropic, which has no legacy completions API; use /v1/chat/completions.",
                    dep.name
                ),
            ))
        }
    }
    let stream = body.bool("stream") == Some(true);
    let request = request_body(dep, body, stream)?;
    let uri: http::Uri = format!("{}/v1/messages", dep.provider.base_url)
        .parse()
        .map_err(|_| {
            GatewayError::internal(format!(
                "provider {} has a base_url that does not form a valid URL",
                dep.provider.name
            ))
        })?;
    let mut headers = HeaderMap::with_capacity(4);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("anthropic-version", HeaderValue::from_static(API_VERSION));
    if stream {
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
    }
    if let Some((name, value)) = &dep.provider.auth_header {
        headers.insert(name.clone(), value.clone());
    }
    Ok(Prepared {
        request: UpstreamRequest {
            uri,
            headers,
            body: Bytes::from(request.to_string()),
        },
        stream,
        client_wants_usage: stream && chat::client_wants_usage(body),
        endpoint,
        client_body: body.bytes().clone(),
    })
}

/// The Messages API request for an OpenAI chat request.
pub fn request_body(
    dep: &Deployment,
    body: &JsonObject,
    stream: bool,
) -> Result<Value, GatewayError> {
    if chat::param::<u64>(body, dep, "n")?.is_some_and(|n| n > 1) {
        return Err(GatewayError::invalid_param(
            "n",
            "Anthropic models return one choice per request; 'n' must be 1.",
        ));
    }
    let mut system: Vec<Value> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in chat::messages(body)? {
        let (role, blocks) = match m.role.as_str() {
            "system" | "developer" => {
                // Text blocks, each with its cache_control (a cached system prompt is the
                // usual use of Anthropic's prompt caching).
                let blocks = content_blocks(m.content.as_ref())?;
                system.extend(blocks.into_iter().filter(|b| b["type"] == "text"));
                continue;
            }
            "user" => ("user", content_blocks(m.content.as_ref())?),
            "assistant" => {
                let mut blocks = content_blocks(m.content.as_ref())?;
                for call in m.tool_calls.iter().flatten() {
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.function.name,
                        "input": chat::parse_arguments(&call.function.arguments)?,
                    }));
                }
                ("assistant", blocks)
            }
            "tool" => {
                let id = m.tool_call_id.as_deref().ok_or_else(|| {
                    GatewayError::invalid_param(
                        "messages",
                        "A 'tool' message needs 'tool_call_id'.",
                    )
                })?;
                let text = m.content.as_ref().map(Content::text).unwrap_or_default();
                (
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": text})],
                )
            }
            other => {
                return Err(GatewayError::invalid_param(
                    "messages",
                    format!("Unknown message role '{other}'."),
                ))
            }
        };
        if blocks.is_empty() {
            continue; // Anthropic refuses empty turns; an empty message says nothing anyway
        }
        // Turns must alternate: a tool result and the user text after it are one turn.
        match turns.last_mut() {
            Some((last, prev)) if *last == role => prev.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();

    let max_tokens = chat::param::<u64>(body, dep, "max_completion_tokens")?
        .or(chat::param::<u64>(body, dep, "max_tokens")?)
        .or(dep.max_output_tokens)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    let mut req = Map::new();
    req.insert("model".into(), dep.model_id.clone().into());
    req.insert("max_tokens".into(), max_tokens.into());
    req.insert("messages".into(), messages.into());
    if !system.is_empty() {
        req.insert("system".into(), system.into());
    }
    if let Some(stop) = chat::stop_sequences(body)? {
        req.insert("stop_sequences".into(), json!(stop));
    }
    if let Some(t) = chat::param::<f64>(body, dep, "temperature")? {
        // OpenAI's range is 0..2, Anthropic's 0..1: the top of one is the top of the other.
        req.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = chat::param::<f64>(body, dep, "top_p")? {
        req.insert("top_p".into(), json!(p));
    }
    if let Some(user) = chat::param::<String>(body, dep, "user")? {
        req.insert("metadata".into(), json!({"user_id": user}));
    }
    let tools = chat::tools(body)?;
    if !tools.is_empty() {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut tool = json!({
                    "name": t.function.name,
                    "input_schema": t.function.parameters.clone()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                });
                if let Some(d) = &t.function.description {
                    tool["description"] = d.clone().into();
                }
                tool
            })
            .collect();
        req.insert("tools".into(), tools.into());
        let parallel = chat::param::<bool>(body, dep, "parallel_tool_calls")?;
        let mut choice = match chat::tool_choice(body)? {
            None | Some(ToolChoice::Auto) => json!({"type": "auto"}),
            Some(ToolChoice::Required) => json!({"type": "any"}),
            Some(ToolChoice::None) => json!({"type": "none"}),
            Some(ToolChoice::Named(name)) => json!({"type": "tool", "name": name}),
        };
        if parallel == Some(false) && choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = true.into();
        }
        req.insert("tool_choice".into(), choice);
    }
    if stream {
        req.insert("stream".into(), true.into());
    }
    Ok(Value::Object(req))
}

fn content_blocks(content: Option<&Content>) -> Result<Vec<Value>, GatewayError> {
    let mut blocks = Vec::new();
    match content {
        None => {}
        Some(Content::Text(t)) if !t.is_empty() => {
            blocks.push(json!({"type": "text", "text": t}));
        }
        Some(Content::Text(_)) => {}
        Some(Content::Parts(parts)) => {
            for p in parts {
                match p {
                    Part::Text { text, .. } if text.is_empty() => {}
                    Part::Text {
                        text,
                        cache_control,
                    } => {
                        let mut block = json!({"type": "text", "text": text});
                        if let Some(c) = cache_control {
                            block["cache_control"] = c.clone();
                        }
                        blocks.push(block);
                    }
                    Part::ImageUrl { image_url } => blocks.push(image_block(image_url.url())?),
                    Part::Unsupported => {
                        return Err(GatewayError::invalid_param(
                            "messages",
                            "Anthropic models accept text and image_url content parts only.",
                        ))
                    }
                }
            }
        }
    }
    Ok(blocks)
}

/// An `image_url` part as an Anthropic block: data URLs inline, http(s) URLs by reference
/// (the gateway itself never fetches a URL). PDFs become `document` blocks.
fn image_block(url: &str) -> Result<Value, GatewayError> {
    if let Some((media_type, data)) = chat::data_url(url) {
        return match media_type {
            "image/jpeg" | "image/png" | "image/gif" | "image/webp" => Ok(json!({
                "type": "image",
                "source": {"type": "base64", "media_type": media_type, "data": data},
            })),
            "application/pdf" => Ok(json!({
                "type": "document",
                "source": {"type": "base64", "media_type": media_type, "data": data},
            })),
            other => Err(GatewayError::invalid_param(
                "messages",
                format!("Anthropic models accept JPEG, PNG, GIF and WebP images; got {other}."),
            )),
        };
    }
    if chat::is_http_url(url) {
        let kind = if url.split(['?', '#']).next().unwrap_or("").ends_with(".pdf") {
            "document"
        } else {
            "image"
        };
        return Ok(json!({"type": kind, "source": {"type": "url", "url": url}}));
    }
    Err(GatewayError::invalid_param(
        "messages",
        "An image_url must be a base64 data URL or an http(s) URL.",
    ))
}

// ---------------------------------------------------------------------------------------
// Answers

/// Counts kept as the provider sent them (for `raw_usage`); `tokens` clamps them.
#[derive(Debug, Deserialize, Default, Clone)]
struct Usage {
    #[serde(default)]
    input_tokens: Option<Number>,
    #[serde(default)]
    output_tokens: Option<Number>,
    #[serde(default)]
    cache_creation_input_tokens: Option<Number>,
    #[serde(default)]
    cache_read_input_tokens: Option<Number>,
}

impl Usage {
    /// Later reports (message_delta) override earlier ones (message_start) field by field.
    fn merge(&mut self, later: &Usage) {
        let pick = |a: &mut Option<Number>, b: &Option<Number>| {
            if b.is_some() {
                a.clone_from(b);
            }
        };
        pick(&mut self.input_tokens, &later.input_tokens);
        pick(&mut self.output_tokens, &later.output_tokens);
        pick(
            &mut self.cache_creation_input_tokens,
            &later.cache_creation_input_tokens,
        );
        pick(
            &mut self.cache_read_input_tokens,
            &later.cache_read_input_tokens,
        );
    }

    /// Anthropic's `input_tokens` excludes the cached part: it is the uncached input.
    fn tokens(&self) -> TokenUsage {
        let count = |n: &Option<Number>| n.as_ref().map_or(0, token_count);
        TokenUsage {
            input: count(&self.input_tokens),
            cache_read: count(&self.cache_read_input_tokens),
            cache_write: count(&self.cache_creation_input_tokens),
            output: count(&self.output_tokens),
            reasoning: 0,
        }
    }

    fn raw(&self) -> String {
        let mut m = Map::new();
        for (k, v) in [
            ("input_tokens", &self.input_tokens),
            ("output_tokens", &self.output_tokens),
            (
                "cache_creation_input_tokens",
                &self.cache_creation_input_tokens,
            ),
            ("cache_read_input_tokens", &self.cache_read_input_tokens),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), Value::Number(v.clone()));
            }
        }
        Value::Object(m).to_string()
    }
}

pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, and whatever comes next
        _ => "stop",
    }
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<Block>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<Value>,
    /// Set on an error answered with status 200 (`{"type":"error","error":{...}}`).
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// thinking, redacted_thinking, server tool blocks: not part of an OpenAI message.
    #[serde(other)]
    Other,
}

fn malformed() -> GatewayError {
    GatewayError::upstream("The provider answered with a body that is not an Anthropic message.")
}

pub fn read_response(
    dep: &Deployment,
    prepared: &Prepared,
    body: &[u8],
) -> Result<(Bytes, Option<ReportedUsage>), GatewayError> {
    let msg: Message = serde_json::from_slice(body).map_err(|_| malformed())?;
    if msg.error.as_ref().is_some_and(|e| !e.is_null()) {
        return Err(GatewayError::upstream(
            "The provider answered with an error instead of a message.",
        ));
    }
    let mut choice = chat::Choice::default();
    for block in msg.content {
        match block {
            Block::Text { text } => choice.content.push_str(&text),
            Block::ToolUse { id, name, input } => {
                let input = if input.is_null() { json!({}) } else { input };
                choice.tool_calls.push(chat::ToolCall {
                    id,
                    name,
                    arguments: input.to_string(),
                });
            }
            Block::Other => {}
        }
    }
    choice.finish_reason = chat::finish_reason(
        finish_reason(msg.stop_reason.as_deref()),
        !choice.tool_calls.is_empty(),
    );
    let reported = msg
        .usage
        .as_ref()
        .and_then(|u| serde_json::from_value::<Usage>(u.clone()).ok())
        .filter(|u| u.input_tokens.is_some() || u.output_tokens.is_some())
        .map(|u| ReportedUsage {
            tokens: u.tokens(),
            raw: u.raw(),
            estimated: false,
        });
    let usage = reported.or_else(|| {
        Some(estimate::estimate(
            &dep.model_id,
            Endpoint::ChatCompletions,
            &prepared.client_body,
            &choice.content,
            None,
        ))
    });
    let completion = chat::Completion {
        id: msg.id,
        model: if msg.model.is_empty() {
            dep.model_id.clone()
        } else {
            msg.model
        },
        created: chat::unix_now(),
        choices: vec![choice],
        usage: usage.as_ref().map(|u| u.tokens),
    };
    Ok((completion.to_json(), usage))
}

// ---------------------------------------------------------------------------------------
// Streams

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for message_start.
    Start,
    /// Inside the message.
    Message,
    /// message_stop arrived: `[DONE]` was sent.
    Done,
    /// An error event arrived and was told to the client; the rest is ignored.
    Failed,
}

/// What a content block index is, for the deltas that follow its start.
#[derive(Debug, Clone, Copy)]
enum BlockKind {
    Text,
    /// A tool call with its ordinal among the message's tool calls (the OpenAI index), and
    /// whether any argument text was sent for it yet.
    Tool {
        ordinal: usize,
        sent_arguments: bool,
    },
    Ignored,
}

/// One stream event. Read as a flat struct rather than a tagged enum: serde then reads an
/// event in one pass instead of buffering it to find its tag, and text stays borrowed from
/// the event unless it has escapes (this runs for every token).
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    index: usize,
    #[serde(default)]
    message: Option<StartMessage>,
    #[serde(default)]
    content_block: Option<StartBlock>,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct StartBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
}

/// A content block's delta (`text_delta`, `input_json_delta`, ...) or, in message_delta,
/// the message's (`stop_reason`).
#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize, Default)]
pub(crate) struct ErrorBody {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub message: String,
}

/// The OpenAI error `type` for an Anthropic error type.
pub(crate) fn openai_error_type(kind: &str) -> &'static str {
    match kind {
        "invalid_request_error" | "request_too_large" | "not_found_error" => {
            "invalid_request_error"
        }
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "rate_limit_error" => "rate_limit_exceeded",
        _ => "server_error", // api_error, overloaded_error
    }
}

/// Anthropic SSE in, OpenAI chunks out.
pub struct Translator {
    parser: sse_parse::SseParser,
    phase: Phase,
    writer: ChunkWriter,
    blocks: Vec<BlockKind>,
    tool_calls: usize,
    usage: Usage,
    saw_usage: bool,
    client_wants_usage: bool,
    /// The text and arguments sent so far, counted only if the stream ends without usage.
    sent_text: OutputSample,
    model_id: String,
    request: Bytes,
    error_type: Option<&'static str>,
}

impl Translator {
    pub fn new(dep: &Deployment, prepared: &Prepared) -> Translator {
        Translator {
            parser: sse_parse::SseParser::new().max_buffer(MAX_EVENT_BYTES),
            phase: Phase::Start,
            writer: ChunkWriter::new("", 0, &dep.model_id),
            blocks: Vec::new(),
            tool_calls: 0,
            usage: Usage::default(),
            saw_usage: false,
            client_wants_usage: prepared.client_wants_usage,
            sent_text: OutputSample::default(),
            model_id: dep.model_id.clone(),
            request: prepared.client_body.clone(),
            error_type: None,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        self.parser.feed(chunk);
        self.drain()
    }

    pub fn finish(&mut self) -> Bytes {
        self.parser.finish();
        self.drain()
    }

    fn drain(&mut self) -> Bytes {
        let mut out = Vec::new();
        while let Some(ev) = self.parser.next_event() {
            if matches!(self.phase, Phase::Done | Phase::Failed) {
                continue;
            }
            self.event(&ev.data, &mut out);
        }
        if self.parser.overflows() > 0 && !matches!(self.phase, Phase::Done | Phase::Failed) {
            chat::event_too_large(&mut out);
            self.phase = Phase::Failed;
            self.error_type = Some("upstream_event_too_large");
        }
        Bytes::from(out)
    }

    /// Bytes this stream holds for counting (the SSE parser's own buffer is capped at
    /// `MAX_EVENT_BYTES`).
    pub fn retained_bytes(&self) -> usize {
        self.sent_text.retained_bytes() + self.blocks.capacity() * std::mem::size_of::<BlockKind>()
    }

    fn event(&mut self, data: &str, out: &mut Vec<u8>) {
        let Ok(event) = serde_json::from_str::<Event>(data) else {
            // Not an event we can read. Anthropic may add event types; an unreadable one
            // must not break the answer.
            tracing::debug!(data, "unreadable Anthropic stream event skipped");
            return;
        };
        match event.kind.as_ref() {
            "message_start" => {
                if self.phase != Phase::Start {
                    return;
                }
                self.phase = Phase::Message;
                let (id, model, usage) = match event.message {
                    Some(m) => (m.id, m.model, m.usage),
                    None => (String::new(), String::new(), None),
                };
                let model = if model.is_empty() {
                    &self.model_id
                } else {
                    &model
                };
                self.writer = ChunkWriter::new(&id, chat::unix_now(), model);
                if let Some(u) = usage {
                    self.usage.merge(&u);
                }
                self.writer.role(out, 0);
            }
            "content_block_start" => {
                let Some(block) = event.content_block else {
                    return;
                };
                let kind = match block.kind.as_str() {
                    "text" => {
                        if !block.text.is_empty() {
                            self.sent_text.push(&block.text);
                            self.writer.content(out, 0, &block.text);
                        }
                        BlockKind::Text
                    }
                    "tool_use" => {
                        let ordinal = self.tool_calls;
                        self.tool_calls += 1;
                        self.writer
                            .tool_call(out, 0, ordinal, &block.id, &block.name, "");
                        BlockKind::Tool {
                            ordinal,
                            sent_arguments: false,
                        }
                    }
                    _ => BlockKind::Ignored, // thinking, server tools
                };
                let index = event.index;
                if index >= MAX_STREAM_INDEX {
                    return;
                }
                if self.blocks.len() <= index {
                    self.blocks.resize(index + 1, BlockKind::Ignored);
                }
                self.blocks[index] = kind;
            }
            "content_block_delta" => {
                let Some(delta) = event.delta else {
                    return;
                };
                match (self.blocks.get_mut(event.index), delta.kind.as_deref()) {
                    (Some(BlockKind::Text), Some("text_delta")) => {
                        let text = delta.text.unwrap_or_default();
                        if !text.is_empty() {
                            self.sent_text.push(&text);
                            self.writer.content(out, 0, &text);
                        }
                    }
                    (
                        Some(BlockKind::Tool {
                            ordinal,
                            sent_arguments,
                        }),
                        Some("input_json_delta"),
                    ) => {
                        let partial = delta.partial_json.unwrap_or_default();
                        if !partial.is_empty() {
                            *sent_arguments = true;
                            self.sent_text.push(&partial);
                            self.writer.tool_arguments(out, 0, *ordinal, &partial);
                        }
                    }
                    _ => {} // thinking, signatures, citations
                }
            }
            "content_block_stop" => {
                // A tool called without input streams no JSON at all; the whole answer says
                // `{}`, so the stream must too.
                if let Some(BlockKind::Tool {
                    ordinal,
                    sent_arguments: false,
                }) = self.blocks.get(event.index).copied()
                {
                    self.writer.tool_arguments(out, 0, ordinal, "{}");
                    self.blocks[event.index] = BlockKind::Tool {
                        ordinal,
                        sent_arguments: true,
                    };
                }
            }
            "message_delta" => {
                if let Some(u) = event.usage {
                    self.usage.merge(&u);
                    self.saw_usage = true;
                }
                let stop_reason = event.delta.and_then(|d| d.stop_reason);
                if stop_reason.is_some() {
                    let reason = chat::finish_reason(
                        finish_reason(stop_reason.as_deref()),
                        self.tool_calls > 0,
                    );
                    self.writer.finish(out, 0, reason);
                }
            }
            "message_stop" => {
                if self.client_wants_usage {
                    if let Some(u) = self.usage() {
                        self.writer.usage(out, &u.tokens);
                    }
                }
                chat::done(out);
                self.phase = Phase::Done;
            }
            "error" => {
                let error = event.error.unwrap_or_default();
                let message = if error.message.is_empty() {
                    "The provider reported an error mid-stream."
                } else {
                    &error.message
                };
                let kind = if error.kind.is_empty() {
                    "api_error"
                } else {
                    &error.kind
                };
                chat::error_event(out, openai_error_type(kind), kind, message);
                self.phase = Phase::Failed;
                self.error_type = Some("upstream_stream_error");
            }
            _ => {} // ping, and event types added later
        }
    }

    /// The provider's usage once the message is complete; an estimate when the stream
    /// ended early (what the provider counted so far is kept).
    pub fn usage(&self) -> Option<ReportedUsage> {
        let reported = ReportedUsage {
            tokens: self.usage.tokens(),
            raw: self.usage.raw(),
            estimated: false,
        };
        if self.saw_usage && self.phase != Phase::Failed {
            return Some(reported);
        }
        if self.phase == Phase::Start && self.sent_text.is_empty() {
            return None; // nothing was generated
        }
        let partial = self.usage.input_tokens.is_some().then_some(&reported);
        Some(estimate::estimate_counted(
            &self.model_id,
            Endpoint::ChatCompletions,
            &self.request,
            self.sent_text.tokens(&self.model_id),
            partial,
        ))
    }

    pub fn error_type(&self) -> Option<&'static str> {
        self.error_type
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Api;
    use crate::providers::chat::testing::{assert_same_choices, choices_of, collect};
    use crate::providers::testing::{deployment, prepared_for};

    fn translate(body: &str) -> Value {
        let dep = deployment(Api::Anthropic, "claude-x");
        let prepared = prepare(
            &dep,
            Endpoint::ChatCompletions,
            &JsonObject::parse(Bytes::copy_from_slice(body.as_bytes())).unwrap(),
        )
        .unwrap();
        assert_eq!(
            prepared.request.uri.to_string(),
            "http://anthropic.test/v1/messages"
        );
        assert_eq!(prepared.request.headers["anthropic-version"], API_VERSION);
        assert_eq!(prepared.request.headers["x-api-key"], "sk-test");
        serde_json::from_slice(&prepared.request.body).unwrap()
    }

    fn translate_err(body: &str) -> GatewayError {
        let dep = deployment(Api::Anthropic, "claude-x");
        prepare(
            &dep,
            Endpoint::ChatCompletions,
            &JsonObject::parse(Bytes::copy_from_slice(body.as_bytes())).unwrap(),
        )
        .unwrap_err()
    }

    #[test]
    fn system_messages_parameters_and_default_max_tokens() {
        let v = translate(
            r#"{"model":"c","messages":[
            {"role":"system","content":"Be brief."},
            {"role":"developer","content":[{"type":"text","text":"Use French."}]},
            {"role":"user","content":"Hi"}],
            "stop":"END","temperature":1.5,"top_p":0.9,"user":"u1"}"#,
        );
        assert_eq!(v["model"], "claude-x");
        assert_eq!(
            v["system"],
            json!([{"type":"text","text":"Be brief."},{"type":"text","text":"Use French."}])
        );
        assert_eq!(
            v["messages"],
            json!([{"role":"user","content":[{"type":"text","text":"Hi"}]}])
        );
        assert_eq!(
            v["max_tokens"], 1000,
            "the model's max_output_tokens is the default"
        );
        assert_eq!(v["stop_sequences"], json!(["END"]));
        assert_eq!(v["temperature"], 1.0);
        assert_eq!(v["top_p"], 0.9);
        assert_eq!(v["metadata"]["user_id"], "u1");
        assert!(v.get("stream").is_none());
        let v = translate(
            r#"{"model":"c","messages":[{"role":"user","content":"Hi"}],"max_tokens":7,"max_completion_tokens":9,"stream":true}"#,
        );
        assert_eq!(v["max_tokens"], 9);
        assert_eq!(v["stream"], true);
    }

    #[test]
    fn cache_control_on_text_parts_is_kept() {
        let v = translate(
            r#"{"model":"c","messages":[
            {"role":"system","content":[{"type":"text","text":"Long rules","cache_control":{"type":"ephemeral"}}]},
            {"role":"user","content":[{"type":"text","text":"Hi","cache_control":{"type":"ephemeral"}}]}]}"#,
        );
        assert_eq!(
            v["system"],
            json!([{"type":"text","text":"Long rules","cache_control":{"type":"ephemeral"}}])
        );
        assert_eq!(
            v["messages"][0]["content"][0]["cache_control"]["type"],
            "ephemeral"
        );
    }

    #[test]
    fn max_tokens_falls_back_to_4096_without_a_model_limit() {
        let mut dep = deployment(Api::Anthropic, "claude-x");
        dep.max_output_tokens = None;
        let body = JsonObject::parse(Bytes::from_static(
            br#"{"model":"c","messages":[{"role":"user","content":"Hi"}]}"#,
        ))
        .unwrap();
        assert_eq!(
            request_body(&dep, &body, false).unwrap()["max_tokens"],
            4096
        );
    }

    #[test]
    fn tools_tool_choice_and_parallel_calls() {
        let base = r#""messages":[{"role":"user","content":"Weather?"}],"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather now","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]"#;
        let v = translate(&format!(r#"{{"model":"c",{base}}}"#));
        assert_eq!(
            v["tools"],
            json!([{"name":"get_weather","description":"Weather now","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}])
        );
        assert_eq!(v["tool_choice"], json!({"type":"auto"}));
        for (choice, want) in [
            (
                r#""auto""#,
                json!({"type":"auto","disable_parallel_tool_use":true}),
            ),
            (
                r#""required""#,
                json!({"type":"any","disable_parallel_tool_use":true}),
            ),
            (r#""none""#, json!({"type":"none"})),
            (
                r#"{"type":"function","function":{"name":"get_weather"}}"#,
                json!({"type":"tool","name":"get_weather","disable_parallel_tool_use":true}),
            ),
        ] {
            let v = translate(&format!(
                r#"{{"model":"c",{base},"tool_choice":{choice},"parallel_tool_calls":false}}"#
            ));
            assert_eq!(v["tool_choice"], want, "{choice}");
        }
        let e = translate_err(&format!(r#"{{"model":"c",{base},"tool_choice":"maybe"}}"#));
        assert_eq!(e.status, 400);
    }

    #[test]
    fn tool_round_trip_merges_consecutive_results_into_one_user_turn() {
        let v = translate(
            r#"{"model":"c","messages":[
            {"role":"user","content":"Weather in Paris and Rome?"},
            {"role":"assistant","content":null,"tool_calls":[
                {"id":"toolu_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
                {"id":"toolu_2","type":"function","function":{"name":"get_weather","arguments":""}}]},
            {"role":"tool","tool_call_id":"toolu_1","content":"18C"},
            {"role":"tool","tool_call_id":"toolu_2","content":[{"type":"text","text":"21C"}]},
            {"role":"user","content":"Thanks"}]}"#,
        );
        assert_eq!(
            v["messages"],
            json!([
                {"role":"user","content":[{"type":"text","text":"Weather in Paris and Rome?"}]},
                {"role":"assistant","content":[
                    {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}},
                    {"type":"tool_use","id":"toolu_2","name":"get_weather","input":{}}]},
                {"role":"user","content":[
                    {"type":"tool_result","tool_use_id":"toolu_1","content":"18C"},
                    {"type":"tool_result","tool_use_id":"toolu_2","content":"21C"},
                    {"type":"text","text":"Thanks"}]}
            ])
        );
        let e = translate_err(
            r#"{"model":"c","messages":[{"role":"assistant","tool_calls":[{"id":"t","type":"function","function":{"name":"f","arguments":"{oops"}}]}]}"#,
        );
        assert_eq!(e.param.as_deref(), Some("messages"));
    }

    #[test]
    fn images_by_data_url_and_by_http_url() {
        let v = translate(
            r#"{"model":"c","messages":[{"role":"user","content":[
            {"type":"text","text":"What is this?"},
            {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},
            {"type":"image_url","image_url":{"url":"https://example.com/cat.jpg","detail":"high"}},
            {"type":"image_url","image_url":{"url":"https://example.com/doc.pdf"}}]}]}"#,
        );
        assert_eq!(
            v["messages"][0]["content"],
            json!([
                {"type":"text","text":"What is this?"},
                {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},
                {"type":"image","source":{"type":"url","url":"https://example.com/cat.jpg"}},
                {"type":"document","source":{"type":"url","url":"https://example.com/doc.pdf"}}
            ])
        );
        let e = translate_err(
            r#"{"model":"c","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/tiff;base64,AA=="}}]}]}"#,
        );
        assert!(e.message.contains("image/tiff"));
        let e = translate_err(
            r#"{"model":"c","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"file:///etc/passwd"}}]}]}"#,
        );
        assert_eq!(e.status, 400);
    }

    #[test]
    fn embeddings_completions_and_n_are_refused_clearly() {
        let dep = deployment(Api::Anthropic, "claude-x");
        let body = JsonObject::parse(Bytes::from_static(br#"{"model":"c","input":"x"}"#)).unwrap();
        let e = prepare(&dep, Endpoint::Embeddings, &body).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.param.as_deref()),
            (400, Some("model"))
        );
        assert!(e.message.contains("no embeddings"));
        let e = translate_err(r#"{"model":"c","messages":[{"role":"user","content":"x"}],"n":2}"#);
        assert_eq!(e.param.as_deref(), Some("n"));
    }

    const MESSAGE: &str = r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-x-2025",
        "content":[{"type":"thinking","thinking":"hmm","signature":"s"},{"type":"text","text":"Let me check. "},
          {"type":"tool_use","id":"toolu_01","name":"get_weather","input":{"city":"Paris"}},
          {"type":"tool_use","id":"toolu_02","name":"get_time","input":{}}],
        "stop_reason":"tool_use","stop_sequence":null,
        "usage":{"input_tokens":100,"output_tokens":30,"cache_creation_input_tokens":20,"cache_read_input_tokens":500}}"#;

    fn read(body: &str) -> (Value, Option<ReportedUsage>) {
        let dep = deployment(Api::Anthropic, "claude-x");
        let p = prepared_for(
            &dep,
            r#"{"model":"c","messages":[{"role":"user","content":"hello there"}]}"#,
            false,
        );
        let (out, usage) = read_response(&dep, &p, body.as_bytes()).unwrap();
        (serde_json::from_slice(&out).unwrap(), usage)
    }

    #[test]
    fn whole_answer_with_tools_cache_usage_and_thinking_dropped() {
        let (v, usage) = read(MESSAGE);
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["id"], "msg_01");
        assert_eq!(v["model"], "claude-x-2025");
        let m = &v["choices"][0]["message"];
        assert_eq!(m["content"], "Let me check. ");
        assert_eq!(m["tool_calls"][0]["id"], "toolu_01");
        assert_eq!(
            m["tool_calls"][0]["function"]["arguments"],
            r#"{"city":"Paris"}"#
        );
        assert_eq!(m["tool_calls"][1]["function"]["arguments"], "{}");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["usage"]["prompt_tokens"], 620);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 500);
        assert_eq!(v["usage"]["completion_tokens"], 30);
        let u = usage.unwrap();
        assert!(!u.estimated);
        assert_eq!(
            u.tokens,
            TokenUsage {
                input: 100,
                cache_read: 500,
                cache_write: 20,
                output: 30,
                reasoning: 0
            }
        );
        assert!(u.raw.contains("cache_creation_input_tokens"));
    }

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        for (stop, want) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("pause_turn", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
        ] {
            let body = format!(
                r#"{{"id":"m","model":"c","content":[{{"type":"text","text":""}}],"stop_reason":"{stop}","usage":{{"input_tokens":1,"output_tokens":0}}}}"#
            );
            let (v, _) = read(&body);
            assert_eq!(v["choices"][0]["finish_reason"], want, "{stop}");
            assert_eq!(v["choices"][0]["message"]["content"], "");
        }
    }

    #[test]
    fn garbage_and_missing_usage() {
        let dep = deployment(Api::Anthropic, "claude-x");
        let p = prepared_for(
            &dep,
            r#"{"model":"c","messages":[{"role":"user","content":"hello"}]}"#,
            false,
        );
        assert_eq!(read_response(&dep, &p, b"<html>").unwrap_err().status, 502);
        let error = br#"{"type":"error","error":{"type":"overloaded_error","message":"x"}}"#;
        assert_eq!(read_response(&dep, &p, error).unwrap_err().status, 502);
        let (_, usage) = read(
            r#"{"id":"m","content":[{"type":"text","text":"hello world"}],"stop_reason":"end_turn"}"#,
        );
        let u = usage.unwrap();
        assert!(u.estimated);
        assert_eq!(u.tokens.output, 2);
        assert!(u.tokens.input > 0);
    }

    const STREAM: &str = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-x-2025\",\"stop_reason\":null,\"usage\":{\"input_tokens\":100,\"cache_creation_input_tokens\":20,\"cache_read_input_tokens\":500,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me \"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"check. \"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":3,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_02\",\"name\":\"get_time\",\"input\":{}}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":3}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":30}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    fn run(stream: &[u8], include_usage: bool, cuts: &[usize]) -> (Vec<u8>, Translator) {
        let dep = deployment(Api::Anthropic, "claude-x");
        let p = prepared_for(
            &dep,
            r#"{"model":"c","messages":[{"role":"user","content":"hello there"}],"stream":true}"#,
            include_usage,
        );
        let mut t = Translator::new(&dep, &p);
        let out = crate::providers::testing::feed(&mut t, stream, cuts);
        (out, t)
    }

    #[test]
    fn stream_translates_text_tools_and_usage() {
        let (out, t) = run(STREAM.as_bytes(), true, &[]);
        let c = collect(&out);
        assert!(c.done);
        assert_eq!(c.role_chunks, 1);
        assert_eq!(c.choices[0].content, "Let me check. ");
        assert_eq!(c.choices[0].tool_calls.len(), 2);
        assert_eq!(c.choices[0].tool_calls[0].id, "toolu_01");
        assert_eq!(
            c.choices[0].tool_calls[0].arguments,
            "{\"city\": \"Paris\"}"
        );
        assert_eq!(c.choices[0].tool_calls[1].arguments, "{}");
        assert_eq!(c.choices[0].finish_reason, "tool_calls");
        assert_eq!(c.usage_chunks, 1);
        assert_eq!(c.usage.as_ref().unwrap()["prompt_tokens"], 620);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.contains("\"index\":0,\"id\":\"toolu_01\""),
            "tool index is the tool ordinal, not the block index"
        );
        assert!(text.contains("\"index\":1,\"id\":\"toolu_02\""));
        let u = t.usage().unwrap();
        assert!(!u.estimated);
        assert_eq!(
            u.tokens,
            TokenUsage {
                input: 100,
                cache_read: 500,
                cache_write: 20,
                output: 30,
                reasoning: 0
            }
        );
        assert!(t.error_type().is_none());
    }

    #[test]
    fn streamed_and_whole_answers_agree() {
        let (out, t) = run(STREAM.as_bytes(), false, &[]);
        let c = collect(&out);
        assert!(c.usage.is_none(), "no usage chunk unless the client asked");
        let (whole, usage) = read(MESSAGE);
        assert_same_choices(&c.choices, &choices_of(&whole));
        assert_eq!(t.usage().unwrap().tokens, usage.unwrap().tokens);
    }

    #[test]
    fn events_split_at_every_byte_give_the_same_answer() {
        let bytes = STREAM.as_bytes();
        let (whole, _) = run(bytes, true, &[]);
        let want = collect(&whole);
        for cut in 1..bytes.len() {
            let (out, t) = run(bytes, true, &[cut]);
            assert_eq!(collect(&out), want, "cut at {cut}");
            assert_eq!(t.usage().unwrap().tokens.output, 30);
        }
        // and one byte at a time
        let cuts: Vec<usize> = (1..bytes.len()).collect();
        let (out, _) = run(bytes, true, &cuts);
        assert_eq!(collect(&out), want);
    }

    #[test]
    fn crlf_line_endings_are_events_too() {
        let crlf = STREAM.replace('\n', "\r\n");
        let (out, _) = run(crlf.as_bytes(), false, &[]);
        assert_eq!(collect(&out).choices[0].content, "Let me check. ");
    }

    /// Absurd, negative and fractional counts are clamped for billing, in a whole answer and
    /// in a stream, and the raw usage keeps them as the provider sent them.
    #[test]
    fn absurd_usage_is_clamped_and_kept_as_sent() {
        let clamped = TokenUsage {
            input: crate::metering::MAX_TOKENS,
            ..TokenUsage::default()
        };
        let (_, usage) = read(
            r#"{"id":"m","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn",
            "usage":{"input_tokens":1000000000000000000,"output_tokens":-3,"cache_read_input_tokens":2.5}}"#,
        );
        let u = usage.unwrap();
        assert!(!u.estimated);
        assert_eq!(u.tokens, clamped);
        let raw: Value = serde_json::from_str(&u.raw).unwrap();
        assert_eq!(
            raw["input_tokens"].as_u64(),
            Some(1_000_000_000_000_000_000)
        );
        assert_eq!(raw["output_tokens"], -3);
        assert_eq!(raw["cache_read_input_tokens"], 2.5);

        let s = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":1e18,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":-3}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let (out, t) = run(s.as_bytes(), false, &[]);
        assert!(collect(&out).done);
        let u = t.usage().unwrap();
        assert!(!u.estimated);
        assert_eq!(u.tokens, clamped);
        let raw: Value = serde_json::from_str(&u.raw).unwrap();
        assert_eq!(raw["input_tokens"], 1e18);
        assert_eq!(raw["output_tokens"], -3);
    }

    #[test]
    fn mid_stream_error_becomes_an_openai_error_event_and_ends_the_stream() {
        let s = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hello world\"}}\n\n",
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"ignored\"}}\n\n",
        );
        let (out, t) = run(s.as_bytes(), true, &[]);
        let c = collect(&out);
        assert!(!c.done);
        assert_eq!(c.choices[0].content, "hello world");
        assert_eq!(c.errors.len(), 1);
        assert_eq!(c.errors[0]["error"]["message"], "Overloaded");
        assert_eq!(c.errors[0]["error"]["code"], "overloaded_error");
        assert_eq!(c.errors[0]["error"]["type"], "server_error");
        assert_eq!(t.error_type(), Some("upstream_stream_error"));
        let u = t.usage().unwrap();
        assert!(u.estimated);
        assert_eq!(
            (u.tokens.input, u.tokens.output),
            (12, 2),
            "prompt as reported, output counted"
        );
    }

    #[test]
    fn cut_stream_is_estimated_and_empty_or_unicode_text_survives() {
        let s = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"日本語 😀 \\\"q\\\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_bl",
        );
        let (out, t) = run(s.as_bytes(), true, &[]);
        let c = collect(&out);
        assert_eq!(c.choices[0].content, "日本語 😀 \"q\"");
        assert!(!c.done && c.errors.is_empty());
        let u = t.usage().unwrap();
        assert!(u.estimated);
        assert_eq!(u.tokens.input, 5);
        assert!(u.tokens.output >= 3);
        // nothing at all: no usage
        let (out, t) = run(b"", true, &[]);
        assert!(out.is_empty());
        assert!(t.usage().is_none());
    }

    #[test]
    fn unknown_and_unreadable_events_are_skipped() {
        let s = format!(
            "event: future\ndata: {{\"type\":\"future_event\"}}\n\ndata: not json\n\n{STREAM}"
        );
        let (out, _) = run(s.as_bytes(), false, &[]);
        assert!(collect(&out).done);
    }

    /// A long answer and a huge block index cost bounded memory; an event that never ends
    /// is cut with an error event.
    #[test]
    fn long_streams_and_endless_events_are_bounded() {
        let dep = deployment(Api::Anthropic, "claude-x");
        let p = prepared_for(
            &dep,
            r#"{"model":"c","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
            false,
        );
        let mut t = Translator::new(&dep, &p);
        let start = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":5}}}\n\n",
            "data: {\"type\":\"content_block_start\",\"index\":4000000000,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        );
        t.push(start.as_bytes());
        let delta = format!(
            "data: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{}\"}}}}\n\n",
            "hello world ".repeat(1000)
        );
        for _ in 0..(20_000_000 / delta.len()) {
            assert!(!t.push(delta.as_bytes()).is_empty());
        }
        assert!(t.retained_bytes() <= 2 * estimate::OUTPUT_SAMPLE_BYTES);
        assert!(t.usage().unwrap().tokens.output > 3_000_000);
        let mut out = t.push(b"data: {\"type\":\"content_block_delta\",").to_vec();
        for _ in 0..(MAX_EVENT_BYTES / 65536 + 2) {
            out.extend_from_slice(&t.push(&[b'x'; 65536]));
        }
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("upstream_event_too_large"), "{out}");
        assert_eq!(t.error_type(), Some("upstream_event_too_large"));
    }
}
