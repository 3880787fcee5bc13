//! Tollgate: an OpenAI-compatible LLM gateway that routes, limits, falls back and meters.
//!
//! The request path lives in `proxy::handler`; `providers` translate wire formats; `registry`
//! holds the snapshot of providers and models; `metering` turns each request into a usage row
//! and metrics; `store` is the database.

pub mod auth;
pub mod config;
pub mod error;
pub mod limits;
pub mod metering;
pub mod mock_upstream;
pub mod providers;
pub mod proxy;
pub mod registry;
pub mod store;
pub mod upstream;
