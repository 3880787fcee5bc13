//! The admin API (`/admin/*`): the registry's rows (providers, models, settings), projects
//! and keys, and the audit log of every change made here, as JSON in and out. The router has
//! already checked that the caller is an admin; a handler that changes the registry says so,
//! and the server puts the new snapshot in service before the answer goes out.
//!
//! Every change runs in one transaction with its audit row. The seeds' rules (prices >= 0,
//! one default model per provider, `model_id` fixed at creation, unique names, rows owned by
//! config.toml left to it) are kept by the database; `refusal` turns a broken rule into a 4xx
//! that names the field.

mod audit;
pub mod input;
mod keys;
mod models;
mod openapi;
pub mod page;
mod price;
mod projects;
mod providers;
mod refusal;
mod settings;
mod usage;
mod views;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;

use crate::auth::Caller;
use crate::error::GatewayError;
use crate::proxy::{error_response, json_response, ClientBody, Gateway};
use crate::secrets::Sealer;
use crate::store::{AuditEntry, Tx};

pub use input::MAX_ADMIN_BODY;
pub use openapi::AdminApi;
pub use page::{DEFAULT_LIMIT, MAX_LIMIT};

/// An admin handler's answer, and whether the registry must be rebuilt.
pub struct AdminAnswer {
    pub response: Response<ClientBody>,
    pub registry_changed: bool,
}

/// What an admin handler works with.
pub struct Ctx<'a> {
    pub gw: &'a Gateway,
    pub caller: &'a Caller,
    /// Seals provider keys given as plaintext; None when no master key is configured.
    pub sealer: Option<&'a Sealer>,
}

/// A handler's success: its status and JSON, and whether the registry's rows changed.
pub struct Reply {
    status: StatusCode,
    body: Value,
    changed: bool,
}

impl Reply {
    fn read(body: Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            body,
            changed: false,
        }
    }

    /// A change to the rows the registry is built from.
    fn registry(status: StatusCode, body: Value) -> Reply {
        Reply {
            status,
            body,
            changed: true,
        }
    }

    /// A change to rows outside the registry (projects, keys).
    fn other(status: StatusCode, body: Value) -> Reply {
        Reply {
            status,
            body,
            changed: false,
        }
    }
}

type Handled = Result<Reply, GatewayError>;

/// `path` is the request's path after `/admin/`.
pub async fn handle(ctx: &Ctx<'_>, path: &str, req: Request<Incoming>) -> AdminAnswer {
    let (resource, id) = match path.split_once('/') {
        Some((r, id)) => (r, Some(id)),
        None => (path, None),
    };
    let method = req.method().clone();
    let result = match (resource, id) {
        ("providers", id) => providers::route(ctx, id, req).await,
        ("models", id) => models::route(ctx, id, req).await,
        ("settings", id) => settings::route(ctx, id, req).await,
        ("projects", id) => projects::route(ctx, id, req).await,
        ("keys", id) => keys::route(ctx, id, req).await,
        ("audit", None) if method == Method::GET => audit::list(ctx, &req).await,
        ("usage", None) if method == Method::GET => usage::report(ctx, &req).await,
        _ => Err(GatewayError::not_found(format!(
            "Unknown admin URL: {method} /admin/{path}."
        ))),
    };
    match result {
        Ok(reply) => AdminAnswer {
            response: json_response(reply.status, reply.body),
            registry_changed: reply.changed,
        },
        Err(e) => AdminAnswer {
            response: error_response(&e),
            registry_changed: false,
        },
    }
}

/// 405 for a method the URL does not take.
fn method_not_allowed(method: &Method, allowed: &str) -> GatewayError {
    GatewayError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        format!("{method} is not allowed here; this URL takes {allowed}."),
    )
    .code("method_not_allowed")
}

impl Ctx<'_> {
    /// A write transaction.
    async fn begin(&self) -> Result<Tx, GatewayError> {
        self.gw.db.begin().await.map_err(internal)
    }

    /// The request body as JSON, within the bound and the request timeout.
    async fn body(&self, req: Request<Incoming>) -> Result<Value, GatewayError> {
        let timeout = self.gw.runtime.load().request_timeout;
        input::read_json(req, timeout).await
    }

    /// Writes the audit row of a change, in its transaction.
    async fn audit(
        &self,
        tx: &mut Tx,
        action: &'static str,
        resource: &'static str,
        resource_id: &str,
        before: Option<&Value>,
        after: Option<&Value>,
    ) -> Result<(), GatewayError> {
        let entry = AuditEntry {
            actor: &self.caller.principal,
            action,
            resource,
            resource_id,
            before,
            after,
        };
        tx.audit(entry).await.map_err(internal)
    }
}

/// A store error that breaks no rule: the database failed.
fn internal(e: anyhow::Error) -> GatewayError {
    refusal::store_error(e, &Default::default())
}
