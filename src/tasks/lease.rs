//! The lease a worker holds on the task it runs: renewed every third of its length, so a
//! late renewal or two still keep it; each renewal also reads whether a cancel was asked
//! for on any instance. It ends the run when the task is cancelled, when the lease is lost
//! (taken over after it expired, or the task was deleted), or when the instance stops and
//! its grace period is over.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::queue;
use crate::store::Db;

/// Why a run must stop before its models are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Cancelled,
    /// The task is no longer this worker's: write nothing more.
    Lost,
    /// The instance is stopping: give the task back.
    Shutdown,
}

/// What a lease holder watches.
pub struct Holder<'a> {
    pub db: &'a Db,
    pub task_id: &'a str,
    pub owner: &'a str,
    pub lease: Duration,
    /// A cancel that reached this instance.
    pub cancel: watch::Receiver<bool>,
    /// The instance's stop signal, and how long running tasks may go on after it.
    pub stop: watch::Receiver<bool>,
    pub grace: Duration,
}

impl Holder<'_> {
    /// Renews the lease until the run must stop, and says why. Never returns while the run
    /// may go on: the caller races it against the run.
    pub async fn hold(mut self) -> Stop {
        let every = self.lease / 3;
        let mut held_until = Instant::now() + self.lease;
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        let mut cancel_open = true;
        let mut shutdown_at = self.stop.borrow().then(|| Instant::now() + self.grace);
        loop {
            let grace_over = async {
                match shutdown_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tick.tick() => match queue::renew(self.db, self.task_id, self.owner, self.lease).await {
                    Ok(Some(true)) => return Stop::Cancelled,
                    Ok(Some(false)) => held_until = Instant::now() + self.lease,
                    Ok(None) => return Stop::Lost,
                    // The database may be back before the lease runs out; after that,
                    // another worker may have the task.
                    Err(e) if Instant::now() >= held_until => {
                        tracing::warn!(task = self.task_id, error = %e, "task lease could not be renewed and has expired");
                        return Stop::Lost;
                    }
                    Err(e) => tracing::warn!(task = self.task_id, error = %e, "task lease renewal failed; retrying"),
                },
                changed = self.cancel.changed(), if cancel_open => match changed {
                    Ok(()) if *self.cancel.borrow() => return Stop::Cancelled,
                    Ok(()) => {}
                    Err(_) => cancel_open = false,
                },
                changed = self.stop.changed(), if shutdown_at.is_none() => {
                    if changed.is_err() || *self.stop.borrow() {
                        shutdown_at = Some(Instant::now() + self.grace);
                    }
                }
                () = grace_over => return Stop::Shutdown,
            }
        }
    }
}
