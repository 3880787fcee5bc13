//! The admin API's part of the OpenAPI document: its operations; the schemas they name come
//! with them.

use utoipa::OpenApi;

use super::{audit, keys, models, projects, providers, settings, usage};

#[derive(OpenApi)]
#[openapi(paths(
    providers::list,
    providers::create,
    providers::get,
    providers::update,
    providers::delete,
    models::list,
    models::create,
    models::get,
    models::update,
    models::delete,
    settings::list,
    settings::get,
    settings::put,
    settings::delete,
    projects::list,
    projects::create,
    projects::get,
    projects::update,
    keys::list,
    keys::create,
    keys::get,
    keys::update,
    keys::revoke,
    audit::list,
    usage::report,
))]
pub struct AdminApi;
