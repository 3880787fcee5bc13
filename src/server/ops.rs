//! The endpoints beside the API: health and readiness, `/metrics`, and the model list.

use std::sync::Arc;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::edge::{Edge, Port};
use super::App;
use crate::auth::Caller;
use crate::error::GatewayError;
use crate::proxy::{error_response, json_response, text_response, ClientBody, Gateway};

/// The only endpoint of `[server] metrics_listen`.
pub async fn serve_metrics(app: Arc<App>, req: Request<Incoming>) -> Response {
    let edge = app.edge.load();
    if let Err(e) = edge.admit(&req, Port::Metrics) {
        return error_response(&e);
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => metrics(&edge, &app.gateway, &req),
        (method, path) => error_response(&GatewayError::not_found(format!(
            "Unknown request URL: {method} {path}."
        ))),
    }
}

type Response = http::Response<ClientBody>;

pub fn healthz() -> Response {
    json_response(StatusCode::OK, json!({"status": "ok"}))
}

pub fn metrics(edge: &Edge, gw: &Gateway, req: &Request<Incoming>) -> Response {
    match edge.metrics_allowed(req.headers()) {
        Ok(()) => text_response(gw.metrics.render(), "text/plain; version=0.0.4"),
        Err(e) => error_response(&e),
    }
}

pub async fn readyz(gw: &Gateway) -> Response {
    let db = gw.db.ping().await;
    let models = gw.registry.load().deployment_count;
    let status = if db {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, json!({"database": db, "deployments": models}))
}

/// `GET /v1/models` and `GET /v1/models/{id}`: a key limited to some models sees only those.
pub fn list_models(gw: &Gateway, caller: &Caller, id: Option<&str>) -> Response {
    let snapshot = gw.registry.load();
    let entry = |m: &crate::registry::ListedModel| json!({"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by});
    match id {
        None => {
            let mut data: Vec<_> = snapshot
                .listed()
                .iter()
                .filter(|m| caller.may_use(&m.id))
                .map(entry)
                .collect();
            // A key limited to some models sees only those, `provider/model_id` ones included.
            for id in caller.allowed_models.iter().flatten() {
                if snapshot.listed_model(id).is_none() {
                    data.extend(snapshot.resolve(id).map(|r| unlisted(id, r)));
                }
            }
            json_response(StatusCode::OK, json!({"object": "list", "data": data}))
        }
        // As OpenAI answers for a model the key has no access to.
        Some(id) if !caller.may_use(id) => error_response(&GatewayError::model_not_found(id)),
        Some(id) => match snapshot.listed_model(id) {
            Some(m) => json_response(StatusCode::OK, entry(m)),
            None => match snapshot.resolve(id) {
                // provider/model_id is not listed but can be asked about
                Some(resolved) => json_response(StatusCode::OK, unlisted(id, resolved)),
                None => error_response(&GatewayError::model_not_found(id)),
            },
        },
    }
}

/// The model entry of a name that resolves without being listed (`provider/model_id`).
fn unlisted(id: &str, resolved: &crate::registry::Resolved) -> serde_json::Value {
    let first = &resolved.deployments[0];
    json!({"id": id, "object": "model", "created": first.created_unix, "owned_by": first.provider.name})
}
