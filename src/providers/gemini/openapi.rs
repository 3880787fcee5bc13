//! The JSON Schemas of tools' parameters and `json_schema` response formats, in the form
//! Gemini accepts.

use serde_json::{json, Map, Value};

/// JSON Schema cut down to the OpenAPI subset Gemini's `Schema` accepts: local `$ref`s
/// inlined, `["t", "null"]` types as `nullable`, `const` as a one-value `enum`, and keys it
/// does not know (`additionalProperties`, `$schema`, `strict`, ...) dropped.
pub(super) fn openapi_schema(schema: &Value) -> Value {
    let defs = schema
        .get("$defs")
        .or_else(|| schema.get("definitions"))
        .cloned()
        .unwrap_or(Value::Null);
    convert_schema(schema, &defs, 0)
}

/// The keywords Gemini's `Schema` knows that pass as they are.
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

fn convert_schema(schema: &Value, defs: &Value, depth: usize) -> Value {
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
        convert_keyword(&mut out, k, v, defs, depth);
    }
    Value::Object(out)
}

/// Writes one keyword of a schema object into `out` as Gemini's `Schema` takes it (or not
/// at all).
fn convert_keyword(out: &mut Map<String, Value>, k: &str, v: &Value, defs: &Value, depth: usize) {
    match k {
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
                out.insert(k.into(), v.clone());
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
            out.insert(k.into(), props.into());
        }
        "items" => {
            out.insert(k.into(), convert_schema(v, defs, depth + 1));
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
        _ if KEPT.contains(&k) => {
            out.insert(k.into(), v.clone());
        }
        _ => {}
    }
}
