//! The mock model speaking Gemini's API (`/v1beta/models/{model}:{method}`).

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::{count_words, embedding, full, misbehave, sse_response, Answer, MockBody, MockOptions};
use crate::providers::JsonObject;

fn error(status: StatusCode, message: &str) -> Response<MockBody> {
    let name = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    let body = json!({"error": {"code": status.as_u16(), "message": message, "status": name}});
    full(status, "application/json", body.to_string())
}

/// `rest` is the path after `/v1beta/models/`: `{model}:{method}`.
pub(super) async fn respond(rest: &str, body: Bytes, opts: &MockOptions) -> Response<MockBody> {
    let Some((model, method)) = rest.rsplit_once(':') else {
        return error(StatusCode::NOT_FOUND, "unknown path");
    };
    let Ok(req) = JsonObject::parse(body) else {
        return error(StatusCode::BAD_REQUEST, "body is not a JSON object");
    };
    if let Some(resp) = misbehave(model, opts, error).await {
        return resp;
    }
    match method {
        "generateContent" => generate(model, &req, false, opts),
        "streamGenerateContent" => generate(model, &req, true, opts),
        "embedContent" => embed(&req),
        "batchEmbedContents" => batch_embed(&req),
        _ => error(StatusCode::NOT_FOUND, "unknown method"),
    }
}

fn embed(req: &JsonObject) -> Response<MockBody> {
    let Ok(Some(content)) = req.get::<Value>("content") else {
        return error(StatusCode::BAD_REQUEST, "content is required");
    };
    let body = json!({"embedding": {"values": embedding(&text_of(&content))}});
    full(StatusCode::OK, "application/json", body.to_string())
}

fn batch_embed(req: &JsonObject) -> Response<MockBody> {
    let Ok(Some(requests)) = req.get::<Vec<Value>>("requests") else {
        return error(StatusCode::BAD_REQUEST, "requests is required");
    };
    let embeddings: Vec<Value> = requests
        .iter()
        .map(|r| json!({"values": embedding(&text_of(&r["content"]))}))
        .collect();
    let body = json!({"embeddings": embeddings});
    full(StatusCode::OK, "application/json", body.to_string())
}

/// `generateContent`, or `streamGenerateContent` when `stream`.
fn generate(model: &str, req: &JsonObject, stream: bool, opts: &MockOptions) -> Response<MockBody> {
    let Ok(Some(contents)) = req.get::<Vec<Value>>("contents") else {
        return error(StatusCode::BAD_REQUEST, "contents is required");
    };
    let answer = plan(req, contents, opts);
    let finish = if answer.truncated {
        "MAX_TOKENS"
    } else {
        "STOP"
    };
    let call_part = answer.tool_call.as_ref().map(|(name, args)| {
        json!({"functionCall": {"name": name, "args": serde_json::from_str::<Value>(args).unwrap_or_default()}})
    });
    if stream {
        return stream_answer(model, &answer, finish, call_part, opts);
    }
    let mut parts = Vec::new();
    if !answer.words.is_empty() {
        parts.push(json!({"text": answer.text()}));
    }
    parts.extend(call_part);
    let body = json!({
        "candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": finish, "index": 0}],
        "usageMetadata": usage(&answer, answer.completion_tokens()),
        "modelVersion": model, "responseId": "mock-response",
    });
    full(StatusCode::OK, "application/json", body.to_string())
}

/// The answer to a `generateContent` request with these `contents`.
fn plan(req: &JsonObject, contents: Vec<Value>, opts: &MockOptions) -> Answer {
    let system = req
        .get::<Value>("systemInstruction")
        .ok()
        .flatten()
        .unwrap_or(Value::Null);
    let after_tool_result = contents
        .last()
        .and_then(|c| c["parts"].as_array())
        .is_some_and(|parts| parts.iter().any(|p| p.get("functionResponse").is_some()));
    let prompt_tokens = count_words(&system) + count_words(&Value::Array(contents));
    let config = req
        .get::<Value>("generationConfig")
        .ok()
        .flatten()
        .unwrap_or(Value::Null);
    Answer::plan(
        prompt_tokens,
        config["maxOutputTokens"].as_u64(),
        &tools(req),
        after_tool_result,
        opts,
    )
}

/// Function declarations as (name, parameters) pairs.
fn tools(req: &JsonObject) -> Vec<(String, Option<Value>)> {
    req.get::<Vec<Value>>("tools")
        .ok()
        .flatten()
        .unwrap_or_default()
        .iter()
        .flat_map(|t| {
            t["functionDeclarations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|d| {
            Some((
                d.get("name")?.as_str()?.to_owned(),
                d.get("parameters").cloned(),
            ))
        })
        .collect()
}

fn usage(answer: &Answer, completion: u64) -> Value {
    json!({"promptTokenCount": answer.prompt_tokens, "candidatesTokenCount": completion,
           "totalTokenCount": answer.prompt_tokens + completion})
}

/// One event per word, each repeating the usage so far; the last carries the finish.
fn stream_answer(
    model: &str,
    answer: &Answer,
    finish: &str,
    call_part: Option<Value>,
    opts: &MockOptions,
) -> Response<MockBody> {
    let event = |parts: Vec<Value>, finish: Option<&str>, completion: u64| {
        let mut cand = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        if let Some(f) = finish {
            cand["finishReason"] = f.into();
        }
        let e = json!({"candidates": [cand], "usageMetadata": usage(answer, completion),
                       "modelVersion": model, "responseId": "mock-response"});
        Bytes::from(format!("data: {e}\r\n\r\n"))
    };
    let n = answer.words.len();
    let mut events: Vec<Bytes> = (0..n)
        .map(|i| {
            let last = i + 1 == n && call_part.is_none();
            event(
                vec![json!({"text": answer.piece(i)})],
                last.then_some(finish),
                i as u64 + 1,
            )
        })
        .collect();
    if let Some(part) = call_part {
        events.push(event(vec![part], Some(finish), answer.completion_tokens()));
    }
    if events.is_empty() {
        events.push(event(Vec::new(), Some(finish), 0));
    }
    if model == "mock-cut" {
        events.truncate(2);
    } else if model == "mock-stream-error" {
        events.truncate(2);
        let e = json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}});
        events.push(Bytes::from(format!("data: {e}\r\n\r\n")));
    }
    sse_response(events, opts)
}

fn text_of(content: &Value) -> String {
    content["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["text"].as_str())
        .collect::<Vec<_>>()
        .join(" ")
}
