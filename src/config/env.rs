//! `env:NAME` references, and `DATABASE_URL`, which overrides `[database] url`.
//!
//! Provider keys are not resolved here: the database keeps the reference, never the key's
//! value, and the registry reads the variable when it builds the provider.

use super::{Config, Findings, ProviderConfig};

/// Settings that may be left unset: the feature they enable is then off.
const OPTIONAL_SECRETS: &[&str] = &[
    "auth.master_key",
    "auth.jwt_secret",
    "telemetry.otlp_endpoint",
];

/// The variable a value refers to, if it is an `env:NAME` reference.
pub(super) fn reference(value: &str) -> Option<&str> {
    value.strip_prefix("env:")
}

/// Whether the variable is set to something (an empty one counts as unset).
pub(super) fn is_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty())
}

impl ProviderConfig {
    /// Whether the provider's key can be had: none is needed, it is written in the file, or
    /// its `env:` variable is set.
    pub fn key_is_available(&self) -> bool {
        self.api_key
            .as_deref()
            .and_then(reference)
            .is_none_or(is_set)
    }
}

pub(super) fn resolve(config: &mut Config, found: &mut Findings) {
    resolve_value("database.url", &mut config.database.url, found);
    resolve_option("auth.master_key", &mut config.auth.master_key, found);
    resolve_option("auth.jwt_secret", &mut config.auth.jwt_secret, found);
    if let Some(redis) = &mut config.redis {
        resolve_option("redis.url", &mut redis.url, found);
    }
    let server = &mut config.server;
    resolve_value("server.listen", &mut server.listen, found);
    resolve_option("server.metrics_listen", &mut server.metrics_listen, found);
    // Not optional like the auth secrets: an unset variable must not leave /metrics open.
    resolve_option("server.metrics_token", &mut server.metrics_token, found);
    resolve_telemetry(config, found);
    for p in &mut config.providers {
        let p = p.get_mut();
        let place = format!("providers.{}.base_url", p.name);
        resolve_value(&place, &mut p.base_url, found);
    }
    if let Ok(url) = std::env::var("DATABASE_URL") {
        if !url.is_empty() {
            config.database.url = url;
        }
    }
}

/// `telemetry.otlp_endpoint` as `env:NAME`: an unset variable turns traces off, so one
/// image can run with and without a collector.
fn resolve_telemetry(config: &mut Config, found: &mut Findings) {
    let Some(endpoint) = &mut config.telemetry.otlp_endpoint else {
        return;
    };
    let mut value = Some(std::mem::take(endpoint.get_mut()));
    resolve_option("telemetry.otlp_endpoint", &mut value, found);
    match value {
        Some(v) => *endpoint.get_mut() = v,
        None => config.telemetry.otlp_endpoint = None,
    }
}

fn resolve_value(place: &str, value: &mut String, found: &mut Findings) {
    let mut resolved = Some(std::mem::take(value));
    resolve_option(place, &mut resolved, found);
    *value = resolved.unwrap_or_default();
}

/// A reference to an unset variable is an issue, except for the `OPTIONAL_SECRETS`, which
/// are then left unset with a warning.
fn resolve_option(place: &str, value: &mut Option<String>, found: &mut Findings) {
    let Some(name) = value.as_deref().and_then(reference) else {
        return;
    };
    match std::env::var(name) {
        Ok(set) if !set.is_empty() => *value = Some(set),
        _ if OPTIONAL_SECRETS.contains(&place) => {
            found.warn(format!("{place}: environment variable {name} is not set"));
            *value = None;
        }
        // The reference stays in place, so validation knows not to report it again.
        _ => found.issue(
            None,
            place,
            format!("environment variable {name} is not set"),
        ),
    }
}
