//! Tollgate: an OpenAI-compatible LLM gateway that routes, limits, falls back and meters.
//!
//! The request path lives in `proxy::handler`; `providers` translate wire formats (one
//! `Adapter` per provider API); `registry` holds the snapshot of providers and models;
//! `metering` turns each request into a usage row and metrics; `store` is the database;
//! `mock` is the fake model behind `api = "mock"` and `tollgate mock-upstream`; `ids` makes
//! the ids all of them use.

pub mod auth;
pub mod config;
pub mod error;
pub mod ids;
pub mod limits;
pub mod metering;
pub mod mock;
pub mod providers;
pub mod proxy;
pub mod registry;
pub mod store;
