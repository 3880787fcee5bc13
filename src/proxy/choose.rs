//! Choose: the deployments that can serve the request (the model's or route's, of the
//! endpoint's kind, fitting its needs, not cut off by their circuits or a provider's pause), in
//! the order the route's strategy (or their priority) says. They are tried in that order.

use std::sync::Arc;

use http::{HeaderValue, StatusCode};

use super::context::RequestCtx;
use super::Gateway;
use crate::error::GatewayError;
use crate::limits;
use crate::providers::Endpoint;
use crate::registry::{routing, Deployment, ModelType, Needs, NoFit};

/// The plan: the deployments to try, in order.
pub fn plan(gw: &Gateway, ctx: &mut RequestCtx<'_>) -> Result<Vec<Arc<Deployment>>, GatewayError> {
    let meter = &mut *ctx.meter;
    let plan = resolve(gw, meter.endpoint, &meter.model_name, &ctx.needs);
    meter.known_model = !matches!(&plan, Err(e) if e.code == Some("model_not_found"));
    plan
}

fn resolve(
    gw: &Gateway,
    endpoint: Endpoint,
    model: &str,
    needs: &Needs,
) -> Result<Vec<Arc<Deployment>>, GatewayError> {
    let snapshot = gw.registry.load();
    let resolved = snapshot
        .resolve(model)
        .ok_or_else(|| GatewayError::model_not_found(model))?;
    let wants_embedding = endpoint == Endpoint::Embeddings;
    let candidates: Vec<Arc<Deployment>> = resolved
        .deployments
        .iter()
        .filter(|d| (d.model_type == ModelType::Embedding) == wants_embedding)
        .cloned()
        .collect();
    if candidates.is_empty() {
        let msg = if wants_embedding {
            format!("`{model}` is not an embedding model; it cannot serve /v1/embeddings.")
        } else {
            format!("`{model}` is an embedding model; send it to /v1/embeddings.")
        };
        return Err(GatewayError::invalid_param("model", msg));
    }
    let plan = routing::plan(&candidates, resolved.strategy, needs).map_err(|e| match e {
        NoFit::ContextTooLong { needed, largest } => GatewayError::invalid_param(
            "messages",
            format!("This request needs about {needed} tokens of context; `{model}` has at most {largest}."),
        )
        .code("context_length_exceeded"),
        NoFit::Capability(what) => {
            GatewayError::invalid_request(format!("No deployment of `{model}` supports {what}."))
        }
    })?;
    if plan.is_empty() {
        return Err(cut_off(model, &candidates, needs));
    }
    Ok(plan)
}

/// Why every deployment that fits is skipped: a provider that asked for a pause (a 429 with
/// `retry-after`) is rate limiting, not failing; otherwise their circuits are open.
fn cut_off(model: &str, candidates: &[Arc<Deployment>], needs: &Needs) -> GatewayError {
    let pause = candidates
        .iter()
        .filter(|d| routing::fits(d, needs).is_ok())
        .filter_map(|d| d.health.paused_for())
        .min();
    if let Some(wait) = pause {
        let mut e = GatewayError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            format!(
                "The providers of `{model}` are rate limiting requests; try again in {} ms.",
                wait.as_millis()
            ),
        )
        .code("rate_limit_exceeded");
        for (name, value) in limits::retry_headers(wait) {
            e = e.header(name, value);
        }
        return e;
    }
    GatewayError::unavailable(format!(
        "Every deployment of `{model}` is failing right now (circuit open); try again shortly."
    ))
    .code("no_healthy_deployment")
    .header(http::header::RETRY_AFTER, HeaderValue::from_static("5"))
}
