//! The workers' statements on the task tables: claim a task under a lease, renew it, record
//! a model's result, finish or release the task. Every write after the claim is conditioned
//! on the lease still being this worker's, so a worker that lost its task (expired lease,
//! deleted task) changes nothing any more.

use std::time::Duration;

use rust_decimal::Decimal;

use super::model::Status;
use super::row::{task_row, TaskRow, TASK_COLUMNS};
use crate::store::{timestamp, Arg, Db};

fn at(offset: Duration) -> String {
    let offset = chrono::Duration::from_std(offset).unwrap_or(chrono::Duration::MAX);
    timestamp(chrono::Utc::now() + offset)
}

/// Claims the oldest task that is queued, or running under an expired lease (its instance
/// died), for `lease`. On PostgreSQL the row is locked with `FOR UPDATE SKIP LOCKED`, so
/// workers on any number of instances each get a different task without waiting on each
/// other; SQLite runs the statement under its single write lock, which serialises claims.
pub async fn claim(db: &Db, owner: &str, lease: Duration) -> anyhow::Result<Option<TaskRow>> {
    let lock = match db {
        Db::Postgres(_) => "FOR UPDATE SKIP LOCKED",
        Db::Sqlite(_) => "",
    };
    let sql = format!(
        "UPDATE tasks SET status = 'running', lease_owner = $1, lease_expires_at = $2::timestamptz,
             attempts = attempts + 1, started_at = COALESCE(started_at, $3::timestamptz),
             updated_at = $3::timestamptz
         WHERE id = (SELECT id FROM tasks
                     WHERE status = 'queued'
                        OR (status = 'running' AND lease_expires_at < $3::timestamptz)
                     ORDER BY created_at, id LIMIT 1 {lock})
         RETURNING {TASK_COLUMNS}"
    );
    let args: Vec<Arg> = vec![owner.into(), at(lease).into(), at(Duration::ZERO).into()];
    db.fetch_all(&sql, &args)
        .await?
        .first()
        .map(task_row)
        .transpose()
}

/// Extends the lease. None: the task is no longer this worker's (taken over or deleted);
/// else whether a cancel was asked for.
pub async fn renew(
    db: &Db,
    id: &str,
    owner: &str,
    lease: Duration,
) -> anyhow::Result<Option<bool>> {
    let sql = "UPDATE tasks SET lease_expires_at = $3::timestamptz
               WHERE id = $1::uuid AND lease_owner = $2 AND status = 'running'
               RETURNING cancel_requested";
    let args: Vec<Arg> = vec![id.into(), owner.into(), at(lease).into()];
    db.fetch_all(sql, &args)
        .await?
        .first()
        .map(|r| r.bool("cancel_requested"))
        .transpose()
}

/// The models of the task that have a result already (from an earlier attempt).
pub async fn finished_models(db: &Db, id: &str) -> anyhow::Result<Vec<String>> {
    let sql = "SELECT model FROM task_results WHERE task_id = $1::uuid";
    db.fetch_all(sql, &[id.into()])
        .await?
        .iter()
        .map(|r| r.text("model"))
        .collect()
}

/// One model's outcome, to record.
#[derive(Debug, Clone)]
pub struct NewResult {
    pub model: String,
    pub status: &'static str,
    pub text: Option<String>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost: Decimal,
    pub latency_ms: Option<i64>,
    pub error_type: Option<String>,
    pub error: Option<String>,
    pub request_id: Option<String>,
}

/// Records a model's result while the task is this worker's; a model that has one already
/// keeps it. False when nothing was written.
pub async fn insert_result(db: &Db, id: &str, owner: &str, r: &NewResult) -> anyhow::Result<bool> {
    let sql = "INSERT INTO task_results (task_id, model, status, text, prompt_tokens,
                   completion_tokens, cost_usd, latency_ms, error_type, error, request_id,
                   created_at)
               SELECT $1::uuid, $3, $4, $5, $6, $7, $8::numeric, $9, $10, $11, $12,
                   $13::timestamptz
               WHERE EXISTS (SELECT 1 FROM tasks WHERE id = $1::uuid AND lease_owner = $2
                             AND status = 'running')
               ON CONFLICT (task_id, model) DO NOTHING";
    let args: Vec<Arg> = vec![
        id.into(),
        owner.into(),
        r.model.clone().into(),
        r.status.into(),
        r.text.clone().into(),
        r.prompt_tokens.into(),
        r.completion_tokens.into(),
        r.cost.normalize().to_string().into(),
        r.latency_ms.into(),
        r.error_type.clone().into(),
        r.error.clone().into(),
        r.request_id.clone().into(),
        at(Duration::ZERO).into(),
    ];
    Ok(db.execute(sql, &args).await? == 1)
}

/// The statuses of the task's results, for its final status.
pub async fn result_statuses(db: &Db, id: &str) -> anyhow::Result<Vec<String>> {
    let sql = "SELECT status FROM task_results WHERE task_id = $1::uuid";
    db.fetch_all(sql, &[id.into()])
        .await?
        .iter()
        .map(|r| r.text("status"))
        .collect()
}

/// Ends the task with a final status while it is this worker's.
pub async fn finish(
    db: &Db,
    id: &str,
    owner: &str,
    status: Status,
    error: Option<&str>,
) -> anyhow::Result<bool> {
    let sql = "UPDATE tasks SET status = $3, error = $4, finished_at = $5::timestamptz,
                   updated_at = $5::timestamptz, lease_owner = NULL, lease_expires_at = NULL
               WHERE id = $1::uuid AND lease_owner = $2 AND status = 'running'";
    let args: Vec<Arg> = vec![
        id.into(),
        owner.into(),
        status.as_str().into(),
        error.map(str::to_owned).into(),
        at(Duration::ZERO).into(),
    ];
    Ok(db.execute(sql, &args).await? == 1)
}

/// Puts the task back in the queue for any worker. `refund` takes back the attempt its claim
/// counted (a shutdown is not the task's failure).
pub async fn release(db: &Db, id: &str, owner: &str, refund: bool) -> anyhow::Result<bool> {
    let sql = "UPDATE tasks SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL,
                   attempts = attempts - $3, updated_at = $4::timestamptz
               WHERE id = $1::uuid AND lease_owner = $2 AND status = 'running'";
    let args: Vec<Arg> = vec![
        id.into(),
        owner.into(),
        i64::from(refund).into(),
        at(Duration::ZERO).into(),
    ];
    Ok(db.execute(sql, &args).await? == 1)
}

/// Tasks waiting in the queue, on every instance.
pub async fn depth(db: &Db) -> anyhow::Result<i64> {
    let sql = "SELECT COUNT(*) AS n FROM tasks WHERE status = 'queued'";
    db.fetch_all(sql, &[])
        .await?
        .first()
        .map_or(Ok(0), |r| r.int("n"))
}
