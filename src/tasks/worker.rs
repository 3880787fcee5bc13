//! The workers of one instance: each claims a task, runs it, and claims the next; an idle
//! one waits for a task queued here (woken at once) or for its next look at the queue
//! (`poll_interval_ms`: tasks queued on other instances, leases that expired). Beside them,
//! one loop keeps `tollgate_tasks_queue_depth` current.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::queue;
use super::run::{run, RunCtx};
use super::Tasks;
use crate::proxy::Gateway;

/// Starts `[tasks] workers` workers and the queue-depth loop; each ends at `stop` (a
/// running task gets the grace period to finish, then goes back to the queue).
pub fn spawn(
    tasks: Arc<Tasks>,
    gw: Arc<Gateway>,
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut handles: Vec<JoinHandle<()>> = (0..tasks.config.workers)
        .map(|_| tokio::spawn(work(tasks.clone(), gw.clone(), stop.clone())))
        .collect();
    handles.push(tokio::spawn(report_depth(tasks, stop)));
    handles
}

async fn work(tasks: Arc<Tasks>, gw: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let poll = Duration::from_millis(tasks.config.poll_interval_ms);
    let ctx = RunCtx {
        tasks: &tasks,
        gw: &gw,
        stop: stop.clone(),
    };
    while !*stop.borrow() {
        match queue::claim(&tasks.db, &tasks.instance, tasks.lease()).await {
            Ok(Some(task)) => {
                run(&ctx, task).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "tasks could not be claimed; trying again"),
        }
        tokio::select! {
            () = tasks.wake.notified() => {}
            () = tokio::time::sleep(poll) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn report_depth(tasks: Arc<Tasks>, mut stop: watch::Receiver<bool>) {
    let poll = Duration::from_millis(tasks.config.poll_interval_ms);
    while !*stop.borrow() {
        match queue::depth(&tasks.db).await {
            Ok(n) => tasks.metrics.tasks_queue_depth.set(n),
            Err(e) => tracing::debug!(error = %e, "task queue depth could not be read"),
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            _ = stop.changed() => {}
        }
    }
}
