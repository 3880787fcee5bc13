//! The dashboard API's part of the OpenAPI document: its operations; the schemas they name
//! come with them.

use utoipa::OpenApi;

use super::{models, query};

#[derive(OpenApi)]
#[openapi(paths(query::query, models::list_models))]
pub struct DashboardApi;
