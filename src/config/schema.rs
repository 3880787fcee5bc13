//! The file's schema: what each section and table may hold, with its defaults.
//!
//! Words from a fixed set are enums (`enums.rs`); prices stay strings because a float would
//! already have lost the exact value.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::enums::{
    Api, CacheBackend, Choice, LogFormat, ModelStatus, ModelType, OnRedisFailure, Strategy,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub usage: UsageConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub circuit_breaker: BreakerConfig,
    #[serde(default)]
    pub tasks: TasksConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub providers: Vec<Spanned<ProviderConfig>>,
    #[serde(default)]
    pub models: Vec<Spanned<ModelConfig>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RouteConfig>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    pub request_timeout_secs: u64,
    pub max_body_bytes: usize,
    /// The largest whole (non-streamed) answer read from a provider; larger ones give 502.
    pub max_response_bytes: usize,
    /// Serving without gateway keys on a non-loopback address must be asked for explicitly.
    pub allow_open_on_public_address: bool,
    /// `text` (human) or `json` (one object per line, for log shippers).
    pub log_format: Choice<LogFormat>,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// How long a stopping server lets in-flight requests finish.
    pub shutdown_grace_secs: u64,
    /// SO_REUSEPORT: another process with this set may listen on the same port (a
    /// zero-downtime handover). Off, a port in use is a start-up error.
    pub reuse_port: bool,
    /// A connection with no request in progress for this long is closed (also one that
    /// never sends anything).
    pub idle_timeout_secs: u64,
    /// Client connections open at once; more wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// Serve `/metrics` on this address only (the main address then answers 404 for it).
    pub metrics_listen: Option<String>,
    /// Require `Authorization: Bearer <token>` for `/metrics` (best as `env:NAME`).
    pub metrics_token: Option<String>,
    /// Web pages (exact origins such as `https://dash.example.com`, or `"*"`) whose browsers
    /// may call `/v1/*` and `/api/v1/*`; empty: no CORS headers at all.
    pub cors_allowed_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            request_timeout_secs: 600,
            max_body_bytes: 32 * 1024 * 1024,
            max_response_bytes: 32 * 1024 * 1024,
            allow_open_on_public_address: false,
            log_format: Choice::default(),
            workers: 0,
            shutdown_grace_secs: 30,
            reuse_port: false,
            idle_timeout_secs: 60,
            max_connections: 10_000,
            metrics_listen: None,
            metrics_token: None,
            cors_allowed_origins: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://tollgate.db?mode=rwc".into(),
            max_connections: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// With a URL, provider, model and key limits hold across every instance.
    pub url: Option<String>,
    /// Every key Tollgate writes starts with this (several gateways can share one Redis).
    pub key_prefix: String,
    /// `local` (serve with limit / instances) or `fail_closed` (refuse) while Redis is away.
    pub on_failure: OnRedisFailure,
    /// How many instances share the limits; the local fallback enforces each one's share.
    pub instances: u32,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: None,
            key_prefix: "tollgate:".into(),
            on_failure: Default::default(),
            instances: 1,
        }
    }
}

/// The longest key a client may present. Gateway keys are 67 bytes; the room above them is
/// for master keys and JWTs (which grow with their claims). A longer one is refused before it
/// is hashed or looked up.
pub const MAX_KEY_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub master_key: Option<String>,
    pub jwt_secret: Option<String>,
    pub require_api_key: bool,
    /// How long a looked-up gateway key is trusted before it is read again (revocation delay).
    pub key_cache_ttl_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            master_key: None,
            jwt_secret: None,
            require_api_key: true,
            key_cache_ttl_secs: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// Records waiting for the batch writer; past this a record is spooled to disk.
    pub queue_capacity: usize,
    /// Rows per write transaction at most.
    pub batch_size: usize,
    /// How long the writer waits to fill a batch: the most a row waits before it is written.
    pub flush_interval_ms: u64,
    /// Where batches go while the database is unreachable; replayed when it is back.
    pub spool_path: PathBuf,
    /// Months of usage rows kept (PostgreSQL drops older monthly partitions, SQLite deletes
    /// the rows); 0 keeps them for ever. The hourly roll-up is always kept.
    pub retention_months: u32,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            queue_capacity: 10_000,
            batch_size: 500,
            flush_interval_ms: 200,
            spool_path: PathBuf::from("tollgate-usage.spool"),
            retention_months: 13,
        }
    }
}

/// The background task queue (`/api/v1/tasks`) and this instance's workers. Read at start:
/// a change needs a restart.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TasksConfig {
    /// Tasks this instance runs at once (0: it runs none, it only queues them).
    pub workers: usize,
    /// A task's models called at once.
    pub max_parallel: usize,
    /// How long a claimed task stays with its worker without a renewal; a task whose instance
    /// died is taken over by another once its lease has expired.
    pub lease_secs: u64,
    /// Claims of one task before it fails: a task whose instance stopped without finishing it
    /// (its lease expired, or its run broke on a database error) is tried again up to this.
    pub max_attempts: u32,
    /// How often an idle worker looks for queued tasks (another instance's, or ones whose
    /// lease expired); a task queued on this instance wakes its workers at once.
    pub poll_interval_ms: u64,
    /// Queued tasks a project may have; more are refused with 429.
    pub max_queued_per_project: u64,
    /// The largest prompt a task may carry, in bytes.
    pub max_prompt_bytes: usize,
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            workers: 4,
            max_parallel: 4,
            lease_secs: 30,
            max_attempts: 3,
            poll_interval_ms: 1000,
            max_queued_per_project: 1000,
            max_prompt_bytes: 64 * 1024,
        }
    }
}

/// `[cache]`: the response cache. Off unless `enabled`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    /// How long an answer is served from the cache after it was stored.
    pub ttl_secs: u64,
    /// `memory` (this instance) or `redis` (`[redis] url`, shared by every instance).
    pub backend: Choice<CacheBackend>,
    /// The memory backend's bound by weight: the bytes of the answers it holds.
    pub max_bytes: Option<u64>,
    /// The memory backend's bound by count, instead of `max_bytes`.
    pub max_entries: Option<u64>,
    /// An answer larger than this is not stored.
    pub max_entry_bytes: usize,
    /// Whether every project may read the answers another one stored (off: each project, or
    /// each key without a project, has its own entries).
    pub share_across_projects: bool,
    /// The longest a Redis call may take before the cache is skipped for the request.
    pub redis_timeout_ms: u64,
}

/// The memory backend's bound when neither `max_bytes` nor `max_entries` is set.
pub const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: false,
            ttl_secs: 3600,
            backend: Choice::default(),
            max_bytes: None,
            max_entries: None,
            max_entry_bytes: 1024 * 1024,
            share_across_projects: false,
            redis_timeout_ms: 100,
        }
    }
}

/// `[telemetry]`: OpenTelemetry traces, exported over OTLP/HTTP. Off unless `otlp_endpoint`
/// is set. Read at start: a change needs a restart.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`); `/v1/traces` is added
    /// unless the path already ends with it. Spanned: a mistake in it is told with its line.
    pub otlp_endpoint: Option<Spanned<String>>,
    /// The `service.name` the spans are exported under.
    pub service_name: String,
    /// The share of new traces kept (0.0 to 1.0); a trace the client started follows the
    /// client's own sampling decision.
    pub sample_ratio: f64,
    /// How long spans wait to be sent together: the most a span waits before it is exported.
    pub batch_delay_ms: u64,
    /// Spans waiting to be sent at most; past this, new spans are dropped (a collector that
    /// is down or slow never makes the gateway hold more).
    pub max_queue_spans: usize,
    /// How long one export (with its retries) may take before it is given up.
    pub export_timeout_ms: u64,
    /// Send `traceparent` to the providers, so a self-hosted model server that traces too
    /// joins the trace.
    pub propagate_upstream: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            service_name: "tollgate".into(),
            sample_ratio: 1.0,
            batch_delay_ms: 5000,
            max_queue_spans: 2048,
            export_timeout_ms: 10_000,
            propagate_upstream: true,
        }
    }
}

impl TelemetryConfig {
    /// The endpoint, when traces are on.
    pub fn endpoint(&self) -> Option<&str> {
        self.otlp_endpoint.as_ref().map(|e| e.get_ref().as_str())
    }

    /// Where spans are posted: the endpoint with `/v1/traces`, as OTLP/HTTP exporters treat
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, unless its path already ends with it.
    pub fn traces_url(&self) -> Option<String> {
        let base = self.endpoint()?.trim_end_matches('/');
        if base.ends_with("/v1/traces") {
            return Some(base.to_owned());
        }
        Some(format!("{base}/v1/traces"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    pub display_name: Option<String>,
    pub api: Api,
    #[serde(default)]
    pub base_url: String,
    /// `env:NAME` (kept as a reference) or the key itself (stored sealed with the master key;
    /// without one, kept only in this instance's memory).
    pub api_key: Option<String>,
    pub api_version: Option<String>,
    #[serde(default = "one")]
    pub max_parallel_requests: u32,
    #[serde(default = "sixty")]
    pub requests_per_minute: u32,
    #[serde(default)]
    pub tokens_per_minute: u64,
    #[serde(default)]
    pub queue_timeout_ms: u64,
    #[serde(default)]
    pub timeouts: ProviderTimeouts,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub description: Option<String>,
}

/// A provider's own timeouts in milliseconds; null: the gateway's default.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderTimeouts {
    pub connect_ms: Option<u64>,
    pub first_token_ms: Option<u64>,
    pub total_ms: Option<u64>,
}

fn one() -> u32 {
    1
}
fn sixty() -> u32 {
    60
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub name: String,
    pub provider: String,
    pub model_id: String,
    pub display_name: Option<String>,
    #[serde(default)]
    pub model_type: Choice<ModelType>,
    pub family: Option<String>,
    pub version: Option<String>,
    pub tier: Option<String>,
    #[serde(default)]
    pub cost_input_per_million: Option<String>,
    #[serde(default)]
    pub cost_output_per_million: Option<String>,
    pub cost_cache_read_per_million: Option<String>,
    pub cost_cache_write_per_million: Option<String>,
    pub context_window: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub supports_streaming: Option<bool>,
    pub supports_json: Option<bool>,
    pub supports_function_calling: Option<bool>,
    pub supports_vision: Option<bool>,
    pub supports_audio: Option<bool>,
    pub supports_system_prompt: Option<bool>,
    /// Default request parameters, merged under the client's.
    pub parameters: Option<toml::Table>,
    pub rate_limits: Option<toml::Table>,
    pub priority: Option<i64>,
    pub weight: Option<u32>,
    #[serde(default)]
    pub is_default: bool,
    #[serde(default)]
    pub status: Choice<ModelStatus>,
    pub deprecation_date: Option<String>,
}

impl ModelConfig {
    /// `model_type` in the registry's words: the seeds' `llm` is `chat`.
    pub fn normalized_model_type(&self) -> &'static str {
        self.model_type.get().as_str()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    pub targets: Vec<String>,
    #[serde(default)]
    pub strategy: Choice<Strategy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Failures / attempts over the window at which the circuit opens.
    pub error_ratio: f64,
    /// Attempts the window must hold before the ratio counts.
    pub min_requests: u32,
    pub window_secs: u64,
    /// How long an open circuit stays open before one probe is let through.
    pub cooldown_secs: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            error_ratio: 0.5,
            min_requests: 10,
            window_secs: 30,
            cooldown_secs: 15,
        }
    }
}
