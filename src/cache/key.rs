//! Whether a request may be answered from the cache, and its key: a SHA-256 over the
//! endpoint, the public model name, the tenant's scope and every body field that can change
//! the answer, each value in a canonical form (object keys sorted, numbers by value), so two
//! bodies that differ only in key order, spacing or `0` against `0.0` share an entry.

use http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::providers::{Endpoint, JsonObject};

/// The request header that turns caching on or off for one request.
pub const HEADER: &str = "x-tollgate-cache";

/// Fields that never change the answer: how it is delivered (`stream`, `stream_options`) and
/// the end-user id OpenAI reads for abuse monitoring (`user`). The model is hashed apart.
const IGNORED: [&str; 4] = ["model", "stream", "stream_options", "user"];

/// Bumped when the key's layout changes, so old entries are never read with a new meaning.
const KEY_VERSION: &[u8] = b"tollgate-cache-v1";

/// What the client's `x-tollgate-cache` header asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// No header (or one we do not know): cacheable when `temperature` is 0.
    #[default]
    Default,
    /// `on`: cacheable whatever the temperature.
    On,
    /// `off`: never looked up nor stored.
    Off,
}

impl Mode {
    pub fn of(headers: &HeaderMap) -> Mode {
        match headers.get(HEADER).map(|v| v.as_bytes()) {
            Some(v) if v.eq_ignore_ascii_case(b"on") => Mode::On,
            Some(v) if v.eq_ignore_ascii_case(b"off") => Mode::Off,
            _ => Mode::Default,
        }
    }
}

/// The tenant a request belongs to: its key's project, else its key (none on an open
/// gateway or for the master key).
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    pub project: Option<&'a str>,
    pub key: Option<&'a str>,
}

/// An entry's key: the digest, as hex where it names a Redis key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub [u8; 32]);

/// Whether a request may be answered from (and stored in) the cache. Embeddings have no
/// temperature: they are cached when the header asks for it.
pub fn cacheable(endpoint: Endpoint, body: &JsonObject, mode: Mode) -> bool {
    match mode {
        Mode::Off => false,
        Mode::On => true,
        Mode::Default => {
            endpoint != Endpoint::Embeddings
                && body.get::<f64>("temperature").ok().flatten() == Some(0.0)
        }
    }
}

/// The key of a request whose model is `model`, for the tenant `scope` (a project's or key's
/// id; empty when entries are shared).
pub fn key(endpoint: Endpoint, model: &str, scope: &str, body: &JsonObject) -> Key {
    let mut h = Sha256::new();
    h.update(KEY_VERSION);
    put_str(&mut h, endpoint.as_str());
    put_str(&mut h, model);
    put_str(&mut h, scope);
    let mut fields: Vec<&str> = body.keys().filter(|k| !IGNORED.contains(k)).collect();
    fields.sort_unstable();
    fields.dedup();
    for field in fields {
        put_str(&mut h, field);
        // A field that is not JSON cannot be: the body parsed. Its bytes would do as well.
        match body.raw(field).map(serde_json::from_slice::<Value>) {
            Some(Ok(v)) => put_value(&mut h, &v),
            _ => put_str(
                &mut h,
                &String::from_utf8_lossy(body.raw(field).unwrap_or_default()),
            ),
        }
    }
    Key(h.finalize().into())
}

/// A string with its length first, so no two sequences of strings hash alike.
fn put_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

/// A value in canonical form: tagged, lengths first, object keys sorted.
fn put_value(h: &mut Sha256, v: &Value) {
    match v {
        Value::Null => h.update(b"n"),
        Value::Bool(b) => h.update(if *b { b"t" } else { b"f" }),
        Value::Number(n) => put_number(h, n),
        Value::String(s) => {
            h.update(b"s");
            put_str(h, s);
        }
        Value::Array(items) => {
            h.update(b"[");
            h.update((items.len() as u64).to_le_bytes());
            items.iter().for_each(|i| put_value(h, i));
        }
        Value::Object(map) => {
            h.update(b"{");
            h.update((map.len() as u64).to_le_bytes());
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (k, v) in entries {
                put_str(h, k);
                put_value(h, v);
            }
        }
    }
}

/// A number by its value: `0`, `0.0` and `0e0` are one number; integers beyond a float's
/// exact range keep their digits.
fn put_number(h: &mut Sha256, n: &serde_json::Number) {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if let Some(i) = n.as_i64() {
        h.update(b"i");
        h.update(i.to_string().as_bytes());
    } else if let Some(u) = n.as_u64() {
        h.update(b"i");
        h.update(u.to_string().as_bytes());
    } else {
        let f = n.as_f64().unwrap_or(f64::NAN);
        if f.fract() == 0.0 && f.abs() < EXACT {
            h.update(b"i");
            h.update((f as i64).to_string().as_bytes());
        } else {
            h.update(b"f");
            h.update(f.to_bits().to_le_bytes());
        }
    }
    h.update(b";");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str) -> JsonObject {
        JsonObject::parse(bytes::Bytes::from(text.to_owned())).unwrap()
    }

    fn k(text: &str) -> Key {
        key(Endpoint::ChatCompletions, "m", "p", &body(text))
    }

    #[test]
    fn key_order_spacing_and_number_spelling_do_not_change_the_key() {
        let a = k(r#"{"model":"x","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#);
        let b = k(r#"{ "messages" : [ {"content":"hi", "role":"user"} ],
                      "temperature": 0.0, "model": "x", "stream": true, "user": "u1" }"#);
        assert_eq!(a, b);
    }

    #[test]
    fn every_other_field_changes_the_key() {
        let base = r#"{"temperature":0,"messages":[{"role":"user","content":"hi"}]"#;
        let a = k(&format!("{base}}}"));
        for extra in [
            r#","max_tokens":5"#,
            r#","seed":1"#,
            r#","top_p":0.5"#,
            r#","tools":[]"#,
            r#","response_format":{"type":"json_object"}"#,
        ] {
            assert_ne!(a, k(&format!("{base}{extra}}}")), "{extra}");
        }
        let other = k(r#"{"temperature":0,"messages":[{"role":"user","content":"hi!"}]}"#);
        assert_ne!(a, other);
        let text = body(&format!("{base}}}"));
        assert_ne!(a, key(Endpoint::ChatCompletions, "m", "q", &text));
        assert_ne!(a, key(Endpoint::ChatCompletions, "n", "p", &text));
        assert_ne!(a, key(Endpoint::Completions, "m", "p", &text));
    }

    #[test]
    fn cacheable_at_temperature_zero_or_when_asked() {
        let chat = Endpoint::ChatCompletions;
        assert!(cacheable(
            chat,
            &body(r#"{"temperature":0.0}"#),
            Mode::Default
        ));
        assert!(!cacheable(
            chat,
            &body(r#"{"temperature":0.2}"#),
            Mode::Default
        ));
        assert!(!cacheable(chat, &body("{}"), Mode::Default));
        assert!(cacheable(chat, &body("{}"), Mode::On));
        assert!(!cacheable(chat, &body(r#"{"temperature":0}"#), Mode::Off));
        assert!(!cacheable(Endpoint::Embeddings, &body("{}"), Mode::Default));
        let mut h = HeaderMap::new();
        h.insert(HEADER, "OFF".parse().unwrap());
        assert_eq!(Mode::of(&h), Mode::Off);
    }
}
