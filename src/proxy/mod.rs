//! The data plane: the gateway's shared state, its start-up and shutdown, and the HTTP server.
//! A request's path through it is in `handler`, phase by phase.

mod admit;
mod answer;
mod attempt;
mod choose;
mod conn;
mod context;
mod edge;
mod handler;
mod meter;
mod opening;
mod ops;
mod outcome;
mod respond;
mod send;
mod stream;

pub use respond::ClientBody;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Mutex};
use tokio::task::JoinHandle;

use crate::auth::Authenticator;
use crate::config::{Config, LoadedConfig};
use crate::limits::{LimitSet, LimitSpec, OnRedisFailure, Shared};
use crate::metering::Metrics;
use crate::registry::{Registry, Snapshot};
use crate::store::{usage_pipeline, Db, SyncReport, UsageSink};
use crate::upstream::UpstreamClient;

// A deployment keeps one upstream URL per endpoint, by the endpoint's index.
const _: () = assert!(crate::providers::Endpoint::COUNT == crate::registry::ENDPOINTS);

/// Everything a request needs, shared by all connections.
pub struct Gateway {
    pub db: Db,
    pub registry: Registry,
    /// The settings a reload can change, swapped whole.
    pub runtime: ArcSwap<Runtime>,
    pub client: UpstreamClient,
    pub usage: UsageSink,
    pub metrics: Arc<Metrics>,
    /// Per-key limit state, by key id (kept while the key is in use).
    key_limits: moka::sync::Cache<String, Arc<LimitSet>>,
    /// Limits shared through Redis, when `[redis] url` is set.
    shared: Option<Shared>,
    /// Keys' and projects' budgets: what is spent and reserved.
    budgets: crate::limits::budget::Ledger,
    config_path: PathBuf,
    /// The config the gateway started with: what every setting outside `RUNTIME_SETTINGS`
    /// still runs with.
    started: Config,
    /// The config the last reload applied (the snapshot was built from it, keys written in the
    /// file included). Locked for a whole reload, so reloads run one at a time.
    applied: Mutex<Config>,
}

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

/// The settings a request reads, in one piece: one atomic load a request, and a reload
/// swaps them all at once.
pub struct Runtime {
    pub auth: Arc<Authenticator>,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// The largest whole answer read from a provider.
    pub max_response_bytes: usize,
    /// The header checks made before anything else (Host, Origin, `/metrics` access): they
    /// follow `require_api_key`, so they are swapped with it.
    edge: edge::Edge,
}

impl Runtime {
    /// The running authenticator (and its cache of looked-up keys) is kept while the auth
    /// settings are the same as in the config it was made from.
    /// `bound` is the config the gateway started with (its listeners' addresses).
    fn new(
        db: &Db,
        config: &Config,
        bound: &Config,
        running: Option<(&Runtime, &Config)>,
    ) -> Runtime {
        let auth = match running {
            Some((runtime, old)) if old.auth == config.auth => runtime.auth.clone(),
            _ => Arc::new(Authenticator::new(
                db.clone(),
                config.auth.require_api_key,
                config.auth.master_key.as_deref(),
                Duration::from_secs(config.auth.key_cache_ttl_secs),
            )),
        };
        Runtime {
            auth,
            request_timeout: Duration::from_secs(config.server.request_timeout_secs),
            max_body_bytes: config.server.max_body_bytes,
            max_response_bytes: config.server.max_response_bytes,
            edge: edge::Edge::new(config, bound),
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

impl Gateway {
    /// A gateway with an empty registry: `install` puts the first snapshot in.
    fn new(
        db: Db,
        config: &Config,
        config_path: PathBuf,
        usage: UsageSink,
        metrics: Arc<Metrics>,
        shared: Option<Shared>,
    ) -> Gateway {
        let budgets = crate::limits::budget::Ledger::new(Arc::new(db.clone()), shared.clone());
        Gateway {
            runtime: ArcSwap::from_pointee(Runtime::new(&db, config, config, None)),
            db,
            registry: Registry::new(Snapshot::default()),
            client: UpstreamClient::new(),
            usage,
            metrics,
            key_limits: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            budgets,
            shared,
            config_path,
            started: config.clone(),
            applied: Mutex::new(config.clone()),
        }
    }

    /// Re-reads config.toml, syncs its registry into the database, swaps in a new snapshot
    /// and applies the `RUNTIME_SETTINGS`; the report names what needs a restart instead. A
    /// file with errors, or one that would take every model it serves now out of service, is
    /// refused before anything is written, and everything running keeps serving.
    pub async fn reload(&self) -> anyhow::Result<ReloadReport> {
        let result = self.apply_file().await;
        let label = if result.is_ok() { "success" } else { "error" };
        self.metrics
            .config_reloads_total
            .with_label_values(&[label])
            .inc();
        match &result {
            Ok(report) => report.log(&self.config_path),
            Err(e) => tracing::error!(
                "reload of {} refused, the running configuration keeps serving: {e:#}",
                self.config_path.display()
            ),
        }
        result
    }

    async fn apply_file(&self) -> anyhow::Result<ReloadReport> {
        let mut applied = self.applied.lock().await;
        let loaded = Config::load(&self.config_path)?;
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
        let new = &loaded.config;
        self.check_reloadable(&applied, new)?;
        let sync = self.db.sync_config(new).await?;
        let rows = self.db.load_registry().await?;
        let snapshot = Snapshot::build(
            &rows,
            new,
            Some(&self.registry.load()),
            self.shared.as_ref(),
        );
        let is_runtime = |s: &String| RUNTIME_SETTINGS.contains(&s.as_str());
        let report = ReloadReport {
            sync,
            deployments: snapshot.deployment_count,
            applied: changed_settings(&applied, new)
                .into_iter()
                .filter(is_runtime)
                .collect(),
            restart_required: changed_settings(&self.started, new)
                .into_iter()
                .filter(|s| !is_runtime(s))
                .collect(),
        };
        self.install(snapshot);
        if !report.applied.is_empty() {
            let running = self.runtime.load();
            let runtime = Runtime::new(&self.db, new, &self.started, Some((&running, &applied)));
            self.runtime.store(Arc::new(runtime));
        }
        *applied = loaded.config;
        Ok(report)
    }

    /// What a file must not do to a running gateway: open it on a public address, or leave
    /// none of its models serving (an empty or model-less file, every model inactive, every
    /// provider disabled) while models from the running file serve.
    fn check_reloadable(&self, running: &Config, new: &Config) -> anyhow::Result<()> {
        check_open_gateway(new, self.started.listen_addr())?;
        let snapshot = self.registry.load();
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

    fn install(&self, snapshot: Snapshot) {
        self.metrics
            .registry_deployments
            .set(snapshot.deployment_count as i64);
        for p in &snapshot.providers {
            self.report_provider_health(&snapshot, &p.name);
        }
        self.registry.swap(snapshot);
    }

    /// `tollgate_provider_up{provider}`: the worst circuit among the provider's deployments.
    pub fn report_provider_health(&self, snapshot: &Snapshot, provider: &str) {
        let up = snapshot
            .deployments_of(provider)
            .map(|d| d.health.state().gauge())
            .fold(1.0, f64::min);
        self.metrics
            .provider_up
            .with_label_values(&[provider])
            .set(up);
    }

    /// The limits of a gateway key with `rpm`/`tpm` set, shared by all its requests.
    pub fn limits_of_key(&self, caller: &crate::auth::Caller) -> Option<Arc<LimitSet>> {
        let id = caller.key_id.as_ref()?;
        if caller.limits == LimitSpec::default() {
            return None;
        }
        let make = || {
            Arc::new(LimitSet::shared(
                "key",
                caller.limits,
                format!("key:{id}"),
                self.shared.as_ref(),
            ))
        };
        let set = self.key_limits.get_with_by_ref(id, make);
        if set.spec == caller.limits {
            return Some(set);
        }
        // The key's limits were changed: start over with the new ones.
        let fresh = make();
        self.key_limits.insert(id.clone(), fresh.clone());
        Some(fresh)
    }
}

/// A started gateway: where it listens, and how to stop it.
pub struct Running {
    pub addr: SocketAddr,
    /// Where `/metrics` is served when `[server] metrics_listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub gateway: Arc<Gateway>,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    writer: JoinHandle<()>,
    writer_stop: oneshot::Sender<()>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (up to the grace period), then writes
    /// the usage records still queued.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        let _ = self.writer_stop.send(());
        let _ = self.writer.await;
    }

    /// Runs until SIGINT or SIGTERM; SIGHUP reloads config.toml.
    pub async fn serve_until_signal(self) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("signal handlers install");
            let mut hup = signal(SignalKind::hangup()).expect("signal handlers install");
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    _ = term.recv() => break,
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: reloading {}", self.gateway.config_path.display());
                        // The reload logs what it applied, or why it was refused.
                        let _ = self.gateway.reload().await;
                    }
                }
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: draining in-flight requests");
        self.stop().await;
        tracing::info!("stopped");
    }
}

/// Serving without gateway keys on a non-loopback address must be asked for explicitly.
fn check_open_gateway(config: &Config, addr: SocketAddr) -> anyhow::Result<()> {
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

/// Connects the database, migrates, syncs the config, loads the registry, starts the usage
/// writer and the listener.
pub async fn start(loaded: LoadedConfig) -> anyhow::Result<Running> {
    let config = loaded.config;
    check_open_gateway(&config, config.listen_addr())?;

    // A port in use is found before this instance writes its config into a database another
    // instance may share. A port shared on purpose is bound once this one is ready to answer,
    // so the kernel sends it no connection before then.
    check_fd_limit(config.server.max_connections);
    let early = (!config.server.reuse_port)
        .then(|| Listeners::bind(&config))
        .transpose()?;

    let db = open_database(&config).await?;
    let metrics = Arc::new(Metrics::new());
    let shared = connect_shared(&config, &metrics).await?;
    let snapshot = load_snapshot(&db, &config, shared.as_ref()).await?;
    let (usage, writer, writer_stop) = start_usage_writer(&db, &metrics, &config);
    let gateway = Arc::new(Gateway::new(
        db,
        &config,
        loaded.path,
        usage,
        metrics,
        shared,
    ));
    gateway.install(snapshot);

    let listeners = match early {
        Some(listeners) => listeners,
        None => Listeners::bind(&config)?,
    };
    let (addr, metrics_addr) = listeners.addrs()?;
    log_listening(&config, addr, metrics_addr);
    let (stop, stop_rx) = watch::channel(false);
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let server = tokio::spawn(listeners.serve(&config, gateway.clone(), stop_rx, grace));
    Ok(Running {
        addr,
        metrics_addr,
        gateway,
        stop,
        server,
        writer,
        writer_stop,
    })
}

/// Connects, migrates and writes the config's registry into the database.
async fn open_database(config: &Config) -> anyhow::Result<Db> {
    let db = Db::connect(&config.database.url, config.database.max_connections).await?;
    tracing::info!(database = %crate::store::redact_url(&config.database.url), kind = db.kind(), "database connected");
    db.migrate().await.context("database migration failed")?;
    let report = db.sync_config(config).await?;
    for s in &report.skipped {
        tracing::warn!("{s} is managed through the admin API; config.toml does not change it");
    }
    Ok(db)
}

/// The first registry snapshot, and a log of what it serves and what it cannot.
async fn load_snapshot(
    db: &Db,
    config: &Config,
    shared: Option<&Shared>,
) -> anyhow::Result<Snapshot> {
    let rows = db.load_registry().await?;
    let snapshot = Snapshot::build(&rows, config, None, shared);
    for u in &snapshot.unavailable {
        tracing::info!(provider = %u.provider, reason = %u.reason, "provider not serving");
    }
    // A sample of the names is enough to see that the right file was loaded.
    let mut names: Vec<&str> = snapshot.listed().iter().map(|m| m.id.as_str()).collect();
    names.truncate(20);
    tracing::info!(
        providers = snapshot.providers.len(),
        deployments = snapshot.deployment_count,
        models = %names.join(", "),
        "registry loaded"
    );
    Ok(snapshot)
}

/// The queue requests put their usage records in, and the task that writes them, with the
/// sender that tells it to write what is left and stop.
fn start_usage_writer(
    db: &Db,
    metrics: &Arc<Metrics>,
    config: &Config,
) -> (UsageSink, JoinHandle<()>, oneshot::Sender<()>) {
    let (usage, writer) = usage_pipeline(
        db.clone(),
        metrics.clone(),
        config.usage.queue_capacity,
        config.usage.batch_size,
        Duration::from_millis(config.usage.flush_interval_ms),
        config.usage.spool_path.clone(),
    );
    let (writer_stop, writer_stop_rx) = oneshot::channel();
    let writer = tokio::spawn(writer.run(writer_stop_rx));
    (usage, writer, writer_stop)
}

fn log_listening(config: &Config, addr: SocketAddr, metrics_addr: Option<SocketAddr>) {
    if !config.auth.require_api_key {
        tracing::warn!(
            "API keys are not required: anyone who can reach {addr} can use the gateway"
        );
    }
    tracing::info!("listening on http://{addr}");
    if let Some(m) = metrics_addr {
        tracing::info!("serving /metrics on http://{m}");
    }
}

/// Descriptors beside the client connections: provider connections (pooled and shared by
/// requests, so far fewer than the clients), the database, the spool, the listeners.
const SPARE_DESCRIPTORS: u64 = 1024;

/// Raises the open-file limit as far as allowed and says when `max_connections` clients and
/// the spare descriptors do not fit in it (the shipped default fits in 20,000).
fn check_fd_limit(max_connections: usize) {
    match conn::raise_fd_limit() {
        Ok(limit) if max_connections as u64 + SPARE_DESCRIPTORS > limit => tracing::warn!(
            limit,
            max_connections,
            "the open-file limit is low for [server] max_connections: each client connection \
             needs a descriptor, and providers and the database need some more; raise the hard \
             limit (ulimit -Hn, LimitNOFILE=) or lower max_connections"
        ),
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

/// Connects to Redis for shared limits. If it cannot be reached at start, `fail_closed`
/// refuses to start; `local` starts with each instance's share of the limits and says so.
async fn connect_shared(config: &Config, metrics: &Metrics) -> anyhow::Result<Option<Shared>> {
    let Some(redis) = &config.redis else {
        return Ok(None);
    };
    let Some(url) = &redis.url else {
        return Ok(None);
    };
    match crate::limits::shared::SharedLimiter::connect(url, &redis.key_prefix).await {
        Ok(limiter) => {
            tracing::info!(redis = %crate::store::redact_url(url), "limits are shared through Redis");
            Ok(Some(Shared {
                limiter,
                on_failure: redis.on_failure,
                instances: redis.instances.max(1),
                errors: metrics.shared_limiter_errors_total.clone(),
            }))
        }
        Err(e) if redis.on_failure == OnRedisFailure::FailClosed => {
            anyhow::bail!("Redis for shared limits is unreachable and [redis] on_failure = \"fail_closed\": {e:#}")
        }
        Err(e) => {
            metrics.shared_limiter_errors_total.inc();
            tracing::error!(error = %e, instances = redis.instances, "Redis is unreachable: limits are enforced per instance (limit / instances) until restart");
            Ok(None)
        }
    }
}

/// The gateway's listening sockets: its address, and `/metrics`'s own when it has one.
struct Listeners {
    main: TcpListener,
    metrics: Option<TcpListener>,
}

/// Connections the `/metrics` address takes at once: enough for a few scrapers, and apart
/// from the main address's, so a flood there does not stop scrapes.
const METRICS_CONNECTIONS: usize = 64;

impl Listeners {
    fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let reuse_port = config.server.reuse_port;
        Ok(Listeners {
            main: bind(config.listen_addr(), reuse_port)?,
            metrics: config
                .metrics_addr()
                .map(|addr| bind(addr, reuse_port))
                .transpose()?,
        })
    }

    /// The addresses bound (the port the system chose, where the config says 0).
    fn addrs(&self) -> anyhow::Result<(SocketAddr, Option<SocketAddr>)> {
        let main = self.main.local_addr()?;
        let metrics = self.metrics.as_ref().map(|l| l.local_addr()).transpose()?;
        Ok((main, metrics))
    }

    /// Serves both until `stop`, then drains them.
    fn serve(
        self,
        config: &Config,
        gateway: Arc<Gateway>,
        stop: watch::Receiver<bool>,
        grace: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let limits = conn::ConnLimits {
            max_connections: config.server.max_connections,
            idle: Duration::from_secs(config.server.idle_timeout_secs),
        };
        let main = conn::serve(
            self.main,
            gateway.clone(),
            handler::handle,
            limits,
            stop.clone(),
            grace,
        );
        let metrics = self.metrics.map(|listener| {
            let limits = conn::ConnLimits {
                max_connections: METRICS_CONNECTIONS,
                ..limits
            };
            conn::serve(listener, gateway, ops::serve_metrics, limits, stop, grace)
        });
        async move {
            let metrics = async {
                if let Some(m) = metrics {
                    m.await
                }
            };
            tokio::join!(main, metrics);
        }
    }
}

/// Opens the listener. SO_REUSEPORT, which lets a new process bind the same port before the
/// old one drains, is only set when asked for: otherwise a forgotten instance with another
/// config would silently answer part of the traffic. The large backlog absorbs bursts.
fn bind(addr: SocketAddr, reuse_port: bool) -> anyhow::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(reuse_port)?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&addr.into()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "cannot listen on {addr}: another process is already listening there. Stop it \
                 or choose another address; to share the port for a zero-downtime handover, set \
                 [server] reuse_port = true in both processes' configs"
            )
        } else {
            anyhow::Error::new(e).context(format!("cannot listen on {addr}"))
        }
    })?;
    socket.listen(4096)?;
    Ok(TcpListener::from_std(socket.into())?)
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
