//! The router: method and path to a route, and each route to the access it needs. Callers
//! are authenticated and their role checked here, once, so no handler repeats it and a new
//! route cannot forget it: its `Access` is part of the table.

use std::sync::Arc;

use http::header::ORIGIN;
use http::{Method, Request, Response};
use hyper::body::Incoming;

use super::cors::Cors;
use super::edge::{self, Edge, Port};
use super::{control, openapi, ops, App};
use crate::api;
use crate::auth::{Caller, Role};
use crate::error::GatewayError;
use crate::providers::Endpoint;
use crate::proxy::{self, error_response, ClientBody, Runtime};

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The OpenAI API: the data plane.
    Api(Endpoint),
    /// `GET /v1/models`, or one model by id.
    Models(Option<String>),
    /// The dashboard API: `POST /api/v1/llm/query`.
    LlmQuery,
    /// The dashboard API: `GET /api/v1/llm/models`.
    LlmModels,
    /// `GET /api/v1/openapi.json`: the OpenAPI document of `/api/v1/*` and `/admin/*`.
    OpenApi,
    /// `POST /api/v1/tasks`.
    TaskCreate,
    /// `GET /api/v1/tasks`.
    TaskList,
    /// `GET /api/v1/tasks/{id}`.
    TaskGet(String),
    /// `PUT /api/v1/tasks/{id}`.
    TaskUpdate(String),
    /// `DELETE /api/v1/tasks/{id}`.
    TaskDelete(String),
    Healthz,
    Readyz,
    Metrics,
    /// `/admin/...`: the rest of the path after `/admin/`.
    Admin(String),
    NotFound,
}

/// Every operation of the dashboard API and the admin API, as the OpenAPI document names it
/// (method, path template) with the access the router gives it. tests/openapi.rs checks
/// that the document describes exactly these and that the live gateway serves each; the unit
/// test below, that the router gives each the access listed. A new route of either API
/// belongs here.
pub const API_ROUTES: &[(&str, &str, Access)] = &[
    ("POST", "/api/v1/llm/query", Access::Caller),
    ("GET", "/api/v1/llm/models", Access::Caller),
    ("GET", "/api/v1/openapi.json", Access::Anyone),
    ("POST", "/api/v1/tasks", Access::Caller),
    ("GET", "/api/v1/tasks", Access::Caller),
    ("GET", "/api/v1/tasks/{id}", Access::Caller),
    ("PUT", "/api/v1/tasks/{id}", Access::Caller),
    ("DELETE", "/api/v1/tasks/{id}", Access::Caller),
    ("GET", "/admin/providers", Access::Admin),
    ("POST", "/admin/providers", Access::Admin),
    ("GET", "/admin/providers/{name}", Access::Admin),
    ("PATCH", "/admin/providers/{name}", Access::Admin),
    ("DELETE", "/admin/providers/{name}", Access::Admin),
    ("GET", "/admin/models", Access::Admin),
    ("POST", "/admin/models", Access::Admin),
    ("GET", "/admin/models/{id}", Access::Admin),
    ("PATCH", "/admin/models/{id}", Access::Admin),
    ("DELETE", "/admin/models/{id}", Access::Admin),
    ("GET", "/admin/settings", Access::Admin),
    ("GET", "/admin/settings/{key}", Access::Admin),
    ("PUT", "/admin/settings/{key}", Access::Admin),
    ("DELETE", "/admin/settings/{key}", Access::Admin),
    ("GET", "/admin/projects", Access::Admin),
    ("POST", "/admin/projects", Access::Admin),
    ("GET", "/admin/projects/{name}", Access::Admin),
    ("PATCH", "/admin/projects/{name}", Access::Admin),
    ("GET", "/admin/keys", Access::Admin),
    ("POST", "/admin/keys", Access::Admin),
    ("GET", "/admin/keys/{id}", Access::Admin),
    ("PATCH", "/admin/keys/{id}", Access::Admin),
    ("DELETE", "/admin/keys/{id}", Access::Admin),
    ("GET", "/admin/audit", Access::Admin),
    ("GET", "/admin/usage", Access::Admin),
    ("POST", "/admin/reload", Access::Admin),
    ("GET", "/admin/config", Access::Admin),
];
/// Where one task's URL starts; the rest is its id.
const TASKS_PREFIX: &str = "/api/v1/tasks/";

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone who reaches the port (health checks; `/metrics` has its own token).
    Anyone,
    /// Any authenticated caller, or anyone on an open gateway (`require_api_key = false`).
    Caller,
    /// The master key, an admin key or an admin JWT; never an anonymous caller.
    Admin,
}

impl Route {
    pub fn of(method: &Method, path: &str) -> Route {
        match (method, path) {
            (&Method::POST, "/v1/chat/completions" | "/chat/completions") => {
                Route::Api(Endpoint::ChatCompletions)
            }
            (&Method::POST, "/v1/completions" | "/completions") => {
                Route::Api(Endpoint::Completions)
            }
            (&Method::POST, "/v1/embeddings" | "/embeddings") => Route::Api(Endpoint::Embeddings),
            (&Method::GET, "/v1/models" | "/models") => Route::Models(None),
            (&Method::GET, p) if p.starts_with("/v1/models/") => {
                Route::Models(Some(p["/v1/models/".len()..].to_owned()))
            }
            (&Method::POST, "/api/v1/llm/query") => Route::LlmQuery,
            (&Method::GET, "/api/v1/llm/models") => Route::LlmModels,
            (&Method::GET, "/api/v1/openapi.json") => Route::OpenApi,
            (&Method::POST, "/api/v1/tasks") => Route::TaskCreate,
            (&Method::GET, "/api/v1/tasks") => Route::TaskList,
            (m, p) if p.starts_with(TASKS_PREFIX) && !p[TASKS_PREFIX.len()..].contains('/') => {
                let id = p[TASKS_PREFIX.len()..].to_owned();
                match *m {
                    Method::GET => Route::TaskGet(id),
                    Method::PUT => Route::TaskUpdate(id),
                    Method::DELETE => Route::TaskDelete(id),
                    _ => Route::NotFound,
                }
            }
            (&Method::GET, "/healthz") => Route::Healthz,
            (&Method::GET, "/readyz") => Route::Readyz,
            (&Method::GET, "/metrics") => Route::Metrics,
            (_, p) if p == "/admin" || p.starts_with("/admin/") => {
                Route::Admin(p.trim_start_matches("/admin").trim_matches('/').to_owned())
            }
            _ => Route::NotFound,
        }
    }

    pub fn access(&self) -> Access {
        match self {
            Route::Api(_)
            | Route::Models(_)
            | Route::LlmQuery
            | Route::LlmModels
            | Route::TaskCreate
            | Route::TaskList
            | Route::TaskGet(_)
            | Route::TaskUpdate(_)
            | Route::TaskDelete(_) => Access::Caller,
            Route::Admin(_) => Access::Admin,
            // Like FastAPI's /openapi.json: it describes the API and holds no secret.
            Route::OpenApi | Route::Healthz | Route::Readyz | Route::Metrics | Route::NotFound => {
                Access::Anyone
            }
        }
    }
}

/// Every request on the main address; with CORS configured, an answer to an allowed web
/// page's request on `/v1/*` or `/api/v1/*` says that page may read it.
pub async fn dispatch(app: Arc<App>, req: Request<Incoming>) -> Response<ClientBody> {
    let edge = app.edge.load_full();
    if !edge.cors.is_on() || !Cors::covers(req.uri().path()) {
        return serve(&app, &edge, req).await;
    }
    let origin = req.headers().get(ORIGIN).cloned();
    let mut resp = serve(&app, &edge, req).await;
    edge.cors.decorate(origin.as_ref(), &mut resp);
    resp
}

/// The edge checks (and a CORS preflight), the route, the caller's access, then the route's
/// handler.
async fn serve(app: &Arc<App>, edge: &Edge, req: Request<Incoming>) -> Response<ClientBody> {
    let gw = &app.gateway;
    // One request reads one set of reloadable settings, whatever a reload does meanwhile.
    let runtime = gw.runtime.load_full();
    let refused = |e: GatewayError| {
        gw.usage.refused(e.status.as_u16(), Some(e.error_type()));
        error_response(&e)
    };
    if let Err(e) = edge.admit(&req, Port::Main) {
        return refused(e);
    }
    if edge.cors.is_preflight(req.method(), req.uri().path()) {
        return edge.cors.preflight(req.headers()).unwrap_or_else(refused);
    }
    let route = Route::of(req.method(), req.uri().path());
    if let Route::Api(_) | Route::LlmQuery | Route::TaskCreate | Route::TaskUpdate(_) = route {
        if let Err(e) = edge::json_content_type(req.headers()) {
            return refused(e);
        }
    }
    let caller = match authorize(&runtime, route.access(), &req).await {
        Ok(caller) => caller,
        Err(e) => return refused(e),
    };
    match (route, caller) {
        (Route::Api(endpoint), Some(caller)) => {
            proxy::handle(gw, &runtime, caller, endpoint, req).await
        }
        (Route::Models(id), Some(caller)) => ops::list_models(gw, &caller, id.as_deref()),
        (Route::LlmQuery, Some(caller)) => api::query(gw, &runtime, caller, req).await,
        (Route::LlmModels, Some(caller)) => api::list_models(gw, &caller, req.uri().query()).await,
        (Route::Admin(path), Some(caller)) => control::admin(app, &caller, &path, req).await,
        (Route::OpenApi, _) => openapi::document(),
        (
            route @ (Route::TaskCreate
            | Route::TaskList
            | Route::TaskGet(_)
            | Route::TaskUpdate(_)
            | Route::TaskDelete(_)),
            Some(caller),
        ) => tasks(app, &caller, route, req).await,
        (Route::Healthz, _) => ops::healthz(),
        (Route::Readyz, _) => ops::readyz(gw).await,
        (Route::Metrics, _) if edge.metrics_on_main_port => ops::metrics(edge, gw, &req),
        (_, _) => error_response(&GatewayError::not_found(format!(
            "Unknown request URL: {} {}.",
            req.method(),
            req.uri().path()
        ))),
    }
}

/// The task routes, for a caller the router let through.
async fn tasks(
    app: &App,
    caller: &Caller,
    route: Route,
    req: Request<Incoming>,
) -> Response<ClientBody> {
    let ctx = api::tasks::TaskCtx {
        gw: &app.gateway,
        tasks: &app.tasks,
        caller,
    };
    match route {
        Route::TaskCreate => api::tasks::create(&ctx, req).await,
        Route::TaskList => api::tasks::list(&ctx, req.uri().query()).await,
        Route::TaskGet(id) => api::tasks::get(&ctx, &id).await,
        Route::TaskUpdate(id) => api::tasks::update(&ctx, &id, req).await,
        Route::TaskDelete(id) => api::tasks::delete(&ctx, &id).await,
        _ => error_response(&GatewayError::internal("not a task route")),
    }
}

/// The caller, when the route needs one and the caller may use it.
async fn authorize(
    runtime: &Runtime,
    access: Access,
    req: &Request<Incoming>,
) -> Result<Option<Arc<Caller>>, GatewayError> {
    match access {
        Access::Anyone => Ok(None),
        Access::Caller => runtime.auth.authenticate(req.headers()).await.map(Some),
        Access::Admin => {
            let caller = runtime.auth.authenticate_admin(req.headers()).await?;
            if caller.role != Role::Admin {
                return Err(GatewayError::new(
                    http::StatusCode::FORBIDDEN,
                    "permission_denied",
                    "The admin API needs the master key, an admin key or an admin JWT; this key's role is `user`.",
                ));
            }
            Ok(Some(caller))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_names_the_access_it_needs() {
        let table = [
            (Method::POST, "/v1/chat/completions", Access::Caller),
            (Method::POST, "/chat/completions", Access::Caller),
            (Method::POST, "/v1/embeddings", Access::Caller),
            (Method::GET, "/v1/models", Access::Caller),
            (Method::GET, "/v1/models/gpt-4o", Access::Caller),
            (Method::POST, "/api/v1/llm/query", Access::Caller),
            (Method::GET, "/api/v1/llm/models", Access::Caller),
            (Method::POST, "/api/v1/tasks", Access::Caller),
            (Method::GET, "/api/v1/tasks", Access::Caller),
            (Method::GET, "/api/v1/tasks/t1", Access::Caller),
            (Method::PUT, "/api/v1/tasks/t1", Access::Caller),
            (Method::DELETE, "/api/v1/tasks/t1", Access::Caller),
            (Method::GET, "/admin/providers", Access::Admin),
            (Method::POST, "/admin/reload", Access::Admin),
            (Method::DELETE, "/admin/models/x", Access::Admin),
            (Method::GET, "/admin", Access::Admin),
            (Method::GET, "/healthz", Access::Anyone),
            (Method::GET, "/metrics", Access::Anyone),
            (Method::GET, "/nothing", Access::Anyone),
        ];
        for (method, path, access) in table {
            assert_eq!(Route::of(&method, path).access(), access, "{method} {path}");
        }
        for (method, template, access) in API_ROUTES {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let path = template.replace(['{', '}'], "");
            let route = Route::of(&method, &path);
            assert_ne!(route, Route::NotFound, "{method} {template}");
            assert_eq!(route.access(), *access, "{method} {template}");
        }
        // Not an admin route just because it starts with the letters.
        assert_eq!(Route::of(&Method::GET, "/administrator"), Route::NotFound);
        assert_eq!(
            Route::of(&Method::GET, "/admin/models/m1/"),
            Route::Admin("models/m1".into())
        );
        assert_eq!(
            Route::of(&Method::GET, "/v1/chat/completions"),
            Route::NotFound
        );
        assert_eq!(
            Route::of(&Method::DELETE, "/api/v1/tasks/a/b"),
            Route::NotFound
        );
        assert_eq!(Route::of(&Method::POST, "/api/v1/tasks/a"), Route::NotFound);
    }
}
