//! What an admin request brings: its JSON body, read within a bound and turned into a typed
//! input whose first wrong field is named in the error's `param`; and its query string, whose
//! parameters each URL lists.

use std::collections::HashMap;

use http::header::CONTENT_LENGTH;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::GatewayError;
use crate::upstream::{read_limited, ReadError};

/// The largest admin request body: an admin API body is a row or two.
pub const MAX_ADMIN_BODY: usize = 1024 * 1024;

/// The body, whole and at most `MAX_ADMIN_BODY` bytes, as JSON; an empty body is `null`.
pub async fn read_json(
    req: Request<Incoming>,
    timeout: std::time::Duration,
) -> Result<Value, GatewayError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_ADMIN_BODY as u64) {
        return Err(GatewayError::body_too_large(MAX_ADMIN_BODY));
    }
    let read = tokio::time::timeout(timeout, read_limited(req.into_body(), MAX_ADMIN_BODY));
    let bytes = match read.await {
        Err(_) => {
            return Err(GatewayError::new(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                "The request body did not arrive in time.",
            ))
        }
        Ok(Err(ReadError::TooLarge)) => return Err(GatewayError::body_too_large(MAX_ADMIN_BODY)),
        Ok(Err(ReadError::Broken)) => {
            return Err(GatewayError::invalid_request(
                "The request body could not be read.",
            ))
        }
        Ok(Ok(bytes)) => bytes,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        GatewayError::invalid_request(format!("The request body is not valid JSON ({e})."))
    })
}

/// The body as a JSON object.
pub fn object(body: Value) -> Result<Map<String, Value>, GatewayError> {
    match body {
        Value::Object(map) => Ok(map),
        _ => Err(GatewayError::invalid_request(
            "The request body must be a JSON object.",
        )),
    }
}

/// A JSON object as `T`. The first field that is missing, unknown or of the wrong type is
/// named in `param` (a nested one by its path, e.g. `timeouts.connect_ms`).
pub fn typed<T: DeserializeOwned>(value: Map<String, Value>) -> Result<T, GatewayError> {
    serde_path_to_error::deserialize(Value::Object(value)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // A missing or unknown field is reported at the object holding it: name the field.
        let field = match path.as_str() {
            "." => backticked(&inner).unwrap_or_default(),
            p => p.to_owned(),
        };
        let message = match field.as_str() {
            "" => format!("Invalid request body: {inner}."),
            f => format!("Invalid `{f}`: {inner}."),
        };
        let err = GatewayError::invalid_request(message);
        if field.is_empty() {
            err
        } else {
            err.param(field)
        }
    })
}

/// A PATCH applied to a row's view: the view's editable fields with the patch's over them,
/// ready to be read as the same typed input a create takes, so an update is checked as a
/// whole. A read-only field may be sent back unchanged (a GET's answer can be PATCHed back);
/// a different value is refused by `read_only`'s answer for it.
pub fn merge(
    view: &Map<String, Value>,
    patch: Map<String, Value>,
    read_only: &[&str],
    refuse: impl Fn(&str) -> GatewayError,
) -> Result<Map<String, Value>, GatewayError> {
    let mut merged: Map<String, Value> = view
        .iter()
        .filter(|(k, _)| !read_only.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in patch {
        if !read_only.contains(&k.as_str()) {
            merged.insert(k, v);
        } else if view.get(&k) != Some(&v) {
            return Err(refuse(&k));
        }
    }
    Ok(merged)
}

/// 400 for a field only the gateway sets.
pub fn read_only(field: &str) -> GatewayError {
    GatewayError::invalid_param(field, format!("`{field}` is read-only.")).code("read_only_field")
}

/// The first `name` in serde's "missing field `name`" / "unknown field `name`, expected ...".
fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned())
}

/// A query string's parameters; one this URL does not take is refused, by name.
pub fn query(
    req_query: Option<&str>,
    allowed: &[&str],
) -> Result<HashMap<String, String>, GatewayError> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(req_query.unwrap_or("").as_bytes()) {
        if !allowed.contains(&k.as_ref()) {
            return Err(GatewayError::invalid_param(
                &k,
                format!(
                    "Unknown query parameter `{k}`; this URL takes {}.",
                    allowed.join(", ")
                ),
            ));
        }
        out.insert(k.into_owned(), v.into_owned());
    }
    Ok(out)
}

/// A query parameter that must be `true` or `false`; absent is false.
pub fn flag(query: &HashMap<String, String>, name: &str) -> Result<bool, GatewayError> {
    match query.get(name).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(GatewayError::invalid_param(
            name,
            format!("`{name}` must be true or false, not {other:?}."),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Input {
        name: String,
        #[serde(default)]
        count: u32,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        ms: u64,
    }

    fn err(v: Value) -> GatewayError {
        typed::<Input>(v.as_object().unwrap().clone()).unwrap_err()
    }

    #[test]
    fn the_wrong_field_is_named() {
        let e = err(serde_json::json!({"name": "a", "count": "x"}));
        assert_eq!(e.param.as_deref(), Some("count"));
        assert!(
            e.message.starts_with("Invalid `count`: invalid type"),
            "{}",
            e.message
        );
        let e = err(serde_json::json!({"count": 1}));
        assert_eq!(e.param.as_deref(), Some("name"));
        assert!(e.message.contains("missing field"), "{}", e.message);
        let e = err(serde_json::json!({"name": "a", "colour": 1}));
        assert_eq!(e.param.as_deref(), Some("colour"));
        let e = err(serde_json::json!({"name": "a", "inner": {"ms": -1}}));
        assert_eq!(e.param.as_deref(), Some("inner.ms"));
    }

    #[test]
    fn query_parameters_are_checked_by_name() {
        let q = query(Some("limit=5&after=a%20b"), &["limit", "after"]).unwrap();
        assert_eq!(q["after"], "a b");
        let e = query(Some("limt=5"), &["limit", "after"]).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("limt"));
    }
}
