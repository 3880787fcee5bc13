//! config.toml watched on disk: a change reloads it, as SIGHUP and `POST /admin/reload` do.
//!
//! The file's directory is watched, not the file: an editor that saves by writing a new file
//! and renaming it over the old one replaces the file a watch on it would follow, and a
//! Kubernetes ConfigMap swaps a `..data` link beside it. A burst of writes (an editor's
//! several steps, a script's) applies once: the reload waits until the directory has been
//! quiet for `QUIET`, but never more than `AT_MOST` after the first write. A file whose text
//! is the one last read is not reloaded (`App::reload_if_changed`).

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use super::App;

/// How long the file must be left alone before it is read.
const QUIET: Duration = Duration::from_millis(300);
/// The longest a reload waits for writes to stop.
const AT_MOST: Duration = Duration::from_secs(2);

/// Watches the config file until `stop`. The watch is in place when this returns, so a write
/// made from then on is seen. If the system cannot watch the file (no inotify instances left,
/// say), says so and leaves reloads to SIGHUP and the admin API.
pub(super) fn spawn(app: Arc<App>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    let path = app.reloader.config_path.clone();
    let (tx, mut changes) = mpsc::unbounded_channel();
    let watcher = watch_directory_of(&path, tx);
    tokio::spawn(async move {
        // Dropping the watcher ends the watch: it lives as long as this task.
        let _watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot watch {} for changes: reload it with SIGHUP or POST /admin/reload",
                    path.display()
                );
                return;
            }
        };
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                change = changes.recv() => if change.is_none() { return },
            }
            if !settle(&mut changes, &mut stop).await {
                return;
            }
            // The reload logs what it applied, or why it refused the file.
            let _ = app.reload_if_changed().await;
        }
    })
}

/// Waits until no change came for `QUIET` (or `AT_MOST` passed); false at `stop`.
async fn settle(
    changes: &mut mpsc::UnboundedReceiver<()>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let deadline = Instant::now() + AT_MOST;
    let mut quiet_at = Instant::now() + QUIET;
    loop {
        tokio::select! {
            _ = stop.changed() => return false,
            _ = sleep_until(quiet_at.min(deadline)) => return true,
            change = changes.recv() => match change {
                Some(()) => quiet_at = Instant::now() + QUIET,
                None => return false,
            },
        }
    }
}

/// A watch on the file's directory that sends `()` for each event that may have changed the
/// file.
fn watch_directory_of(
    path: &Path,
    tx: mpsc::UnboundedSender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => Path::new(".").to_owned(),
    };
    let name = path.file_name().map(ToOwned::to_owned);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        match event {
            Ok(event) if concerns_the_file(&event, name.as_ref()) => {
                let _ = tx.send(());
            }
            Ok(_) => {}
            // Events may have been lost (the queue overflowed): the file may have changed.
            Err(e) => {
                tracing::warn!(error = %e, "watching the config file");
                let _ = tx.send(());
            }
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Whether an event in the directory may have changed the file: a creation, change, rename or
/// removal of the file itself or of a `..name` entry (a ConfigMap's links). Reads are not
/// (the reload's own read would otherwise trigger the next one), nor are other files (the
/// SQLite database and the usage spool often sit in the same directory).
fn concerns_the_file(event: &Event, name: Option<&OsString>) -> bool {
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    event.paths.iter().any(|p| match p.file_name() {
        Some(f) => {
            name.is_some_and(|n| n.as_os_str() == f) || f.to_string_lossy().starts_with("..")
        }
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, CreateKind, ModifyKind, RenameMode};

    fn event(kind: EventKind, paths: &[&str]) -> Event {
        let mut e = Event::new(kind);
        for p in paths {
            e = e.add_path(p.into());
        }
        e
    }

    #[test]
    fn only_changes_to_the_file_count() {
        let name = Some(OsString::from("config.toml"));
        let counts = |e: Event| concerns_the_file(&e, name.as_ref());
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(counts(event(
            rename,
            &["/d/.config.toml.swp", "/d/config.toml"]
        )));
        assert!(counts(event(
            EventKind::Modify(ModifyKind::Any),
            &["/d/config.toml"]
        )));
        assert!(counts(event(
            EventKind::Create(CreateKind::File),
            &["/d/..data"]
        )));
        assert!(!counts(event(
            EventKind::Access(AccessKind::Any),
            &["/d/config.toml"]
        )));
        assert!(!counts(event(
            EventKind::Modify(ModifyKind::Any),
            &["/d/t.db-wal"]
        )));
    }
}
