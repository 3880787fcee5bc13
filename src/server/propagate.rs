//! Registry changes reach every instance. Each change to the registry's rows bumps the
//! registry version in its own transaction (`store::version`); an instance whose snapshot
//! was built at an older version rebuilds it from the rows.
//!
//! Two ways tell an instance: on PostgreSQL a LISTEN connection hears each bump as it
//! commits (NOTIFY `tollgate_registry`), and everywhere the version is read every
//! `CHECK_EVERY`. A notification is lost when the LISTEN connection is (a restart of the
//! database, a killed backend, a network cut); the next periodic read makes up for it, and
//! the listener reconnects on its own. SQLite has no notifications: instances sharing a
//! file rely on the periodic read.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::App;

/// How often the version is read (one indexed single-row SELECT).
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a lost LISTEN connection waits before it tries again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// The version check, and on PostgreSQL the listener that wakes it.
pub(super) fn spawn(app: Arc<App>, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let wake = Arc::new(Notify::new());
    let listener = tokio::spawn(listen(app.clone(), wake.clone()));
    let check = tokio::spawn(check(app, wake, stop));
    vec![check, listener]
}

/// Reads the version every `CHECK_EVERY`, and when the listener wakes it; rebuilds the
/// snapshot when the version is newer than the one it was built at.
async fn check(app: Arc<App>, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut unreadable = false;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
            _ = wake.notified() => {}
        }
        match app.gateway.db.registry_version().await {
            Ok(version) => {
                if unreadable {
                    tracing::info!("the registry version can be read again");
                    unreadable = false;
                }
                if version > app.registry_version() {
                    catch_up(&app, version).await;
                }
            }
            // Said once per outage: the check goes on every second meanwhile.
            Err(e) if !unreadable => {
                tracing::warn!(
                    "cannot read the registry version; the registry in service keeps serving \
                     and the check goes on: {e:#}"
                );
                unreadable = true;
            }
            Err(_) => {}
        }
    }
}

/// Rebuilds the snapshot from the rows another writer changed, or keeps the one in service
/// and says why (the next check tries again).
async fn catch_up(app: &App, version: i64) {
    let Some(result) = app.refresh_if_older_than(version).await else {
        return;
    };
    let label = if result.is_ok() { "success" } else { "error" };
    let metrics = &app.gateway.metrics;
    metrics
        .config_reloads_total
        .with_label_values(&[label])
        .inc();
    match result {
        Ok(()) => tracing::info!(
            version = app.registry_version(),
            deployments = metrics.registry_deployments.get(),
            "the registry changed in the database: snapshot rebuilt"
        ),
        Err(e) => tracing::error!(
            version,
            "the registry changed in the database but could not be loaded; the running one \
             keeps serving: {e:#}"
        ),
    }
}

/// On PostgreSQL, wakes the check at each bump newer than the snapshot, and each time the
/// LISTEN connection is (re)made (what was announced while it was down is unknown). Returns
/// at once on SQLite.
async fn listen(app: Arc<App>, wake: Arc<Notify>) {
    let db = app.gateway.db.clone();
    let mut down = false;
    loop {
        match db.registry_listener().await {
            Ok(None) => return,
            Ok(Some(mut listener)) => {
                // `down` stays set: the inner loop ends only when the connection is lost.
                if down {
                    tracing::info!("registry LISTEN connection restored");
                }
                wake.notify_one();
                loop {
                    match listener.next_version().await {
                        Ok(v) if v > app.registry_version() => wake.notify_one(),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(
                                "registry LISTEN connection lost, reconnecting; the periodic \
                                 version check covers the gap: {e:#}"
                            );
                            down = true;
                            break;
                        }
                    }
                }
            }
            Err(e) if !down => {
                tracing::warn!(
                    "cannot LISTEN for registry changes, retrying; the periodic version check \
                     covers the gap: {e:#}"
                );
                down = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}
