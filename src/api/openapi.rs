//! The dashboard API's part of the OpenAPI document: its operations; the schemas they name
//! come with them.

use utoipa::OpenApi;

use super::{models, query, tasks};

#[derive(OpenApi)]
#[openapi(paths(
    query::query,
    models::list_models,
    tasks::create,
    tasks::list,
    tasks::get,
    tasks::update,
    tasks::delete,
))]
pub struct DashboardApi;
