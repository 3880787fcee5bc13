//! A JSON object parsed once into its top-level fields, each kept as the exact bytes the
//! client sent. Adapters read the few fields they need and write a new body by splicing:
//! changing `model` costs a copy of the body, never a re-serialisation of the messages.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Clone)]
pub struct JsonObject {
    bytes: Bytes,
    /// Field name and the byte range of its value inside `bytes`, in the client's order.
    fields: Vec<(String, Range<usize>)>,
}

impl fmt::Debug for JsonObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonObject")
            .field(
                "fields",
                &self.fields.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                    let v: &'de RawValue = map.next_value()?;
                    out.push((k, v));
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// JSON value kinds, told apart by the first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

impl JsonObject {
    pub fn parse(bytes: Bytes) -> Result<JsonObject, serde_json::Error> {
        let base = bytes.as_ptr() as usize;
        let parsed: Fields = serde_json::from_slice(&bytes)?;
        let fields = parsed
            .0
            .into_iter()
            .map(|(k, v)| {
                let start = v.get().as_ptr() as usize - base;
                (k.into_owned(), start..start + v.get().len())
            })
            .collect();
        Ok(JsonObject { bytes, fields })
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The raw bytes of a field's value (the last one when a key repeats, as JSON parsers do).
    pub fn raw(&self, key: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, r)| &self.bytes[r.clone()])
    }

    pub fn contains(&self, key: &str) -> bool {
        self.raw(key).is_some()
    }

    pub fn kind(&self, key: &str) -> Option<Kind> {
        Some(match self.raw(key)?.first()? {
            b'{' => Kind::Object,
            b'[' => Kind::Array,
            b'"' => Kind::String,
            b't' | b'f' => Kind::Bool,
            b'n' => Kind::Null,
            _ => Kind::Number,
        })
    }

    /// Deserialises one field. Absent and `null` are both None.
    pub fn get<'a, T: Deserialize<'a>>(
        &'a self,
        key: &str,
    ) -> Result<Option<T>, serde_json::Error> {
        match self.raw(key) {
            None => Ok(None),
            Some(b"null") => Ok(None),
            Some(raw) => serde_json::from_slice(raw).map(Some),
        }
    }

    pub fn str(&self, key: &str) -> Option<Cow<'_, str>> {
        self.get::<Cow<str>>(key).ok().flatten()
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        self.get(key).ok().flatten()
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(k, _)| k.as_str())
    }

    /// Writes the object again with some fields replaced (`Some`) or removed (`None`) and
    /// new fields appended. Untouched fields are copied byte for byte.
    pub fn rewrite(&self, replace: &[(&str, Option<&[u8]>)], append: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len() + 64);
        out.push(b'{');
        let mut first = true;
        let mut put = |out: &mut Vec<u8>, k: &str, v: &[u8]| {
            if !first {
                out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut *out, k).expect("writing to a Vec cannot fail");
            out.push(b':');
            out.extend_from_slice(v);
        };
        let mut done: Vec<&str> = Vec::new();
        for (i, (k, range)) in self.fields.iter().enumerate() {
            // A repeated key keeps only its last value.
            if self.fields[i + 1..].iter().any(|(k2, _)| k2 == k) {
                continue;
            }
            match replace.iter().find(|(rk, _)| rk == k) {
                Some((_, Some(v))) => {
                    put(&mut out, k, v);
                    done.push(k);
                }
                Some((_, None)) => {}
                None => put(&mut out, k, &self.bytes[range.clone()]),
            }
        }
        for (k, v) in replace {
            if let Some(v) = v {
                if !done.contains(k) {
                    put(&mut out, k, v);
                }
            }
        }
        for (k, v) in append {
            put(&mut out, k, v);
        }
        out.push(b'}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(s: &str) -> JsonObject {
        JsonObject::parse(Bytes::copy_from_slice(s.as_bytes())).unwrap()
    }

    #[test]
    fn fields_keep_their_exact_bytes() {
        let o = obj(
            r#"{"model": "gpt", "messages":[{"role":"user","content":"h\u00e9 \"x\""}], "n" : 2}"#,
        );
        assert_eq!(o.str("model").unwrap(), "gpt");
        assert_eq!(
            o.raw("messages").unwrap(),
            br#"[{"role":"user","content":"h\u00e9 \"x\""}]"#
        );
        assert_eq!(o.kind("n"), Some(Kind::Number));
        assert_eq!(o.kind("messages"), Some(Kind::Array));
        assert!(o.raw("missing").is_none());
    }

    #[test]
    fn rewrite_replaces_removes_and_appends() {
        let o = obj(r#"{"model":"a","stream":true,"x":[1, 2]}"#);
        let out = o.rewrite(
            &[
                ("model", Some(br#""b""#)),
                ("stream", None),
                ("new", Some(b"1")),
            ],
            &[("y", b"{}")],
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, serde_json::json!({"model":"b","x":[1,2],"new":1,"y":{}}));
        assert_eq!(&out[..], br#"{"model":"b","x":[1, 2],"new":1,"y":{}}"#);
    }

    #[test]
    fn escaped_keys_and_repeated_keys() {
        let o = obj(r#"{"mo\u0064el":"a","k":1,"k":2}"#);
        assert_eq!(o.str("model").unwrap(), "a");
        assert_eq!(o.raw("k").unwrap(), b"2");
        let out = o.rewrite(&[], &[]);
        assert_eq!(&out[..], br#"{"model":"a","k":2}"#);
    }

    #[test]
    fn non_objects_and_garbage_are_refused() {
        assert!(JsonObject::parse(Bytes::from_static(b"[1]")).is_err());
        assert!(JsonObject::parse(Bytes::from_static(b"{\"a\":")).is_err());
        assert!(JsonObject::parse(Bytes::from_static(b"{} trailing")).is_err());
    }
}
