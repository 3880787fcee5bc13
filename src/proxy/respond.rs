//! Respond: the answer to the client, a whole body or a stream that relays the rest as it
//! comes, with the `x-ratelimit-*` headers of the limits that admitted it; or an error,
//! OpenAI-shaped. A looked-up miss's answer is stored in the cache once it is complete (a
//! stream's when it ended well). Logging once is the meter's (`RequestMeter::record`): a
//! whole answer's or an error's row is recorded here, a stream's when the stream ends.

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::answer::Answer;
use super::attempt::Admitted;
use super::context::RequestCtx;
use super::meter::RequestMeter;
use super::stream::MeteredStream;
use crate::error::{BoxError, GatewayError};
use crate::limits;

pub type ClientBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Headers an answer carries: content type (and cache control), six `x-ratelimit-*`,
/// `x-request-id`. Room for them up front spares the map growing twice on the way.
const ANSWER_HEADERS: usize = 9;

/// The answer to the client. A whole answer settles the limits' token reservations and is
/// recorded now; a stream takes both along.
pub fn answer(
    ctx: &mut RequestCtx<'_>,
    admitted: Admitted<'_>,
    answer: Answer,
) -> Response<ClientBody> {
    let Admitted {
        mut limits,
        mut guards,
    } = admitted;
    let mut resp = match answer {
        Answer::Whole {
            body,
            usage,
            content_type,
        } => {
            guards.settle(usage.as_ref());
            if let Some(store) = ctx.cache_store.take() {
                let stream = content_type == "text/event-stream";
                store.store_whole(&body, stream, usage.as_ref());
            }
            let meter = &mut *ctx.meter;
            meter.record(200, None, usage.as_ref(), Some(meter.started.elapsed()));
            let mut resp = Response::new(full(body));
            let h = resp.headers_mut();
            h.reserve(ANSWER_HEADERS);
            h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            resp
        }
        Answer::Stream {
            upstream,
            translator,
            held,
            ended,
            until,
        } => {
            let meter = ctx.meter.hand_over();
            let recorder = ctx.cache_store.take().map(|s| Box::new(s.recorder()));
            let body = MeteredStream::new(
                upstream, translator, meter, guards, held, ended, until, recorder,
            );
            let mut resp = Response::new(ClientBody::new(body));
            let h = resp.headers_mut();
            h.reserve(ANSWER_HEADERS);
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            resp
        }
    };
    limits.extend(ctx.key_limits.as_ref());
    for (name, value) in limits::rate_limit_headers(&limits) {
        resp.headers_mut().insert(name, value);
    }
    resp
}

/// A request that ended in an error: its row (unless one is recorded already), a warning
/// when the gateway or a provider failed, and the error as the client gets it.
pub fn error(meter: &mut RequestMeter, e: &GatewayError) -> Response<ClientBody> {
    meter.record(e.status.as_u16(), Some(e.error_type()), None, None);
    if e.status.is_server_error() {
        tracing::warn!(request_id = %meter.request_id, model = %meter.model_name, status = e.status.as_u16(), error = %e.message, "request failed");
    }
    error_response(e)
}

pub fn full(bytes: Bytes) -> ClientBody {
    ClientBody::new(Full::new(bytes).map_err(|e| match e {}))
}

pub fn json_response(status: StatusCode, value: serde_json::Value) -> Response<ClientBody> {
    let mut resp = Response::new(full(Bytes::from(value.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub fn text_response(text: String, content_type: &'static str) -> Response<ClientBody> {
    let mut resp = Response::new(full(Bytes::from(text)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub fn error_response(e: &GatewayError) -> Response<ClientBody> {
    let mut resp = Response::new(full(e.body()));
    *resp.status_mut() = e.status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in &e.headers {
        h.insert(name.clone(), value.clone());
    }
    resp
}
