//! An OpenAI chat request as a Messages API request. System and developer messages become
//! `system`; `tool` messages become `tool_result` blocks and, since turns must alternate,
//! adjacent messages of one role are merged into one turn; assistant `tool_calls` become
//! `tool_use` blocks; images become `image` blocks; `max_tokens` is always sent (Anthropic
//! requires it).

use serde_json::{json, Map, Value};

use crate::error::GatewayError;
use crate::providers::chat::{self, Content, Part, ToolChoice};
use crate::providers::JsonObject;
use crate::registry::Deployment;

/// What `max_tokens` is when neither the client nor the model's entry says.
const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The Messages API request for an OpenAI chat request.
pub(super) fn request_body(
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
    let (system, messages) = conversation(body)?;
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
    sampling(&mut req, dep, body)?;
    tools(&mut req, dep, body)?;
    if stream {
        req.insert("stream".into(), true.into());
    }
    Ok(Value::Object(req))
}

/// The system blocks and the turns of an OpenAI conversation.
fn conversation(body: &JsonObject) -> Result<(Vec<Value>, Vec<Value>), GatewayError> {
    let mut system: Vec<Value> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in chat::messages(body)? {
        if matches!(m.role.as_str(), "system" | "developer") {
            // Text blocks, each with its cache_control (a cached system prompt is the usual
            // use of Anthropic's prompt caching).
            let blocks = content_blocks(m.content.as_ref())?;
            system.extend(blocks.into_iter().filter(|b| b["type"] == "text"));
            continue;
        }
        let (role, blocks) = turn(&m)?;
        if blocks.is_empty() {
            continue; // Anthropic refuses empty turns; an empty message says nothing anyway
        }
        // Turns must alternate: a tool result and the user text after it are one turn.
        match turns.last_mut() {
            Some((last, prev)) if *last == role => prev.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    Ok((system, messages))
}

/// A user, assistant or tool message as the role and blocks of an Anthropic turn.
fn turn(m: &chat::Message) -> Result<(&'static str, Vec<Value>), GatewayError> {
    match m.role.as_str() {
        "user" => Ok(("user", content_blocks(m.content.as_ref())?)),
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
            Ok(("assistant", blocks))
        }
        "tool" => {
            let id = m.tool_call_id.as_deref().ok_or_else(|| {
                GatewayError::invalid_param("messages", "A 'tool' message needs 'tool_call_id'.")
            })?;
            let text = m.content.as_ref().map(Content::text).unwrap_or_default();
            Ok((
                "user",
                vec![json!({"type": "tool_result", "tool_use_id": id, "content": text})],
            ))
        }
        other => Err(GatewayError::invalid_param(
            "messages",
            format!("Unknown message role '{other}'."),
        )),
    }
}

/// Stop sequences, temperature, top_p and the end user.
fn sampling(
    req: &mut Map<String, Value>,
    dep: &Deployment,
    body: &JsonObject,
) -> Result<(), GatewayError> {
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
    Ok(())
}

/// The tools and the tool choice, when the request has tools.
fn tools(
    req: &mut Map<String, Value>,
    dep: &Deployment,
    body: &JsonObject,
) -> Result<(), GatewayError> {
    let tools = chat::tools(body)?;
    if tools.is_empty() {
        return Ok(());
    }
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
    Ok(())
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::{json, Value};

    use super::super::{prepare, API_VERSION};
    use super::*;
    use crate::config::Api;
    use crate::providers::testing::deployment;
    use crate::providers::{Endpoint, JsonObject};

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
}
