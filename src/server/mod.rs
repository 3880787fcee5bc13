//! The application shell: its state (`App`), its start-up and shutdown, the listeners, and
//! the router that sends each request to the data plane (`/v1/*`), the admin API
//! (`/admin/*`) or an ops endpoint, after checking the role the route needs.

mod conn;
mod control;
mod cors;
mod edge;
mod file_watch;
mod openapi;
mod ops;
mod propagate;
mod reload;
mod router;

pub use openapi::openapi;
pub use reload::ReloadReport;
pub use router::{Access, API_ROUTES};

use std::net::SocketAddr;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, LoadedConfig};
use crate::limits::{OnRedisFailure, Shared};
use crate::metering::Metrics;
use crate::proxy::Gateway;
use crate::registry::Snapshot;
use crate::store::{run_usage_retention, usage_pipeline, Db, UsageSink};
use crate::tasks::Tasks;
use crate::telemetry::Telemetry;
use edge::Edge;
use reload::{check_open_gateway, provider_keys, sealer, warn_keys_kept_in_memory, Reloader};

/// The running application: the data plane's state, and what the shell around it keeps.
pub struct App {
    pub gateway: Arc<Gateway>,
    /// The background task queue, and this instance's workers' state.
    pub tasks: Arc<Tasks>,
    /// The header checks made before routing; they follow `auth.require_api_key`, so a reload
    /// swaps them.
    edge: ArcSwap<Edge>,
    reloader: Reloader,
    /// The registry version the snapshot in service was built at; a newer one in the
    /// database means another writer changed the registry (`propagate`).
    registry_version: AtomicI64,
}

/// A started gateway: where it listens, and how to stop it.
pub struct Running {
    pub addr: SocketAddr,
    /// Where `/metrics` is served when `[server] metrics_listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub app: Arc<App>,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    /// The config file's watcher and the registry's propagation.
    background: Vec<JoinHandle<()>>,
    /// The task workers: they stop before the usage writer, whose rows they still write.
    workers: Vec<JoinHandle<()>>,
    writer: JoinHandle<()>,
    writer_stop: oneshot::Sender<()>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (up to the grace period), then writes
    /// the usage records still queued and sends the spans still queued (up to
    /// `TELEMETRY_FLUSH_LIMIT`).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.background {
            // Each stops at the stop signal; one in the middle of a reload stops there, and
            // its transaction rolls back.
            task.abort();
            let _ = task.await;
        }
        for worker in self.workers {
            let _ = worker.await;
        }
        let _ = self.server.await;
        let _ = self.writer_stop.send(());
        let _ = self.writer.await;
        if let Some(telemetry) = &self.app.gateway.telemetry {
            telemetry.shutdown(TELEMETRY_FLUSH_LIMIT).await;
        }
    }

    /// Runs until SIGINT or SIGTERM; SIGHUP reloads config.toml (as a change to the file on
    /// disk and `POST /admin/reload` do).
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
                        tracing::info!("SIGHUP: reloading {}", self.app.reloader.config_path.display());
                        // The reload logs what it applied, or why it was refused.
                        let _ = self.app.reload().await;
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

/// The longest a stopping gateway waits for its last spans to reach the collector.
const TELEMETRY_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// Connects the database, migrates, syncs the config, loads the registry, starts the usage
/// writer, the trace exporter, the listener, the config file's watcher and the registry's
/// propagation.
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

    warn_keys_kept_in_memory(&config, &loaded.path);
    let db = open_database(&config).await?;
    let metrics = Arc::new(Metrics::new());
    let shared = connect_shared(&config, &metrics).await?;
    let (snapshot, version) = load_snapshot(&db, &config, shared.as_ref()).await?;
    let (usage, writer, writer_stop) = start_usage_writer(&db, &metrics, &config);
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let tasks = Arc::new(Tasks::new(
        db.clone(),
        config.tasks.clone(),
        grace,
        metrics.clone(),
    ));
    let telemetry = start_telemetry(&config)?;
    let gateway = Arc::new(Gateway::new(db, &config, usage, metrics, shared, telemetry));
    gateway.install(snapshot);
    gateway.metrics.registry_version.set(version);
    let app = Arc::new(App {
        tasks,
        edge: ArcSwap::from_pointee(Edge::new(&config, &config)),
        reloader: Reloader::new(&config, loaded.path),
        gateway,
        registry_version: AtomicI64::new(version),
    });

    let listeners = match early {
        Some(listeners) => listeners,
        None => Listeners::bind(&config)?,
    };
    let (addr, metrics_addr) = listeners.addrs()?;
    log_listening(&config, addr, metrics_addr);
    let (stop, stop_rx) = watch::channel(false);
    let workers =
        crate::tasks::spawn_workers(app.tasks.clone(), app.gateway.clone(), stop_rx.clone());
    let mut background = vec![file_watch::spawn(app.clone(), stop_rx.clone()).await];
    background.extend(propagate::spawn(app.clone(), stop_rx.clone()));
    let server = tokio::spawn(listeners.serve(&config, app.clone(), stop_rx, grace));
    Ok(Running {
        addr,
        metrics_addr,
        app,
        stop,
        server,
        background,
        workers,
        writer,
        writer_stop,
    })
}

/// Connects, migrates and writes the config's registry into the database.
async fn open_database(config: &Config) -> anyhow::Result<Db> {
    let db = Db::connect(&config.database.url, config.database.max_connections).await?;
    tracing::info!(database = %crate::store::redact_url(&config.database.url), kind = db.kind(), "database connected");
    db.migrate().await.context("database migration failed")?;
    let report = db.sync_config(config, sealer(config).as_ref()).await?;
    for s in &report.skipped {
        tracing::warn!("{s} is managed through the admin API; config.toml does not change it");
    }
    Ok(db)
}

/// The first registry snapshot and the registry version it was built at, and a log of what
/// it serves and what it cannot.
async fn load_snapshot(
    db: &Db,
    config: &Config,
    shared: Option<&Shared>,
) -> anyhow::Result<(Snapshot, i64)> {
    let version = db.registry_version().await?;
    let rows = db.load_registry().await?;
    let keys = provider_keys(config);
    let snapshot = Snapshot::build(&rows, &keys, config.circuit_breaker, None, shared);
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
        version,
        "registry loaded"
    );
    Ok((snapshot, version))
}

/// The queue requests put their usage records in, and the task that writes them, with the
/// sender that tells it to write what is left and stop. The usage retention runs beside it.
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
    let retention = tokio::spawn(run_usage_retention(
        db.clone(),
        config.usage.retention_months,
    ));
    let writer = tokio::spawn(async move {
        writer.run(writer_stop_rx).await;
        // The retention stops with the writer; a partition drop it was in is rolled back.
        retention.abort();
    });
    (usage, writer, writer_stop)
}

/// The trace exporter, when `[telemetry]` has an endpoint.
fn start_telemetry(config: &Config) -> anyhow::Result<Option<Telemetry>> {
    let telemetry =
        Telemetry::start(&config.telemetry).context("cannot start the trace exporter")?;
    if let Some(t) = &telemetry {
        let c = &config.telemetry;
        tracing::info!(endpoint = %t.url, service = %c.service_name, sample_ratio = c.sample_ratio, "exporting traces over OTLP/HTTP");
    }
    Ok(telemetry)
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
        app: Arc<App>,
        stop: watch::Receiver<bool>,
        grace: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let limits = conn::ConnLimits {
            max_connections: config.server.max_connections,
            idle: Duration::from_secs(config.server.idle_timeout_secs),
        };
        let main = conn::serve(
            self.main,
            app.clone(),
            router::dispatch,
            limits,
            stop.clone(),
            grace,
        );
        let metrics = self.metrics.map(|listener| {
            let limits = conn::ConnLimits {
                max_connections: METRICS_CONNECTIONS,
                ..limits
            };
            conn::serve(listener, app, ops::serve_metrics, limits, stop, grace)
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
