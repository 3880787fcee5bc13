//! config.toml watched on disk: a change reloads it, as SIGHUP and `POST /admin/reload` do.
//!
//! The file's metadata (inode, size, modification and change times) is looked at a few times
//! a second: an in-place write changes the times and usually the size, an editor's save by
//! rename (or a Kubernetes ConfigMap's `..data` link swap) gives the path another inode. A
//! directory watch (inotify) would also see every write to the SQLite database and the usage
//! spool that often sit beside the file, thousands a second under load; four `stat` calls a
//! second cost nothing whatever the load. A burst of writes (an editor's several steps, a
//! script's) applies once: the reload waits until the file has been unchanged for `QUIET`,
//! but never more than `AT_MOST` after the first change. A file whose text is the one last
//! read is not reloaded (`App::reload_if_changed`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::App;

/// How often the file is looked at.
const POLL: Duration = Duration::from_millis(250);
/// How long the file must be left alone before it is read.
const QUIET: Duration = Duration::from_millis(300);
/// While a change settles, the file is looked at this often.
const SETTLE_POLL: Duration = Duration::from_millis(50);
/// The longest a reload waits for writes to stop.
const AT_MOST: Duration = Duration::from_secs(2);

/// What a save changes: the file's identity, size and times. `None`: no file there (between
/// a removal and a rename, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
    changed: (i64, i64),
}

async fn stamp(path: &Path) -> Option<Stamp> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    #[cfg(unix)]
    let (inode, changed) = {
        use std::os::unix::fs::MetadataExt;
        (meta.ino(), (meta.ctime(), meta.ctime_nsec()))
    };
    #[cfg(not(unix))]
    let (inode, changed) = (0, (0, 0));
    Some(Stamp {
        inode,
        len: meta.len(),
        modified: meta.modified().ok(),
        changed,
    })
}

/// Watches the config file until `stop`. What the file is now is read before this returns,
/// so a write made from then on is seen.
pub(super) async fn spawn(app: Arc<App>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    let path = app.reloader.config_path.clone();
    let mut seen = stamp(&path).await;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {}
            }
            let now = stamp(&path).await;
            if now == seen {
                continue;
            }
            match settle(&path, now, &mut stop).await {
                Some(settled) => seen = settled,
                None => return,
            }
            // The reload logs what it applied, or why it refused the file.
            let _ = app.reload_if_changed().await;
        }
    })
}

/// Waits until the file's stamp stays the same for `QUIET` (or `AT_MOST` passed); returns
/// that stamp, or None at `stop`.
async fn settle(
    path: &Path,
    mut last: Option<Stamp>,
    stop: &mut watch::Receiver<bool>,
) -> Option<Option<Stamp>> {
    let deadline = Instant::now() + AT_MOST;
    let mut quiet_since = Instant::now();
    loop {
        tokio::select! {
            _ = stop.changed() => return None,
            _ = tokio::time::sleep(SETTLE_POLL) => {}
        }
        let now = stamp(path).await;
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
        if quiet_since.elapsed() >= QUIET || Instant::now() >= deadline {
            return Some(last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-place write and a save by rename both change the stamp; reading does not.
    #[tokio::test]
    async fn writes_and_renames_change_the_stamp_and_reads_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "a = 1\n").unwrap();
        let first = stamp(&path).await.unwrap();
        let _ = std::fs::read_to_string(&path).unwrap();
        assert_eq!(stamp(&path).await, Some(first));

        std::fs::write(&path, "a = 22\n").unwrap();
        let written = stamp(&path).await.unwrap();
        assert_ne!(written, first);

        let tmp = dir.path().join(".config.toml.swp");
        std::fs::write(&tmp, "a = 33\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let renamed = stamp(&path).await.unwrap();
        assert_ne!(renamed, written);

        std::fs::remove_file(&path).unwrap();
        assert_eq!(stamp(&path).await, None);
    }
}
