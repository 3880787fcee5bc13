//! Reloading the configuration while serving: config.toml is read again, its registry synced
//! into the database, a new snapshot built from the database's rows and swapped in, and the
//! settings a running gateway can change applied. A file that would break the running gateway
//! is refused whole. The same rebuild follows a change another writer (the admin API, another
//! instance) made to the registry's rows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::edge::Edge;
use super::App;
use crate::config::Config;
use crate::proxy::Runtime;
use crate::registry::{ProviderKeys, Snapshot};
use crate::secrets::Sealer;
use crate::store::SyncReport;

/// The settings a reload applies to the running gateway. Every other setting outside the
/// registry (`[[providers]]`, `[[models]]`, `[[routes]]`, which the sync applies) keeps its
/// start-up value until a restart, and a reload that changes one says so.
const RUNTIME_SETTINGS: [&str; 17] = [
    "server.request_timeout_secs",
    "server.cors_allowed_origins",
    "server.max_body_bytes",
    "server.max_response_bytes",
    "server.metrics_token",
    "server.allow_open_on_public_address",
    "auth.require_api_key",
    "auth.master_key",
    "auth.key_cache_ttl_secs",
    // A changed `[cache]` starts a new, empty cache.
    "cache.enabled",
    "cache.ttl_secs",
    "cache.backend",
    "cache.max_bytes",
    "cache.max_entries",
    "cache.max_entry_bytes",
    "cache.share_across_projects",
    "cache.redis_timeout_ms",
];

/// The config files a gateway has seen: the one it started with and the last one applied.
pub struct Reloader {
    pub config_path: PathBuf,
    /// The config the gateway started with: what every setting outside `RUNTIME_SETTINGS`
    /// still runs with.
    pub started: Config,
    /// The config the last reload applied (the snapshot's provider keys come from its master
    /// key and the keys written in it). Locked for a whole reload or registry rebuild, so they
    /// run one at a time and install their snapshots in the order they read the rows.
    pub applied: Mutex<Config>,
    /// The SHA-256 of the file's text as the last reload (or the start) read it: the watcher
    /// does not reload a file whose text did not change.
    read: std::sync::Mutex<Option<[u8; 32]>>,
}

impl Reloader {
    pub fn new(config: &Config, config_path: PathBuf) -> Reloader {
        let read = std::fs::read(&config_path).ok().map(|text| digest(&text));
        Reloader {
            config_path,
            started: config.clone(),
            applied: Mutex::new(config.clone()),
            read: std::sync::Mutex::new(read),
        }
    }

    /// Reads the file and remembers that this text was read.
    fn read_file(&self) -> anyhow::Result<String> {
        let text = std::fs::read_to_string(&self.config_path)
            .with_context(|| format!("cannot read {}", self.config_path.display()))?;
        *self.read.lock().unwrap_or_else(|e| e.into_inner()) = Some(digest(text.as_bytes()));
        Ok(text)
    }

    /// Whether the file's text differs from the one last read (an unreadable file counts as
    /// changed: the reload then says why it cannot read it).
    pub(super) fn file_changed(&self) -> bool {
        let now = std::fs::read(&self.config_path).ok().map(|t| digest(&t));
        now.is_none() || now != *self.read.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn digest(text: &[u8]) -> [u8; 32] {
    Sha256::digest(text).into()
}

/// The master key's sealer, which seals the provider keys written in the file into the
/// database and opens the sealed keys there.
pub(super) fn sealer(config: &Config) -> Option<Sealer> {
    config.auth.master_key.as_deref().map(Sealer::new)
}

/// What a snapshot's build opens provider keys with: the master key's sealer, and the keys
/// written in the file, which only a file without a master key leaves out of the database.
pub(super) fn provider_keys(config: &Config) -> ProviderKeys {
    let in_file: HashMap<String, String> = config
        .providers
        .iter()
        .map(|p| p.get_ref())
        .filter_map(|p| {
            let key = p.api_key.as_ref().filter(|k| !k.starts_with("env:"))?;
            Some((p.name.clone(), key.clone()))
        })
        .collect();
    ProviderKeys::new(sealer(config), in_file)
}

/// Without a master key, a key written in the file is not stored: other instances on the
/// database serve the provider only if their own file has the key. Said at every load.
pub(super) fn warn_keys_kept_in_memory(config: &Config, path: &Path) {
    if config.auth.master_key.is_some() {
        return;
    }
    for p in config.providers.iter().map(|p| p.get_ref()) {
        if p.api_key.as_deref().is_some_and(|k| !k.starts_with("env:")) {
            tracing::warn!(
                provider = %p.name,
                "the provider's api_key is written in {} and auth.master_key is not set: the \
                 key stays in this process's memory, and other instances on the database serve \
                 the provider only if their own file has it. Set auth.master_key (the same on \
                 every instance) to store it sealed in the database, or use \"env:NAME\"",
                path.display()
            );
        }
    }
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// What the config sync wrote into the registry.
    pub sync: SyncReport,
    /// Deployments serving after the reload.
    pub deployments: usize,
    /// Settings that changed and now apply, e.g. `auth.require_api_key`.
    pub applied: Vec<String>,
    /// Settings that differ from the running ones and apply only after a restart, e.g.
    /// `server.listen`: named at every reload until the gateway restarts.
    pub restart_required: Vec<String>,
}

impl ReloadReport {
    fn log(&self, path: &Path) {
        tracing::info!(
            providers = self.sync.providers,
            models = self.sync.models,
            routes = self.sync.routes,
            deactivated = self.sync.deactivated_models,
            removed_routes = self.sync.removed_routes,
            deployments = self.deployments,
            applied = ?self.applied,
            "config reloaded"
        );
        if !self.restart_required.is_empty() {
            tracing::warn!(
                settings = ?self.restart_required,
                "{} changes settings that apply only after a restart; until then they keep their running values",
                path.display()
            );
        }
    }
}

impl App {
    /// Re-reads config.toml, syncs its registry into the database, swaps in a new snapshot
    /// and applies the `RUNTIME_SETTINGS`; the report names what needs a restart instead. A
    /// file with errors, or one that would take every model it serves now out of service, is
    /// refused before anything is written, and everything running keeps serving.
    pub async fn reload(&self) -> anyhow::Result<ReloadReport> {
        let result = self.apply_file().await;
        let label = if result.is_ok() { "success" } else { "error" };
        self.gateway
            .metrics
            .config_reloads_total
            .with_label_values(&[label])
            .inc();
        match &result {
            Ok(report) => report.log(&self.reloader.config_path),
            Err(e) => tracing::error!(
                "reload of {} refused, the running configuration keeps serving: {e:#}",
                self.reloader.config_path.display()
            ),
        }
        result
    }

    /// Reloads when the file's text changed since it was last read (the watcher's call: an
    /// editor that saves an unchanged file, or a write the last reload already read, applies
    /// nothing). `None` when unchanged.
    pub(super) async fn reload_if_changed(&self) -> Option<anyhow::Result<ReloadReport>> {
        if !self.reloader.file_changed() {
            tracing::debug!(
                "{} changed on disk but its text is the one last read",
                self.reloader.config_path.display()
            );
            return None;
        }
        tracing::info!(
            "{} changed on disk: reloading",
            self.reloader.config_path.display()
        );
        Some(self.reload().await)
    }

    async fn apply_file(&self) -> anyhow::Result<ReloadReport> {
        let reloader = &self.reloader;
        let mut applied = reloader.applied.lock().await;
        let text = reloader.read_file()?;
        let loaded = Config::from_str_at(&text, &reloader.config_path)?;
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
        let new = &loaded.config;
        self.check_reloadable(&applied, new)?;
        warn_keys_kept_in_memory(new, &reloader.config_path);
        let gw = &self.gateway;
        let sync = gw.db.sync_config(new, sealer(new).as_ref()).await?;
        let deployments = self.rebuild(new).await?;
        let is_runtime = |s: &String| RUNTIME_SETTINGS.contains(&s.as_str());
        let report = ReloadReport {
            sync,
            deployments,
            applied: changed_settings(&applied, new)
                .into_iter()
                .filter(is_runtime)
                .collect(),
            restart_required: changed_settings(&reloader.started, new)
                .into_iter()
                .filter(|s| !is_runtime(s))
                .collect(),
        };
        if !report.applied.is_empty() {
            // A request may meet the new runtime with the old edge checks for an instant:
            // each is whole and consistent on its own.
            let running = gw.runtime.load();
            let runtime = Runtime::new(&gw.db, new, Some((&running, &applied)), &gw.metrics);
            gw.runtime.store(Arc::new(runtime));
            self.edge.store(Arc::new(Edge::new(new, &reloader.started)));
        }
        *applied = loaded.config;
        Ok(report)
    }

    /// Rebuilds the snapshot from the database's rows, after they changed: through this
    /// instance's admin API (before its answer goes out, so the admin's next request sees the
    /// change), or another instance's (see `propagate`). The rows' triggers bumped the registry
    /// version in the change's own transaction, which is what tells the other instances.
    pub async fn refresh_registry(&self) -> anyhow::Result<()> {
        let applied = self.reloader.applied.lock().await;
        self.rebuild(&applied).await.map(|_| ())
    }

    /// Rebuilds the snapshot if it was built at an older version than `version` (checked
    /// again once the lock is held: a reload running meanwhile may have built a newer one).
    /// `None` when it is new enough.
    pub(super) async fn refresh_if_older_than(&self, version: i64) -> Option<anyhow::Result<()>> {
        let applied = self.reloader.applied.lock().await;
        if self.registry_version() >= version {
            return None;
        }
        Some(self.rebuild(&applied).await.map(|_| ()))
    }

    /// The registry version this instance's snapshot was built at.
    pub fn registry_version(&self) -> i64 {
        self.registry_version.load(Ordering::Acquire)
    }

    /// Builds a snapshot from the database's rows and puts it in service; returns its
    /// deployments. The caller holds `applied`'s lock (`config` is the config it guards).
    async fn rebuild(&self, config: &Config) -> anyhow::Result<usize> {
        let gw = &self.gateway;
        // The version is read before the rows: rows read after it are at least as new, so a
        // change committed in between is read once more at the next check, never missed.
        let version = gw.db.registry_version().await?;
        let rows = gw.db.load_registry().await?;
        let snapshot = Snapshot::build(
            &rows,
            &provider_keys(config),
            self.reloader.started.circuit_breaker,
            Some(&gw.registry.load()),
            gw.shared(),
        );
        let deployments = snapshot.deployment_count;
        gw.install(snapshot);
        let version = self
            .registry_version
            .fetch_max(version, Ordering::AcqRel)
            .max(version);
        gw.metrics.registry_version.set(version);
        Ok(deployments)
    }

    /// What a file must not do to a running gateway: open it on a public address, or leave
    /// none of its models serving (an empty or model-less file, every model inactive, every
    /// provider disabled) while models from the running file serve.
    fn check_reloadable(&self, running: &Config, new: &Config) -> anyhow::Result<()> {
        check_open_gateway(new, self.reloader.started.listen_addr())?;
        let snapshot = self.gateway.registry.load();
        let serving_from_file = running.models.iter().any(|m| {
            let m = m.get_ref();
            snapshot
                .resolve(&format!("{}/{}", m.provider, m.model_id))
                .is_some()
        });
        if serving_from_file && !serves_a_model(new) {
            anyhow::bail!(
                "no [[models]] entry would serve (active, at an enabled provider whose key is \
                 set): the file would take every model it declares out of service"
            );
        }
        Ok(())
    }
}

/// Serving without gateway keys on a non-loopback address must be asked for explicitly.
pub(super) fn check_open_gateway(config: &Config, addr: SocketAddr) -> anyhow::Result<()> {
    if !config.auth.require_api_key
        && !addr.ip().is_loopback()
        && !config.server.allow_open_on_public_address
    {
        anyhow::bail!(
            "refusing to serve without API keys on {addr}, which is not a loopback address. \
             Set [auth] require_api_key = true (and create keys with `tollgate keys create`), \
             or set [server] allow_open_on_public_address = true if this is really meant"
        );
    }
    Ok(())
}

/// Whether some `[[models]]` entry would serve once synced: active (or deprecated before its
/// date) at an enabled provider whose `env:` key is set.
fn serves_a_model(config: &Config) -> bool {
    let today = chrono::Utc::now().date_naive();
    let ready: std::collections::HashSet<&str> = config
        .providers
        .iter()
        .map(|p| p.get_ref())
        .filter(|p| p.enabled && p.key_is_available())
        .map(|p| p.name.as_str())
        .collect();
    config.models.iter().map(|m| m.get_ref()).any(|m| {
        ready.contains(m.provider.as_str())
            && crate::registry::in_service(
                m.status.get().as_str(),
                m.deprecation_date.as_deref(),
                today,
            )
    })
}

/// The settings outside the registry, by section, as JSON: what reloads compare and
/// `GET /admin/config` shows.
pub(super) fn settings_of(c: &Config) -> serde_json::Value {
    serde_json::json!({
        "server": c.server, "database": c.database, "redis": c.redis,
        "auth": c.auth, "usage": c.usage, "circuit_breaker": c.circuit_breaker, "cache": c.cache,
        "tasks": c.tasks, "telemetry": c.telemetry,
    })
}

/// The settings (`section.key`) whose values differ between two configs. The registry
/// (`[[providers]]`, `[[models]]`, `[[routes]]`) is not among them: the sync applies it.
fn changed_settings(old: &Config, new: &Config) -> Vec<String> {
    let (old, new) = (settings_of(old), settings_of(new));
    let mut changed = Vec::new();
    for (section, before) in old.as_object().into_iter().flatten() {
        let after = &new[section];
        match (before.as_object(), after.as_object()) {
            (Some(b), Some(a)) => changed.extend(
                b.keys()
                    .filter(|k| b.get(*k) != a.get(*k))
                    .map(|k| format!("{section}.{k}")),
            ),
            // `[redis]` added or removed
            _ if before != after => changed.push(section.clone()),
            _ => {}
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_str_at(text, Path::new("t.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
            .config
    }

    /// The check runs at start and on every reload (which can turn keys off).
    #[test]
    fn an_open_gateway_on_a_public_address_must_be_asked_for() {
        let open = config("[auth]\nrequire_api_key = false\n");
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(check_open_gateway(&open, public).is_err());
        assert!(check_open_gateway(&open, "127.0.0.1:8080".parse().unwrap()).is_ok());
        let asked = config(
            "[server]\nallow_open_on_public_address = true\n[auth]\nrequire_api_key = false\n",
        );
        assert!(check_open_gateway(&asked, public).is_ok());
    }

    #[test]
    fn changed_settings_are_named_by_section_and_key() {
        let old = config("");
        let new = config(
            "[server]\nlisten = \"127.0.0.1:9\"\n[auth]\nmaster_key = \"s\"\n[redis]\nurl = \"redis://127.0.0.1:1\"\n",
        );
        assert_eq!(
            changed_settings(&old, &new),
            ["auth.master_key", "redis", "server.listen"]
        );
        assert!(changed_settings(&new, &new).is_empty());
    }
}
