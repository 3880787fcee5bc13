//! The OpenAI chat shapes that translating adapters (Anthropic, Gemini) read and write:
//! the request's messages and tools as typed values, the whole `chat.completion` answer, and
//! the `chat.completion.chunk` events of a stream, written straight into a byte buffer.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::JsonObject;
use crate::error::GatewayError;
use crate::metering::TokenUsage;
use crate::registry::Deployment;

// ---------------------------------------------------------------------------------------
// Request side

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallIn>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text {
        text: String,
        /// Anthropic prompt caching, as LiteLLM's clients send it on OpenAI parts.
        #[serde(default)]
        cache_control: Option<Value>,
    },
    ImageUrl {
        image_url: ImageUrl,
    },
    /// Anything else (audio, files): refused with a clear message by the adapter.
    #[serde(other)]
    Unsupported,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ImageUrl {
    Object { url: String },
    Bare(String),
}

impl ImageUrl {
    pub fn url(&self) -> &str {
        match self {
            ImageUrl::Object { url } | ImageUrl::Bare(url) => url,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ToolCallIn {
    pub id: String,
    pub function: FunctionCallIn,
}

#[derive(Debug, Deserialize)]
pub struct FunctionCallIn {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

#[derive(Debug, Deserialize)]
pub struct Tool {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub function: FunctionDef,
}

#[derive(Debug, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
}

/// `tool_choice` after reading either of its spellings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Named(String),
}

impl Content {
    /// The text of the content, parts joined; images are left out.
    pub fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(""),
        }
    }
}

/// One request parameter: the client's value, else the model's default parameter.
pub fn param<T: serde::de::DeserializeOwned>(
    body: &JsonObject,
    dep: &Deployment,
    key: &str,
) -> Result<Option<T>, GatewayError> {
    if body.contains(key) {
        return body.get::<T>(key).map_err(|e| {
            GatewayError::invalid_param(key, format!("Invalid value for '{key}': {e}."))
        });
    }
    match dep.parameters.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
            GatewayError::invalid_param(
                key,
                format!("The model's default parameter '{key}' is invalid: {e}."),
            )
        }),
    }
}

pub fn messages(body: &JsonObject) -> Result<Vec<Message>, GatewayError> {
    body.get::<Vec<Message>>("messages")
        .map_err(|e| GatewayError::invalid_param("messages", format!("Invalid 'messages': {e}.")))?
        .ok_or_else(|| {
            GatewayError::invalid_param("messages", "Missing required parameter: 'messages'.")
        })
}

pub fn tools(body: &JsonObject) -> Result<Vec<Tool>, GatewayError> {
    let tools: Vec<Tool> = body
        .get("tools")
        .map_err(|e| GatewayError::invalid_param("tools", format!("Invalid 'tools': {e}.")))?
        .unwrap_or_default();
    if let Some(t) = tools
        .iter()
        .find(|t| t.kind.as_deref().is_some_and(|k| k != "function"))
    {
        return Err(GatewayError::invalid_param(
            "tools",
            format!(
                "Tool type '{}' is not supported by this model's provider; only 'function' tools are.",
                t.kind.as_deref().unwrap_or_default()
            ),
        ));
    }
    Ok(tools)
}

pub fn tool_choice(body: &JsonObject) -> Result<Option<ToolChoice>, GatewayError> {
    let bad = || GatewayError::invalid_param("tool_choice", "Invalid value for 'tool_choice'.");
    let Some(v) = body.get::<Value>("tool_choice").map_err(|_| bad())? else {
        return Ok(None);
    };
    Ok(Some(match &v {
        Value::String(s) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => return Err(bad()),
        },
        Value::Object(_) => {
            let name = v
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(bad)?;
            ToolChoice::Named(name.to_owned())
        }
        _ => return Err(bad()),
    }))
}

/// `stop` as a list (OpenAI accepts a string or up to four strings).
pub fn stop_sequences(body: &JsonObject) -> Result<Option<Vec<String>>, GatewayError> {
    let bad =
        || GatewayError::invalid_param("stop", "'stop' must be a string or an array of strings.");
    match body.get::<Value>("stop").map_err(|_| bad())? {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s])),
        Some(v @ Value::Array(_)) => serde_json::from_value(v).map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// Tool call arguments as the JSON object providers want (OpenAI sends them as a string).
pub fn parse_arguments(arguments: &str) -> Result<Value, GatewayError> {
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str(arguments).map_err(|_| {
        GatewayError::invalid_param(
            "messages",
            "An assistant message has tool_calls whose 'arguments' are not valid JSON.",
        )
    })
}

/// A `data:` URL split into its media type and base64 payload.
pub fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    Some((media_type, data))
}

pub fn is_http_url(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

/// The request's `stream_options.include_usage`.
pub fn client_wants_usage(body: &JsonObject) -> bool {
    body.get::<Value>("stream_options")
        .ok()
        .flatten()
        .and_then(|o| o.get("include_usage").and_then(Value::as_bool))
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------
// Response side

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// One choice of a whole answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Choice {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: &'static str,
}

/// A whole answer, written as an OpenAI `chat.completion`.
#[derive(Debug, Clone)]
pub struct Completion {
    pub id: String,
    pub model: String,
    pub created: i64,
    pub choices: Vec<Choice>,
    pub usage: Option<TokenUsage>,
}

/// OpenAI's usage object: `prompt_tokens` includes cached tokens, `completion_tokens`
/// includes reasoning tokens.
pub fn usage_json(u: &TokenUsage) -> Value {
    let prompt = u.prompt_total();
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": u.output,
        "total_tokens": prompt + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cache_read},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning},
    })
}

impl Completion {
    pub fn to_json(&self) -> Bytes {
        let choices: Vec<Value> = self
            .choices
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut message = json!({"role": "assistant", "content": c.content, "refusal": null});
                if !c.tool_calls.is_empty() {
                    if c.content.is_empty() {
                        message["content"] = Value::Null;
                    }
                    message["tool_calls"] = c
                        .tool_calls
                        .iter()
                        .map(|t| {
                            json!({"id": t.id, "type": "function",
                                   "function": {"name": t.name, "arguments": t.arguments}})
                        })
                        .collect();
                }
                json!({"index": i, "message": message, "logprobs": null, "finish_reason": c.finish_reason})
            })
            .collect();
        let mut body = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let Some(u) = &self.usage {
            body["usage"] = usage_json(u);
        }
        Bytes::from(body.to_string())
    }
}

/// The finish reason a client sees: tool calls present means `tool_calls`, whatever the
/// provider said (Gemini says STOP when it calls a function).
pub fn finish_reason(mapped: &'static str, has_tool_calls: bool) -> &'static str {
    if has_tool_calls {
        "tool_calls"
    } else {
        mapped
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Writes `chat.completion.chunk` events. The part every chunk shares (id, object, created,
/// model) is serialised once per stream.
#[derive(Debug, Clone)]
pub struct ChunkWriter {
    head: Vec<u8>,
}

fn write_number(out: &mut Vec<u8>, n: usize) {
    use std::io::Write;
    write!(out, "{n}").expect("writing to a Vec cannot fail");
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

impl ChunkWriter {
    pub fn new(id: &str, created: i64, model: &str) -> ChunkWriter {
        let mut head = b"data: {\"id\":".to_vec();
        put_str(&mut head, id);
        head.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        head.extend_from_slice(created.to_string().as_bytes());
        head.extend_from_slice(b",\"model\":");
        put_str(&mut head, model);
        head.extend_from_slice(b",\"choices\":[");
        ChunkWriter { head }
    }

    fn open(&self, out: &mut Vec<u8>, choice: usize) {
        out.extend_from_slice(&self.head);
        out.extend_from_slice(b"{\"index\":");
        write_number(out, choice);
        out.extend_from_slice(b",\"delta\":");
    }

    fn close(out: &mut Vec<u8>, finish_reason: Option<&str>) {
        out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
        match finish_reason {
            Some(r) => put_str(out, r),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}]}\n\n");
    }

    /// The first chunk of a choice.
    pub fn role(&self, out: &mut Vec<u8>, choice: usize) {
        self.open(out, choice);
        out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":\"\"}");
        Self::close(out, None);
    }

    pub fn content(&self, out: &mut Vec<u8>, choice: usize, text: &str) {
        self.open(out, choice);
        out.extend_from_slice(b"{\"content\":");
        put_str(out, text);
        out.push(b'}');
        Self::close(out, None);
    }

    /// The first delta of tool call `tool` (its ordinal among the choice's tool calls).
    pub fn tool_call(
        &self,
        out: &mut Vec<u8>,
        choice: usize,
        tool: usize,
        id: &str,
        name: &str,
        arguments: &str,
    ) {
        self.open(out, choice);
        out.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
        write_number(out, tool);
        out.extend_from_slice(b",\"id\":");
        put_str(out, id);
        out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
        put_str(out, name);
        out.extend_from_slice(b",\"arguments\":");
        put_str(out, arguments);
        out.extend_from_slice(b"}}]}");
        Self::close(out, None);
    }

    pub fn tool_arguments(&self, out: &mut Vec<u8>, choice: usize, tool: usize, partial: &str) {
        self.open(out, choice);
        out.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
        write_number(out, tool);
        out.extend_from_slice(b",\"function\":{\"arguments\":");
        put_str(out, partial);
        out.extend_from_slice(b"}}]}");
        Self::close(out, None);
    }

    pub fn finish(&self, out: &mut Vec<u8>, choice: usize, reason: &str) {
        self.open(out, choice);
        out.extend_from_slice(b"{}");
        Self::close(out, Some(reason));
    }

    /// The usage chunk `stream_options.include_usage` asks for: no choices, whole usage.
    pub fn usage(&self, out: &mut Vec<u8>, usage: &TokenUsage) {
        out.extend_from_slice(&self.head);
        out.extend_from_slice(b"],\"usage\":");
        serde_json::to_writer(&mut *out, &usage_json(usage)).expect("writing to a Vec cannot fail");
        out.extend_from_slice(b"}\n\n");
    }
}

pub fn done(out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: [DONE]\n\n");
}

/// An error after the stream started: an OpenAI-shaped error event (the stream ends after it).
pub fn error_event(out: &mut Vec<u8>, kind: &str, code: &str, message: &str) {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    out.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut *out, &body).expect("writing to a Vec cannot fail");
    out.extend_from_slice(b"\n\n");
}

/// A whole answer (`chat.completion` or `text_completion`) as the stream that carries it: one
/// chunk whose deltas are the whole messages, the usage chunk when the client asked for it,
/// and `[DONE]`. None when the body is not an answer (no choices).
pub fn completion_as_stream(body: &[u8], with_usage: bool) -> Option<Bytes> {
    let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let choices = answer.get_mut("choices")?.as_array_mut()?;
    if choices.is_empty() {
        return None;
    }
    for choice in choices.iter_mut() {
        let choice = choice.as_object_mut()?;
        if let Some(mut message) = choice.remove("message") {
            // Tool calls in a delta say their place in the list.
            let calls = message.get_mut("tool_calls").and_then(Value::as_array_mut);
            for (i, call) in calls.into_iter().flatten().enumerate() {
                if let Some(call) = call.as_object_mut() {
                    call.entry("index").or_insert(i.into());
                }
            }
            choice.insert("delta".into(), message);
        }
    }
    if answer.get("object").and_then(Value::as_str) == Some("chat.completion") {
        answer.insert("object".into(), "chat.completion.chunk".into());
    }
    let usage = answer.remove("usage").filter(Value::is_object);
    let mut out = Vec::new();
    let mut event = |v: &Value| {
        out.extend_from_slice(b"data: ");
        serde_json::to_writer(&mut out, v).expect("writing to a Vec cannot fail");
        out.extend_from_slice(b"\n\n");
    };
    if let (true, Some(usage)) = (with_usage, usage) {
        let mut usage_chunk: serde_json::Map<String, Value> = ["id", "object", "created", "model"]
            .iter()
            .filter_map(|k| Some((k.to_string(), answer.get(*k)?.clone())))
            .collect();
        usage_chunk.insert("choices".into(), json!([]));
        usage_chunk.insert("usage".into(), usage);
        event(&Value::Object(answer));
        event(&Value::Object(usage_chunk));
    } else {
        event(&Value::Object(answer));
    }
    done(&mut out);
    Some(Bytes::from(out))
}

/// The error event that ends a stream whose provider sent an event over `MAX_EVENT_BYTES`.
pub fn event_too_large(out: &mut Vec<u8>) {
    error_event(
        out,
        "server_error",
        "upstream_event_too_large",
        &format!(
            "The provider sent a stream event larger than the gateway's limit of {} bytes.",
            super::MAX_EVENT_BYTES
        ),
    );
}

#[cfg(test)]
pub mod testing {
    //! Reads a client-side OpenAI stream back into the whole answer it describes, the way an
    //! SDK's stream helper does, so tests can compare streamed and whole answers.

    use super::*;

    #[derive(Debug, Default, PartialEq)]
    pub struct Collected {
        pub choices: Vec<Choice>,
        pub usage: Option<Value>,
        pub usage_chunks: usize,
        pub done: bool,
        pub errors: Vec<Value>,
        pub role_chunks: usize,
    }

    pub fn collect(sse: &[u8]) -> Collected {
        let mut parser = sse_parse::SseParser::new();
        parser.feed(sse);
        parser.finish();
        let mut c = Collected::default();
        while let Some(ev) = parser.next_event() {
            assert!(!c.done, "an event after [DONE]: {}", ev.data);
            if ev.data == "[DONE]" {
                c.done = true;
                continue;
            }
            let v: Value = serde_json::from_str(&ev.data).expect("every event is JSON");
            if v.get("error").is_some() {
                c.errors.push(v);
                continue;
            }
            assert_eq!(v["object"], "chat.completion.chunk", "{v}");
            if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                c.usage = Some(u.clone());
                c.usage_chunks += 1;
                assert_eq!(v["choices"], json!([]));
            }
            for ch in v["choices"].as_array().unwrap() {
                let i = ch["index"].as_u64().unwrap() as usize;
                if c.choices.len() <= i {
                    c.choices.resize_with(i + 1, Choice::default);
                }
                let choice = &mut c.choices[i];
                let d = &ch["delta"];
                if d.get("role").is_some() {
                    c.role_chunks += 1;
                }
                if let Some(t) = d["content"].as_str() {
                    choice.content.push_str(t);
                }
                for tc in d["tool_calls"].as_array().into_iter().flatten() {
                    let k = tc["index"].as_u64().unwrap() as usize;
                    if let Some(id) = tc["id"].as_str() {
                        assert_eq!(k, choice.tool_calls.len(), "tool indexes count up");
                        choice.tool_calls.push(ToolCall {
                            id: id.into(),
                            name: tc["function"]["name"].as_str().unwrap().into(),
                            arguments: String::new(),
                        });
                    }
                    let args = tc["function"]["arguments"].as_str().unwrap_or("");
                    choice.tool_calls[k].arguments.push_str(args);
                }
                if let Some(r) = ch["finish_reason"].as_str() {
                    choice.finish_reason = match r {
                        "stop" => "stop",
                        "length" => "length",
                        "tool_calls" => "tool_calls",
                        "content_filter" => "content_filter",
                        other => panic!("unknown finish_reason {other}"),
                    };
                }
            }
        }
        c
    }

    /// The choices of a whole `chat.completion` body.
    pub fn choices_of(body: &Value) -> Vec<Choice> {
        body["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ch| {
                let m = &ch["message"];
                Choice {
                    content: m["content"].as_str().unwrap_or("").into(),
                    tool_calls: m["tool_calls"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|t| ToolCall {
                            id: t["id"].as_str().unwrap().into(),
                            name: t["function"]["name"].as_str().unwrap().into(),
                            arguments: t["function"]["arguments"].as_str().unwrap().into(),
                        })
                        .collect(),
                    finish_reason: match ch["finish_reason"].as_str().unwrap() {
                        "stop" => "stop",
                        "length" => "length",
                        "tool_calls" => "tool_calls",
                        "content_filter" => "content_filter",
                        other => panic!("unknown finish_reason {other}"),
                    },
                }
            })
            .collect()
    }

    /// Same answer: same text, same finish reasons, same tool names and arguments (compared
    /// as JSON: a stream carries the model's own spacing), ids of the same shape.
    pub fn assert_same_choices(streamed: &[Choice], whole: &[Choice]) {
        assert_eq!(streamed.len(), whole.len());
        for (s, w) in streamed.iter().zip(whole) {
            assert_eq!(s.content, w.content);
            assert_eq!(s.finish_reason, w.finish_reason);
            assert_eq!(s.tool_calls.len(), w.tool_calls.len());
            for (a, b) in s.tool_calls.iter().zip(&w.tool_calls) {
                assert_eq!(a.name, b.name);
                let pa: Value =
                    serde_json::from_str(&a.arguments).expect("streamed arguments are JSON");
                let pb: Value =
                    serde_json::from_str(&b.arguments).expect("whole arguments are JSON");
                assert_eq!(pa, pb);
                assert!(!a.id.is_empty() && !b.id.is_empty());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_valid_json_with_escaped_unicode_text() {
        let w = ChunkWriter::new("id\"1", 7, "m");
        let mut out = Vec::new();
        w.role(&mut out, 0);
        w.content(&mut out, 0, "héllo \"wörld\"\n😀");
        w.tool_call(&mut out, 0, 0, "call_1", "f", "");
        w.tool_arguments(&mut out, 0, 0, "{\"a\":");
        w.tool_arguments(&mut out, 0, 0, "1}");
        w.finish(&mut out, 0, "tool_calls");
        w.usage(
            &mut out,
            &TokenUsage {
                input: 3,
                cache_read: 2,
                cache_write: 1,
                output: 4,
                reasoning: 1,
            },
        );
        done(&mut out);
        let c = testing::collect(&out);
        assert!(c.done);
        assert_eq!(c.choices[0].content, "héllo \"wörld\"\n😀");
        assert_eq!(c.choices[0].tool_calls[0].arguments, "{\"a\":1}");
        assert_eq!(c.choices[0].finish_reason, "tool_calls");
        let u = c.usage.unwrap();
        assert_eq!(u["prompt_tokens"], 6);
        assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 2);
        assert_eq!(u["total_tokens"], 10);
    }

    #[test]
    fn whole_answer_with_tool_calls_has_null_content() {
        let c = Completion {
            id: "x".into(),
            model: "m".into(),
            created: 1,
            choices: vec![Choice {
                content: String::new(),
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "f".into(),
                    arguments: "{}".into(),
                }],
                finish_reason: "tool_calls",
            }],
            usage: None,
        };
        let v: Value = serde_json::from_slice(&c.to_json()).unwrap();
        assert!(v["choices"][0]["message"]["content"].is_null());
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "f"
        );
        assert!(v.get("usage").is_none());
    }

    #[test]
    fn a_whole_answer_becomes_the_stream_that_carries_it() {
        let c = Completion {
            id: "x".into(),
            model: "m".into(),
            created: 1,
            choices: vec![Choice {
                content: "hello".into(),
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "f".into(),
                    arguments: "{\"a\":1}".into(),
                }],
                finish_reason: "tool_calls",
            }],
            usage: Some(TokenUsage {
                input: 4,
                output: 2,
                ..Default::default()
            }),
        };
        let whole = c.to_json();
        let want = testing::choices_of(&serde_json::from_slice(&whole).unwrap());
        let with_usage = testing::collect(&completion_as_stream(&whole, true).unwrap());
        assert_eq!(with_usage.choices, want);
        assert!(with_usage.done);
        assert_eq!(with_usage.usage.unwrap()["completion_tokens"], 2);
        let without = testing::collect(&completion_as_stream(&whole, false).unwrap());
        assert_eq!((without.choices, without.usage_chunks), (want, 0));
        for not_an_answer in [
            &br#"{"error":{"message":"x"}}"#[..],
            br#"{"choices":[]}"#,
            b"<html>",
        ] {
            assert!(completion_as_stream(not_an_answer, true).is_none());
        }
    }

    #[test]
    fn data_urls_and_tool_choice() {
        assert_eq!(
            data_url("data:image/png;base64,AAAA"),
            Some(("image/png", "AAAA"))
        );
        assert_eq!(data_url("data:image/png,AAAA"), None);
        let body = JsonObject::parse(Bytes::from_static(
            br#"{"tool_choice":{"type":"function","function":{"name":"f"}},"stop":"x"}"#,
        ))
        .unwrap();
        assert_eq!(
            tool_choice(&body).unwrap(),
            Some(ToolChoice::Named("f".into()))
        );
        assert_eq!(stop_sequences(&body).unwrap(), Some(vec!["x".to_owned()]));
        let bad = JsonObject::parse(Bytes::from_static(br#"{"tool_choice":"sometimes"}"#)).unwrap();
        assert_eq!(
            tool_choice(&bad).unwrap_err().param.as_deref(),
            Some("tool_choice")
        );
    }
}
