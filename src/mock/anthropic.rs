//! The mock model speaking Anthropic's Messages API (`POST /v1/messages`).

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::{count_words, full, misbehave, sse_response, Answer, MockBody, MockOptions};
use crate::providers::JsonObject;

fn error(status: StatusCode, message: &str) -> Response<MockBody> {
    let kind = match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    full(status, "application/json", body.to_string())
}

pub(super) async fn respond(body: Bytes, opts: &MockOptions) -> Response<MockBody> {
    let Ok(req) = JsonObject::parse(body) else {
        return error(StatusCode::BAD_REQUEST, "body is not a JSON object");
    };
    let model = req.str("model").map(|m| m.into_owned()).unwrap_or_default();
    if let Some(resp) = misbehave(&model, opts, error).await {
        return resp;
    }
    let Ok(Some(messages)) = req.get::<Vec<Value>>("messages") else {
        return error(StatusCode::BAD_REQUEST, "messages: field required");
    };
    let Ok(Some(max_tokens)) = req.get::<u64>("max_tokens") else {
        return error(StatusCode::BAD_REQUEST, "max_tokens: field required");
    };
    let system = req
        .get::<Value>("system")
        .ok()
        .flatten()
        .unwrap_or(Value::Null);
    let prompt_tokens = count_words(&system) + count_words(&Value::Array(messages.clone()));
    let tools: Vec<(String, Option<Value>)> = req
        .get::<Vec<Value>>("tools")
        .ok()
        .flatten()
        .unwrap_or_default()
        .iter()
        .filter_map(|t| {
            Some((
                t.get("name")?.as_str()?.to_owned(),
                t.get("input_schema").cloned(),
            ))
        })
        .collect();
    let after_tool_result = messages
        .last()
        .and_then(|m| m["content"].as_array())
        .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"));
    let answer = Answer::plan(
        prompt_tokens,
        Some(max_tokens),
        &tools,
        after_tool_result,
        opts,
    );
    let stop_reason = if answer.tool_call.is_some() {
        "tool_use"
    } else if answer.truncated {
        "max_tokens"
    } else {
        "end_turn"
    };
    if req.bool("stream") == Some(true) {
        return stream(&model, &answer, stop_reason, opts);
    }
    let mut content = Vec::new();
    if !answer.words.is_empty() {
        content.push(json!({"type": "text", "text": answer.text()}));
    }
    if let Some((name, args)) = &answer.tool_call {
        let input: Value = serde_json::from_str(args).unwrap_or_default();
        content
            .push(json!({"type": "tool_use", "id": "toolu_mock0", "name": name, "input": input}));
    }
    let body = json!({
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop_reason, "stop_sequence": null,
        "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": answer.completion_tokens(),
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    });
    full(StatusCode::OK, "application/json", body.to_string())
}

fn event(name: &str, data: Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn stream(
    model: &str,
    answer: &Answer,
    stop_reason: &str,
    opts: &MockOptions,
) -> Response<MockBody> {
    let mut events = vec![event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message",
            "role": "assistant", "model": model, "content": [], "stop_reason": null,
            "stop_sequence": null, "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": 1,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
    )];
    let mut block = 0;
    if !answer.words.is_empty() {
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": block,
            "content_block": {"type": "text", "text": ""}}),
        ));
        events.push(event("ping", json!({"type": "ping"})));
        for i in 0..answer.words.len() {
            events.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": block,
                "delta": {"type": "text_delta", "text": answer.piece(i)}}),
            ));
        }
        events.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": block}),
        ));
        block += 1;
    }
    if let Some((name, args)) = &answer.tool_call {
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": block,
            "content_block": {"type": "tool_use", "id": "toolu_mock0", "name": name, "input": {}}}),
        ));
        let (a, b) = args.split_at(args.len() / 2);
        for piece in ["", a, b] {
            events.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": block,
                "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
        events.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": block}),
        ));
    }
    events.push(event(
        "message_delta",
        json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": answer.completion_tokens()}}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    if model == "mock-cut" {
        events.truncate(3);
    } else if model == "mock-stream-error" {
        events.truncate(4);
        events.push(event(
            "error",
            json!({"type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ));
    }
    sse_response(events, opts)
}
