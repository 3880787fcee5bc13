//! An OpenAI chat request as a `generateContent` request: roles become user/model,
//! system/developer messages `systemInstruction`, sampling parameters `generationConfig`,
//! tools `functionDeclarations`, tool results `functionResponse` parts. Gemini function
//! calls carry no id, so the name of a tool result is found through the `tool_call_id` of
//! the assistant message that made the call.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::openapi::openapi_schema;
use super::THOUGHT_SIGNATURE_MARK;
use crate::error::GatewayError;
use crate::providers::chat::{self, Content, Part, ToolChoice};
use crate::providers::JsonObject;
use crate::registry::Deployment;

/// The `generateContent` request for an OpenAI chat request.
pub(super) fn request_body(dep: &Deployment, body: &JsonObject) -> Result<Value, GatewayError> {
    let (system, contents) = conversation(body)?;
    let mut req = Map::new();
    req.insert("contents".into(), contents.into());
    if !system.is_empty() {
        req.insert("systemInstruction".into(), json!({"parts": system}));
    }
    let config = generation_config(dep, body)?;
    if !config.is_empty() {
        req.insert("generationConfig".into(), config.into());
    }
    tools(&mut req, body)?;
    Ok(Value::Object(req))
}

/// The system instruction's parts and the contents of an OpenAI conversation.
fn conversation(body: &JsonObject) -> Result<(Vec<Value>, Vec<Value>), GatewayError> {
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
        if matches!(m.role.as_str(), "system" | "developer") {
            let text = m.content.as_ref().map(Content::text).unwrap_or_default();
            if !text.is_empty() {
                system.push(json!({"text": text}));
            }
            continue;
        }
        let (role, parts) = turn(m, &call_names)?;
        if parts.is_empty() {
            continue;
        }
        // One turn per role change: all function responses of a call go back together.
        match contents.last_mut() {
            Some((last, prev)) if *last == role => prev.extend(parts),
            _ => contents.push((role, parts)),
        }
    }
    let contents = contents
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect();
    Ok((system, contents))
}

/// A user, assistant or tool message as the role and parts of a Gemini turn; `call_names`
/// names the function each earlier tool call id called.
fn turn(
    m: &chat::Message,
    call_names: &HashMap<&str, &str>,
) -> Result<(&'static str, Vec<Value>), GatewayError> {
    match m.role.as_str() {
        "user" => Ok(("user", parts(m.content.as_ref())?)),
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
            Ok(("model", parts))
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
            Ok((
                "user",
                vec![json!({"functionResponse": {"name": name, "response": response}})],
            ))
        }
        other => Err(GatewayError::invalid_param(
            "messages",
            format!("Unknown message role '{other}'."),
        )),
    }
}

/// Token limit, sampling parameters, candidates, stop sequences and the response format.
fn generation_config(
    dep: &Deployment,
    body: &JsonObject,
) -> Result<Map<String, Value>, GatewayError> {
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
        response_format(&mut config, &format)?;
    }
    Ok(config)
}

/// JSON mode, with the schema when the client gave one.
fn response_format(config: &mut Map<String, Value>, format: &Value) -> Result<(), GatewayError> {
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
    Ok(())
}

/// The function declarations and the tool config, when the request has tools.
fn tools(req: &mut Map<String, Value>, body: &JsonObject) -> Result<(), GatewayError> {
    let tools = chat::tools(body)?;
    if tools.is_empty() {
        return Ok(());
    }
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
    Ok(())
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{translate, translate_err};

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
}
