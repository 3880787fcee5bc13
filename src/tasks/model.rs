//! What the task API takes and gives: plain serde types, apart from the code that checks and
//! stores them, so that each shape reads in one place.

use serde::{Deserialize, Serialize};

/// A task's state. `queued` → `running` → one of the three final ones; a task whose worker
/// died goes from `running` back to running on another worker once its lease expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Running,
    /// Finished with at least one model's answer (the others' errors are in their results).
    Succeeded,
    /// Finished without any answer: every model failed, or the task gave up (its reason in
    /// `error`).
    Failed,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Queued,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }
}

/// `models` as a client may send it: one public model name, or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ModelsField {
    One(String),
    Several(Vec<String>),
}

/// `POST /api/v1/tasks`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub prompt: String,
    pub models: ModelsField,
    pub max_tokens: Option<u64>,
}

/// `PUT /api/v1/tasks/{id}`: each field given is changed; `status` may only be set to
/// `cancelled`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateTask {
    pub name: Option<String>,
    pub description: Option<String>,
    pub status: Option<Status>,
}

/// Token counts of one model's answer, in OpenAI's words.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResultUsage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
}

/// Why a model gave no answer, in the gateway's error words.
#[derive(Debug, Clone, Serialize)]
pub struct ResultError {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// One model's outcome within a task.
#[derive(Debug, Clone, Serialize)]
pub struct TaskResult {
    pub model: String,
    /// `succeeded`, `failed` or `cancelled`.
    pub status: String,
    pub text: Option<String>,
    pub usage: ResultUsage,
    /// The cost its usage row records, as an exact decimal string.
    pub cost_usd: String,
    pub latency_ms: Option<i64>,
    pub error: Option<ResultError>,
    /// The usage row's `request_id`.
    pub request_id: Option<String>,
    pub created_at: String,
}

/// A task as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub id: String,
    pub object: &'static str,
    pub name: String,
    pub description: String,
    pub status: Status,
    pub prompt: String,
    pub models: Vec<String>,
    pub max_tokens: i64,
    /// The project the task belongs to (its creator's).
    pub project_id: Option<String>,
    pub attempts: i64,
    pub cancel_requested: bool,
    /// Why the task failed, when it did as a whole.
    pub error: Option<String>,
    /// The sum of its results' costs.
    pub cost_usd: String,
    pub results: Vec<TaskResult>,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// `DELETE /api/v1/tasks/{id}`'s answer, as OpenAI answers a deletion.
#[derive(Debug, Clone, Serialize)]
pub struct Deleted {
    pub id: String,
    pub object: &'static str,
    pub deleted: bool,
}
