//! Validation: one function per section, each adding what is wrong to the findings with its
//! place. `[redis]`, `[usage]` and `[circuit_breaker]` have no rules beyond their types.
//!
//! A value still holding an `env:` reference was reported by `env::resolve` already, so it is
//! not checked again here.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use rust_decimal::Decimal;
use toml::Spanned;

use super::env::{is_set, reference};
use super::{
    line_of, Api, AuthConfig, CacheBackend, Config, DatabaseConfig, Findings, ModelConfig,
    ProviderConfig, RouteConfig, ServerConfig, TasksConfig, TelemetryConfig, MAX_KEY_BYTES,
};

pub(super) fn validate(config: &Config, text: &str, found: &mut Findings) {
    server(&config.server, found);
    auth(&config.auth, found);
    database(&config.database, found);
    tasks(&config.tasks, found);
    cache(config, found);
    telemetry(&config.telemetry, text, found);
    let providers = providers(&config.providers, text, found);
    let models = models(&config.models, &providers, text, found);
    routes(&config.routes, &models, text, found);
}

fn unresolved(value: &str) -> bool {
    reference(value).is_some()
}

fn server(s: &ServerConfig, found: &mut Findings) {
    if !unresolved(&s.listen) && s.listen.parse::<SocketAddr>().is_err() {
        let message = format!("{:?} is not an address like 127.0.0.1:8080", s.listen);
        found.issue(None, "server.listen", message);
    }
    for (key, value) in [
        ("server.max_body_bytes", s.max_body_bytes),
        ("server.max_response_bytes", s.max_response_bytes),
    ] {
        if value == 0 {
            found.issue(None, key, "must be greater than 0");
        }
    }
    metrics(s, found);
    cors(s, found);
    if !(1..=86_400).contains(&s.idle_timeout_secs) {
        found.issue(
            None,
            "server.idle_timeout_secs",
            "must be between 1 and 86400",
        );
    }
    if !(1..=1_000_000).contains(&s.max_connections) {
        found.issue(
            None,
            "server.max_connections",
            "must be between 1 and 1000000",
        );
    }
    if !s.log_format.is_valid() {
        found.issue(None, "server.log_format", "must be \"text\" or \"json\"");
    }
}

/// `server.cors_allowed_origins`: `"*"` or origins as a browser sends them
/// (`scheme://host[:port]`, lower case, no path), since they are compared byte for byte.
fn cors(s: &ServerConfig, found: &mut Findings) {
    for origin in &s.cors_allowed_origins {
        if origin == "*" || unresolved(origin) {
            continue;
        }
        let uri = origin.parse::<http::Uri>().ok();
        // Scheme and authority written back must be the whole text: no path, no slash.
        let exact = uri.as_ref().is_some_and(|u| {
            let (Some(scheme @ ("http" | "https")), Some(authority)) =
                (u.scheme_str(), u.authority())
            else {
                return false;
            };
            !authority.as_str().contains('@')
                && *origin == format!("{scheme}://{authority}")
                && *origin == origin.to_ascii_lowercase()
        });
        if !exact {
            let message = format!(
                "{origin:?} is not an origin like https://dash.example.com (scheme and host in lower case, no path) or \"*\""
            );
            found.issue(None, "server.cors_allowed_origins", message);
        }
    }
}

/// `server.metrics_listen` and `server.metrics_token`.
fn metrics(s: &ServerConfig, found: &mut Findings) {
    if let Some(m) = &s.metrics_listen {
        if !unresolved(m) && m.parse::<SocketAddr>().is_err() {
            let message = format!("{m:?} is not an address like 127.0.0.1:9091");
            found.issue(None, "server.metrics_listen", message);
        } else if m
            .parse::<SocketAddr>()
            .is_ok_and(|m| m.port() != 0 && s.listen.parse() == Ok(m))
        {
            found.issue(
                None,
                "server.metrics_listen",
                "must differ from server.listen",
            );
        }
    }
    if let Some(t) = &s.metrics_token {
        if !unresolved(t) && !(16..=MAX_KEY_BYTES).contains(&t.len()) {
            let message = format!("must be 16 to {MAX_KEY_BYTES} bytes long");
            found.issue(None, "server.metrics_token", message);
        }
    }
}

/// `[tasks]`: each bound within what one instance can hold; a lease long enough to be
/// renewed (every third of it) before it expires; a prompt that fits, JSON-escaped, in the
/// 1 MiB a task's request body may have.
fn tasks(t: &TasksConfig, found: &mut Findings) {
    let ranges: [(&str, u64, u64, u64); 7] = [
        ("tasks.workers", t.workers as u64, 0, 1024),
        ("tasks.max_parallel", t.max_parallel as u64, 1, 64),
        ("tasks.lease_secs", t.lease_secs, 2, 3600),
        ("tasks.max_attempts", u64::from(t.max_attempts), 1, 100),
        ("tasks.poll_interval_ms", t.poll_interval_ms, 50, 60_000),
        (
            "tasks.max_queued_per_project",
            t.max_queued_per_project,
            1,
            1_000_000,
        ),
        (
            "tasks.max_prompt_bytes",
            t.max_prompt_bytes as u64,
            1,
            512 * 1024,
        ),
    ];
    for (key, value, low, high) in ranges {
        if !(low..=high).contains(&value) {
            found.issue(
                None,
                key,
                format!("must be between {low} and {high}, not {value}"),
            );
        }
    }
}

fn auth(a: &AuthConfig, found: &mut Findings) {
    if a.master_key
        .as_ref()
        .is_some_and(|k| k.len() > MAX_KEY_BYTES)
    {
        let message =
            format!("is longer than {MAX_KEY_BYTES} bytes, the longest key a client may send");
        found.issue(None, "auth.master_key", message);
    }
}

fn database(d: &DatabaseConfig, found: &mut Findings) {
    let known_scheme = ["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|s| d.url.starts_with(s));
    if !unresolved(&d.url) && !known_scheme {
        let message = "must start with sqlite:, postgres:// or postgresql://";
        found.issue(None, "database.url", message);
    }
}

/// `[cache]`: a backend it knows, with what that backend needs, and bounds that bound.
fn cache(config: &Config, found: &mut Findings) {
    let c = &config.cache;
    if !c.backend.is_valid() {
        found.issue(None, "cache.backend", "must be \"memory\" or \"redis\"");
    }
    let redis_url = config.redis.as_ref().and_then(|r| r.url.as_ref());
    if c.enabled && c.backend.get() == CacheBackend::Redis && redis_url.is_none() {
        let message = "backend = \"redis\" needs [redis] url (the Redis the cache is kept in)";
        found.issue(None, "cache.backend", message);
    }
    if !(1..=30 * 86_400).contains(&c.ttl_secs) {
        found.issue(
            None,
            "cache.ttl_secs",
            "must be between 1 and 2592000 (30 days)",
        );
    }
    if c.max_bytes.is_some() && c.max_entries.is_some() {
        let message = "set max_bytes (bound by weight) or max_entries (bound by count), not both";
        found.issue(None, "cache.max_entries", message);
    }
    if c.max_bytes == Some(0) || c.max_entries == Some(0) {
        found.issue(
            None,
            "cache",
            "max_bytes and max_entries must be greater than 0",
        );
    }
    if !(1..=64 * 1024 * 1024).contains(&c.max_entry_bytes) {
        let message = "must be between 1 and 67108864 (64 MiB)";
        found.issue(None, "cache.max_entry_bytes", message);
    }
    if !(1..=10_000).contains(&c.redis_timeout_ms) {
        found.issue(
            None,
            "cache.redis_timeout_ms",
            "must be between 1 and 10000",
        );
    }
}

/// `[telemetry]`: an endpoint the exporter can post to, a ratio that is one, and bounds that
/// keep the span queue and each export within bounds.
fn telemetry(t: &TelemetryConfig, text: &str, found: &mut Findings) {
    if let Some(endpoint) = &t.otlp_endpoint {
        let url = endpoint.get_ref();
        if let (false, Err(why)) = (unresolved(url), check_otlp_endpoint(url)) {
            let line = Some(line_of(text, endpoint.span().start));
            // A URL with a password in it is not repeated.
            let shown = match url.contains('@') {
                true => "the URL".to_owned(),
                false => format!("{url:?}"),
            };
            found.issue(line, "telemetry.otlp_endpoint", format!("{shown} {why}"));
        }
    }
    if !(0.0..=1.0).contains(&t.sample_ratio) {
        let message = format!("must be between 0.0 and 1.0, not {}", t.sample_ratio);
        found.issue(None, "telemetry.sample_ratio", message);
    }
    if t.service_name.trim().is_empty() || t.service_name.len() > 255 {
        let message = "must be 1 to 255 bytes long";
        found.issue(None, "telemetry.service_name", message);
    }
    let ranges: [(&str, u64, u64, u64); 3] = [
        ("telemetry.batch_delay_ms", t.batch_delay_ms, 10, 60_000),
        (
            "telemetry.max_queue_spans",
            t.max_queue_spans as u64,
            1,
            1_000_000,
        ),
        (
            "telemetry.export_timeout_ms",
            t.export_timeout_ms,
            100,
            60_000,
        ),
    ];
    for (key, value, low, high) in ranges {
        if !(low..=high).contains(&value) {
            let message = format!("must be between {low} and {high}, not {value}");
            found.issue(None, key, message);
        }
    }
}

/// What is wrong with an OTLP/HTTP endpoint, if anything. Credentials in the URL are refused:
/// they would show wherever the URL does; a collector's key goes in a header instead.
fn check_otlp_endpoint(url: &str) -> Result<(), &'static str> {
    let uri = url
        .parse::<http::Uri>()
        .map_err(|_| "is not a URL like http://127.0.0.1:4318")?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err("is not an http(s) URL like http://127.0.0.1:4318");
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("must not carry credentials: set them in OTEL_EXPORTER_OTLP_HEADERS");
    }
    if uri.query().is_some() {
        return Err("must not have a query");
    }
    Ok(())
}

/// One entry of an array of tables, as issues name it: `line 12: models[3] (gpt-4o)`.
struct Entry {
    line: Option<usize>,
    place: String,
}

impl Entry {
    fn new<T>(text: &str, item: &Spanned<T>, table: &str, index: usize, name: &str) -> Entry {
        Entry {
            line: Some(line_of(text, item.span().start)),
            place: format!("{table}[{index}] ({name})"),
        }
    }

    /// A problem with the entry as a whole.
    fn issue(&self, found: &mut Findings, message: impl Into<String>) {
        found.issue(self.line, self.place.clone(), message);
    }

    /// A problem with one of its fields.
    fn field_issue(&self, found: &mut Findings, field: &str, message: impl Into<String>) {
        found.issue(self.line, format!("{}.{field}", self.place), message);
    }
}

/// Returns the names of the providers defined, which models refer to.
fn providers<'a>(
    list: &'a [Spanned<ProviderConfig>],
    text: &str,
    found: &mut Findings,
) -> HashSet<&'a str> {
    let mut names = HashSet::new();
    for (i, item) in list.iter().enumerate() {
        let p = item.get_ref();
        let entry = Entry::new(text, item, "providers", i, &p.name);
        if p.name.is_empty() || p.name.contains('/') {
            entry.issue(found, "name must be non-empty and must not contain '/'");
        }
        if !names.insert(p.name.as_str()) {
            entry.issue(found, "a provider with this name is defined twice");
        }
        provider_endpoint(p, &entry, found);
        api_key_warning(p, found);
    }
    names
}

/// `base_url` and, for Azure, `api_version`.
fn provider_endpoint(p: &ProviderConfig, entry: &Entry, found: &mut Findings) {
    if p.api != Api::Mock && !unresolved(&p.base_url) {
        let is_http_url = p.base_url.parse::<http::Uri>().is_ok_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
        });
        if !is_http_url {
            let message = format!("{:?} is not an http(s) URL", p.base_url);
            entry.field_issue(found, "base_url", message);
        }
    }
    if p.api == Api::Azure && p.api_version.is_none() {
        let message = "azure providers need api_version (e.g. \"2024-10-21\")";
        entry.field_issue(found, "api_version", message);
    }
}

/// A provider key is best an `env:` reference; a missing one is worth a word, not an error.
fn api_key_warning(p: &ProviderConfig, found: &mut Findings) {
    let name = &p.name;
    match p.api_key.as_deref() {
        Some(key) => match reference(key) {
            Some(var) if p.enabled && !is_set(var) => found.warn(format!(
                "provider {name}: {var} is not set, the provider stays disabled until it is"
            )),
            Some(_) => {}
            None => found.warn(format!(
                "provider {name}: api_key is written in the file; prefer \"env:NAME\""
            )),
        },
        None if p.api != Api::Mock && p.enabled => found.warn(format!(
            "provider {name}: no api_key; requests are sent without one"
        )),
        None => {}
    }
}

/// The names and deployments the models define, which routes refer to.
#[derive(Default)]
struct Defined<'a> {
    names: HashSet<&'a str>,
    /// `(provider, model_id)`
    deployments: HashSet<(&'a str, &'a str)>,
}

fn models<'a>(
    list: &'a [Spanned<ModelConfig>],
    providers: &HashSet<&str>,
    text: &str,
    found: &mut Findings,
) -> Defined<'a> {
    let mut defined = Defined::default();
    let mut defaults: HashMap<&str, usize> = HashMap::new();
    for (i, item) in list.iter().enumerate() {
        let m = item.get_ref();
        let entry = Entry::new(text, item, "models", i, &m.name);
        defined.names.insert(&m.name);
        if m.name.is_empty() || m.model_id.is_empty() {
            entry.issue(found, "name and model_id must be non-empty");
        }
        if !providers.contains(m.provider.as_str()) {
            let message = format!("no provider named {:?} is defined", m.provider);
            entry.field_issue(found, "provider", message);
        }
        if !defined.deployments.insert((&m.provider, &m.model_id)) {
            let message = format!(
                "model_id {:?} is defined twice for provider {:?}",
                m.model_id, m.provider
            );
            entry.issue(found, message);
        }
        if m.is_default {
            let count = defaults.entry(&m.provider).or_default();
            *count += 1;
            if *count == 2 {
                let message = format!("provider {:?} already has a default model", m.provider);
                entry.field_issue(found, "is_default", message);
            }
        }
        model_fields(m, &entry, found);
    }
    defined
}

/// The checks of one model that need no other entry.
fn model_fields(m: &ModelConfig, entry: &Entry, found: &mut Findings) {
    if !m.model_type.is_valid() {
        entry.field_issue(
            found,
            "model_type",
            "must be chat (or llm), vlm or embedding",
        );
    }
    if !m.status.is_valid() {
        entry.field_issue(found, "status", "must be active, inactive or deprecated");
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
        if let Some(Err(message)) = value.as_deref().map(parse_price) {
            entry.field_issue(found, field, message);
        }
    }
    let is_date = |d: &String| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok();
    if m.deprecation_date.as_ref().is_some_and(|d| !is_date(d)) {
        entry.field_issue(found, "deprecation_date", "must be a date like 2026-12-31");
    }
}

/// Prices are exact decimal strings; a float would already have lost the exact value.
fn parse_price(v: &str) -> Result<Decimal, String> {
    let d: Decimal = v
        .trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a decimal number"))?;
    if d.is_sign_negative() {
        return Err(format!("{v:?} is negative; prices must be >= 0"));
    }
    Ok(d)
}

fn routes(list: &[Spanned<RouteConfig>], models: &Defined, text: &str, found: &mut Findings) {
    for (i, item) in list.iter().enumerate() {
        let r = item.get_ref();
        let entry = Entry::new(text, item, "routes", i, &r.name);
        if models.names.contains(r.name.as_str()) {
            entry.issue(found, "a route must not share its name with a model");
        }
        if !r.strategy.is_valid() {
            let message = "must be fallback, cheapest, lowest_latency, least_busy or weighted";
            entry.field_issue(found, "strategy", message);
        }
        if r.targets.is_empty() {
            entry.field_issue(found, "targets", "is empty");
        }
        for t in &r.targets {
            let known = match t.split_once('/') {
                Some(deployment) => models.deployments.contains(&deployment),
                None => models.names.contains(t.as_str()),
            };
            if !known {
                let message = format!(
                    "{t:?} is neither a model name nor a provider/model_id defined in this file"
                );
                entry.field_issue(found, "targets", message);
            }
        }
    }
}
