//! The admin API (`/admin/*`): the registry's rows (providers, models, settings), projects
//! and keys, as JSON in and out. The router has already checked that the caller is an admin;
//! a handler that changes the registry says so, and the server puts the new snapshot in
//! service before the answer goes out.

use http::{Request, Response};
use hyper::body::Incoming;

use crate::auth::Caller;
use crate::error::GatewayError;
use crate::proxy::{error_response, ClientBody, Gateway};

/// An admin handler's answer, and whether the registry must be rebuilt.
pub struct AdminAnswer {
    pub response: Response<ClientBody>,
    pub registry_changed: bool,
}

impl AdminAnswer {
    fn unchanged(response: Response<ClientBody>) -> AdminAnswer {
        AdminAnswer {
            response,
            registry_changed: false,
        }
    }
}

/// `path` is the request's path after `/admin/`.
pub async fn handle(
    _gw: &Gateway,
    _caller: &Caller,
    path: &str,
    req: Request<Incoming>,
) -> AdminAnswer {
    AdminAnswer::unchanged(error_response(&GatewayError::not_found(format!(
        "Unknown admin URL: {} /admin/{path}.",
        req.method()
    ))))
}
