//! A whole `generateContent` answer as an OpenAI chat completion: text parts join into
//! `content` (thought parts are left out), `functionCall` parts become `tool_calls` with
//! fresh `call_...` ids and finish_reason `tool_calls`.

use bytes::Bytes;
use serde_json::Value;

use super::schema::{Candidate, Response};
use super::{model_path, tool_call_id};
use crate::error::GatewayError;
use crate::providers::{chat, estimate, Endpoint, Prepared, ReportedUsage, MAX_STREAM_INDEX};
use crate::registry::Deployment;

/// The OpenAI `finish_reason` for Gemini's `finishReason`, in whole answers and streams.
pub(super) fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => "content_filter",
        // STOP, OTHER, MALFORMED_FUNCTION_CALL, FINISH_REASON_UNSPECIFIED, ...
        _ => "stop",
    }
}

pub(super) fn malformed() -> GatewayError {
    GatewayError::upstream("The provider answered with a body that is not a Gemini response.")
}

pub(super) fn read_response(
    dep: &Deployment,
    prepared: &Prepared,
    body: &[u8],
) -> Result<(Bytes, Option<ReportedUsage>), GatewayError> {
    let resp: Response = serde_json::from_slice(body).map_err(|_| malformed())?;
    if resp.error.is_some() {
        return Err(GatewayError::upstream(
            "The provider answered with an error instead of a response.",
        ));
    }
    let mut choices = choices(&resp.candidates)?;
    if choices.is_empty() {
        // The prompt itself was blocked: no candidates at all.
        let blocked = resp
            .prompt_feedback
            .as_ref()
            .and_then(|f| f.block_reason.as_ref());
        choices.push(chat::Choice {
            finish_reason: if blocked.is_some() {
                "content_filter"
            } else {
                "stop"
            },
            ..Default::default()
        });
    }
    let usage = match resp.usage_metadata {
        Some(u) => Some(u.reported()),
        None => {
            let text: String = choices.iter().map(|c| c.content.as_str()).collect();
            Some(estimate::estimate(
                &dep.model_id,
                Endpoint::ChatCompletions,
                &prepared.client_body,
                &text,
                None,
            ))
        }
    };
    let completion = chat::Completion {
        id: resp
            .response_id
            .unwrap_or_else(crate::ids::new_completion_id),
        model: resp
            .model_version
            .unwrap_or_else(|| model_path(dep).to_owned()),
        created: chat::unix_now(),
        choices,
        usage: usage.as_ref().map(|u| u.tokens),
    };
    Ok((completion.to_json(), usage))
}

/// The candidates as OpenAI choices, each at its own index.
fn choices(candidates: &[Candidate]) -> Result<Vec<chat::Choice>, GatewayError> {
    let mut choices: Vec<chat::Choice> = Vec::new();
    for (pos, cand) in candidates.iter().enumerate() {
        let i = cand.index.unwrap_or(pos);
        if i >= MAX_STREAM_INDEX {
            return Err(malformed());
        }
        if choices.len() <= i {
            choices.resize_with(i + 1, chat::Choice::default);
        }
        let choice = &mut choices[i];
        for part in cand.content.iter().flat_map(|c| &c.parts) {
            if let Some(call) = &part.function_call {
                choice.tool_calls.push(chat::ToolCall {
                    id: tool_call_id(part.thought_signature.as_deref()),
                    name: call.name.clone(),
                    arguments: args_json(call.args.as_ref()),
                });
            } else if let (Some(text), None | Some(false)) = (&part.text, part.thought) {
                choice.content.push_str(text);
            }
        }
        choice.finish_reason = chat::finish_reason(
            finish_reason(cand.finish_reason.as_deref().unwrap_or("STOP")),
            !choice.tool_calls.is_empty(),
        );
    }
    Ok(choices)
}

/// A function call's arguments as the JSON text of OpenAI's `arguments` (`{}` for none).
pub(super) fn args_json(args: Option<&Value>) -> String {
    match args {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(v) => v.to_string(),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use serde_json::Value;

    use super::super::tests::dep;
    use super::*;
    use crate::metering::TokenUsage;
    use crate::providers::testing::prepared_for;

    pub(crate) const RESPONSE: &str = r#"{"candidates":[{"content":{"parts":[
            {"text":"thinking...","thought":true},{"text":"Checking "},{"text":"now."},
            {"functionCall":{"name":"get_weather","args":{"city":"Paris"}}},
            {"functionCall":{"name":"get_time"}}],"role":"model"},
          "finishReason":"STOP","index":0,"safetyRatings":[]}],
        "usageMetadata":{"promptTokenCount":120,"candidatesTokenCount":20,"totalTokenCount":150,"cachedContentTokenCount":100,"thoughtsTokenCount":10},
        "modelVersion":"gemini-x-001","responseId":"resp-1"}"#;

    pub(crate) fn read(body: &str) -> (Value, Option<ReportedUsage>) {
        let d = dep();
        let p = prepared_for(
            &d,
            r#"{"model":"g","messages":[{"role":"user","content":"hello"}]}"#,
            false,
        );
        let (out, u) = read_response(&d, &p, body.as_bytes()).unwrap();
        (serde_json::from_slice(&out).unwrap(), u)
    }

    /// Absurd, negative and fractional counts are clamped for billing (no overflow adding
    /// them up), and the raw usage keeps them as the provider sent them.
    #[test]
    fn absurd_usage_is_clamped_and_kept_as_sent() {
        let (_, u) = read(
            r#"{"candidates":[{"content":{"parts":[{"text":"hi"}],"role":"model"},"finishReason":"STOP","index":0}],
            "usageMetadata":{"promptTokenCount":18446744073709551615,"cachedContentTokenCount":-5,
            "candidatesTokenCount":18446744073709551615,"thoughtsTokenCount":18446744073709551615,
            "toolUsePromptTokenCount":0.5}}"#,
        );
        let u = u.unwrap();
        assert!(!u.estimated);
        let most = crate::metering::MAX_TOKENS;
        assert_eq!(
            u.tokens,
            TokenUsage {
                input: most,
                cache_read: 0,
                cache_write: 0,
                output: 2 * most,
                reasoning: most
            }
        );
        let raw: Value = serde_json::from_str(&u.raw).unwrap();
        assert_eq!(raw["promptTokenCount"].as_u64(), Some(u64::MAX));
        assert_eq!(raw["cachedContentTokenCount"], -5);
        assert_eq!(raw["toolUsePromptTokenCount"], 0.5);
    }

    #[test]
    fn whole_answer_with_function_calls_is_tool_calls_and_usage_splits_cache_and_thoughts() {
        let (v, u) = read(RESPONSE);
        assert_eq!(v["id"], "resp-1");
        assert_eq!(v["model"], "gemini-x-001");
        let m = &v["choices"][0]["message"];
        assert_eq!(m["content"], "Checking now.");
        assert!(m["tool_calls"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("call_"));
        assert_ne!(m["tool_calls"][0]["id"], m["tool_calls"][1]["id"]);
        assert_eq!(
            m["tool_calls"][0]["function"]["arguments"],
            r#"{"city":"Paris"}"#
        );
        assert_eq!(m["tool_calls"][1]["function"]["arguments"], "{}");
        assert_eq!(
            v["choices"][0]["finish_reason"], "tool_calls",
            "Gemini says STOP when it calls a function"
        );
        assert_eq!(v["usage"]["prompt_tokens"], 120);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 100);
        assert_eq!(v["usage"]["completion_tokens"], 30);
        assert_eq!(
            v["usage"]["completion_tokens_details"]["reasoning_tokens"],
            10
        );
        let u = u.unwrap();
        assert!(!u.estimated);
        assert_eq!(
            u.tokens,
            TokenUsage {
                input: 20,
                cache_read: 100,
                cache_write: 0,
                output: 30,
                reasoning: 10
            }
        );
    }

    #[test]
    fn finish_reasons_blocked_prompts_and_garbage() {
        for (reason, want) in [
            ("STOP", "stop"),
            ("MAX_TOKENS", "length"),
            ("SAFETY", "content_filter"),
            ("PROHIBITED_CONTENT", "content_filter"),
            ("RECITATION", "content_filter"),
            ("OTHER", "stop"),
        ] {
            let (v, _) = read(&format!(
                r#"{{"candidates":[{{"content":{{"parts":[{{"text":"x"}}]}},"finishReason":"{reason}"}}]}}"#
            ));
            assert_eq!(v["choices"][0]["finish_reason"], want, "{reason}");
        }
        let (v, u) = read(
            r#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":4}}"#,
        );
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(u.unwrap().tokens.input, 4);
        let d = dep();
        let p = prepared_for(
            &d,
            r#"{"model":"g","messages":[{"role":"user","content":"x"}]}"#,
            false,
        );
        assert_eq!(read_response(&d, &p, b"[1,2]").unwrap_err().status, 502);
        // no usageMetadata: counted
        let (_, u) = read(
            r#"{"candidates":[{"content":{"parts":[{"text":"hello world"}]},"finishReason":"STOP"}]}"#,
        );
        assert!(u.unwrap().estimated);
    }
}
