//! `llm_providers`, `llm_models`, `system_settings`: the config sync and the registry load.
//!
//! The database is the registry; config.toml is one of its writers. The sync writes the
//! file's `[[providers]]`, `[[models]]` and `[[routes]]` (as `route:<name>` settings), all
//! marked `managed_by = 'config'`, and never touches a row the admin API wrote.

use std::collections::HashMap;

use anyhow::Context;

use super::{timestamp, Arg, Db, DbRow};
use crate::config::{Config, ModelConfig, ProviderConfig, RouteConfig};
use crate::ids::new_id;
use crate::secrets::{is_sealed, Sealer};

/// The `api_key_ref` of a provider whose key is written in a config file while no master key
/// is set: the key is not in the database, only in the memory of the instances whose file
/// has it.
pub const KEY_IN_CONFIG: &str = "config";

/// A `system_settings` key starting with this is a route: its value is
/// `{"targets": ["provider/model_id" or public name, ...], "strategy": "fallback"}`.
pub const ROUTE_SETTING_PREFIX: &str = "route:";

/// What one config sync did, for the start-up log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub providers: usize,
    pub models: usize,
    pub routes: usize,
    pub deactivated_models: u64,
    pub disabled_providers: u64,
    pub removed_routes: u64,
    /// Names in the file that belong to rows the admin API created; the sync leaves those alone.
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ProviderRow {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub api: String,
    pub base_url: String,
    pub api_key_ref: Option<String>,
    pub api_version: Option<String>,
    pub max_parallel_requests: i64,
    pub requests_per_minute: i64,
    pub tokens_per_minute: i64,
    pub queue_timeout_ms: i64,
    pub timeouts: String,
    pub is_enabled: bool,
}

#[derive(Debug, Clone)]
pub struct ModelRow {
    pub id: String,
    pub provider_id: String,
    pub model_id: String,
    pub name: String,
    pub display_name: String,
    pub model_type: String,
    pub context_window: Option<i64>,
    pub max_output_tokens: Option<i64>,
    pub supports_streaming: Option<bool>,
    pub supports_json: Option<bool>,
    pub supports_function_calling: Option<bool>,
    pub supports_vision: Option<bool>,
    pub cost_input_per_million: String,
    pub cost_output_per_million: String,
    pub cost_cache_read_per_million: Option<String>,
    pub cost_cache_write_per_million: Option<String>,
    pub parameters: String,
    pub rate_limits: String,
    pub status: String,
    pub is_default: bool,
    pub priority: i64,
    pub weight: i64,
    pub deprecation_date: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, Default)]
pub struct RegistryRows {
    pub providers: Vec<ProviderRow>,
    pub models: Vec<ModelRow>,
    pub settings: Vec<(String, String)>,
}

const UPSERT_PROVIDER: &str = "
INSERT INTO llm_providers (id, name, display_name, api, base_url, api_key_ref, api_version,
    max_parallel_requests, requests_per_minute, tokens_per_minute, queue_timeout_ms, timeouts,
    is_enabled, description, managed_by, created_at, updated_at)
VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13, $14, 'config',
    $15::timestamptz, $15::timestamptz)
ON CONFLICT (name) WHERE deleted_at IS NULL DO UPDATE SET
    display_name = excluded.display_name, api = excluded.api, base_url = excluded.base_url,
    api_key_ref = excluded.api_key_ref, api_version = excluded.api_version,
    max_parallel_requests = excluded.max_parallel_requests,
    requests_per_minute = excluded.requests_per_minute,
    tokens_per_minute = excluded.tokens_per_minute, queue_timeout_ms = excluded.queue_timeout_ms,
    timeouts = excluded.timeouts, is_enabled = excluded.is_enabled,
    description = excluded.description, updated_at = excluded.updated_at
WHERE llm_providers.managed_by = 'config'";

const UPSERT_MODEL: &str = "
INSERT INTO llm_models (id, provider_id, model_id, name, display_name, model_type, family, version,
    tier, context_window, max_output_tokens, supports_streaming, supports_json,
    supports_function_calling, supports_vision, supports_audio, supports_system_prompt,
    cost_input_per_million, cost_output_per_million, cost_cache_read_per_million,
    cost_cache_write_per_million, parameters, rate_limits, status, is_default, priority, weight,
    deprecation_date, managed_by, created_at, updated_at)
VALUES ($1::uuid, (SELECT id FROM llm_providers
        WHERE name = $2 AND managed_by = 'config' AND deleted_at IS NULL),
    $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
    $18::numeric, $19::numeric, $20::numeric, $21::numeric, $22::jsonb, $23::jsonb, $24, $25, $26,
    $27, $28::date, 'config', $29::timestamptz, $29::timestamptz)
ON CONFLICT (provider_id, model_id) DO UPDATE SET
    name = excluded.name, display_name = excluded.display_name, model_type = excluded.model_type,
    family = excluded.family, version = excluded.version, tier = excluded.tier,
    context_window = excluded.context_window, max_output_tokens = excluded.max_output_tokens,
    supports_streaming = excluded.supports_streaming, supports_json = excluded.supports_json,
    supports_function_calling = excluded.supports_function_calling,
    supports_vision = excluded.supports_vision, supports_audio = excluded.supports_audio,
    supports_system_prompt = excluded.supports_system_prompt,
    cost_input_per_million = excluded.cost_input_per_million,
    cost_output_per_million = excluded.cost_output_per_million,
    cost_cache_read_per_million = excluded.cost_cache_read_per_million,
    cost_cache_write_per_million = excluded.cost_cache_write_per_million,
    parameters = excluded.parameters, rate_limits = excluded.rate_limits,
    status = excluded.status, is_default = excluded.is_default, priority = excluded.priority,
    weight = excluded.weight, deprecation_date = excluded.deprecation_date,
    updated_at = excluded.updated_at, deleted_at = NULL
WHERE llm_models.managed_by = 'config'";

const UPSERT_ROUTE: &str = "
INSERT INTO system_settings (id, key, value, managed_by, updated_at)
VALUES ($1::uuid, $2, $3::jsonb, 'config', $4::timestamptz)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
WHERE system_settings.managed_by = 'config'";

/// What the database keeps of a provider's key: an `env:` reference as it is; a key written in
/// the file sealed with the master key, or `KEY_IN_CONFIG` without one. A sealed value already
/// stored is kept while it opens to the same key, so a sync that changes nothing rewrites
/// nothing (sealing draws a fresh nonce each time).
pub(super) fn stored_key_ref(
    p: &ProviderConfig,
    sealer: Option<&Sealer>,
    stored: Option<&str>,
) -> Option<String> {
    let key = p.api_key.as_deref()?;
    if key.starts_with("env:") {
        return Some(key.to_owned());
    }
    let Some(sealer) = sealer else {
        return Some(KEY_IN_CONFIG.to_owned());
    };
    match stored {
        Some(s) if is_sealed(s) && sealer.open(s).is_ok_and(|k| k == key) => Some(s.to_owned()),
        _ => Some(sealer.seal(key)),
    }
}

/// The JSON a route is stored as.
pub(super) fn route_value(r: &RouteConfig) -> serde_json::Value {
    serde_json::json!({"targets": r.targets, "strategy": r.strategy.get()})
}

pub(super) fn provider_args(p: &ProviderConfig, key_ref: Option<String>, now: &str) -> Vec<Arg> {
    vec![
        new_id().into(),
        p.name.as_str().into(),
        p.display_name
            .clone()
            .unwrap_or_else(|| p.name.clone())
            .into(),
        p.api.as_str().into(),
        p.base_url.as_str().into(),
        key_ref.into(),
        p.api_version.clone().into(),
        i64::from(p.max_parallel_requests).into(),
        i64::from(p.requests_per_minute).into(),
        (p.tokens_per_minute as i64).into(),
        (p.queue_timeout_ms as i64).into(),
        serde_json::to_string(&p.timeouts)
            .expect("timeouts serialise")
            .into(),
        p.enabled.into(),
        p.description.clone().into(),
        now.into(),
    ]
}

fn toml_table_json(t: &Option<toml::Table>) -> String {
    match t {
        Some(t) => serde_json::to_string(t).expect("toml values serialise as JSON"),
        None => "{}".into(),
    }
}

pub(super) fn model_args(m: &ModelConfig, file_order: usize, now: &str) -> Vec<Arg> {
    let price = |v: &Option<String>| v.as_ref().map(|s| s.trim().to_owned());
    vec![
        new_id().into(),
        m.provider.as_str().into(),
        m.model_id.as_str().into(),
        m.name.as_str().into(),
        m.display_name
            .clone()
            .unwrap_or_else(|| m.name.clone())
            .into(),
        m.normalized_model_type().into(),
        m.family.clone().into(),
        m.version.clone().into(),
        m.tier.clone().into(),
        m.context_window.map(|v| v as i64).into(),
        m.max_output_tokens.map(|v| v as i64).into(),
        // An unset flag is stored as unknown (NULL), never guessed.
        m.supports_streaming.into(),
        m.supports_json.into(),
        m.supports_function_calling.into(),
        m.supports_vision.into(),
        m.supports_audio.into(),
        m.supports_system_prompt.into(),
        price(&m.cost_input_per_million)
            .unwrap_or_else(|| "0".into())
            .into(),
        price(&m.cost_output_per_million)
            .unwrap_or_else(|| "0".into())
            .into(),
        price(&m.cost_cache_read_per_million).into(),
        price(&m.cost_cache_write_per_million).into(),
        toml_table_json(&m.parameters).into(),
        toml_table_json(&m.rate_limits).into(),
        m.status.get().as_str().into(),
        m.is_default.into(),
        m.priority.unwrap_or(file_order as i64).into(),
        i64::from(m.weight.unwrap_or(1)).into(),
        m.deprecation_date.clone().into(),
        now.into(),
    ]
}

/// `IN (...)` with one placeholder per value, numbered from `first`.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A statement of the sync transaction and its arguments.
type Stmt = (String, Vec<Arg>);

/// Where each part of the sync's statements starts, to read what each touched.
struct SyncLayout {
    models_start: usize,
    routes_start: usize,
}

/// The sync's statements, in order: the provider upserts, clearing the defaults, the model
/// upserts, the route upserts, then deactivating the models, disabling the providers and
/// removing the routes that left the file. `key_refs` is what to store for each provider's key.
fn sync_statements(
    config: &Config,
    key_refs: Vec<Option<String>>,
    now: &str,
) -> (Vec<Stmt>, SyncLayout) {
    let mut stmts: Vec<Stmt> = config
        .providers
        .iter()
        .zip(key_refs)
        .map(|(p, key)| (UPSERT_PROVIDER.into(), provider_args(p.get_ref(), key, now)))
        .collect();
    // Clear defaults first: moving is_default from one model to another must not trip the
    // one-default-per-provider index halfway through.
    stmts.push((
        "UPDATE llm_models SET is_default = FALSE WHERE managed_by = 'config' AND is_default"
            .into(),
        vec![],
    ));
    let models_start = stmts.len();
    for (i, m) in config.models.iter().enumerate() {
        stmts.push((UPSERT_MODEL.into(), model_args(m.get_ref(), i, now)));
    }
    let routes_start = stmts.len();
    for r in &config.routes {
        let r = r.get_ref();
        let args = vec![
            new_id().into(),
            format!("{ROUTE_SETTING_PREFIX}{}", r.name).into(),
            route_value(r).to_string().into(),
            now.into(),
        ];
        stmts.push((UPSERT_ROUTE.into(), args));
    }
    stmts.push(deactivate_models_not_in(config, now));
    stmts.push(disable_providers_not_in(config, now));
    stmts.push(remove_routes_not_in(config));
    let layout = SyncLayout {
        models_start,
        routes_start,
    };
    (stmts, layout)
}

/// Config routes whose name is no longer in the file are removed (a setting has no history
/// to keep).
fn remove_routes_not_in(config: &Config) -> Stmt {
    let keys: Vec<Arg> = config
        .routes
        .iter()
        .map(|r| format!("{ROUTE_SETTING_PREFIX}{}", r.get_ref().name).into())
        .collect();
    let mut sql = "DELETE FROM system_settings WHERE managed_by = 'config'".to_owned();
    if !keys.is_empty() {
        sql.push_str(&format!(
            " AND key NOT IN ({})",
            placeholders(1, keys.len())
        ));
    }
    (sql, keys)
}

/// Config models whose `provider/model_id` is no longer in the file become inactive.
fn deactivate_models_not_in(config: &Config, now: &str) -> Stmt {
    let keys: Vec<Arg> = config
        .models
        .iter()
        .map(|m| format!("{}/{}", m.get_ref().provider, m.get_ref().model_id).into())
        .collect();
    let mut sql = "UPDATE llm_models SET status = 'inactive', is_default = FALSE, \
         updated_at = $1::timestamptz WHERE managed_by = 'config' AND status <> 'inactive'"
        .to_owned();
    if !keys.is_empty() {
        sql.push_str(&format!(
            " AND ((SELECT name FROM llm_providers p WHERE p.id = llm_models.provider_id) \
             || '/' || model_id) NOT IN ({})",
            placeholders(2, keys.len())
        ));
    }
    let mut args: Vec<Arg> = vec![now.into()];
    args.extend(keys);
    (sql, args)
}

/// Config providers whose name is no longer in the file become disabled.
fn disable_providers_not_in(config: &Config, now: &str) -> Stmt {
    let names: Vec<Arg> = config
        .providers
        .iter()
        .map(|p| Arg::from(p.get_ref().name.as_str()))
        .collect();
    let mut sql = "UPDATE llm_providers SET is_enabled = FALSE, updated_at = $1::timestamptz \
         WHERE managed_by = 'config' AND is_enabled"
        .to_owned();
    if !names.is_empty() {
        sql.push_str(&format!(
            " AND name NOT IN ({})",
            placeholders(2, names.len())
        ));
    }
    let mut args: Vec<Arg> = vec![now.into()];
    args.extend(names);
    (sql, args)
}

/// Reads the rows each statement of `sync_statements` touched: an upsert that touched none
/// met a row the admin API owns, and is reported as skipped.
fn sync_report(config: &Config, affected: &[u64], layout: &SyncLayout) -> SyncReport {
    let mut report = SyncReport::default();
    let names = config
        .providers
        .iter()
        .map(|p| format!("provider {}", p.get_ref().name))
        .zip(affected);
    let models = config
        .models
        .iter()
        .map(|m| format!("model {}/{}", m.get_ref().provider, m.get_ref().model_id))
        .zip(&affected[layout.models_start..]);
    let routes = config
        .routes
        .iter()
        .map(|r| format!("route {}", r.get_ref().name))
        .zip(&affected[layout.routes_start..]);
    for (count, entries) in [
        (&mut report.providers, names.collect::<Vec<_>>()),
        (&mut report.models, models.collect()),
        (&mut report.routes, routes.collect()),
    ] {
        for (name, &n) in entries {
            if n == 0 {
                report.skipped.push(name);
            } else {
                *count += 1;
            }
        }
    }
    let tail = &affected[affected.len() - 3..];
    report.deactivated_models = tail[0];
    report.disabled_providers = tail[1];
    report.removed_routes = tail[2];
    report
}

impl Db {
    /// Writes `[[providers]]`, `[[models]]` and `[[routes]]` into the registry in one
    /// transaction. Rows the admin API created are never touched; config rows that left the
    /// file become inactive (models) or disabled (providers), never deleted: usage history
    /// keeps its foreign keys. Config routes that left the file are removed.
    /// A provider key written in the file is stored sealed with `sealer` (the master key's),
    /// or, without one, kept out of the database (`KEY_IN_CONFIG`). The triggers bump the
    /// registry version in the same transaction.
    pub async fn sync_config(
        &self,
        config: &Config,
        sealer: Option<&Sealer>,
    ) -> anyhow::Result<SyncReport> {
        let stored = self.config_key_refs().await?;
        let key_refs = config
            .providers
            .iter()
            .map(|p| {
                let p = p.get_ref();
                let old = stored.get(&p.name).and_then(|k| k.as_deref());
                stored_key_ref(p, sealer, old)
            })
            .collect();
        let now = timestamp(chrono::Utc::now());
        let (stmts, layout) = sync_statements(config, key_refs, &now);
        let affected = self
            .transaction(stmts)
            .await
            .context("config sync failed")?;
        Ok(sync_report(config, &affected, &layout))
    }

    /// The stored key of each provider the file manages, by name.
    async fn config_key_refs(&self) -> anyhow::Result<HashMap<String, Option<String>>> {
        self.fetch_all(
            "SELECT name, api_key_ref FROM llm_providers WHERE managed_by = 'config'",
            &[],
        )
        .await?
        .iter()
        .map(|r| Ok((r.text("name")?, r.opt_text("api_key_ref")?)))
        .collect()
    }

    /// Everything the registry snapshot is built from, in one read.
    pub async fn load_registry(&self) -> anyhow::Result<RegistryRows> {
        let providers = self
            .fetch_all(
                "SELECT id::text AS id, name, display_name, api, base_url, api_key_ref, api_version,
                    max_parallel_requests, requests_per_minute, tokens_per_minute,
                    queue_timeout_ms, timeouts::text AS timeouts, is_enabled
                 FROM llm_providers WHERE deleted_at IS NULL ORDER BY name",
                &[],
            )
            .await?
            .iter()
            .map(provider_row)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let models = self
            .fetch_all(
                "SELECT id::text AS id, provider_id::text AS provider_id, model_id, name,
                    display_name, model_type, context_window, max_output_tokens,
                    supports_streaming, supports_json, supports_function_calling, supports_vision,
                    cost_input_per_million::text AS cost_input_per_million,
                    cost_output_per_million::text AS cost_output_per_million,
                    cost_cache_read_per_million::text AS cost_cache_read_per_million,
                    cost_cache_write_per_million::text AS cost_cache_write_per_million,
                    parameters::text AS parameters, rate_limits::text AS rate_limits, status,
                    is_default, priority, weight,
                    deprecation_date::text AS deprecation_date, created_at::text AS created_at
                 FROM llm_models WHERE deleted_at IS NULL ORDER BY priority, created_at",
                &[],
            )
            .await?
            .iter()
            .map(model_row)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let settings = self
            .fetch_all(
                "SELECT key, value::text AS value FROM system_settings ORDER BY key",
                &[],
            )
            .await?
            .iter()
            .map(|r| Ok((r.text("key")?, r.text("value")?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(RegistryRows {
            providers,
            models,
            settings,
        })
    }

    pub async fn put_setting(&self, key: &str, value: &serde_json::Value) -> anyhow::Result<()> {
        self.execute(
            "INSERT INTO system_settings (id, key, value, updated_at)
             VALUES ($1::uuid, $2, $3::jsonb, $4::timestamptz)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            &[
                new_id().into(),
                key.into(),
                value.to_string().into(),
                timestamp(chrono::Utc::now()).into(),
            ],
        )
        .await?;
        Ok(())
    }
}

fn provider_row(r: &DbRow) -> anyhow::Result<ProviderRow> {
    Ok(ProviderRow {
        id: r.text("id")?,
        name: r.text("name")?,
        display_name: r.text("display_name")?,
        api: r.text("api")?,
        base_url: r.text("base_url")?,
        api_key_ref: r.opt_text("api_key_ref")?,
        api_version: r.opt_text("api_version")?,
        max_parallel_requests: r.int("max_parallel_requests")?,
        requests_per_minute: r.int("requests_per_minute")?,
        tokens_per_minute: r.int("tokens_per_minute")?,
        queue_timeout_ms: r.int("queue_timeout_ms")?,
        timeouts: r.text("timeouts")?,
        is_enabled: r.bool("is_enabled")?,
    })
}

fn model_row(r: &DbRow) -> anyhow::Result<ModelRow> {
    Ok(ModelRow {
        id: r.text("id")?,
        provider_id: r.text("provider_id")?,
        model_id: r.text("model_id")?,
        name: r.text("name")?,
        display_name: r.text("display_name")?,
        model_type: r.text("model_type")?,
        context_window: r.opt_int("context_window")?,
        max_output_tokens: r.opt_int("max_output_tokens")?,
        supports_streaming: r.opt_bool("supports_streaming")?,
        supports_json: r.opt_bool("supports_json")?,
        supports_function_calling: r.opt_bool("supports_function_calling")?,
        supports_vision: r.opt_bool("supports_vision")?,
        cost_input_per_million: r.text("cost_input_per_million")?,
        cost_output_per_million: r.text("cost_output_per_million")?,
        cost_cache_read_per_million: r.opt_text("cost_cache_read_per_million")?,
        cost_cache_write_per_million: r.opt_text("cost_cache_write_per_million")?,
        parameters: r.text("parameters")?,
        rate_limits: r.text("rate_limits")?,
        status: r.text("status")?,
        is_default: r.bool("is_default")?,
        priority: r.int("priority")?,
        weight: r.int("weight")?,
        deprecation_date: r.opt_text("deprecation_date")?,
        created_at: r.text("created_at")?,
    })
}
