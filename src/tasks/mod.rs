//! Background tasks: one prompt run on one or several models, queued in the database and run
//! by the workers of any instance (`/api/v1/tasks`).
//!
//! The queue is the `tasks` table. A worker claims the oldest queued task (or a running one
//! whose lease expired: its instance died) in one statement, `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL and under SQLite's write lock (`queue`), and holds a lease on it that it renews
//! while it runs (`lease`). The task's models are called in parallel along the data plane,
//! under the creator's key and project (`call`, `run`); each model's outcome is a row of
//! `task_results`, unique per (task, model), written only while the lease is the worker's, so
//! a task taken over after a lease expired runs only the models that have no result. A cancel
//! sets a flag any instance's worker reads at its next renewal, and stops the task at once
//! when it runs on the instance the cancel reached (`cancels`).
//!
//! Below the dashboard API and the server, above the data plane (`tests/layers.rs`).

mod call;
mod cancels;
mod lease;
pub mod model;
mod queue;
mod row;
mod run;
pub mod store;
mod worker;

pub use call::SURFACE;
pub use row::TaskRow;
pub use worker::spawn as spawn_workers;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::TasksConfig;
use crate::metering::Metrics;
use crate::store::Db;

/// The task queue as one instance uses it: the settings, the tasks it runs, and the signal
/// that wakes its idle workers.
pub struct Tasks {
    pub db: Db,
    pub config: TasksConfig,
    /// How long a stopping instance lets its running tasks go on.
    grace: Duration,
    cancels: cancels::Cancels,
    wake: Notify,
    metrics: Arc<Metrics>,
    /// This instance's name in the leases it holds.
    instance: String,
}

impl Tasks {
    pub fn new(db: Db, config: TasksConfig, grace: Duration, metrics: Arc<Metrics>) -> Tasks {
        Tasks {
            db,
            config,
            grace,
            cancels: Default::default(),
            wake: Notify::new(),
            metrics,
            instance: crate::ids::new_id(),
        }
    }

    fn lease(&self) -> Duration {
        Duration::from_secs(self.config.lease_secs)
    }

    /// A task was queued here: one idle worker takes it without waiting for its poll.
    pub fn queued(&self) {
        self.wake.notify_one();
    }

    /// Stops the task at once if it runs on this instance (its flag in the database tells
    /// the other instances at their next lease renewal).
    pub fn cancel_here(&self, id: &str) {
        self.cancels.cancel(id);
    }
}
