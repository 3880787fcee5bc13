//! A hit sent to the client: the stored answer as it is, or, when the client streams, as an
//! OpenAI event stream (one chunk with the whole message, the usage chunk when
//! `stream_options.include_usage` asks for it, then `data: [DONE]`).

use bytes::Bytes;

use super::Entry;
use crate::providers::chat::completion_as_stream;

/// The body and its content type; None when a stored answer cannot be made a stream.
pub fn replay(entry: &Entry, stream: bool, with_usage: bool) -> Option<(Bytes, &'static str)> {
    if stream {
        let sse = completion_as_stream(&entry.body, with_usage)?;
        Some((sse, "text/event-stream"))
    } else {
        Some((entry.body.clone(), "application/json"))
    }
}
