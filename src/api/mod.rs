//! The dashboard API (`/api/v1/*`, seed 003's FastAPI design): a simple query and the model
//! list, for a browser dashboard. A query is a chat completion built from its fields and sent
//! along the data plane's own phases (`proxy::ask`), so it is routed, limited, budgeted and
//! metered exactly as an SDK's request; the model list reads the database, as the admin API
//! does; tasks are queued in the database for the workers of `crate::tasks`. Errors are the
//! OpenAI shape of the rest of the gateway.

mod models;
mod openapi;
mod query;
mod task_input;
pub mod tasks;

pub use models::list_models;
pub use openapi::DashboardApi;
pub use query::query;
