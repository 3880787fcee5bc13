//! `config.toml`: the file schema, `env:NAME` references and validation.
//!
//! Server settings live only here. `[[providers]]`, `[[models]]` and `[[routes]]` are a
//! declarative description of the registry that `store::sync_config` writes into the database.
//! Validation collects every problem with its place (line and table) instead of stopping at
//! the first, so `tollgate check-config` can tell an admin everything that is wrong at once.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use toml::Spanned;

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
    pub circuit_breaker: crate::registry::BreakerConfig,
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
    pub log_format: String,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            request_timeout_secs: 600,
            max_body_bytes: 32 * 1024 * 1024,
            max_response_bytes: 32 * 1024 * 1024,
            allow_open_on_public_address: false,
            log_format: "text".into(),
            workers: 0,
            shutdown_grace_secs: 30,
            reuse_port: false,
            idle_timeout_secs: 60,
            max_connections: 10_000,
            metrics_listen: None,
            metrics_token: None,
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
    pub on_failure: crate::limits::OnRedisFailure,
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
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            queue_capacity: 10_000,
            batch_size: 500,
            flush_interval_ms: 200,
            spool_path: PathBuf::from("tollgate-usage.spool"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    Openai,
    Azure,
    Anthropic,
    Gemini,
    Mock,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Openai => "openai",
            Api::Azure => "azure",
            Api::Anthropic => "anthropic",
            Api::Gemini => "gemini",
            Api::Mock => "mock",
        }
    }

    pub fn parse(s: &str) -> Option<Api> {
        Some(match s {
            "openai" => Api::Openai,
            "azure" => Api::Azure,
            "anthropic" => Api::Anthropic,
            "gemini" => Api::Gemini,
            "mock" => Api::Mock,
            _ => return None,
        })
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
    /// `env:NAME` (kept as a reference) or the key itself (kept only in memory).
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

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
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
    #[serde(default = "chat")]
    pub model_type: String,
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
    #[serde(default = "active")]
    pub status: String,
    pub deprecation_date: Option<String>,
}

impl ModelConfig {
    /// `model_type` in the registry's words: the seeds' `llm` is `chat`.
    pub fn normalized_model_type(&self) -> &str {
        match self.model_type.as_str() {
            "llm" => "chat",
            other => other,
        }
    }
}

fn chat() -> String {
    "chat".into()
}
fn active() -> String {
    "active".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    pub targets: Vec<String>,
    #[serde(default = "fallback")]
    pub strategy: String,
}

fn fallback() -> String {
    "fallback".into()
}

/// A problem found in the file, with where it is.
#[derive(Debug, Clone)]
pub struct ConfigIssue {
    pub line: Option<usize>,
    pub place: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.place, self.message),
            None => write!(f, "{}: {}", self.place, self.message),
        }
    }
}

/// Everything wrong with a config file, or the one thing that kept it from being read.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} has {} problem(s):",
            self.path.display(),
            self.issues.len()
        )?;
        for issue in &self.issues {
            writeln!(f, "  - {issue}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A config that parsed and validated, with the warnings worth showing at start-up.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    pub path: PathBuf,
    pub warnings: Vec<String>,
}

const SECRET_PATHS: &[&str] = &["auth.master_key", "auth.jwt_secret"];

impl Config {
    /// Reads, resolves `env:` references (except provider keys, which stay references) and
    /// validates. `DATABASE_URL` in the environment overrides `[database] url`.
    pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            issues: vec![ConfigIssue {
                line: None,
                place: "file".into(),
                message: format!("cannot read: {e}"),
            }],
        })?;
        Self::from_str_at(&text, path)
    }

    pub fn from_str_at(text: &str, path: &Path) -> Result<LoadedConfig, ConfigError> {
        let fail = |issues| ConfigError {
            path: path.to_owned(),
            issues,
        };
        let mut warnings = Vec::new();
        let mut issues = Vec::new();

        let mut config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            fail(vec![ConfigIssue {
                line,
                place: "syntax".into(),
                message: e.message().trim().to_string(),
            }])
        })?;

        config.resolve_env(&mut issues, &mut warnings);
        if let Ok(url) = std::env::var("DATABASE_URL") {
            if !url.is_empty() {
                config.database.url = url;
            }
        }
        config.validate(text, &mut issues, &mut warnings);
        if issues.is_empty() {
            Ok(LoadedConfig {
                config,
                path: path.to_owned(),
                warnings,
            })
        } else {
            Err(fail(issues))
        }
    }

    fn resolve_env(&mut self, issues: &mut Vec<ConfigIssue>, warnings: &mut Vec<String>) {
        let mut resolve = |place: &str, value: &mut Option<String>| {
            let Some(v) = value.as_deref() else { return };
            let Some(name) = v.strip_prefix("env:") else {
                return;
            };
            match std::env::var(name) {
                Ok(found) if !found.is_empty() => *value = Some(found),
                _ if SECRET_PATHS.contains(&place) => {
                    warnings.push(format!("{place}: environment variable {name} is not set"));
                    *value = None;
                }
                // The reference stays in place, so validation knows not to report it again.
                _ => issues.push(ConfigIssue {
                    line: None,
                    place: place.into(),
                    message: format!("environment variable {name} is not set"),
                }),
            }
        };
        let mut url = Some(self.database.url.clone());
        resolve("database.url", &mut url);
        self.database.url = url.unwrap_or_default();
        resolve("auth.master_key", &mut self.auth.master_key);
        resolve("auth.jwt_secret", &mut self.auth.jwt_secret);
        if let Some(redis) = &mut self.redis {
            resolve("redis.url", &mut redis.url);
        }
        let mut listen = Some(self.server.listen.clone());
        resolve("server.listen", &mut listen);
        self.server.listen = listen.unwrap_or_default();
        resolve("server.metrics_listen", &mut self.server.metrics_listen);
        // Not optional like the auth secrets: an unset variable must not leave /metrics open.
        resolve("server.metrics_token", &mut self.server.metrics_token);
        for p in &mut self.providers {
            let p = p.get_mut();
            let mut base = Some(p.base_url.clone());
            resolve(&format!("providers.{}.base_url", p.name), &mut base);
            p.base_url = base.unwrap_or_default();
        }
    }

    fn validate(&self, text: &str, issues: &mut Vec<ConfigIssue>, warnings: &mut Vec<String>) {
        let mut issue = |line: Option<usize>, place: String, message: String| {
            issues.push(ConfigIssue {
                line,
                place,
                message,
            })
        };

        let unresolved = |v: &str| v.starts_with("env:");
        if !unresolved(&self.server.listen) && self.server.listen.parse::<SocketAddr>().is_err() {
            issue(
                None,
                "server.listen".into(),
                format!(
                    "{:?} is not an address like 127.0.0.1:8080",
                    self.server.listen
                ),
            );
        }
        for (key, value) in [
            ("server.max_body_bytes", self.server.max_body_bytes),
            ("server.max_response_bytes", self.server.max_response_bytes),
        ] {
            if value == 0 {
                issue(None, key.into(), "must be greater than 0".into());
            }
        }
        if let Some(m) = &self.server.metrics_listen {
            if !unresolved(m) && m.parse::<SocketAddr>().is_err() {
                issue(
                    None,
                    "server.metrics_listen".into(),
                    format!("{m:?} is not an address like 127.0.0.1:9091"),
                );
            } else if m
                .parse::<SocketAddr>()
                .is_ok_and(|m| m.port() != 0 && self.server.listen.parse() == Ok(m))
            {
                issue(
                    None,
                    "server.metrics_listen".into(),
                    "must differ from server.listen".into(),
                );
            }
        }
        if let Some(t) = &self.server.metrics_token {
            if !unresolved(t) && !(16..=MAX_KEY_BYTES).contains(&t.len()) {
                issue(
                    None,
                    "server.metrics_token".into(),
                    format!("must be 16 to {MAX_KEY_BYTES} bytes long"),
                );
            }
        }
        if !(1..=86_400).contains(&self.server.idle_timeout_secs) {
            issue(
                None,
                "server.idle_timeout_secs".into(),
                "must be between 1 and 86400".into(),
            );
        }
        if !(1..=1_000_000).contains(&self.server.max_connections) {
            issue(
                None,
                "server.max_connections".into(),
                "must be between 1 and 1000000".into(),
            );
        }
        if !matches!(self.server.log_format.as_str(), "text" | "json") {
            issue(
                None,
                "server.log_format".into(),
                "must be \"text\" or \"json\"".into(),
            );
        }
        if self
            .auth
            .master_key
            .as_ref()
            .is_some_and(|k| k.len() > MAX_KEY_BYTES)
        {
            issue(
                None,
                "auth.master_key".into(),
                format!("is longer than {MAX_KEY_BYTES} bytes, the longest key a client may send"),
            );
        }
        let url = &self.database.url;
        let known_scheme = ["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|s| url.starts_with(s));
        if !unresolved(url) && !known_scheme {
            issue(
                None,
                "database.url".into(),
                "must start with sqlite:, postgres:// or postgresql://".into(),
            );
        }

        let mut providers: HashMap<&str, Api> = HashMap::new();
        for (i, p) in self.providers.iter().enumerate() {
            let line = Some(line_of(text, p.span().start));
            let p = p.get_ref();
            let place = format!("providers[{i}] ({})", p.name);
            if p.name.is_empty() || p.name.contains('/') {
                issue(
                    line,
                    place.clone(),
                    "name must be non-empty and must not contain '/'".into(),
                );
            }
            if providers.insert(&p.name, p.api).is_some() {
                issue(
                    line,
                    place.clone(),
                    "a provider with this name is defined twice".into(),
                );
            }
            if p.api != Api::Mock && !unresolved(&p.base_url) {
                match p.base_url.parse::<http::Uri>() {
                    Ok(uri)
                        if matches!(uri.scheme_str(), Some("http" | "https"))
                            && uri.host().is_some() => {}
                    _ => issue(
                        line,
                        format!("{place}.base_url"),
                        format!("{:?} is not an http(s) URL", p.base_url),
                    ),
                }
            }
            if p.api == Api::Azure && p.api_version.is_none() {
                issue(
                    line,
                    format!("{place}.api_version"),
                    "azure providers need api_version (e.g. \"2024-10-21\")".into(),
                );
            }
            match p.api_key.as_deref() {
                Some(k) if k.starts_with("env:") => {
                    let unset = std::env::var(&k[4..]).map_or(true, |v| v.is_empty());
                    if p.enabled && unset {
                        warnings.push(format!(
                            "provider {}: {} is not set, the provider stays disabled until it is",
                            p.name,
                            &k[4..]
                        ));
                    }
                }
                Some(_) => warnings.push(format!(
                    "provider {}: api_key is written in the file; prefer \"env:NAME\"",
                    p.name
                )),
                None if p.api != Api::Mock && p.enabled => warnings.push(format!(
                    "provider {}: no api_key; requests are sent without one",
                    p.name
                )),
                None => {}
            }
        }

        let mut seen_models: HashSet<(&str, &str)> = HashSet::new();
        let mut defaults: HashMap<&str, usize> = HashMap::new();
        let mut names: HashSet<&str> = HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            let line = Some(line_of(text, m.span().start));
            let m = m.get_ref();
            let place = format!("models[{i}] ({})", m.name);
            names.insert(&m.name);
            if m.name.is_empty() || m.model_id.is_empty() {
                issue(
                    line,
                    place.clone(),
                    "name and model_id must be non-empty".into(),
                );
            }
            if !providers.contains_key(m.provider.as_str()) {
                issue(
                    line,
                    format!("{place}.provider"),
                    format!("no provider named {:?} is defined", m.provider),
                );
            }
            if !seen_models.insert((&m.provider, &m.model_id)) {
                issue(
                    line,
                    place.clone(),
                    format!(
                        "model_id {:?} is defined twice for provider {:?}",
                        m.model_id, m.provider
                    ),
                );
            }
            if m.is_default {
                *defaults.entry(&m.provider).or_default() += 1;
                if defaults[m.provider.as_str()] == 2 {
                    issue(
                        line,
                        format!("{place}.is_default"),
                        format!("provider {:?} already has a default model", m.provider),
                    );
                }
            }
            if !matches!(m.normalized_model_type(), "chat" | "vlm" | "embedding") {
                issue(
                    line,
                    format!("{place}.model_type"),
                    "must be chat (or llm), vlm or embedding".into(),
                );
            }
            if !matches!(m.status.as_str(), "active" | "inactive" | "deprecated") {
                issue(
                    line,
                    format!("{place}.status"),
                    "must be active, inactive or deprecated".into(),
                );
            }
            for (field, value) in [
                ("cost_input_per_million", &m.cost_input_per_million),
                ("cost_output_per_million", &m.cost_output_per_million),
                (
                    "cost_cache_read_per_million",
                    &m.cost_cache_read_per_million,
                ),
                (
                    "cost_cache_write_per_million",
                    &m.cost_cache_write_per_million,
                ),
            ] {
                if let Some(v) = value {
                    if let Err(e) = parse_price(v) {
                        issue(line, format!("{place}.{field}"), e);
                    }
                }
            }
            if let Some(d) = &m.deprecation_date {
                if chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_err() {
                    issue(
                        line,
                        format!("{place}.deprecation_date"),
                        "must be a date like 2026-12-31".into(),
                    );
                }
            }
        }

        for (i, r) in self.routes.iter().enumerate() {
            let line = Some(line_of(text, r.span().start));
            let r = r.get_ref();
            let place = format!("routes[{i}] ({})", r.name);
            if names.contains(r.name.as_str()) {
                issue(
                    line,
                    place.clone(),
                    "a route must not share its name with a model".into(),
                );
            }
            if !matches!(
                r.strategy.as_str(),
                "fallback" | "cheapest" | "lowest_latency" | "least_busy" | "weighted"
            ) {
                issue(
                    line,
                    format!("{place}.strategy"),
                    "must be fallback, cheapest, lowest_latency, least_busy or weighted".into(),
                );
            }
            if r.targets.is_empty() {
                issue(line, format!("{place}.targets"), "is empty".into());
            }
            for t in &r.targets {
                let known = match t.split_once('/') {
                    Some((p, id)) => seen_models.contains(&(p, id)),
                    None => names.contains(t.as_str()),
                };
                if !known {
                    issue(
                        line,
                        format!("{place}.targets"),
                        format!("{t:?} is neither a model name nor a provider/model_id defined in this file"),
                    );
                }
            }
        }
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        let addr = self.server.metrics_listen.as_ref()?;
        Some(addr.parse().expect("validated by Config::validate"))
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.server
            .listen
            .parse()
            .expect("validated by Config::validate")
    }
}

/// Prices are exact decimal strings; a float would already have lost the exact value.
pub fn parse_price(v: &str) -> Result<Decimal, String> {
    let d: Decimal = v
        .trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a decimal number"))?;
    if d.is_sign_negative() {
        return Err(format!("{v:?} is negative; prices must be >= 0"));
    }
    Ok(d)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<LoadedConfig, ConfigError> {
        Config::from_str_at(text, Path::new("test.toml"))
    }

    #[test]
    fn shipped_config_is_valid() {
        let text = include_str!("../../config.toml");
        let loaded = load(text).unwrap_or_else(|e| panic!("{e}"));
        assert!(loaded.config.providers.len() >= 7);
        assert!(loaded
            .config
            .providers
            .iter()
            .any(|p| p.get_ref().api == Api::Mock));
        // every chat model says whether it takes images
        for m in &loaded.config.models {
            let m = m.get_ref();
            if m.normalized_model_type() == "chat" {
                assert!(m.supports_vision.is_some(), "{}", m.name);
            }
        }
    }

    #[test]
    fn the_seeds_model_type_llm_is_chat() {
        let text = "[[providers]]\nname='m'\napi='mock'\n[[models]]\nname='x'\nprovider='m'\nmodel_id='x'\nmodel_type='llm'\n";
        let loaded = load(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            loaded.config.models[0].get_ref().normalized_model_type(),
            "chat"
        );
        let err = load(&text.replace("'llm'", "'llama'")).unwrap_err();
        assert!(
            err.to_string()
                .contains("must be chat (or llm), vlm or embedding"),
            "{err}"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = r#"
[server]
listen = "nowhere"

[[providers]]
name = "a"
api = "openai"
base_url = "ftp://x"

[[models]]
name = "m"
provider = "nope"
model_id = "m1"
cost_input_per_million = "-1"
cost_output_per_million = "abc"
"#;
        let err = load(text).unwrap_err();
        let all = err.to_string();
        assert!(all.contains("server.listen"), "{all}");
        assert!(all.contains("line 5: providers[0] (a).base_url"), "{all}");
        assert!(all.contains("line 10: models[0] (m).provider"), "{all}");
        assert!(
            all.contains("cost_input_per_million: \"-1\" is negative"),
            "{all}"
        );
        assert!(
            all.contains("cost_output_per_million: \"abc\" is not a decimal"),
            "{all}"
        );
        assert_eq!(err.issues.len(), 5, "{all}");
    }

    #[test]
    fn syntax_errors_and_unknown_fields_name_the_line() {
        let err = load("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
        assert_eq!(err.issues[0].line, Some(3), "{err}");
        assert!(err.to_string().contains("lisen"), "{err}");
        let err = load("[server\n").unwrap_err();
        assert_eq!(err.issues[0].place, "syntax");
    }

    #[test]
    fn float_prices_are_refused() {
        let text = "[[providers]]\nname='m'\napi='mock'\n[[models]]\nname='x'\nprovider='m'\nmodel_id='x'\ncost_input_per_million=0.15\n";
        let err = load(text).unwrap_err();
        assert!(err.to_string().contains("expected a string"), "{err}");
    }

    #[test]
    fn duplicate_defaults_and_model_ids_are_refused() {
        let text = "[[providers]]\nname='m'\napi='mock'\n\
            [[models]]\nname='x'\nprovider='m'\nmodel_id='x'\nis_default=true\n\
            [[models]]\nname='y'\nprovider='m'\nmodel_id='x'\nis_default=true\n";
        let err = load(text).unwrap_err();
        let all = err.to_string();
        assert!(all.contains("already has a default model"), "{all}");
        assert!(all.contains("defined twice for provider"), "{all}");
    }

    #[test]
    fn unset_env_reference_is_an_error_except_for_optional_secrets() {
        let text = "[database]\nurl='env:TOLLGATE_TEST_SURELY_UNSET'\n[auth]\nmaster_key='env:TOLLGATE_TEST_SURELY_UNSET'\n";
        let err = load(text).unwrap_err();
        assert_eq!(err.issues.len(), 1, "{err}");
        assert_eq!(err.issues[0].place, "database.url");
    }

    #[test]
    fn a_master_key_no_client_could_send_is_refused() {
        let key = "m".repeat(MAX_KEY_BYTES + 1);
        let err = load(&format!("[auth]\nmaster_key = '{key}'\n")).unwrap_err();
        assert_eq!(err.issues.len(), 1, "{err}");
        assert_eq!(err.issues[0].place, "auth.master_key");
        assert!(err.to_string().contains("longer than 4096 bytes"), "{err}");
        let key = "m".repeat(MAX_KEY_BYTES);
        assert!(load(&format!("[auth]\nmaster_key = '{key}'\n")).is_ok());
    }

    #[test]
    fn connection_limits_must_be_usable() {
        let err = load("[server]\nidle_timeout_secs = 0\nmax_connections = 0\n").unwrap_err();
        let places: Vec<&str> = err.issues.iter().map(|i| i.place.as_str()).collect();
        assert_eq!(
            places,
            ["server.idle_timeout_secs", "server.max_connections"],
            "{err}"
        );
        let ok = load("[server]\nidle_timeout_secs = 5\nmax_connections = 2\n").unwrap();
        assert_eq!(ok.config.server.idle_timeout_secs, 5);
        assert_eq!(ok.config.server.max_connections, 2);
    }

    #[test]
    fn metrics_access_settings_are_checked() {
        let err = load(
            "[server]\nlisten = '127.0.0.1:8080'\nmetrics_listen = '127.0.0.1:8080'\nmetrics_token = 'short'\n",
        )
        .unwrap_err();
        let all = err.to_string();
        assert!(
            all.contains("server.metrics_listen: must differ from server.listen"),
            "{all}"
        );
        assert!(
            all.contains("server.metrics_token: must be 16 to 4096 bytes long"),
            "{all}"
        );
        let err = load("[server]\nmetrics_listen = 'nowhere'\n").unwrap_err();
        assert_eq!(err.issues[0].place, "server.metrics_listen", "{err}");
        // An unset variable must not leave /metrics open.
        let err = load("[server]\nmetrics_token = 'env:TOLLGATE_TEST_SURELY_UNSET'\n").unwrap_err();
        assert_eq!(err.issues[0].place, "server.metrics_token", "{err}");
        let ok = load("[server]\nmetrics_listen = '127.0.0.1:9091'\n").unwrap();
        assert_eq!(
            ok.config.metrics_addr(),
            Some("127.0.0.1:9091".parse().unwrap())
        );
    }
}
