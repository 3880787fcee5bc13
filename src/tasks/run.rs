//! Running one claimed task: its models that have no result yet, in parallel within
//! `[tasks] max_parallel`, each result recorded as soon as it is known, raced against the
//! lease. A cancel drops the calls in flight, which cancels their upstream requests and
//! leaves their usage rows as a client's hang-up does; what had finished stays recorded and
//! metered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;

use super::call;
use super::lease::{Holder, Stop};
use super::model::Status;
use super::queue;
use super::row::TaskRow;
use super::Tasks;
use crate::auth::Caller;
use crate::proxy::{Gateway, Prompt};

/// A worker's view of what it runs with.
pub struct RunCtx<'a> {
    pub tasks: &'a Tasks,
    pub gw: &'a Gateway,
    pub stop: tokio::sync::watch::Receiver<bool>,
}

/// The calls in flight, by model: the request id of each one's usage row.
type InFlight = Arc<Mutex<HashMap<String, Arc<Mutex<String>>>>>;

/// Runs the task to its end, or until it must stop; counts it in the metrics.
pub async fn run(ctx: &RunCtx<'_>, task: TaskRow) {
    let metrics = &ctx.tasks.metrics;
    metrics.tasks_running.inc();
    let started = Instant::now();
    let id = task.id.clone();
    let ended = match run_task(ctx, task).await {
        Ok(ended) => ended,
        Err(e) => {
            tracing::warn!(task = %id, error = %e, "task run failed; it goes back to the queue");
            let _ = queue::release(&ctx.tasks.db, &id, &ctx.tasks.instance, false).await;
            None
        }
    };
    metrics.tasks_running.dec();
    if let Some(status) = ended {
        metrics
            .task_duration_seconds
            .with_label_values(&[status.as_str()])
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The task's final status, or None when it did not end here (released or lost).
async fn run_task(ctx: &RunCtx<'_>, task: TaskRow) -> anyhow::Result<Option<Status>> {
    let tasks = ctx.tasks;
    let entry = tasks.cancels.enter(&task.id);
    if task.cancel_requested {
        return end_cancelled(tasks, &task, &InFlight::default()).await;
    }
    let max_attempts = i64::from(tasks.config.max_attempts);
    if task.attempts > max_attempts {
        let why = format!(
            "gave up after {max_attempts} attempts: the instances running it stopped before it finished"
        );
        return end(tasks, &task, Status::Failed, Some(&why)).await;
    }
    let caller = match Caller::restore(&tasks.db, &task.creator).await? {
        Ok(caller) => Arc::new(caller),
        Err(why) => {
            let why = format!("it cannot run any more: {why}");
            return end(tasks, &task, Status::Failed, Some(&why)).await;
        }
    };
    let done = queue::finished_models(&tasks.db, &task.id).await?;
    let todo: Vec<String> = task
        .models
        .iter()
        .filter(|m| !done.contains(m))
        .cloned()
        .collect();
    let in_flight = InFlight::default();
    let holder = Holder {
        db: &tasks.db,
        task_id: &task.id,
        owner: &tasks.instance,
        lease: tasks.lease(),
        cancel: entry.signal.clone(),
        stop: ctx.stop.clone(),
        grace: tasks.grace,
    };
    // Whichever ends first, the other is dropped here: a stop drops the calls in flight.
    let ended = tokio::select! {
        ran = run_models(ctx, &task, caller, todo, &in_flight) => Ended::Ran(ran),
        stop = holder.hold() => Ended::Stopped(stop),
    };
    match ended {
        Ended::Ran(ran) => match ran? {
            true => end_finished(tasks, &task).await,
            false => Ok(None),
        },
        Ended::Stopped(Stop::Lost) => Ok(None),
        Ended::Stopped(Stop::Cancelled) => end_cancelled(tasks, &task, &in_flight).await,
        Ended::Stopped(Stop::Shutdown) => {
            queue::release(&tasks.db, &task.id, &tasks.instance, true).await?;
            Ok(None)
        }
    }
}

/// How the race of a task's calls against its lease ended.
enum Ended {
    /// The calls are done: Ok(false) when the task stopped being this worker's.
    Ran(anyhow::Result<bool>),
    Stopped(Stop),
}

/// Calls the models, at most `max_parallel` at once, recording each result. False when the
/// task stopped being this worker's (a result could not be written under its lease).
async fn run_models(
    ctx: &RunCtx<'_>,
    task: &TaskRow,
    caller: Arc<Caller>,
    todo: Vec<String>,
    in_flight: &InFlight,
) -> anyhow::Result<bool> {
    let tasks = ctx.tasks;
    let one = |model: String| {
        let caller = caller.clone();
        async move {
            let request_id = Arc::new(Mutex::new(String::new()));
            lock(in_flight).insert(model.clone(), request_id.clone());
            let prompt = Prompt {
                model: &model,
                text: &task.prompt,
                max_tokens: task.max_tokens as u64,
            };
            let result = call::call_model(ctx.gw, caller, &prompt, &request_id).await;
            let written = queue::insert_result(&tasks.db, &task.id, &tasks.instance, &result).await;
            lock(in_flight).remove(&model);
            written
        }
    };
    let mut calls = futures_util::stream::iter(todo)
        .map(one)
        .buffer_unordered(tasks.config.max_parallel.max(1));
    while let Some(written) = calls.next().await {
        if !written? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every model has its result: succeeded when at least one answered.
async fn end_finished(tasks: &Tasks, task: &TaskRow) -> anyhow::Result<Option<Status>> {
    let statuses = queue::result_statuses(&tasks.db, &task.id).await?;
    if statuses.iter().any(|s| s == "succeeded") {
        return end(tasks, task, Status::Succeeded, None).await;
    }
    let why = "every model failed; each result says why";
    end(tasks, task, Status::Failed, Some(why)).await
}

/// Records the models without a result as cancelled (with the usage row of a call that was
/// in flight), then ends the task.
async fn end_cancelled(
    tasks: &Tasks,
    task: &TaskRow,
    in_flight: &InFlight,
) -> anyhow::Result<Option<Status>> {
    let done = queue::finished_models(&tasks.db, &task.id).await?;
    for model in task.models.iter().filter(|m| !done.contains(m)) {
        let request_id = lock(in_flight)
            .get(model)
            .map(|id| lock(id).clone())
            .filter(|id| !id.is_empty());
        let result = call::cancelled(model, request_id);
        queue::insert_result(&tasks.db, &task.id, &tasks.instance, &result).await?;
    }
    end(tasks, task, Status::Cancelled, None).await
}

async fn end(
    tasks: &Tasks,
    task: &TaskRow,
    status: Status,
    error: Option<&str>,
) -> anyhow::Result<Option<Status>> {
    let ended = queue::finish(&tasks.db, &task.id, &tasks.instance, status, error).await?;
    Ok(ended.then_some(status))
}
