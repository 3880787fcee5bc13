//! Storing a miss's answer once it is complete: `Pending` is what a looked-up miss carries to
//! the answer (the cache and the key); a whole answer is stored from it at once, a stream
//! through a `Recorder`, which keeps the events sent to the client (within a bound) and
//! stores the whole answer they describe when the stream ended well.

use std::sync::Arc;

use bytes::Bytes;

use super::assemble::{is_complete, whole_from_stream};
use super::{Entry, Key, ResponseCache};
use crate::providers::{Endpoint, ReportedUsage};

/// A stream's events take more bytes than the answer they make (each chunk repeats the
/// answer's id and model): a stream is kept up to this many times `max_entry_bytes`.
const STREAM_OVERHEAD: usize = 4;

pub struct Pending {
    pub cache: Arc<ResponseCache>,
    pub key: Key,
    pub endpoint: Endpoint,
}

impl Pending {
    /// A whole answer as sent: JSON, or (a streamed request a provider answered whole) the
    /// stream made of it.
    pub fn store_whole(self, body: &Bytes, stream: bool, usage: Option<&ReportedUsage>) {
        let usage = usage.cloned().unwrap_or_else(no_usage);
        let body = if stream {
            match whole_from_stream(body, &usage.tokens) {
                Some(b) => b,
                None => return,
            }
        } else if is_complete(self.endpoint, body) {
            body.clone()
        } else {
            return;
        };
        self.cache.put(self.key, Entry { body, usage });
    }

    pub fn recorder(self) -> Recorder {
        Recorder {
            limit: self.cache.max_entry_bytes.saturating_mul(STREAM_OVERHEAD),
            pending: self,
            sse: Vec::new(),
            over: false,
        }
    }
}

fn no_usage() -> ReportedUsage {
    ReportedUsage {
        tokens: Default::default(),
        raw: String::new(),
        estimated: true,
    }
}

pub struct Recorder {
    pending: Pending,
    sse: Vec<u8>,
    limit: usize,
    /// The stream outgrew the bound: it will not be stored.
    over: bool,
}

impl Recorder {
    /// Events as they go to the client.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.over {
            return;
        }
        if self.sse.len() + bytes.len() > self.limit {
            self.over = true;
            self.sse = Vec::new();
            return;
        }
        self.sse.extend_from_slice(bytes);
    }

    /// The stream ended without an error: its answer is stored if it is complete.
    pub fn complete(self, usage: Option<&ReportedUsage>) {
        if self.over {
            return;
        }
        let usage = usage.cloned().unwrap_or_else(no_usage);
        if let Some(body) = whole_from_stream(&self.sse, &usage.tokens) {
            let p = self.pending;
            p.cache.put(p.key, Entry { body, usage });
        }
    }
}
