//! The admin routes that concern the running server rather than the registry's rows:
//! `POST /admin/reload` and `GET /admin/config`. Every other `/admin/*` route is the admin
//! API's (`crate::admin`); when one changes the registry, the new snapshot is built and put in
//! service here, before the answer goes out, so the admin's next request already sees it.

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::reload::settings_of;
use super::App;
use crate::auth::Caller;
use crate::error::{ErrorBody, GatewayError};
use crate::proxy::{error_response, json_response, ClientBody};
use crate::secrets::Sealer;

type Response = http::Response<ClientBody>;

/// An admin request (the router has checked the caller's role).
pub async fn admin(app: &App, caller: &Caller, path: &str, req: Request<Incoming>) -> Response {
    match (req.method(), path) {
        (&Method::POST, "reload") => reload(app, caller).await,
        (&Method::GET, "config") => config(app).await,
        _ => {
            // Provider keys are sealed with the master key of the config in effect, the
            // one the registry opens them with.
            let master_key = app.reloader.applied.lock().await.auth.master_key.clone();
            let sealer = master_key.as_deref().map(Sealer::new);
            let ctx = crate::admin::Ctx {
                gw: &app.gateway,
                caller,
                sealer: sealer.as_ref(),
            };
            let answer = crate::admin::handle(&ctx, path, req).await;
            if answer.registry_changed {
                if let Err(e) = app.refresh_registry().await {
                    tracing::error!("the registry changed but could not be reloaded: {e:#}");
                }
            }
            answer.response
        }
    }
}

/// What a reload did.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reloaded<'a> {
    /// Always true: a refused reload is an error.
    reloaded: bool,
    /// Providers and models synced from the file.
    providers: usize,
    models: usize,
    /// Models no longer in the file, now inactive.
    deactivated_models: u64,
    /// Deployments the new snapshot serves.
    deployments: usize,
    /// The settings that changed and took effect.
    applied: &'a [String],
    /// The settings that changed but take effect only at the next start.
    restart_required: &'a [String],
}

#[utoipa::path(
    post,
    path = "/admin/reload",
    operation_id = "reload",
    tag = "server",
    summary = "Reload config.toml",
    description = "Reads and checks the file, syncs its providers and models into the registry and swaps in the new snapshot, as a SIGHUP or the file watch does.",
    responses(
        (status = 200, description = "Reloaded.", body = Reloaded),
        (status = 422, description = "The file is invalid (`code` `config_invalid`); the running configuration keeps serving.", body = ErrorBody),
    )
)]
async fn reload(app: &App, caller: &Caller) -> Response {
    tracing::info!(by = %caller.principal, "reload asked through the admin API");
    match app.reload().await {
        Ok(report) => {
            let reloaded = Reloaded {
                reloaded: true,
                providers: report.sync.providers,
                models: report.sync.models,
                deactivated_models: report.sync.deactivated_models,
                deployments: report.deployments,
                applied: &report.applied,
                restart_required: &report.restart_required,
            };
            json_response(
                StatusCode::OK,
                serde_json::to_value(reloaded).unwrap_or_default(),
            )
        }
        Err(e) => error_response(
            &GatewayError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_error",
                format!("The configuration was not reloaded; the running one keeps serving: {e:#}"),
            )
            .code("config_invalid"),
        ),
    }
}

/// The configuration in effect.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EffectiveConfig<'a> {
    /// The config file's path.
    file: String,
    /// The settings of every section, secrets shown as `[redacted]` and URLs without their
    /// password.
    #[schema(value_type = Object)]
    settings: Value,
    /// The names of the file's `[[providers]]`.
    providers_in_file: Vec<&'a str>,
    /// How many `[[models]]` the file has.
    models_in_file: usize,
    /// The names of the file's `[[routes]]`.
    routes_in_file: Vec<&'a str>,
}

/// The settings in effect (the last config applied), secrets redacted.
#[utoipa::path(
    get,
    path = "/admin/config",
    operation_id = "get_config",
    tag = "server",
    summary = "The configuration in effect, secrets redacted",
    responses((status = 200, description = "The configuration last applied.", body = EffectiveConfig))
)]
async fn config(app: &App) -> Response {
    let applied = app.reloader.applied.lock().await;
    let effective = EffectiveConfig {
        file: app.reloader.config_path.display().to_string(),
        settings: redacted(settings_of(&applied)),
        providers_in_file: applied
            .providers
            .iter()
            .map(|p| p.get_ref().name.as_str())
            .collect(),
        models_in_file: applied.models.len(),
        routes_in_file: applied
            .routes
            .iter()
            .map(|r| r.get_ref().name.as_str())
            .collect(),
    };
    json_response(
        StatusCode::OK,
        serde_json::to_value(effective).unwrap_or_default(),
    )
}

/// Fields that hold a secret: shown only as set or not.
const SECRET_FIELDS: [&str; 4] = ["master_key", "jwt_secret", "metrics_token", "api_key"];

/// The value with every secret replaced by `"[redacted]"` and every URL's password removed.
fn redacted(mut value: Value) -> Value {
    match &mut value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                *v = match (k.as_str(), &*v) {
                    (_, Value::Null) => Value::Null,
                    (k, _) if SECRET_FIELDS.contains(&k) => Value::from("[redacted]"),
                    ("url", Value::String(u)) => Value::from(crate::store::redact_url(u)),
                    _ => redacted(v.take()),
                };
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| *v = redacted(v.take())),
        _ => {}
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn secrets_and_url_passwords_are_redacted() {
        let text = "[auth]\nmaster_key = \"mk-secret\"\njwt_secret = \"jwt-secret\"\n\
                    [server]\nmetrics_token = \"mt-secret-0123456789\"\n\
                    [database]\nurl = \"postgres://u:pw-secret@db/x\"\n";
        let config = Config::from_str_at(text, std::path::Path::new("t.toml"))
            .unwrap()
            .config;
        let shown = redacted(settings_of(&config)).to_string();
        for secret in ["mk-secret", "jwt-secret", "mt-secret", "pw-secret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("\"master_key\":\"[redacted]\""), "{shown}");
        assert!(shown.contains("postgres://***@db/x"), "{shown}");
    }
}
