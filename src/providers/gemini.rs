//! Google's Gemini API (`{base_url}/v1beta/models/{model}:generateContent`,
//! `:streamGenerateContent?alt=sse`, `:embedContent`, `:batchEmbedContents`), translated to
//! and from the OpenAI format.
//!
//! Request: roles become user/model, system/developer messages `systemInstruction`, sampling
//! parameters `generationConfig`, tools `functionDeclarations` (JSON Schema cut down to the
//! OpenAPI subset Gemini accepts), tool results `functionResponse` parts. Gemini function
//! calls carry no id, so the name of a tool result is found through the `tool_call_id` of the
//! assistant message that made the call.
//! Answer: text parts join into `content` (thought parts are left out), `functionCall` parts
//! become `tool_calls` with fresh `call_...` ids and finish_reason `tool_calls`.
//! Stream: every SSE event is a whole `GenerateContentResponse` holding the next piece;
//! there is no end marker, so `[DONE]` is added when the body ends after a finishReason.

use std::collections::HashMap;

use base64::Engine;
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

/// Thinking models sign their function calls (`thoughtSignature`) and refuse a later turn
/// that does not send the signature back. OpenAI clients keep nothing but the tool call id,
/// so the signature travels inside it: `call_<random>__thought__<signature>`.
const THOUGHT_SIGNATURE_MARK: &str = "__thought__";

fn tool_call_id(signature: Option<&str>) -> String {
    let id = crate::ids::new_tool_call_id();
    match signature {
        Some(s) if !s.is_empty() => format!("{id}{THOUGHT_SIGNATURE_MARK}{s}"),
        _ => id,
    }
}

fn model_path(dep: &Deployment) -> &str {
    dep.model_id
        .strip_prefix("models/")
        .unwrap_or(&dep.model_id)
}

pub fn prepare(
    dep: &Deployment,
    endpoint: Endpoint,
    body: &JsonObject,
) -> Result<Prepared, GatewayError> {
    let stream = endpoint == Endpoint::ChatCompletions && body.bool("stream") == Some(true);
    let (method, request) = match endpoint {
        Endpoint::ChatCompletions if stream => {
            ("streamGenerateContent?alt=sse", request_body(dep, body)?)
        }
        Endpoint::ChatCompletions => ("generateContent", request_body(dep, body)?),
        Endpoint::Embeddings => embedding_request(dep, body)?,
        Endpoint::Completions => {
            return Err(GatewayError::invalid_param(
                "model",
                format!(
                    "`{}` is served by Gemini, which has no legacy completions API; use /v1/chat/completions.",
                    dep.name
                ),
            ))
        }
    };
    let uri: http::Uri = format!(
        "{}/v1beta/models/{}:{method}",
        dep.provider.base_url,
        model_path(dep)
    )
    .parse()
    .map_err(|_| {
        GatewayError::internal(format!(
            "provider {} has a base_url or model_id that does not form a valid URL",
            dep.provider.name
        ))
    })?;
    let mut headers = HeaderMap::with_capacity(3);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
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

/// The `generateContent` request for an OpenAI chat request.
pub fn request_body(dep: &Deployment, body: &JsonObject) -> Result<Value, GatewayError> {
    let messages = chat::messages(body)?;
    // Gemini's function calls have no ids: remember which name each OpenAI id stood for.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for m in &messages {
        for c in m.tool_calls.iter().flatten() {
            call_names.insert(&c.id, &c.function.name);
        }
    }
    let mut system: Vec<Value> = Vec::new();
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in &messages {
        let (role, parts) = match m.role.as_str() {
            "system" | "developer" => {
                let text = m.content.as_ref().map(Content::text).unwrap_or_default();
                if !text.is_empty() {
                    system.push(json!({"text": text}));
                }
                continue;
            }
            "user" => ("user", parts(m.content.as_ref())?),
            "assistant" => {
                let mut parts = parts(m.content.as_ref())?;
                for c in m.tool_calls.iter().flatten() {
                    let mut part = json!({"functionCall": {
                        "name": c.function.name,
                        "args": chat::parse_arguments(&c.function.arguments)?,
                    }});
                    if let Some((_, signature)) = c.id.split_once(THOUGHT_SIGNATURE_MARK) {
                        part["thoughtSignature"] = signature.into();
                    }
                    parts.push(part);
                }
                ("model", parts)
            }
            "tool" => {
                let name = m
                    .tool_call_id
                    .as_deref()
                    .and_then(|id| call_names.get(id).copied())
                    .or(m.name.as_deref())
                    .ok_or_else(|| {
                        GatewayError::invalid_param(
                            "messages",
                            "A 'tool' message's tool_call_id matches no tool call of an earlier assistant message.",
                        )
                    })?;
                let text = m.content.as_ref().map(Content::text).unwrap_or_default();
                // Gemini wants an object: a JSON object result is passed as is.
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({"output": text}),
                };
                (
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                )
            }
            other => {
                return Err(GatewayError::invalid_param(
                    "messages",
                    format!("Unknown message role '{other}'."),
                ))
            }
        };
        if parts.is_empty() {
            continue;
        }
        // One turn per role change: all function responses of a call go back together.
        match contents.last_mut() {
            Some((last, prev)) if *last == role => prev.extend(parts),
            _ => contents.push((role, parts)),
        }
    }
    let contents: Vec<Value> = contents
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect();

    let mut req = Map::new();
    req.insert("contents".into(), contents.into());
    if !system.is_empty() {
        req.insert("systemInstruction".into(), json!({"parts": system}));
    }
    let mut config = Map::new();
    let max = chat::param::<u64>(body, dep, "max_completion_tokens")?.or(chat::param::<u64>(
        body,
        dep,
        "max_tokens",
    )?);
    if let Some(max) = max {
        config.insert("maxOutputTokens".into(), max.into());
    }
    for (openai, gemini) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = chat::param::<f64>(body, dep, openai)? {
            config.insert(gemini.into(), json!(v));
        }
    }
    if let Some(seed) = chat::param::<i64>(body, dep, "seed")? {
        config.insert("seed".into(), seed.into());
    }
    if let Some(n) = chat::param::<u64>(body, dep, "n")? {
        config.insert("candidateCount".into(), n.into());
    }
    if let Some(stop) = chat::stop_sequences(body)? {
        config.insert("stopSequences".into(), json!(stop));
    }
    if let Some(format) = chat::param::<Value>(body, dep, "response_format")? {
        match format.get("type").and_then(Value::as_str) {
            Some("json_object") => {
                config.insert("responseMimeType".into(), "application/json".into());
            }
            Some("json_schema") => {
                config.insert("responseMimeType".into(), "application/json".into());
                if let Some(schema) = format.pointer("/json_schema/schema") {
                    config.insert("responseSchema".into(), openapi_schema(schema));
                }
            }
            Some("text") | None => {}
            Some(other) => {
                return Err(GatewayError::invalid_param(
                    "response_format",
                    format!("Unknown response_format type '{other}'."),
                ))
            }
        }
    }
    if !config.is_empty() {
        req.insert("generationConfig".into(), config.into());
    }

    let tools = chat::tools(body)?;
    if !tools.is_empty() {
        let declarations: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut d = json!({"name": t.function.name});
                if let Some(desc) = &t.function.description {
                    d["description"] = desc.clone().into();
                }
                // Gemini refuses an object schema without properties: leave it out.
                if let Some(p) = t.function.parameters.as_ref().filter(|p| {
                    p.get("properties")
                        .and_then(Value::as_object)
                        .is_some_and(|o| !o.is_empty())
                }) {
                    d["parameters"] = openapi_schema(p);
                }
                d
            })
            .collect();
        req.insert(
            "tools".into(),
            json!([{"functionDeclarations": declarations}]),
        );
        if let Some(choice) = chat::tool_choice(body)? {
            let config = match choice {
                ToolChoice::Auto => json!({"mode": "AUTO"}),
                ToolChoice::None => json!({"mode": "NONE"}),
                ToolChoice::Required => json!({"mode": "ANY"}),
                ToolChoice::Named(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
            };
            req.insert(
                "toolConfig".into(),
                json!({"functionCallingConfig": config}),
            );
        }
    }
    Ok(Value::Object(req))
}

fn parts(content: Option<&Content>) -> Result<Vec<Value>, GatewayError> {
    let mut out = Vec::new();
    match content {
        None => {}
        Some(Content::Text(t)) if !t.is_empty() => out.push(json!({"text": t})),
        Some(Content::Text(_)) => {}
        Some(Content::Parts(parts)) => {
            for p in parts {
                match p {
                    Part::Text { text, .. } if text.is_empty() => {}
                    Part::Text { text, .. } => out.push(json!({"text": text})),
                    Part::ImageUrl { image_url } => out.push(image_part(image_url.url())?),
                    Part::Unsupported => {
                        return Err(GatewayError::invalid_param(
                            "messages",
                            "Gemini models accept text and image_url content parts through this gateway.",
                        ))
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Data URLs go inline; http(s) URLs by reference (the gateway never fetches them), with
/// the media type guessed from the file name, as `fileData` needs one.
fn image_part(url: &str) -> Result<Value, GatewayError> {
    if let Some((mime, data)) = chat::data_url(url) {
        return Ok(json!({"inlineData": {"mimeType": mime, "data": data}}));
    }
    if chat::is_http_url(url) {
        let path = url
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let mime = [
            (".png", "image/png"),
            (".gif", "image/gif"),
            (".webp", "image/webp"),
            (".heic", "image/heic"),
            (".pdf", "application/pdf"),
        ]
        .iter()
        .find(|(ext, _)| path.ends_with(ext))
        .map_or("image/jpeg", |(_, m)| m);
        return Ok(json!({"fileData": {"mimeType": mime, "fileUri": url}}));
    }
    Err(GatewayError::invalid_param(
        "messages",
        "An image_url must be a base64 data URL or an http(s) URL.",
    ))
}

/// JSON Schema cut down to the OpenAPI subset Gemini's `Schema` accepts: local `$ref`s
/// inlined, `["t", "null"]` types as `nullable`, `const` as a one-value `enum`, and keys it
/// does not know (`additionalProperties`, `$schema`, `strict`, ...) dropped.
pub fn openapi_schema(schema: &Value) -> Value {
    let defs = schema
        .get("$defs")
        .or_else(|| schema.get("definitions"))
        .cloned()
        .unwrap_or(Value::Null);
    convert_schema(schema, &defs, 0)
}

fn convert_schema(schema: &Value, defs: &Value, depth: usize) -> Value {
    const KEPT: &[&str] = &[
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "propertyOrdering",
        "default",
        "minimum",
        "maximum",
    ];
    let Some(obj) = schema.as_object() else {
        return schema.clone();
    };
    if depth > 16 {
        return json!({"type": "object"}); // a recursive schema: Gemini's has no recursion
    }
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or_default();
        if let Some(target) = defs.get(name) {
            return convert_schema(target, defs, depth + 1);
        }
    }
    let mut out = Map::new();
    for (k, v) in obj {
        match k.as_str() {
            "type" => match v {
                Value::Array(types) => {
                    let real: Vec<&Value> = types.iter().filter(|t| *t != "null").collect();
                    if real.len() < types.len() {
                        out.insert("nullable".into(), true.into());
                    }
                    if let Some(t) = real.first() {
                        out.insert("type".into(), (*t).clone());
                    }
                }
                _ => {
                    out.insert(k.clone(), v.clone());
                }
            },
            "const" => {
                out.insert("enum".into(), json!([v]));
            }
            "properties" => {
                let props: Map<String, Value> = v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, s)| (name.clone(), convert_schema(s, defs, depth + 1)))
                    .collect();
                out.insert(k.clone(), props.into());
            }
            "items" => {
                out.insert(k.clone(), convert_schema(v, defs, depth + 1));
            }
            "anyOf" | "oneOf" => {
                let alts: Vec<Value> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|a| a.get("type").and_then(Value::as_str) != Some("null"))
                    .map(|a| convert_schema(a, defs, depth + 1))
                    .collect();
                if alts.len() < v.as_array().map_or(0, Vec::len) {
                    out.insert("nullable".into(), true.into());
                }
                out.insert("anyOf".into(), alts.into());
            }
            _ if KEPT.contains(&k.as_str()) => {
                out.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------
// Answers

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Response {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    /// Gemini reports an error inside a stream as an event with this field.
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<CandidateContent>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    index: Option<usize>,
}

#[derive(Deserialize, Default)]
struct CandidateContent {
    #[serde(default)]
    parts: Vec<ResponsePart>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ResponsePart {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought_signature: Option<String>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    function_call: Option<FunctionCall>,
}

#[derive(Deserialize)]
struct FunctionCall {
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub status: String,
}

/// Counts kept as the provider sent them (for `raw_usage`); `tokens` clamps them.
#[derive(Deserialize, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prompt_token_count: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cached_content_token_count: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    candidates_token_count: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thoughts_token_count: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool_use_prompt_token_count: Option<Number>,
}

impl UsageMetadata {
    /// `promptTokenCount` includes the cached part; output is the answer plus thoughts.
    fn tokens(&self) -> TokenUsage {
        let count = |n: &Option<Number>| n.as_ref().map_or(0, token_count);
        let prompt = count(&self.prompt_token_count);
        let cached = count(&self.cached_content_token_count).min(prompt);
        let thoughts = count(&self.thoughts_token_count);
        TokenUsage {
            input: prompt - cached + count(&self.tool_use_prompt_token_count),
            cache_read: cached,
            cache_write: 0,
            output: count(&self.candidates_token_count) + thoughts,
            reasoning: thoughts,
        }
    }

    fn reported(&self) -> ReportedUsage {
        ReportedUsage {
            tokens: self.tokens(),
            raw: serde_json::to_string(self).unwrap_or_default(),
            estimated: false,
        }
    }
}

pub fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => "content_filter",
        // STOP, OTHER, MALFORMED_FUNCTION_CALL, FINISH_REASON_UNSPECIFIED, ...
        _ => "stop",
    }
}

fn malformed() -> GatewayError {
    GatewayError::upstream("The provider answered with a body that is not a Gemini response.")
}

pub fn read_response(
    dep: &Deployment,
    prepared: &Prepared,
    body: &[u8],
) -> Result<(Bytes, Option<ReportedUsage>), GatewayError> {
    if prepared.endpoint == Endpoint::Embeddings {
        return read_embeddings(dep, prepared, body);
    }
    let resp: Response = serde_json::from_slice(body).map_err(|_| malformed())?;
    let mut choices: Vec<chat::Choice> = Vec::new();
    if resp.error.is_some() {
        return Err(GatewayError::upstream(
            "The provider answered with an error instead of a response.",
        ));
    }
    for (pos, cand) in resp.candidates.iter().enumerate() {
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
            .unwrap_or_else(|| format!("chatcmpl-{}", crate::ids::new_id())),
        model: resp
            .model_version
            .unwrap_or_else(|| model_path(dep).to_owned()),
        created: chat::unix_now(),
        choices,
        usage: usage.as_ref().map(|u| u.tokens),
    };
    Ok((completion.to_json(), usage))
}

fn args_json(args: Option<&Value>) -> String {
    match args {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(v) => v.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Embeddings

fn embedding_request(
    dep: &Deployment,
    body: &JsonObject,
) -> Result<(&'static str, Value), GatewayError> {
    let bad = || {
        GatewayError::invalid_param(
            "input",
            "Gemini embeddings take a string or an array of strings; token arrays are not supported.",
        )
    };
    let input: Value = body.get("input").map_err(|_| bad())?.ok_or_else(bad)?;
    let dimensions = chat::param::<u64>(body, dep, "dimensions")?;
    let one = |text: &str| {
        let mut r = json!({"content": {"parts": [{"text": text}]}});
        if let Some(d) = dimensions {
            r["outputDimensionality"] = d.into();
        }
        r
    };
    match &input {
        Value::String(s) => Ok(("embedContent", one(s))),
        Value::Array(items) if !items.is_empty() => {
            let requests = items
                .iter()
                .map(|i| {
                    let text = i.as_str().ok_or_else(bad)?;
                    let mut r = one(text);
                    r["model"] = format!("models/{}", model_path(dep)).into();
                    Ok(r)
                })
                .collect::<Result<Vec<Value>, GatewayError>>()?;
            Ok(("batchEmbedContents", json!({"requests": requests})))
        }
        _ => Err(bad()),
    }
}

#[derive(Deserialize)]
struct EmbeddingValues {
    #[serde(default)]
    values: Vec<f32>,
}

#[derive(Deserialize)]
struct EmbeddingResponse {
    #[serde(default)]
    embedding: Option<EmbeddingValues>,
    #[serde(default)]
    embeddings: Option<Vec<EmbeddingValues>>,
}

/// `embedContent` / `batchEmbedContents` answers as an OpenAI embeddings list. Gemini reports
/// no token counts here: they are counted.
fn read_embeddings(
    dep: &Deployment,
    prepared: &Prepared,
    body: &[u8],
) -> Result<(Bytes, Option<ReportedUsage>), GatewayError> {
    let resp: EmbeddingResponse = serde_json::from_slice(body).map_err(|_| malformed())?;
    let vectors = match (resp.embedding, resp.embeddings) {
        (Some(one), _) => vec![one],
        (None, Some(many)) => many,
        (None, None) => return Err(malformed()),
    };
    let base64 = serde_json::from_slice::<Value>(&prepared.client_body)
        .ok()
        .and_then(|v| {
            v.get("encoding_format")
                .and_then(Value::as_str)
                .map(|f| f == "base64")
        })
        .unwrap_or(false);
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let embedding = if base64 {
                // What OpenAI sends for encoding_format=base64: little-endian f32s.
                let bytes: Vec<u8> = e.values.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(e.values)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let usage = estimate::estimate(
        &dep.model_id,
        Endpoint::Embeddings,
        &prepared.client_body,
        "",
        None,
    );
    let n = usage.tokens.prompt_total();
    let out = json!({
        "object": "list",
        "data": data,
        "model": model_path(dep),
        "usage": {"prompt_tokens": n, "total_tokens": n},
    });
    Ok((Bytes::from(out.to_string()), Some(usage)))
}

// ---------------------------------------------------------------------------------------
// Streams

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Streaming,
    /// The body ended after a finishReason: `[DONE]` was sent.
    Done,
    /// An error event was told to the client; the rest is ignored.
    Failed,
}

#[derive(Debug, Default, Clone, Copy)]
struct CandidateState {
    started: bool,
    tool_calls: usize,
    finished: bool,
}

/// Gemini SSE in, OpenAI chunks out.
pub struct Translator {
    parser: sse_parse::SseParser,
    phase: Phase,
    writer: Option<ChunkWriter>,
    candidates: Vec<CandidateState>,
    /// The last usageMetadata (Gemini repeats it, growing, on many events).
    usage: Option<UsageMetadata>,
    client_wants_usage: bool,
    sent_text: OutputSample,
    model_id: String,
    request: Bytes,
    error_type: Option<&'static str>,
}

impl Translator {
    pub fn new(dep: &Deployment, prepared: &Prepared) -> Translator {
        Translator {
            parser: sse_parse::SseParser::new().max_buffer(MAX_EVENT_BYTES),
            phase: Phase::Streaming,
            writer: None,
            candidates: Vec::new(),
            usage: None,
            client_wants_usage: prepared.client_wants_usage,
            sent_text: OutputSample::default(),
            model_id: model_path(dep).to_owned(),
            request: prepared.client_body.clone(),
            error_type: None,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        self.parser.feed(chunk);
        let mut out = Vec::new();
        self.drain(&mut out);
        Bytes::from(out)
    }

    /// The body ended: a stream that finished gets its usage chunk and `[DONE]`.
    pub fn finish(&mut self) -> Bytes {
        self.parser.finish();
        let mut out = Vec::new();
        self.drain(&mut out);
        let finished =
            !self.candidates.is_empty() && self.candidates.iter().all(|c| c.finished || !c.started);
        if self.phase == Phase::Streaming && finished {
            if self.client_wants_usage {
                if let (Some(w), Some(u)) = (&self.writer, self.usage()) {
                    w.usage(&mut out, &u.tokens);
                }
            }
            chat::done(&mut out);
            self.phase = Phase::Done;
        }
        Bytes::from(out)
    }

    fn drain(&mut self, out: &mut Vec<u8>) {
        while let Some(ev) = self.parser.next_event() {
            if self.phase != Phase::Streaming {
                continue;
            }
            self.event(&ev.data, out);
        }
        if self.parser.overflows() > 0 && self.phase == Phase::Streaming {
            chat::event_too_large(out);
            self.phase = Phase::Failed;
            self.error_type = Some("upstream_event_too_large");
        }
    }

    /// Bytes this stream holds for counting and per choice (the SSE parser's own buffer is
    /// capped at `MAX_EVENT_BYTES`).
    pub fn retained_bytes(&self) -> usize {
        self.sent_text.retained_bytes()
            + self.candidates.capacity() * std::mem::size_of::<CandidateState>()
    }

    fn event(&mut self, data: &str, out: &mut Vec<u8>) {
        let Ok(resp) = serde_json::from_str::<Response>(data) else {
            tracing::debug!(data, "unreadable Gemini stream event skipped");
            return;
        };
        if let Some(err) = resp.error {
            let message = if err.message.is_empty() {
                "The provider reported an error mid-stream."
            } else {
                &err.message
            };
            let code = if err.status.is_empty() {
                "upstream_error"
            } else {
                &err.status
            };
            let kind = match code {
                "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "NOT_FOUND" => "invalid_request_error",
                "RESOURCE_EXHAUSTED" => "rate_limit_exceeded",
                _ => "server_error",
            };
            chat::error_event(out, kind, code, message);
            self.phase = Phase::Failed;
            self.error_type = Some("upstream_stream_error");
            return;
        }
        if let Some(u) = resp.usage_metadata {
            self.usage = Some(u);
        }
        let writer = self.writer.get_or_insert_with(|| {
            let id = resp
                .response_id
                .clone()
                .unwrap_or_else(|| format!("chatcmpl-{}", crate::ids::new_id()));
            let model = resp.model_version.as_deref().unwrap_or(&self.model_id);
            ChunkWriter::new(&id, chat::unix_now(), model)
        });
        if resp.candidates.is_empty() {
            if resp.prompt_feedback.and_then(|f| f.block_reason).is_some() {
                if self.candidates.is_empty() {
                    self.candidates.push(CandidateState::default());
                }
                let state = &mut self.candidates[0];
                if !state.started {
                    writer.role(out, 0);
                    state.started = true;
                }
                writer.finish(out, 0, "content_filter");
                state.finished = true;
            }
            return;
        }
        for (pos, cand) in resp.candidates.into_iter().enumerate() {
            let i = cand.index.unwrap_or(pos);
            if i >= MAX_STREAM_INDEX {
                continue;
            }
            if self.candidates.len() <= i {
                self.candidates.resize(i + 1, CandidateState::default());
            }
            let state = &mut self.candidates[i];
            if state.finished {
                continue;
            }
            if !state.started {
                writer.role(out, i);
                state.started = true;
            }
            for part in cand.content.into_iter().flat_map(|c| c.parts) {
                if let Some(call) = part.function_call {
                    let args = args_json(call.args.as_ref());
                    self.sent_text.push(&args);
                    writer.tool_call(
                        out,
                        i,
                        state.tool_calls,
                        &tool_call_id(part.thought_signature.as_deref()),
                        &call.name,
                        &args,
                    );
                    state.tool_calls += 1;
                } else if let (Some(text), None | Some(false)) = (part.text, part.thought) {
                    if !text.is_empty() {
                        self.sent_text.push(&text);
                        writer.content(out, i, &text);
                    }
                }
            }
            if let Some(reason) = cand.finish_reason {
                writer.finish(
                    out,
                    i,
                    chat::finish_reason(finish_reason(&reason), state.tool_calls > 0),
                );
                state.finished = true;
            }
        }
    }

    /// The last usageMetadata of a finished stream; an estimate for a stream that broke
    /// off or failed (the provider's partial counts kept where known).
    pub fn usage(&self) -> Option<ReportedUsage> {
        let complete = self.candidates.iter().any(|c| c.finished) && self.phase != Phase::Failed;
        match (self.usage.as_ref(), complete) {
            (Some(u), true) => Some(u.reported()),
            (None, _) if self.writer.is_none() => None, // nothing arrived
            (partial, _) => {
                let partial = partial.map(|u| u.reported());
                Some(estimate::estimate_counted(
                    &self.model_id,
                    Endpoint::ChatCompletions,
                    &self.request,
                    self.sent_text.tokens(&self.model_id),
                    partial.as_ref(),
                ))
            }
        }
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

    fn dep() -> Deployment {
        deployment(Api::Gemini, "gemini-x")
    }

    fn prepared(body: &str) -> Prepared {
        prepare(
            &dep(),
            Endpoint::ChatCompletions,
            &JsonObject::parse(Bytes::copy_from_slice(body.as_bytes())).unwrap(),
        )
        .unwrap()
    }

    fn translate(body: &str) -> Value {
        let p = prepared(body);
        assert_eq!(p.request.headers["x-goog-api-key"], "sk-test");
        serde_json::from_slice(&p.request.body).unwrap()
    }

    fn translate_err(body: &str) -> GatewayError {
        prepare(
            &dep(),
            Endpoint::ChatCompletions,
            &JsonObject::parse(Bytes::copy_from_slice(body.as_bytes())).unwrap(),
        )
        .unwrap_err()
    }

    #[test]
    fn urls_for_whole_streamed_and_embedding_requests() {
        let p = prepared(r#"{"model":"g","messages":[{"role":"user","content":"x"}]}"#);
        assert_eq!(
            p.request.uri.to_string(),
            "http://gemini.test/v1beta/models/gemini-x:generateContent"
        );
        assert!(!p.stream);
        let p = prepared(
            r#"{"model":"g","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true}}"#,
        );
        assert_eq!(
            p.request.uri.to_string(),
            "http://gemini.test/v1beta/models/gemini-x:streamGenerateContent?alt=sse"
        );
        assert!(p.stream && p.client_wants_usage);
        let d = deployment(Api::Gemini, "models/text-embedding-004");
        let one = prepare(
            &d,
            Endpoint::Embeddings,
            &JsonObject::parse(Bytes::from_static(
                br#"{"model":"e","input":"hi","dimensions":8}"#,
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            one.request.uri.path(),
            "/v1beta/models/text-embedding-004:embedContent"
        );
        let v: Value = serde_json::from_slice(&one.request.body).unwrap();
        assert_eq!(
            v,
            json!({"content":{"parts":[{"text":"hi"}]},"outputDimensionality":8})
        );
        let many = prepare(
            &d,
            Endpoint::Embeddings,
            &JsonObject::parse(Bytes::from_static(br#"{"model":"e","input":["a","b"]}"#)).unwrap(),
        )
        .unwrap();
        assert_eq!(
            many.request.uri.path(),
            "/v1beta/models/text-embedding-004:batchEmbedContents"
        );
        let v: Value = serde_json::from_slice(&many.request.body).unwrap();
        assert_eq!(
            v["requests"][1],
            json!({"model":"models/text-embedding-004","content":{"parts":[{"text":"b"}]}})
        );
        let e = prepare(
            &d,
            Endpoint::Embeddings,
            &JsonObject::parse(Bytes::from_static(br#"{"model":"e","input":[[1,2]]}"#)).unwrap(),
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input"));
    }

    #[test]
    fn roles_system_instruction_and_generation_config() {
        let v = translate(
            r#"{"model":"g","messages":[
            {"role":"system","content":"Be brief."},
            {"role":"user","content":"Hi"},
            {"role":"assistant","content":"Hello!"},
            {"role":"user","content":[{"type":"text","text":"More"}]}],
            "max_tokens":50,"temperature":0.3,"top_p":0.8,"stop":["X","Y"],"n":2,"seed":7}"#,
        );
        assert_eq!(
            v["systemInstruction"],
            json!({"parts":[{"text":"Be brief."}]})
        );
        assert_eq!(
            v["contents"],
            json!([
            {"role":"user","parts":[{"text":"Hi"}]},
            {"role":"model","parts":[{"text":"Hello!"}]},
            {"role":"user","parts":[{"text":"More"}]}])
        );
        assert_eq!(
            v["generationConfig"],
            json!({"maxOutputTokens":50,"temperature":0.3,"topP":0.8,
            "stopSequences":["X","Y"],"candidateCount":2,"seed":7})
        );
    }

    #[test]
    fn tools_choice_and_results_by_call_id() {
        let v = translate(
            r#"{"model":"g","messages":[
            {"role":"user","content":"Weather?"},
            {"role":"assistant","content":"","tool_calls":[
                {"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
                {"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"call_a","content":"{\"temp\":18}"},
            {"role":"tool","tool_call_id":"call_b","content":"noon"}],
            "tools":[{"type":"function","function":{"name":"get_weather","description":"d","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false}}},
                     {"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{}}}}],
            "tool_choice":{"type":"function","function":{"name":"get_weather"}}}"#,
        );
        assert_eq!(
            v["contents"][1],
            json!({"role":"model","parts":[
            {"functionCall":{"name":"get_weather","args":{"city":"Paris"}}},
            {"functionCall":{"name":"get_time","args":{}}}]})
        );
        assert_eq!(
            v["contents"][2],
            json!({"role":"user","parts":[
            {"functionResponse":{"name":"get_weather","response":{"temp":18}}},
            {"functionResponse":{"name":"get_time","response":{"output":"noon"}}}]})
        );
        assert_eq!(
            v["tools"],
            json!([{"functionDeclarations":[
            {"name":"get_weather","description":"d","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}},
            {"name":"get_time"}]}])
        );
        assert_eq!(
            v["toolConfig"],
            json!({"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["get_weather"]}})
        );
        for (choice, mode) in [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")] {
            let v = translate(&format!(
                r#"{{"model":"g","messages":[{{"role":"user","content":"x"}}],"tools":[{{"type":"function","function":{{"name":"f"}}}}],"tool_choice":"{choice}"}}"#
            ));
            assert_eq!(v["toolConfig"]["functionCallingConfig"]["mode"], mode);
        }
        let e = translate_err(
            r#"{"model":"g","messages":[{"role":"tool","tool_call_id":"nope","content":"x"}]}"#,
        );
        assert!(e.message.contains("tool_call_id"));
    }

    #[test]
    fn thought_signatures_travel_in_the_tool_call_id() {
        let (v, _) = read(
            r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{}},"thoughtSignature":"c2lnbmF0dXJl"}]},"finishReason":"STOP"}]}"#,
        );
        let id = v["choices"][0]["message"]["tool_calls"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            id.starts_with("call_") && id.ends_with("__thought__c2lnbmF0dXJl"),
            "{id}"
        );
        let req = format!(
            r#"{{"model":"g","messages":[{{"role":"user","content":"x"}},
            {{"role":"assistant","tool_calls":[{{"id":"{id}","type":"function","function":{{"name":"f","arguments":"{{}}"}}}}]}},
            {{"role":"tool","tool_call_id":"{id}","content":"ok"}}]}}"#
        );
        let v = translate(&req);
        assert_eq!(
            v["contents"][1]["parts"][0]["thoughtSignature"],
            "c2lnbmF0dXJl"
        );
        assert_eq!(
            v["contents"][2]["parts"][0]["functionResponse"]["name"],
            "f"
        );
    }

    #[test]
    fn json_mode_schema_and_images() {
        let v = translate(
            r##"{"model":"g","messages":[{"role":"user","content":[
            {"type":"image_url","image_url":{"url":"data:image/webp;base64,UklGR"}},
            {"type":"image_url","image_url":{"url":"https://example.com/a.PNG?x=1"}},
            {"type":"image_url","image_url":"https://example.com/b"}]}],
            "response_format":{"type":"json_schema","json_schema":{"name":"r","strict":true,"schema":{
                "type":"object","additionalProperties":false,"required":["a"],
                "properties":{"a":{"type":["string","null"]},"b":{"$ref":"#/$defs/B"},"c":{"const":"x"}},
                "$defs":{"B":{"type":"array","items":{"type":"integer"}}}}}}}"##,
        );
        assert_eq!(
            v["contents"][0]["parts"],
            json!([
            {"inlineData":{"mimeType":"image/webp","data":"UklGR"}},
            {"fileData":{"mimeType":"image/png","fileUri":"https://example.com/a.PNG?x=1"}},
            {"fileData":{"mimeType":"image/jpeg","fileUri":"https://example.com/b"}}])
        );
        assert_eq!(
            v["generationConfig"]["responseMimeType"],
            "application/json"
        );
        assert_eq!(
            v["generationConfig"]["responseSchema"],
            json!({"type":"object","required":["a"],"properties":{
            "a":{"type":"string","nullable":true},"b":{"type":"array","items":{"type":"integer"}},"c":{"enum":["x"]}}})
        );
        let v = translate(
            r#"{"model":"g","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}"#,
        );
        assert_eq!(
            v["generationConfig"],
            json!({"responseMimeType":"application/json"})
        );
    }

    const RESPONSE: &str = r#"{"candidates":[{"content":{"parts":[
            {"text":"thinking...","thought":true},{"text":"Checking "},{"text":"now."},
            {"functionCall":{"name":"get_weather","args":{"city":"Paris"}}},
            {"functionCall":{"name":"get_time"}}],"role":"model"},
          "finishReason":"STOP","index":0,"safetyRatings":[]}],
        "usageMetadata":{"promptTokenCount":120,"candidatesTokenCount":20,"totalTokenCount":150,"cachedContentTokenCount":100,"thoughtsTokenCount":10},
        "modelVersion":"gemini-x-001","responseId":"resp-1"}"#;

    fn read(body: &str) -> (Value, Option<ReportedUsage>) {
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

    #[test]
    fn embeddings_become_an_openai_list_with_counted_usage() {
        let d = deployment(Api::Gemini, "text-embedding-004");
        let p = prepare(
            &d,
            Endpoint::Embeddings,
            &JsonObject::parse(Bytes::from_static(
                br#"{"model":"e","input":["hello world","hi"]}"#,
            ))
            .unwrap(),
        )
        .unwrap();
        let (out, u) = read_response(
            &d,
            &p,
            br#"{"embeddings":[{"values":[0.5,-1]},{"values":[0.25,0]}]}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(
            v["data"][1],
            json!({"object":"embedding","index":1,"embedding":[0.25,0.0]})
        );
        assert_eq!(v["usage"]["prompt_tokens"], 3);
        assert!(u.unwrap().estimated);
        let p = prepare(
            &d,
            Endpoint::Embeddings,
            &JsonObject::parse(Bytes::from_static(
                br#"{"model":"e","input":"x","encoding_format":"base64"}"#,
            ))
            .unwrap(),
        )
        .unwrap();
        let (out, _) = read_response(&d, &p, br#"{"embedding":{"values":[1.0]}}"#).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["data"][0]["embedding"], "AACAPw==",
            "1.0f32 little-endian, base64"
        );
    }

    const STREAM: &str = concat!(
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"thinking\",\"thought\":true}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":120,\"cachedContentTokenCount\":100,\"thoughtsTokenCount\":10},\"modelVersion\":\"gemini-x-001\",\"responseId\":\"resp-1\"}\r\n\r\n",
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Checking \"}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":120,\"candidatesTokenCount\":2,\"cachedContentTokenCount\":100,\"thoughtsTokenCount\":10},\"modelVersion\":\"gemini-x-001\",\"responseId\":\"resp-1\"}\r\n\r\n",
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"now.\"},{\"functionCall\":{\"name\":\"get_weather\",\"args\":{\"city\":\"Paris\"}}},{\"functionCall\":{\"name\":\"get_time\"}}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":120,\"candidatesTokenCount\":20,\"totalTokenCount\":150,\"cachedContentTokenCount\":100,\"thoughtsTokenCount\":10},\"modelVersion\":\"gemini-x-001\",\"responseId\":\"resp-1\"}\r\n\r\n",
    );

    fn run(stream: &[u8], include_usage: bool, cuts: &[usize]) -> (Vec<u8>, Translator) {
        let d = dep();
        let p = prepared_for(
            &d,
            r#"{"model":"g","messages":[{"role":"user","content":"hello"}],"stream":true}"#,
            include_usage,
        );
        let mut t = Translator::new(&d, &p);
        let out = crate::providers::testing::feed(&mut t, stream, cuts);
        (out, t)
    }

    #[test]
    fn stream_translates_and_ends_with_usage_and_done() {
        let (out, t) = run(STREAM.as_bytes(), true, &[]);
        let c = collect(&out);
        assert!(c.done);
        assert_eq!(c.role_chunks, 1);
        assert_eq!(c.choices[0].content, "Checking now.");
        assert_eq!(c.choices[0].tool_calls.len(), 2);
        assert!(c.choices[0].tool_calls[1].id.starts_with("call_"));
        assert_eq!(c.choices[0].finish_reason, "tool_calls");
        assert_eq!(c.usage_chunks, 1);
        assert_eq!(
            c.usage.unwrap()["completion_tokens"],
            30,
            "the last usageMetadata counts"
        );
        assert!(!t.usage().unwrap().estimated);
    }

    #[test]
    fn streamed_and_whole_answers_agree() {
        let (out, t) = run(STREAM.as_bytes(), false, &[]);
        let c = collect(&out);
        assert!(c.usage.is_none());
        let (whole, u) = read(RESPONSE);
        assert_same_choices(&c.choices, &choices_of(&whole));
        assert_eq!(t.usage().unwrap().tokens, u.unwrap().tokens);
    }

    #[test]
    fn events_split_at_every_byte_give_the_same_answer() {
        let bytes = STREAM.as_bytes();
        let norm = |out: &[u8]| {
            let mut c = collect(out);
            for ch in &mut c.choices {
                for t in &mut ch.tool_calls {
                    t.id.clear(); // fresh random ids every run
                }
            }
            c
        };
        let want = norm(&run(bytes, true, &[]).0);
        for cut in 1..bytes.len() {
            let (out, t) = run(bytes, true, &[cut]);
            assert_eq!(norm(&out), want, "cut at {cut}");
            assert_eq!(t.usage().unwrap().tokens.output, 30);
        }
    }

    #[test]
    fn mid_stream_error_cut_stream_and_unicode() {
        let s = concat!(
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"日本 😀\"}]},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":9}}\n\n",
            "data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":\"UNAVAILABLE\"}}\n\n",
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"ignored\"}]},\"finishReason\":\"STOP\"}]}\n\n",
        );
        let (out, t) = run(s.as_bytes(), true, &[]);
        let c = collect(&out);
        assert_eq!(c.choices[0].content, "日本 😀");
        assert!(!c.done);
        assert_eq!(c.errors[0]["error"]["code"], "UNAVAILABLE");
        assert_eq!(t.error_type(), Some("upstream_stream_error"));
        let u = t.usage().unwrap();
        assert!(u.estimated);
        assert_eq!(u.tokens.input, 9);
        // cut: no finishReason, no [DONE], estimated usage
        let cut = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"hello world\"}]},\"index\":0}]}\n\ndata: {\"candi";
        let (out, t) = run(cut.as_bytes(), true, &[]);
        let c = collect(&out);
        assert!(!c.done && c.errors.is_empty());
        let u = t.usage().unwrap();
        assert!(u.estimated && u.tokens.output == 2 && u.tokens.input > 0);
        // empty
        let (out, t) = run(b"", true, &[]);
        assert!(out.is_empty() && t.usage().is_none());
    }

    #[test]
    fn several_candidates_stream_as_several_choices() {
        let s = concat!(
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"A\"}]},\"index\":0},{\"content\":{\"parts\":[{\"text\":\"B\"}]},\"index\":1}]}\n\n",
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]},\"finishReason\":\"STOP\",\"index\":0},{\"content\":{\"parts\":[{\"text\":\"\"}]},\"finishReason\":\"MAX_TOKENS\",\"index\":1}],\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":4}}\n\n",
        );
        let (out, _) = run(s.as_bytes(), false, &[]);
        let c = collect(&out);
        assert!(c.done);
        assert_eq!(c.choices.len(), 2);
        assert_eq!(
            (c.choices[0].content.as_str(), c.choices[0].finish_reason),
            ("Aa", "stop")
        );
        assert_eq!(
            (c.choices[1].content.as_str(), c.choices[1].finish_reason),
            ("B", "length")
        );
    }

    /// A long answer and a huge candidate index cost bounded memory; an event that never
    /// ends is cut with an error event.
    #[test]
    fn long_streams_and_endless_events_are_bounded() {
        let d = dep();
        let p = prepared_for(
            &d,
            r#"{"model":"g","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
            false,
        );
        let mut t = Translator::new(&d, &p);
        t.push(b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"}]},\"index\":4000000000}]}\n\n");
        let event = format!(
            "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"{}\"}}]}},\"index\":0}}]}}\n\n",
            "hello world ".repeat(1000)
        );
        for _ in 0..(20_000_000 / event.len()) {
            assert!(!t.push(event.as_bytes()).is_empty());
        }
        assert!(t.retained_bytes() <= 2 * estimate::OUTPUT_SAMPLE_BYTES);
        assert!(t.usage().unwrap().tokens.output > 3_000_000);
        let mut out = t.push(b"data: {\"candidates\":").to_vec();
        for _ in 0..(MAX_EVENT_BYTES / 65536 + 2) {
            out.extend_from_slice(&t.push(&[b'x'; 65536]));
        }
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("upstream_event_too_large"), "{out}");
        assert_eq!(t.error_type(), Some("upstream_event_too_large"));
        // a whole answer with such an index is refused, not allocated for
        let whole = br#"{"candidates":[{"content":{"parts":[{"text":"x"}]},"index":4000000000}]}"#;
        assert_eq!(read_response(&d, &p, whole).unwrap_err().status, 502);
        let error = br#"{"error":{"code":500,"message":"boom","status":"INTERNAL"}}"#;
        assert_eq!(read_response(&d, &p, error).unwrap_err().status, 502);
    }
}
