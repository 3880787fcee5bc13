//! Only complete, successful answers are stored: a whole answer with a finish reason on every
//! choice (embeddings: with data), or a stream that ended with `data: [DONE]`, no error event
//! and a finish reason on every choice. A stream is stored as the whole answer it describes,
//! so that a hit can be sent either way.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::metering::TokenUsage;
use crate::providers::chat::{usage_json, Choice, Completion, ToolCall};
use crate::providers::{Endpoint, MAX_STREAM_INDEX};

/// Whether a whole JSON answer is complete and worth storing.
pub fn is_complete(endpoint: Endpoint, body: &[u8]) -> bool {
    let Ok(Value::Object(answer)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    if answer.contains_key("error") {
        return false;
    }
    let list = |k: &str| {
        answer
            .get(k)
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
    };
    match endpoint {
        Endpoint::Embeddings => list("data").is_some(),
        _ => list("choices").is_some_and(|choices| {
            choices
                .iter()
                .all(|c| c.get("finish_reason").is_some_and(Value::is_string))
        }),
    }
}

/// The whole answer a client's event stream describes (chat or text completion), with
/// `usage` as the request's row records it. None when the stream is not complete.
pub fn whole_from_stream(sse: &[u8], usage: &TokenUsage) -> Option<Bytes> {
    let mut collected = Collected::default();
    for line in sse.split(|&b| b == b'\n') {
        let Some(data) = line.strip_prefix(b"data:") else {
            continue;
        };
        let data = data.trim_ascii();
        if data == b"[DONE]" {
            collected.done = true;
            continue;
        }
        let Ok(Value::Object(chunk)) = serde_json::from_slice::<Value>(data) else {
            return None;
        };
        collected.push(chunk)?;
    }
    collected.into_whole(usage)
}

#[derive(Default)]
struct Collected {
    head: Map<String, Value>,
    text: bool,
    choices: Vec<Part>,
    done: bool,
}

#[derive(Default)]
struct Part {
    content: String,
    tool_calls: Vec<ToolCall>,
    finish_reason: Option<&'static str>,
}

impl Collected {
    /// One chunk's deltas; None for an error event or a chunk that is not one.
    fn push(&mut self, chunk: Map<String, Value>) -> Option<()> {
        if chunk.contains_key("error") {
            return None;
        }
        if self.head.is_empty() {
            for k in ["id", "created", "model", "system_fingerprint"] {
                if let Some(v) = chunk.get(k) {
                    self.head.insert(k.into(), v.clone());
                }
            }
            self.text = chunk.get("object").and_then(Value::as_str) == Some("text_completion");
        }
        for choice in chunk.get("choices")?.as_array()? {
            let index = choice.get("index")?.as_u64()? as usize;
            if index >= MAX_STREAM_INDEX {
                return None;
            }
            if self.choices.len() <= index {
                self.choices.resize_with(index + 1, Part::default);
            }
            let part = &mut self.choices[index];
            let delta = choice.get("delta");
            let text = delta.and_then(|d| d.get("content")).or(choice.get("text"));
            if let Some(t) = text.and_then(Value::as_str) {
                part.content.push_str(t);
            }
            let calls = delta
                .and_then(|d| d.get("tool_calls"))
                .and_then(Value::as_array);
            for call in calls.into_iter().flatten() {
                part.tool_call(call)?;
            }
            if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
                part.finish_reason = Some(known_reason(r)?);
            }
        }
        Some(())
    }

    fn into_whole(self, usage: &TokenUsage) -> Option<Bytes> {
        let complete = self.done
            && !self.choices.is_empty()
            && self.choices.iter().all(|c| c.finish_reason.is_some());
        if !complete {
            return None;
        }
        let str_of = |k: &str| {
            self.head
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        if self.text {
            let choices: Vec<Value> = self
                .choices
                .iter()
                .enumerate()
                .map(|(i, c)| json!({"index": i, "text": c.content, "logprobs": null, "finish_reason": c.finish_reason}))
                .collect();
            let mut body = Value::Object(self.head);
            body["object"] = "text_completion".into();
            body["choices"] = choices.into();
            body["usage"] = usage_json(usage);
            return Some(Bytes::from(body.to_string()));
        }
        let completion = Completion {
            id: str_of("id"),
            model: str_of("model"),
            created: self
                .head
                .get("created")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            choices: self
                .choices
                .into_iter()
                .map(|c| Choice {
                    content: c.content,
                    tool_calls: c.tool_calls,
                    finish_reason: c.finish_reason.unwrap_or("stop"),
                })
                .collect(),
            usage: Some(*usage),
        };
        Some(completion.to_json())
    }
}

impl Part {
    /// A tool call's delta: the first one of an index names it, later ones add arguments.
    fn tool_call(&mut self, call: &Value) -> Option<()> {
        let index = call.get("index")?.as_u64()? as usize;
        let function = call.get("function");
        let field = |k: &str| function.and_then(|f| f.get(k)).and_then(Value::as_str);
        if index == self.tool_calls.len() {
            self.tool_calls.push(ToolCall {
                id: call.get("id").and_then(Value::as_str)?.to_owned(),
                name: field("name")?.to_owned(),
                arguments: String::new(),
            });
        }
        let tool = self.tool_calls.get_mut(index)?;
        tool.arguments.push_str(field("arguments").unwrap_or(""));
        Some(())
    }
}

/// The finish reasons a complete answer may have.
fn known_reason(r: &str) -> Option<&'static str> {
    Some(match r {
        "stop" => "stop",
        "length" => "length",
        "tool_calls" => "tool_calls",
        "content_filter" => "content_filter",
        "function_call" => "function_call",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::chat::completion_as_stream;

    const WHOLE: &str = r#"{"id":"c1","object":"chat.completion","created":7,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hi there","tool_calls":[{"id":"t1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;

    #[test]
    fn a_stream_is_stored_as_the_whole_answer_it_describes() {
        let usage = TokenUsage {
            input: 3,
            output: 2,
            ..Default::default()
        };
        let sse = completion_as_stream(WHOLE.as_bytes(), true).unwrap();
        let whole: Value =
            serde_json::from_slice(&whole_from_stream(&sse, &usage).unwrap()).unwrap();
        let m = &whole["choices"][0]["message"];
        assert_eq!(m["content"], "Hi there");
        assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(whole["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(whole["usage"]["total_tokens"], 5);
        assert_eq!(
            (whole["id"].as_str(), whole["created"].as_i64()),
            (Some("c1"), Some(7))
        );
    }

    #[test]
    fn incomplete_streams_and_answers_are_not_stored() {
        let usage = TokenUsage::default();
        let sse = completion_as_stream(WHOLE.as_bytes(), false).unwrap();
        let cut = &sse[..sse.len() - b"data: [DONE]\n\n".len()];
        assert!(whole_from_stream(cut, &usage).is_none());
        let no_reason = br#"data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}

data: [DONE]

"#;
        assert!(whole_from_stream(no_reason, &usage).is_none());
        let error = b"data: {\"error\":{\"message\":\"x\"}}\n\ndata: [DONE]\n\n";
        assert!(whole_from_stream(error, &usage).is_none());
        assert!(is_complete(Endpoint::ChatCompletions, WHOLE.as_bytes()));
        assert!(!is_complete(
            Endpoint::ChatCompletions,
            br#"{"choices":[{"index":0}]}"#
        ));
        assert!(!is_complete(Endpoint::Embeddings, br#"{"data":[]}"#));
    }
}
