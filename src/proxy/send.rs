//! Send: an attempt's upstream request goes to its provider, whose response headers must
//! arrive by the attempt's `first_until`. The in-process mock answers `api = "mock"`
//! providers; the upstream client the others.

use http::Response;

use super::attempt::Attempt;
use super::context::RequestCtx;
use super::{trace, Gateway};
use crate::config::Api;
use crate::error::GatewayError;
use crate::mock::{self, MockOptions};
use crate::registry::Provider;
use crate::upstream::{SendError, UpstreamBody, UpstreamRequest};

/// Sends the attempt, which from now on counts in the meter (`start_attempt`) and, with
/// traces on, has its span (whose `traceparent` the request may carry).
pub async fn send(
    gw: &Gateway,
    ctx: &mut RequestCtx<'_>,
    attempt: &Attempt<'_>,
    req: &mut UpstreamRequest,
) -> Result<Response<UpstreamBody>, GatewayError> {
    ctx.meter.start_attempt(attempt.dep);
    trace::attempt_sent(ctx.meter, attempt.dep, req);
    let provider = &attempt.dep.provider;
    let sent = tokio::time::timeout_at(attempt.first_until, transport(gw, provider, req)).await;
    match sent {
        Ok(Ok(resp)) => {
            trace::attempt_status(ctx.meter, resp.status());
            Ok(resp)
        }
        Err(_) => Err(GatewayError::timeout(format!(
            "Provider {} did not answer in time.",
            provider.name
        ))),
        Ok(Err(e)) => {
            tracing::warn!(request_id = %ctx.meter.request_id, provider = %provider.name, error = %e, "upstream request failed");
            Err(match e {
                SendError::Connect(_) => GatewayError::upstream(format!(
                    "Could not connect to provider {}.",
                    provider.name
                )),
                SendError::Other(_) => GatewayError::upstream(format!(
                    "The request to provider {} failed.",
                    provider.name
                )),
            })
        }
    }
}

async fn transport(
    gw: &Gateway,
    provider: &Provider,
    req: &UpstreamRequest,
) -> Result<Response<UpstreamBody>, SendError> {
    if provider.api == Api::Mock {
        let options = MockOptions::default();
        return Ok(mock::respond(req.uri.path(), req.body.clone(), &options).await);
    }
    gw.client.send(&provider.target, req).await
}
