//! Embeddings: one string through `embedContent`, a list through `batchEmbedContents`, the
//! answer as an OpenAI embeddings list.

use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};

use super::model_path;
use super::response::malformed;
use super::schema::EmbeddingResponse;
use crate::error::GatewayError;
use crate::providers::{chat, estimate, Endpoint, JsonObject, Prepared, ReportedUsage};
use crate::registry::Deployment;

pub(super) fn request_body(
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

/// `embedContent` / `batchEmbedContents` answers as an OpenAI embeddings list. Gemini reports
/// no token counts here: they are counted.
pub(super) fn read_response(
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::{json, Value};

    use super::super::prepare;
    use super::*;
    use crate::config::Api;
    use crate::providers::testing::deployment;
    use crate::providers::Endpoint;

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
}
