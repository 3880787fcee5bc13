//! Reloading the configuration while serving: config.toml is read again, its registry synced
//! into the database, a new snapshot built and swapped in, and the settings a running gateway
//! can change applied. A file that would break the running gateway is refused whole.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Mutex;

use super::edge::Edge;
use super::App;
use crate::config::Config;
use crate::proxy::Runtime;
use crate::registry::Snapshot;
use crate::store::SyncReport;

/// The settings a reload applies to the running gateway. Every other setting outside the
/// registry (`[[providers]]`, `[[models]]`, `[[routes]]`, which the sync applies) keeps its
/// start-up value until a restart, and a reload that changes one says so.
const RUNTIME_SETTINGS: [&str; 8] = [
    "server.request_timeout_secs",
    "server.max_body_bytes",
    "server.max_response_bytes",
    "server.metrics_token",
    "server.allow_open_on_public_address",
    "auth.require_api_key",
    "auth.master_key",
    "auth.key_cache_ttl_secs",
];

/// The config files a gateway has seen: the one it started with and the last one applied.
pub struct Reloader {
    pub config_path: PathBuf,
    /// The config the gateway started with: what every setting outside `RUNTIME_SETTINGS`
    /// still runs with.
    pub started: Config,
    /// The config the last reload applied (the snapshot was built from it, keys written in the
    /// file included). Locked for a whole reload, so reloads run one at a time.
    pub applied: Mutex<Config>,
}

impl Reloader {
    pub fn new(config: &Config, config_path: PathBuf) -> Reloader {
        Reloader {
            config_path,
            started: config.clone(),
            applied: Mutex::new(config.clone()),
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
            deactivated = self.sync.deactivated_models,
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

    async fn apply_file(&self) -> anyhow::Result<ReloadReport> {
        let reloader = &self.reloader;
        let mut applied = reloader.applied.lock().await;
        let loaded = Config::load(&reloader.config_path)?;
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
        let new = &loaded.config;
        self.check_reloadable(&applied, new)?;
        let gw = &self.gateway;
        let sync = gw.db.sync_config(new).await?;
        let rows = gw.db.load_registry().await?;
        let snapshot = Snapshot::build(&rows, new, Some(&gw.registry.load()), gw.shared());
        let is_runtime = |s: &String| RUNTIME_SETTINGS.contains(&s.as_str());
        let report = ReloadReport {
            sync,
            deployments: snapshot.deployment_count,
            applied: changed_settings(&applied, new)
                .into_iter()
                .filter(is_runtime)
                .collect(),
            restart_required: changed_settings(&reloader.started, new)
                .into_iter()
                .filter(|s| !is_runtime(s))
                .collect(),
        };
        gw.install(snapshot);
        if !report.applied.is_empty() {
            // A request may meet the new runtime with the old edge checks for an instant:
            // each is whole and consistent on its own.
            let running = gw.runtime.load();
            let runtime = Runtime::new(&gw.db, new, Some((&running, &applied)));
            gw.runtime.store(Arc::new(runtime));
            self.edge.store(Arc::new(Edge::new(new, &reloader.started)));
        }
        *applied = loaded.config;
        Ok(report)
    }

    /// Rebuilds the snapshot from the database's rows, after the admin API changed them.
    pub async fn refresh_registry(&self) -> anyhow::Result<()> {
        let applied = self.reloader.applied.lock().await;
        let gw = &self.gateway;
        let rows = gw.db.load_registry().await?;
        let previous = gw.registry.load();
        gw.install(Snapshot::build(
            &rows,
            &applied,
            Some(&previous),
            gw.shared(),
        ));
        Ok(())
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

/// The settings (`section.key`) whose values differ between two configs. The registry
/// (`[[providers]]`, `[[models]]`, `[[routes]]`) is not among them: the sync applies it.
fn changed_settings(old: &Config, new: &Config) -> Vec<String> {
    let sections = |c: &Config| {
        serde_json::json!({
            "server": c.server, "database": c.database, "redis": c.redis,
            "auth": c.auth, "usage": c.usage, "circuit_breaker": c.circuit_breaker,
        })
    };
    let (old, new) = (sections(old), sections(new));
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
