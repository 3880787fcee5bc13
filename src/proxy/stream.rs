//! The body of a streamed answer: upstream chunks go through the adapter's translator to the
//! client as they come, and the request's usage row is written exactly once, when the stream
//! ends, breaks, times out, or the client goes away (the body is dropped, which also drops
//! and so cancels the upstream request).
//!
//! `data: [DONE]` is the last event of an OpenAI stream, so the client's stream ends as soon
//! as it went out: with it, in the same write. Waiting for the provider's body to end as well
//! cost one more write and wake-up per stream, to send the five bytes that close the body.
//! What the provider still sends after it (normally only its own closing chunk) is read in
//! the background, so its connection goes back to the pool instead of being closed.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use serde_json::json;
use tokio::time::Sleep;

use super::meter::{Guards, RequestMeter};
use crate::cache::Recorder;
use crate::error::BoxError;
use crate::providers::StreamTranslator;
use crate::upstream::UpstreamBody;

pub struct MeteredStream {
    upstream: UpstreamBody,
    translator: Box<dyn StreamTranslator>,
    meter: RequestMeter,
    /// Released when the stream ends, however it ends.
    guards: Option<Guards>,
    /// What arrived while the response was held back, sent first.
    held: Option<Bytes>,
    deadline: Pin<Box<Sleep>>,
    first_byte: Option<Duration>,
    done: bool,
    /// The client's stream ended at `data: [DONE]` before the provider's body did.
    drain_upstream: bool,
    /// A cache miss's stream, kept to be stored when it ends well (boxed: most streams have
    /// none).
    recorder: Option<Box<Recorder>>,
}

/// How long the rest of a provider's body, after `data: [DONE]`, is waited for.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Whether translated bytes end with the stream's last event.
fn ends_with_done(out: &[u8]) -> bool {
    out.ends_with(b"data: [DONE]\n\n") || out.ends_with(b"data: [DONE]\r\n\r\n")
}

/// An error after the stream started cannot change the status any more: it is told to the
/// client as an OpenAI-shaped error event, and the stream ends.
fn error_event(message: &str, code: &str) -> Bytes {
    let body =
        json!({"error": {"message": message, "type": "server_error", "param": null, "code": code}});
    Bytes::from(format!("data: {body}\n\n"))
}

impl MeteredStream {
    /// `held` is what the provider sent before the response was committed; `ended` says the
    /// provider's stream was already complete then. The meter's attempt runs until the stream
    /// ends. `recorder` sees every byte the client gets, before the stream is finished.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        upstream: UpstreamBody,
        translator: Box<dyn StreamTranslator>,
        meter: RequestMeter,
        guards: Guards,
        held: Bytes,
        ended: bool,
        deadline: tokio::time::Instant,
        mut recorder: Option<Box<Recorder>>,
    ) -> MeteredStream {
        if let Some(r) = &mut recorder {
            r.push(&held);
        }
        // Held bytes go out as the response starts: that is the first byte's time.
        let first_byte = (!held.is_empty()).then(|| meter.started.elapsed());
        let mut stream = MeteredStream {
            upstream,
            translator,
            meter,
            guards: Some(guards),
            held: (!held.is_empty()).then_some(held),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            first_byte,
            done: false,
            drain_upstream: false,
            recorder,
        };
        if ended {
            stream.finish(None);
        } else if stream.held.as_deref().is_some_and(ends_with_done) {
            stream.finish_at_done();
        }
        stream
    }

    /// The client's stream is complete although the provider's body has not ended yet.
    fn finish_at_done(&mut self) {
        self.finish(None);
        self.drain_upstream = true;
    }

    fn finish(&mut self, error_type: Option<&str>) {
        self.done = true;
        let usage = self.translator.usage();
        if let Some(mut guards) = self.guards.take() {
            guards.settle(usage.as_ref());
        }
        // An error the provider reported inside the stream counts as this stream's error.
        let error_type = error_type.or(self.translator.error_type());
        if let (Some(recorder), None) = (self.recorder.take(), error_type) {
            recorder.complete(usage.as_ref());
        }
        self.meter
            .record(200, error_type, usage.as_ref(), self.first_byte);
    }

    /// What goes to the client, for a cache miss's recorder.
    fn record(&mut self, out: &[u8]) {
        if let Some(r) = &mut self.recorder {
            r.push(out);
        }
    }

    fn data(&mut self, bytes: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.first_byte.is_none() {
            self.first_byte = Some(self.meter.started.elapsed());
        }
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }
}

impl Body for MeteredStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(held) = this.held.take() {
            return this.data(held);
        }
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(chunk) = frame.into_data() else {
                        continue; // trailers carry nothing a client of this API reads
                    };
                    let out = this.translator.push(chunk);
                    this.record(&out);
                    if !out.is_empty() {
                        let last = ends_with_done(&out);
                        // An error event (the provider's, or a broken limit) ends the stream.
                        let failed = this.translator.error_type().is_some();
                        let frame = this.data(out);
                        if last {
                            this.finish_at_done();
                        } else if failed {
                            this.finish(None);
                        }
                        return frame;
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(request_id = %this.meter.request_id, error = %e, "upstream stream broke");
                    let mut out = this.translator.finish().to_vec();
                    out.extend_from_slice(&error_event(
                        "The provider's stream broke off before it was complete.",
                        "upstream_error",
                    ));
                    this.finish(Some("upstream_stream_error"));
                    return this.data(Bytes::from(out));
                }
                Poll::Ready(None) => {
                    let rest = this.translator.finish();
                    this.record(&rest);
                    this.finish(None);
                    return if rest.is_empty() {
                        Poll::Ready(None)
                    } else {
                        this.data(rest)
                    };
                }
                Poll::Pending => {
                    if this.deadline.as_mut().poll(cx).is_ready() {
                        let out = error_event(
                            "The provider did not finish its answer within the request timeout.",
                            "timeout",
                        );
                        this.finish(Some("timeout"));
                        return this.data(out);
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.held.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for MeteredStream {
    fn drop(&mut self) {
        if !self.done {
            // The client went away mid-stream: whatever usage arrived is still recorded.
            self.finish(Some("client_disconnected"));
        }
        if self.drain_upstream {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let mut rest = std::mem::take(&mut self.upstream);
                runtime.spawn(async move {
                    let drained = async { while let Some(Ok(_)) = rest.frame().await {} };
                    let _ = tokio::time::timeout(DRAIN_LIMIT, drained).await;
                });
            }
        }
    }
}
