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

/// `GET /v1/models` and `GET /v1/models/{id}`.
pub fn list_models(gw: &Gateway, _caller: &Caller, id: Option<&str>) -> Response {
    let snapshot = gw.registry.load();
    let entry = |m: &crate::registry::ListedModel| json!({"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by});
    match id {
        None => {
            let data: Vec<_> = snapshot.listed().iter().map(entry).collect();
            json_response(StatusCode::OK, json!({"object": "list", "data": data}))
        }
        Some(id) => match snapshot.listed_model(id) {
            Some(m) => json_response(StatusCode::OK, entry(m)),
            None => match snapshot.resolve(id) {
                // provider/model_id is not listed but can be asked about
                Some(deps) => json_response(
                    StatusCode::OK,
                    json!({"id": id, "object": "model", "created": deps.deployments[0].created_unix, "owned_by": deps.deployments[0].provider.name}),
                ),
                None => error_response(&GatewayError::model_not_found(id)),
            },
        },
    }
}
