//! Reading a whole body (a provider's answer, or the client's request) within a limit.

use bytes::Bytes;
use http_body_util::BodyExt;

#[derive(Debug)]
pub enum ReadError {
    TooLarge,
    Broken,
}

/// Reads a whole body, giving up as soon as it grows past `limit`.
pub async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, ReadError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut first: Option<Bytes> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| ReadError::Broken)?.into_data() else {
            continue;
        };
        let len = first.as_ref().map_or(0, |b| b.len()) + buf.len() + data.len();
        if len > limit {
            return Err(ReadError::TooLarge);
        }
        // The usual case is one frame: keep it without copying.
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            Some(f) => {
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&data);
            }
            None => buf.extend_from_slice(&data),
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}
