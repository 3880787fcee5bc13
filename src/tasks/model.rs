//! What the task API takes and gives: plain serde types, apart from the code that checks and
//! stores them, so that each shape reads in one place.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A task's state. `queued` → `running` → one of the three final ones; a task whose worker
/// died goes from `running` back to running on another worker once its lease expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = TaskStatus)]
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
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
#[schema(as = TaskModels)]
pub enum ModelsField {
    One(String),
    Several(Vec<String>),
}

/// `POST /api/v1/tasks`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TaskInput)]
pub struct CreateTask {
    /// 1 to 200 characters, not blank.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// At most 2000 characters.
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub description: String,
    /// Sent to each model as the one user message; at most `[tasks] max_prompt_bytes`.
    #[schema(min_length = 1)]
    pub prompt: String,
    pub models: ModelsField,
    #[schema(default = 100, minimum = 1, maximum = 1_000_000)]
    pub max_tokens: Option<u64>,
}

/// `PUT /api/v1/tasks/{id}`: each field given is changed; `status` may only be set to
/// `cancelled`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TaskUpdate)]
pub struct UpdateTask {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    /// Only `cancelled`: cancels a queued or running task.
    pub status: Option<Status>,
}

/// Token counts of one model's answer, in OpenAI's words.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TaskUsage)]
pub struct ResultUsage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
}

/// Why a model gave no answer, in the gateway's error words.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TaskResultError)]
pub struct ResultError {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// One model's outcome within a task.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskResult {
    pub model: String,
    /// `succeeded`, `failed` or `cancelled`.
    #[schema(pattern = "^(succeeded|failed|cancelled)$")]
    pub status: String,
    #[schema(required = true)]
    pub text: Option<String>,
    pub usage: ResultUsage,
    /// The cost its usage row records, as an exact decimal string.
    #[schema(pattern = r"^\d+(\.\d+)?$")]
    pub cost_usd: String,
    #[schema(required = true, minimum = 0)]
    pub latency_ms: Option<i64>,
    #[schema(required = true)]
    pub error: Option<ResultError>,
    /// The usage row's `request_id`.
    #[schema(required = true)]
    pub request_id: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A task as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Task)]
pub struct TaskView {
    #[schema(format = Uuid)]
    pub id: String,
    /// Always `task`.
    #[schema(pattern = "^task$")]
    pub object: &'static str,
    pub name: String,
    pub description: String,
    pub status: Status,
    pub prompt: String,
    pub models: Vec<String>,
    pub max_tokens: i64,
    /// The project the task belongs to (its creator's).
    #[schema(required = true, format = Uuid)]
    pub project_id: Option<String>,
    #[schema(minimum = 0)]
    pub attempts: i64,
    pub cancel_requested: bool,
    /// Why the task failed, when it did as a whole.
    #[schema(required = true)]
    pub error: Option<String>,
    /// The sum of its results' costs.
    #[schema(pattern = r"^\d+(\.\d+)?$")]
    pub cost_usd: String,
    /// One per model that finished, succeeded or not.
    pub results: Vec<TaskResult>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    #[schema(required = true, format = DateTime)]
    pub started_at: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub finished_at: Option<String>,
}

/// `GET /api/v1/tasks`'s answer: one page, newest first; `next` is the cursor of the
/// following page (`?after=`), null on the last one. `Page::answer` builds it as JSON, so
/// this type only describes it.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskList {
    /// Always `list`.
    #[schema(pattern = "^list$")]
    object: String,
    data: Vec<TaskView>,
    has_more: bool,
    #[schema(required = true, format = Uuid)]
    next: Option<String>,
}

/// `DELETE /api/v1/tasks/{id}`'s answer, as OpenAI answers a deletion.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TaskDeleted)]
pub struct Deleted {
    #[schema(format = Uuid)]
    pub id: String,
    /// Always `task.deleted`.
    #[schema(pattern = r"^task\.deleted$")]
    pub object: &'static str,
    pub deleted: bool,
}
