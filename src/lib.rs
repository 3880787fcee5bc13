//! Tollgate: an OpenAI-compatible LLM gateway that routes, limits, falls back and meters.
//!
//! The modules are layers, each importing only the ones below it (`tests/layers.rs` keeps it
//! so), from the bottom: `error`, `ids` and `config`; `limits` and the `upstream` HTTP client;
//! `metering` (usage records, costs, metrics) and `telemetry` (OpenTelemetry traces); `store`
//! (the database and the usage writer); `registry` (the snapshot of providers and models) and
//! `auth`; the `providers`' wire-format translations (one `Adapter` per provider API); `mock`,
//! the fake model behind `api = "mock"` and `tollgate mock-upstream`; `proxy`, the data plane,
//! whose request path is `proxy::handler`, phase by phase; `admin`, the admin API's handlers,
//! and `tasks`, the durable background task queue and its workers; `api`, the dashboard API's
//! (`/api/v1/*`); and on top `server`, the application shell: start-up, listeners, the router
//! and its role checks, reloads.

pub mod admin;
pub mod api;
pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod ids;
pub mod limits;
pub mod metering;
pub mod mock;
pub mod providers;
pub mod proxy;
pub mod registry;
pub mod secrets;
pub mod server;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod upstream;
