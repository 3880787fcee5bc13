//! A whole Messages API answer as an OpenAI chat completion: text blocks are joined into
//! `content`, `tool_use` blocks become `tool_calls`, thinking blocks are left out.

use bytes::Bytes;
use serde_json::json;

use super::schema::{Block, Message, Usage};
use crate::error::GatewayError;
use crate::providers::{chat, estimate, Endpoint, Prepared, ReportedUsage};
use crate::registry::Deployment;

/// The OpenAI `finish_reason` for Anthropic's `stop_reason`, in whole answers and streams.
pub(super) fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, and whatever comes next
        _ => "stop",
    }
}

fn malformed() -> GatewayError {
    GatewayError::upstream("The provider answered with a body that is not an Anthropic message.")
}

pub(super) fn read_response(
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

#[cfg(test)]
pub(super) mod tests {
    use serde_json::Value;

    use super::*;
    use crate::config::Api;
    use crate::metering::TokenUsage;
    use crate::providers::testing::{deployment, prepared_for};

    pub(crate) const MESSAGE: &str = r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-x-2025",
        "content":[{"type":"thinking","thinking":"hmm","signature":"s"},{"type":"text","text":"Let me check. "},
          {"type":"tool_use","id":"toolu_01","name":"get_weather","input":{"city":"Paris"}},
          {"type":"tool_use","id":"toolu_02","name":"get_time","input":{}}],
        "stop_reason":"tool_use","stop_sequence":null,
        "usage":{"input_tokens":100,"output_tokens":30,"cache_creation_input_tokens":20,"cache_read_input_tokens":500}}"#;

    pub(crate) fn read(body: &str) -> (Value, Option<ReportedUsage>) {
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

    /// Absurd, negative and fractional counts are clamped for billing, and the raw usage
    /// keeps them as the provider sent them.
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
    }
}
