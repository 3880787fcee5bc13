//! `config.toml`: the file schema, `env:NAME` references and validation.
//!
//! Server settings live only here. `[[providers]]`, `[[models]]` and `[[routes]]` are a
//! declarative description of the registry that `store::sync_config` writes into the database.
//! Validation collects every problem with its place (line and table) instead of stopping at
//! the first, so `tollgate check-config` can tell an admin everything that is wrong at once.
//!
//! This module is the bottom layer: it imports nothing else from the crate, and the runtime
//! modules take their settings' types from here.

mod enums;
mod env;
mod schema;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use enums::{
    Api, CacheBackend, Choice, LogFormat, ModelStatus, ModelType, OnRedisFailure, Strategy,
};
pub use schema::{
    AuthConfig, BreakerConfig, CacheConfig, Config, DatabaseConfig, ModelConfig, ProviderConfig,
    ProviderTimeouts, RedisConfig, RouteConfig, ServerConfig, TasksConfig, TelemetryConfig,
    UsageConfig, DEFAULT_CACHE_BYTES, MAX_KEY_BYTES,
};

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

/// What loading found so far: problems that refuse the file, and warnings that do not.
#[derive(Debug, Default)]
struct Findings {
    issues: Vec<ConfigIssue>,
    warnings: Vec<String>,
}

impl Findings {
    fn issue(&mut self, line: Option<usize>, place: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            line,
            place: place.into(),
            message: message.into(),
        });
    }

    fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
    }
}

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
        let mut config: Config = toml::from_str(text).map_err(|e| {
            fail(vec![ConfigIssue {
                line: e.span().map(|s| line_of(text, s.start)),
                place: "syntax".into(),
                message: e.message().trim().to_string(),
            }])
        })?;
        let mut found = Findings::default();
        env::resolve(&mut config, &mut found);
        validate::validate(&config, text, &mut found);
        if found.issues.is_empty() {
            Ok(LoadedConfig {
                config,
                path: path.to_owned(),
                warnings: found.warnings,
            })
        } else {
            Err(fail(found.issues))
        }
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        let addr = self.server.metrics_listen.as_ref()?;
        Some(addr.parse().expect("checked when the config was loaded"))
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.server
            .listen
            .parse()
            .expect("checked when the config was loaded")
    }
}

/// The 1-based line of a byte offset in the file.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}
