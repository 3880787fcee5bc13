//! The mock model speaking OpenAI's API (`/v1/chat/completions`, `/v1/completions`,
//! `/v1/embeddings`, `/v1/models`), also under Azure's `/openai/deployments/{d}/` paths.

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::{
    count_words, embedding, full, json_answer, misbehave, sse_response, sse_response_lingering,
    Answer, MockBody, MockOptions,
};
use crate::providers::JsonObject;

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

pub(super) async fn respond(path: &str, body: Bytes, opts: &MockOptions) -> Response<MockBody> {
    // Azure OpenAI: /openai/deployments/{deployment}/chat/completions
    let path = match path.strip_prefix("/openai/deployments/") {
        Some(rest) => rest.find('/').map_or(path, |i| &rest[i..]),
        None => path.strip_prefix("/v1").unwrap_or(path),
    };
    if path == "/models" {
        return models();
    }
    let Ok(req) = JsonObject::parse(body) else {
        return error(StatusCode::BAD_REQUEST, "body is not a JSON object");
    };
    let model = req.str("model").map(|m| m.into_owned()).unwrap_or_default();
    if let Some(resp) = misbehave(&model, opts, error).await {
        return resp;
    }
    match path {
        "/chat/completions" => completion(true, &model, &req, opts),
        "/completions" => completion(false, &model, &req, opts),
        "/embeddings" => embeddings(&model, &req),
        _ => error(StatusCode::NOT_FOUND, "unknown path"),
    }
}

fn models() -> Response<MockBody> {
    let data: Vec<Value> = ["mock-chat", "mock-embed"]
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "mock"}))
        .collect();
    full(
        StatusCode::OK,
        "application/json",
        json!({"object": "list", "data": data}).to_string(),
    )
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

/// What `mock-absurd-usage` reports as its prompt tokens, as a provider once did.
const ABSURD_TOKENS: u64 = 1_000_000_000_000_000_000;

/// A chat completion (`chat`) or a legacy text completion, whole or streamed.
fn completion(chat: bool, model: &str, req: &JsonObject, opts: &MockOptions) -> Response<MockBody> {
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
    let tools = if chat { openai_tools(req) } else { Vec::new() };
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
    if req.bool("stream") != Some(true) {
        return whole(chat, model, &answer, finish, usage, opts);
    }
    let include_usage = req
        .get::<Value>("stream_options")
        .ok()
        .flatten()
        .and_then(|o| o.get("include_usage").and_then(Value::as_bool))
        .unwrap_or(false);
    stream(
        chat,
        model,
        &answer,
        finish,
        include_usage.then_some(usage),
        opts,
    )
}

fn whole(
    chat: bool,
    model: &str,
    answer: &Answer,
    finish: &str,
    usage: Value,
    opts: &MockOptions,
) -> Response<MockBody> {
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
    json_answer(body.to_string(), opts)
}

fn embeddings(model: &str, req: &JsonObject) -> Response<MockBody> {
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
