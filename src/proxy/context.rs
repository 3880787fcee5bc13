//! The one context a request's phases pass along, as pingora's proxy passes its `CTX`: what
//! admission read from the request, what the request holds, why the deployments tried so far
//! did not answer, and its meter, which makes the request's one usage row.

use std::sync::Arc;

use super::meter::RequestMeter;
use super::outcome::{PassedOver, Reason};
use crate::cache::{self, ResponseCache};
use crate::error::GatewayError;
use crate::limits::{Admission, LimitSet};
use crate::providers::JsonObject;
use crate::registry::Needs;

pub struct RequestCtx<'m> {
    /// The request's id, endpoint, caller and model, its attempts and their timings: its usage
    /// row in the making.
    pub meter: &'m mut RequestMeter,
    /// The client's body, parsed once.
    pub body: JsonObject,
    /// What the body needs of a model (context, vision, tools, JSON), read from it cheaply.
    pub needs: Needs,
    /// When the whole request's time is up.
    pub deadline: tokio::time::Instant,
    /// The largest whole answer read from a provider, as set when the request came in.
    pub max_response_bytes: usize,
    /// The caller's key's own limits, when it has some, and what they granted: held by the
    /// first attempt sent.
    pub key_limits: Option<Arc<LimitSet>>,
    pub key_admission: Admission,
    /// Why the deployments tried so far did not answer.
    pub passed_over: PassedOver,
    /// The response cache, when `[cache]` is on (None: the lookup is one branch).
    pub cache: Option<Arc<ResponseCache>>,
    /// What the client's `x-tollgate-cache` asked for (read only with a cache).
    pub cache_mode: cache::Mode,
    /// A looked-up miss: where its answer is stored once it is complete.
    pub cache_store: Option<cache::Pending>,
}

impl RequestCtx<'_> {
    /// Notes why an attempt did not answer, for the next one to be tried. A failure that used
    /// up the request's time ends the request: there is none left for another attempt.
    pub fn pass_over(&mut self, reason: Reason) -> Result<(), GatewayError> {
        if matches!(reason, Reason::Failed(_)) && tokio::time::Instant::now() >= self.deadline {
            return Err(GatewayError::timeout(format!(
                "No provider answered `{}` within the request timeout.",
                self.meter.model_name
            )));
        }
        self.passed_over.note(reason);
        Ok(())
    }
}
