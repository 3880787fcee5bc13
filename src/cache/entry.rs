//! One cached answer: the whole answer as the API sends it (JSON, never a stream: a stream is
//! made from it again on a hit) and the usage its provider reported, which a hit's usage row
//! records. Stored in Redis as bytes: a small header, the usage as JSON, then the body.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::metering::TokenUsage;
use crate::providers::ReportedUsage;

#[derive(Debug, Clone)]
pub struct Entry {
    pub body: Bytes,
    pub usage: ReportedUsage,
}

/// Marks the format, so a future change never misreads an old entry.
const MAGIC: &[u8; 4] = b"TGC1";

#[derive(Serialize, Deserialize)]
struct Meta {
    tokens: TokenUsage,
    raw: String,
    estimated: bool,
}

impl Entry {
    /// What the entry weighs in memory (moka's weigher), about.
    pub fn weight(&self) -> u32 {
        (self.body.len() + self.usage.raw.len() + 128).min(u32::MAX as usize) as u32
    }

    pub fn encode(&self) -> Vec<u8> {
        let meta = serde_json::to_vec(&Meta {
            tokens: self.usage.tokens,
            raw: self.usage.raw.clone(),
            estimated: self.usage.estimated,
        })
        .expect("usage serialises");
        let mut out = Vec::with_capacity(8 + meta.len() + self.body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&self.body);
        out
    }

    /// None for bytes that are not an entry of this format.
    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let meta: Meta = serde_json::from_slice(rest.get(4..4 + len)?).ok()?;
        Some(Entry {
            body: Bytes::copy_from_slice(&rest[4 + len..]),
            usage: ReportedUsage {
                tokens: meta.tokens,
                raw: meta.raw,
                estimated: meta.estimated,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_as_written_and_garbage_reads_as_none() {
        let e = Entry {
            body: Bytes::from_static(b"{\"choices\":[]}"),
            usage: ReportedUsage {
                tokens: TokenUsage {
                    input: 3,
                    output: 5,
                    ..Default::default()
                },
                raw: "{}".into(),
                estimated: false,
            },
        };
        let back = Entry::decode(&e.encode()).unwrap();
        assert_eq!((back.body, back.usage), (e.body, e.usage));
        assert!(Entry::decode(b"TGC1\xff\xff\xff\xff").is_none());
        assert!(Entry::decode(b"nope").is_none());
    }
}
