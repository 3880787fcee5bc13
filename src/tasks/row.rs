//! A task and its results as the database holds them, read from either backend, and the
//! API's view of them.

use rust_decimal::Decimal;

use super::model::{ResultError, ResultUsage, Status, TaskResult, TaskView};
use crate::auth::{Role, StoredCaller};
use crate::store::{rfc3339, DbRow};

/// The task columns every read selects (unqualified: `RETURNING` takes them too).
pub const TASK_COLUMNS: &str = "id::text AS id, name, description, status,
    project_id::text AS project_id, api_key_id::text AS api_key_id, owner, owner_role, prompt,
    models::text AS models, max_tokens, attempts::bigint AS attempts, cancel_requested, error,
    created_at::text AS created_at, updated_at::text AS updated_at,
    started_at::text AS started_at, finished_at::text AS finished_at";

pub const RESULT_COLUMNS: &str = "task_id::text AS task_id, model, status, text, prompt_tokens,
    completion_tokens, cost_usd::text AS cost_usd, latency_ms, error_type, error, request_id,
    created_at::text AS created_at";

#[derive(Debug, Clone)]
pub struct TaskRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub status: Status,
    pub creator: StoredCaller,
    pub prompt: String,
    pub models: Vec<String>,
    pub max_tokens: i64,
    pub attempts: i64,
    pub cancel_requested: bool,
    pub error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// A result row, with the task it belongs to.
#[derive(Debug, Clone)]
pub struct ResultRow {
    pub task_id: String,
    pub result: TaskResult,
    pub cost: Decimal,
}

fn time(r: &DbRow, col: &str) -> anyhow::Result<Option<String>> {
    r.opt_text(col)?.map(|t| rfc3339(&t)).transpose()
}

pub fn task_row(r: &DbRow) -> anyhow::Result<TaskRow> {
    let status = r.text("status")?;
    let models: Vec<String> = serde_json::from_str(&r.text("models")?)?;
    Ok(TaskRow {
        id: r.text("id")?,
        name: r.text("name")?,
        description: r.text("description")?,
        status: Status::parse(&status)
            .ok_or_else(|| anyhow::anyhow!("unknown task status {status:?}"))?,
        creator: StoredCaller {
            principal: r.text("owner")?,
            key_id: r.opt_text("api_key_id")?,
            project_id: r.opt_text("project_id")?,
            role: if r.text("owner_role")? == "admin" {
                Role::Admin
            } else {
                Role::User
            },
        },
        prompt: r.text("prompt")?,
        models,
        max_tokens: r.int("max_tokens")?,
        attempts: r.int("attempts")?,
        cancel_requested: r.bool("cancel_requested")?,
        error: r.opt_text("error")?,
        created_at: time(r, "created_at")?.unwrap_or_default(),
        updated_at: time(r, "updated_at")?.unwrap_or_default(),
        started_at: time(r, "started_at")?,
        finished_at: time(r, "finished_at")?,
    })
}

pub fn result_row(r: &DbRow) -> anyhow::Result<ResultRow> {
    let cost = r.opt_decimal("cost_usd")?.unwrap_or_default();
    let (prompt, completion) = (r.int("prompt_tokens")?, r.int("completion_tokens")?);
    let error = r.opt_text("error")?.map(|message| ResultError {
        message,
        kind: r.opt_text("error_type").ok().flatten().unwrap_or_default(),
    });
    Ok(ResultRow {
        task_id: r.text("task_id")?,
        cost,
        result: TaskResult {
            model: r.text("model")?,
            status: r.text("status")?,
            text: r.opt_text("text")?,
            usage: ResultUsage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: prompt + completion,
            },
            cost_usd: cost.normalize().to_string(),
            latency_ms: r.opt_int("latency_ms")?,
            error,
            request_id: r.opt_text("request_id")?,
            created_at: time(r, "created_at")?.unwrap_or_default(),
        },
    })
}

impl TaskRow {
    /// The API's view, with the task's results (in the order of its models) and their cost.
    /// `results` may hold other tasks' too.
    pub fn view(self, results: &[ResultRow]) -> TaskView {
        let mut results: Vec<&ResultRow> =
            results.iter().filter(|r| r.task_id == self.id).collect();
        results.sort_by_key(|r| self.models.iter().position(|m| *m == r.result.model));
        let cost: Decimal = results.iter().map(|r| r.cost).sum();
        TaskView {
            id: self.id,
            object: "task",
            name: self.name,
            description: self.description,
            status: self.status,
            prompt: self.prompt,
            models: self.models,
            max_tokens: self.max_tokens,
            project_id: self.creator.project_id,
            attempts: self.attempts,
            cancel_requested: self.cancel_requested,
            error: self.error,
            cost_usd: cost.normalize().to_string(),
            results: results.into_iter().map(|r| r.result.clone()).collect(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
        }
    }
}
