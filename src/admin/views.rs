//! The admin API's answers as the OpenAPI document describes them. The handlers build them
//! from database rows (`crate::store::columns`: a row as a JSON object, decimals as exact
//! strings, timestamps in RFC 3339 UTC), so these types are never built: they only describe.
//! tests/openapi.rs checks live answers against them, field by field (no field left out,
//! none added).

// Described, never built: see above.
#![allow(dead_code)]

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::config::{Api, ModelStatus, ModelType, ProviderTimeouts};
use crate::limits::budget::Period;

/// One page of a list: `next` is the cursor of the following page (`?after=`), null on the
/// last one.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct List<T: ToSchema> {
    /// Always `list`.
    object: String,
    data: Vec<T>,
    has_more: bool,
    #[schema(required = true)]
    next: Option<String>,
}

/// Who writes a row: `config` (config.toml's sync; the API refuses to change it) or `api`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ManagedBy {
    Config,
    Api,
}

/// A provider as the API shows it: its key only as `env:NAME`, `[sealed]` (stored
/// encrypted), `[config.toml]` (written in the file) or null.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Always `provider`.
    object: String,
    #[schema(format = Uuid)]
    id: String,
    name: String,
    display_name: String,
    #[schema(value_type = Api)]
    api: String,
    base_url: String,
    #[schema(required = true)]
    api_key: Option<String>,
    #[schema(required = true)]
    api_version: Option<String>,
    max_parallel_requests: u32,
    requests_per_minute: u32,
    tokens_per_minute: u32,
    queue_timeout_ms: u32,
    timeouts: ProviderTimeouts,
    is_enabled: bool,
    #[schema(required = true)]
    description: Option<String>,
    managed_by: ManagedBy,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    #[schema(required = true, format = DateTime)]
    deleted_at: Option<String>,
}

/// A model (a deployment: one provider's `model_id` under a public `name`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Always `model`.
    object: String,
    #[schema(format = Uuid)]
    id: String,
    /// The provider's name.
    provider: String,
    #[schema(format = Uuid)]
    provider_id: String,
    model_id: String,
    name: String,
    display_name: String,
    model_type: ModelType,
    #[schema(required = true)]
    family: Option<String>,
    #[schema(required = true)]
    version: Option<String>,
    #[schema(required = true)]
    tier: Option<String>,
    #[schema(required = true)]
    context_window: Option<u32>,
    #[schema(required = true)]
    max_output_tokens: Option<u32>,
    #[schema(required = true)]
    supports_streaming: Option<bool>,
    #[schema(required = true)]
    supports_json: Option<bool>,
    #[schema(required = true)]
    supports_function_calling: Option<bool>,
    #[schema(required = true)]
    supports_vision: Option<bool>,
    #[schema(required = true)]
    supports_audio: Option<bool>,
    #[schema(required = true)]
    supports_system_prompt: Option<bool>,
    /// USD per million tokens.
    #[schema(pattern = r"^\d+(\.\d+)?$")]
    cost_input_per_million: String,
    #[schema(pattern = r"^\d+(\.\d+)?$")]
    cost_output_per_million: String,
    /// Null: the input price.
    #[schema(required = true, pattern = r"^\d+(\.\d+)?$")]
    cost_cache_read_per_million: Option<String>,
    /// Null: the input price.
    #[schema(required = true, pattern = r"^\d+(\.\d+)?$")]
    cost_cache_write_per_million: Option<String>,
    #[schema(value_type = Object)]
    parameters: Value,
    #[schema(value_type = Object)]
    rate_limits: Value,
    #[schema(value_type = Object)]
    capabilities: Value,
    #[schema(value_type = Object)]
    metadata: Value,
    status: ModelStatus,
    is_default: bool,
    priority: i32,
    weight: u32,
    #[schema(required = true, format = Date)]
    release_date: Option<String>,
    #[schema(required = true, format = Date)]
    deprecation_date: Option<String>,
    #[schema(required = true)]
    typical_latency_ms: Option<u32>,
    managed_by: ManagedBy,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    #[schema(required = true, format = DateTime)]
    deleted_at: Option<String>,
}

/// A system setting: any JSON value under a key.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    /// Always `setting`.
    object: String,
    key: String,
    value: Value,
    managed_by: ManagedBy,
    #[schema(format = DateTime)]
    updated_at: String,
}

/// A project, whose budget its keys share.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// Always `project`.
    object: String,
    #[schema(format = Uuid)]
    id: String,
    name: String,
    /// USD; null: no budget.
    #[schema(required = true, pattern = r"^\d+(\.\d+)?$")]
    budget_usd: Option<String>,
    #[schema(value_type = Period)]
    budget_period: String,
    #[schema(format = DateTime)]
    created_at: String,
}

/// A gateway key: never its plaintext, except `key` in the answer that created it.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// Always `api_key`.
    object: String,
    #[schema(format = Uuid)]
    id: String,
    name: String,
    /// The key's first characters, to recognise it by.
    key_prefix: String,
    /// The project's name.
    #[schema(required = true)]
    project: Option<String>,
    #[schema(required = true, format = Uuid)]
    project_id: Option<String>,
    #[schema(value_type = crate::admin::keys::Role)]
    role: String,
    /// Null: every model.
    #[schema(required = true)]
    allowed_models: Option<Vec<String>>,
    #[schema(required = true)]
    rpm: Option<u32>,
    #[schema(required = true)]
    tpm: Option<u32>,
    /// USD; null: no budget of its own.
    #[schema(required = true, pattern = r"^\d+(\.\d+)?$")]
    budget_usd: Option<String>,
    #[schema(required = true, format = DateTime)]
    expires_at: Option<String>,
    #[schema(required = true, format = DateTime)]
    revoked_at: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    /// The key itself: only in the answer of `POST /admin/keys`, shown once.
    #[schema(required = false)]
    key: String,
}

/// One change made through the admin API, with the row before and after it.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Always `audit_entry`.
    object: String,
    #[schema(format = Uuid)]
    id: String,
    #[schema(format = DateTime)]
    at: String,
    /// Who made it: `master`, `key:<id>` or `jwt:<sub>`.
    actor: String,
    /// create, update, delete or revoke.
    action: String,
    /// provider, model, setting, project or key.
    resource: String,
    resource_id: String,
    /// The row before (null for a create).
    before: Value,
    /// The row after (null for a setting's delete).
    after: Value,
}

/// A provider deleted, with the models deleted with it (soft: the rows stay for history).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderDeleted {
    /// Always `provider`.
    object: String,
    name: String,
    deleted: bool,
    /// The ids of its models, deleted with it.
    deleted_models: Vec<String>,
}

/// A model deleted (soft: the row stays, inactive, for history).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelDeleted {
    /// Always `model`.
    object: String,
    #[schema(format = Uuid)]
    id: String,
    deleted: bool,
}

/// A setting removed.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingDeleted {
    /// Always `setting`.
    object: String,
    key: String,
    deleted: bool,
}

/// A key revoked (the row stays; the key no longer authenticates).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRevoked {
    /// Always `api_key`.
    object: String,
    #[schema(format = Uuid)]
    id: String,
    revoked: bool,
}
