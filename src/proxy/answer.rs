//! Reading an answer the provider gave with a success status: a whole body, read within the
//! limits and translated, or a stream up to its first content. Only then is the answer good
//! to relay; until then a failure can still move on to the next deployment.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::Response;
use http_body_util::BodyExt;

use super::attempt::Attempt;
use super::opening::{Opening, Verdict};
use crate::error::GatewayError;
use crate::providers::{self, chat, Prepared, ReportedUsage, StreamTranslator};
use crate::registry::Deployment;
use crate::upstream::{read_limited, ReadError, UpstreamBody};

/// An answer good to relay.
// Moved once per answer; boxing a stream's state would allocate on every streamed request.
#[allow(clippy::large_enum_variant)]
pub enum Answer {
    /// Read whole and translated. A streamed request that the provider answered with a whole
    /// body gets that answer as a stream of one chunk.
    Whole {
        body: Bytes,
        usage: Option<ReportedUsage>,
        content_type: &'static str,
    },
    /// A stream whose first content arrived: what came so far is `held`, the rest follows by
    /// `until`. `ended` says the provider's stream was already complete.
    Stream {
        upstream: UpstreamBody,
        translator: Box<dyn StreamTranslator>,
        held: Bytes,
        ended: bool,
        until: tokio::time::Instant,
    },
}

/// Reads the answer of a successful response: a stream up to its first content, or (when no
/// stream was asked for, or the provider sent a whole body anyway) the whole body.
pub async fn read(
    attempt: &Attempt<'_>,
    prepared: &Prepared,
    resp: Response<UpstreamBody>,
    max_bytes: usize,
) -> Result<Answer, GatewayError> {
    let dep = attempt.dep;
    if prepared.stream && !is_json(resp.headers()) {
        open_stream(dep, prepared, resp, attempt.first_until, attempt.until).await
    } else {
        read_whole(dep, prepared, resp, attempt.until, max_bytes).await
    }
}

/// Whether an answer is a whole JSON body (as some providers send to a streamed request).
fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.as_bytes().get(..16))
        .is_some_and(|t| t.eq_ignore_ascii_case(b"application/json"))
}

/// A whole answer, read by `until` within `max_bytes` and translated.
async fn read_whole(
    dep: &Deployment,
    prepared: &Prepared,
    resp: Response<UpstreamBody>,
    until: tokio::time::Instant,
    max_bytes: usize,
) -> Result<Answer, GatewayError> {
    let bytes = read_answer(&dep.provider.name, resp, until, max_bytes).await?;
    let (mut body, usage) =
        providers::adapter(dep.provider.api).read_response(dep, prepared, bytes)?;
    let mut content_type = "application/json";
    if prepared.stream {
        body = chat::completion_as_stream(&body, prepared.client_wants_usage).ok_or_else(|| {
            GatewayError::upstream(format!(
                "Provider {} answered a streamed request with a JSON body that is not an answer.",
                dep.provider.name
            ))
        })?;
        content_type = "text/event-stream";
    }
    Ok(Answer::Whole {
        body,
        usage,
        content_type,
    })
}

/// Reads a provider's whole body by `until`, refusing one larger than `max_bytes`.
async fn read_answer(
    provider: &str,
    resp: Response<UpstreamBody>,
    until: tokio::time::Instant,
    max_bytes: usize,
) -> Result<Bytes, GatewayError> {
    let too_large = || {
        GatewayError::upstream(format!(
            "The answer from provider {provider} is larger than the gateway's limit of {max_bytes} bytes."
        ))
        .code("upstream_response_too_large")
    };
    // A declared content-length is the body's size hint: refused before reading.
    if http_body::Body::size_hint(resp.body()).lower() > max_bytes as u64 {
        return Err(too_large());
    }
    match tokio::time::timeout_at(until, read_limited(resp.into_body(), max_bytes)).await {
        Err(_) => Err(GatewayError::timeout(format!(
            "Provider {provider} did not finish its answer in time."
        ))),
        Ok(Err(ReadError::TooLarge)) => Err(too_large()),
        Ok(Err(ReadError::Broken)) => Err(GatewayError::upstream(format!(
            "The answer from provider {provider} broke off."
        ))),
        Ok(Ok(b)) => Ok(b),
    }
}

/// Reads a stream up to its first content, by `first_until`, so that a provider that fails
/// before it (an error event, data that is no event stream, a broken, silent or empty stream)
/// can still fall back or become a proper HTTP error.
async fn open_stream(
    dep: &Deployment,
    prepared: &Prepared,
    resp: Response<UpstreamBody>,
    first_until: tokio::time::Instant,
    until: tokio::time::Instant,
) -> Result<Answer, GatewayError> {
    let provider = &dep.provider.name;
    let failed = |what: &str| {
        GatewayError::upstream(format!(
            "Provider {provider} {what} before its answer began."
        ))
    };
    let mut translator = providers::adapter(dep.provider.api).stream_translator(dep, prepared);
    let mut upstream = resp.into_body();
    let mut opening = Opening::new();
    let ended = loop {
        let frame = tokio::time::timeout_at(first_until, upstream.frame()).await;
        let (out, ended) = match frame {
            Err(_) => {
                return Err(GatewayError::timeout(format!(
                    "Provider {provider} did not start its answer in time."
                )))
            }
            Ok(Some(Err(_))) => return Err(failed("broke off its stream")),
            Ok(None) => (translator.finish(), true),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(chunk) => (translator.push(chunk), false),
                Err(_) => continue,
            },
        };
        let verdict = opening.push(&out);
        if let Some(kind) = translator.error_type() {
            return Err(failed(&format!("reported an error ({kind})")));
        }
        match verdict {
            Verdict::Begun => break ended,
            Verdict::Failed(what) => return Err(failed(&format!("sent {what}"))),
            Verdict::Waiting if ended => return Err(failed("ended its stream")),
            Verdict::Waiting => {}
        }
    };
    Ok(Answer::Stream {
        upstream,
        translator,
        held: opening.into_held(),
        ended,
        until,
    })
}
