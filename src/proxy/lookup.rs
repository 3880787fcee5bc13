//! The cache lookup: after the request is read and its model allowed, before a deployment is
//! chosen and before any limit or budget is charged. A cacheable request (temperature 0, or
//! `x-tollgate-cache: on`) of a model the registry knows is answered from the cache when it
//! holds the answer, whole or as a stream as the client asked, and recorded with
//! `cache_hit`, the stored usage and cost 0; a miss is marked for `respond` to store its
//! answer once it is complete.

use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::Response;

use super::context::RequestCtx;
use super::respond::{full, ClientBody};
use super::Gateway;
use crate::cache::{self, Lookup, Scope};
use crate::providers::chat;

pub const X_TOLLGATE_CACHE: HeaderName = HeaderName::from_static(cache::HEADER);
pub const MISS: HeaderValue = HeaderValue::from_static("miss");
const HIT: HeaderValue = HeaderValue::from_static("hit");

/// What the lookup did.
// Built once a request; boxing the hit's response would allocate on every hit.
#[allow(clippy::large_enum_variant)]
pub enum Looked {
    Hit(Response<ClientBody>),
    Missed,
    /// Not cacheable, or the cache could not be asked.
    Skipped,
}

pub async fn lookup(gw: &Gateway, ctx: &mut RequestCtx<'_>) -> Looked {
    let Some(cache) = ctx.cache.clone() else {
        return Looked::Skipped;
    };
    let endpoint = ctx.meter.endpoint;
    if !cache::cacheable(endpoint, &ctx.body, ctx.cache_mode) {
        return Looked::Skipped;
    }
    // A name the registry does not know gets its 404 from `choose`, not an old answer.
    if gw.registry.load().resolve(&ctx.meter.model_name).is_none() {
        return Looked::Skipped;
    }
    ctx.meter.known_model = true;
    let caller = ctx.meter.caller.as_deref();
    let tenant = Scope {
        project: caller.and_then(|c| c.project_id.as_deref()),
        key: caller.and_then(|c| c.key_id.as_deref()),
    };
    let key = cache.key(endpoint, &ctx.meter.model_name, tenant, &ctx.body);
    let found = match cache.get(&key).await {
        Lookup::Hit(entry) => hit(ctx, &entry),
        Lookup::Miss => None,
        Lookup::Unavailable => return Looked::Skipped,
    };
    let model = [ctx.meter.model_name.as_str()];
    if let Some(response) = found {
        gw.metrics.cache_hits_total.with_label_values(&model).inc();
        return Looked::Hit(response);
    }
    gw.metrics
        .cache_misses_total
        .with_label_values(&model)
        .inc();
    ctx.cache_store = Some(cache::Pending {
        cache,
        key,
        endpoint,
    });
    Looked::Missed
}

/// The stored answer as the client asked for it, its usage row recorded; None when the
/// entry cannot be sent that way (then the request goes on as a miss).
fn hit(ctx: &mut RequestCtx<'_>, entry: &cache::Entry) -> Option<Response<ClientBody>> {
    let meter = &mut *ctx.meter;
    let with_usage = meter.stream && chat::client_wants_usage(&ctx.body);
    let (body, content_type) = cache::replay(entry, meter.stream, with_usage)?;
    meter.cache_hit = true;
    meter.record(200, None, Some(&entry.usage), Some(meter.started.elapsed()));
    let mut resp = Response::new(full(body));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if meter.stream {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    h.insert(X_TOLLGATE_CACHE, HIT);
    Some(resp)
}
