//! `/api/v1/tasks`: queue a task, list, read, rename or cancel, and delete tasks. A caller
//! sees its own project's tasks (`tasks::store::Scope`); another project's task is a 404, as
//! a missing one, so ids tell nothing. Admins see all.

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;

use super::task_input::{check_create, check_update};
use crate::admin::input::{object, query, read_json, typed};
use crate::admin::page::{Page, SortKey, PARAMS};
use crate::auth::Caller;
use crate::error::{ErrorBody, GatewayError};
use crate::proxy::{error_response, json_response, ClientBody, Gateway};
use crate::tasks::model::{CreateTask, Deleted, Status, TaskList, TaskView, UpdateTask};
use crate::tasks::store::{self, NewTask, Scope};
use crate::tasks::{TaskRow, Tasks};

type Response = http::Response<ClientBody>;

/// What every task handler works with.
pub struct TaskCtx<'a> {
    pub gw: &'a Gateway,
    pub tasks: &'a Tasks,
    pub caller: &'a Caller,
}

fn answer(status: StatusCode, result: Result<Value, GatewayError>) -> Response {
    match result {
        Ok(body) => json_response(status, body),
        Err(e) => error_response(&e),
    }
}

/// The database could not be used: said without its details, which go to the log.
fn unavailable(e: anyhow::Error) -> GatewayError {
    tracing::warn!(error = %e, "task store unavailable");
    GatewayError::unavailable("The task queue could not be reached; try again shortly.")
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, GatewayError> {
    serde_json::to_value(v).map_err(|_| GatewayError::internal("A task could not be shown."))
}

/// `POST /api/v1/tasks`.
#[utoipa::path(
    post,
    path = "/api/v1/tasks",
    operation_id = "create_task",
    tag = "tasks",
    summary = "Queue a task: one prompt for one or more models",
    description = "The task is queued for the workers, which send the prompt to each model as a chat completion (routed, limited, budgeted and metered as any request; usage rows' endpoint `api.tasks`). Poll `GET /api/v1/tasks/{id}` for its results.",
    request_body = CreateTask,
    responses(
        (status = 201, description = "The task, queued.", body = TaskView),
        (status = 400, description = "A missing or wrong field, named in `param`.", body = ErrorBody),
        (status = 403, description = "The key may not use one of the models (`code` `model_not_allowed`).", body = ErrorBody),
        (status = 404, description = "No model of that name (`code` `model_not_found`, `param` `models`).", body = ErrorBody),
        (status = 413, description = "The body or the prompt is over its limit (`[tasks] max_prompt_bytes`).", body = ErrorBody),
        (status = 429, description = "The project has `[tasks] max_queued_per_project` tasks queued (`code` `too_many_queued_tasks`); `retry-after` says when to retry.", body = ErrorBody),
        (status = 503, description = "The task queue could not be reached.", body = ErrorBody),
    )
)]
pub async fn create(ctx: &TaskCtx<'_>, req: Request<Incoming>) -> Response {
    answer(StatusCode::CREATED, create_task(ctx, req).await)
}

async fn create_task(ctx: &TaskCtx<'_>, req: Request<Incoming>) -> Result<Value, GatewayError> {
    let timeout = ctx.gw.runtime.load().request_timeout;
    let input: CreateTask = typed(object(read_json(req, timeout).await?)?)?;
    let config = &ctx.tasks.config;
    let checked = check_create(&input, config, ctx.gw, ctx.caller)?;
    let new = NewTask {
        name: &input.name,
        description: &input.description,
        prompt: &input.prompt,
        models: &checked.models,
        max_tokens: checked.max_tokens,
    };
    let max = config.max_queued_per_project;
    let id = store::insert(&ctx.tasks.db, ctx.caller, &new, max)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| too_many_queued(max))?;
    ctx.tasks.queued();
    let row = find(ctx, &id).await?;
    view(ctx, row).await
}

fn too_many_queued(max: u64) -> GatewayError {
    GatewayError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_exceeded",
        format!("This project has {max} tasks queued already ([tasks] max_queued_per_project); wait for some to start, or cancel some."),
    )
    .code("too_many_queued_tasks")
    .header(http::header::RETRY_AFTER, http::HeaderValue::from_static("5"))
}

/// `GET /api/v1/tasks?status=&limit=&after=`.
#[utoipa::path(
    get,
    path = "/api/v1/tasks",
    operation_id = "list_tasks",
    tag = "tasks",
    summary = "List tasks",
    description = "The caller's project's tasks (an admin's: all), newest first.",
    params(Page, ("status" = Option<Status>, Query, description = "Only tasks in this state.")),
    responses(
        (status = 200, description = "A page of tasks.", body = TaskList),
        (status = 400, description = "A wrong parameter, named in `param`.", body = ErrorBody),
        (status = 503, description = "The task queue could not be reached.", body = ErrorBody),
    )
)]
pub async fn list(ctx: &TaskCtx<'_>, query_string: Option<&str>) -> Response {
    answer(StatusCode::OK, list_tasks(ctx, query_string).await)
}

async fn list_tasks(ctx: &TaskCtx<'_>, query_string: Option<&str>) -> Result<Value, GatewayError> {
    let allowed = [PARAMS[0], PARAMS[1], "status"];
    let q = query(query_string, &allowed)?;
    let page = Page::from_query(&q, SortKey::Id)?;
    let status = match q.get("status") {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            GatewayError::invalid_param(
                "status",
                "`status` must be queued, running, succeeded, failed or cancelled.",
            )
        })?),
    };
    let scope = Scope::of(ctx.caller);
    let rows = store::list(
        &ctx.tasks.db,
        &scope,
        status.map(Status::as_str),
        page.after.as_deref(),
        page.fetch(),
    )
    .await
    .map_err(unavailable)?;
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let results = store::results(&ctx.tasks.db, &ids)
        .await
        .map_err(unavailable)?;
    let views = rows
        .into_iter()
        .map(|r| to_json(&r.view(&results)))
        .collect::<Result<Vec<Value>, _>>()?;
    Ok(page.answer(views, "id"))
}

/// The task, when the caller's scope sees it; else the 404 of a missing one.
async fn find(ctx: &TaskCtx<'_>, id: &str) -> Result<TaskRow, GatewayError> {
    let not_found = || GatewayError::not_found(format!("No task with id `{}`.", shown(id)));
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(not_found());
    }
    store::get(&ctx.tasks.db, &Scope::of(ctx.caller), id)
        .await
        .map_err(unavailable)?
        .ok_or_else(not_found)
}

fn shown(id: &str) -> String {
    id.chars().take(64).collect()
}

async fn view(ctx: &TaskCtx<'_>, row: TaskRow) -> Result<Value, GatewayError> {
    let results = store::results(&ctx.tasks.db, &[row.id.as_str()])
        .await
        .map_err(unavailable)?;
    to_json(&row.view(&results))
}

/// `GET /api/v1/tasks/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}",
    operation_id = "get_task",
    tag = "tasks",
    summary = "Get a task and its results",
    params(("id" = String, Path, format = Uuid)),
    responses(
        (status = 200, description = "The task, with one result per model that finished.", body = TaskView),
        (status = 404, description = "No task of that id that the caller may see.", body = ErrorBody),
        (status = 503, description = "The task queue could not be reached.", body = ErrorBody),
    )
)]
pub async fn get(ctx: &TaskCtx<'_>, id: &str) -> Response {
    let found = async { view(ctx, find(ctx, id).await?).await };
    answer(StatusCode::OK, found.await)
}

/// `PUT /api/v1/tasks/{id}`: `name`, `description`, and `status: "cancelled"`.
#[utoipa::path(
    put,
    path = "/api/v1/tasks/{id}",
    operation_id = "update_task",
    tag = "tasks",
    summary = "Rename a task, or cancel it",
    params(("id" = String, Path, format = Uuid)),
    request_body = UpdateTask,
    responses(
        (status = 200, description = "The task as changed.", body = TaskView),
        (status = 400, description = "A wrong field, named in `param`.", body = ErrorBody),
        (status = 404, description = "No task of that id that the caller may see.", body = ErrorBody),
        (status = 409, description = "Cancelling a task that finished otherwise (`code` `task_finished`).", body = ErrorBody),
        (status = 413, description = "The body is over its limit.", body = ErrorBody),
        (status = 503, description = "The task queue could not be reached.", body = ErrorBody),
    )
)]
pub async fn update(ctx: &TaskCtx<'_>, id: &str, req: Request<Incoming>) -> Response {
    answer(StatusCode::OK, update_task(ctx, id, req).await)
}

async fn update_task(
    ctx: &TaskCtx<'_>,
    id: &str,
    req: Request<Incoming>,
) -> Result<Value, GatewayError> {
    let timeout = ctx.gw.runtime.load().request_timeout;
    let input: UpdateTask = typed(object(read_json(req, timeout).await?)?)?;
    check_update(&input)?;
    let row = find(ctx, id).await?;
    let db = &ctx.tasks.db;
    if input.name.is_some() || input.description.is_some() {
        store::rename(db, id, input.name.as_deref(), input.description.as_deref())
            .await
            .map_err(unavailable)?;
    }
    if input.status == Some(Status::Cancelled) {
        cancel(ctx, &row).await?;
    }
    view(ctx, find(ctx, id).await?).await
}

/// Cancels a queued or running task; one that is cancelled already stays so, and one that
/// finished otherwise cannot be.
async fn cancel(ctx: &TaskCtx<'_>, row: &TaskRow) -> Result<(), GatewayError> {
    let flagged = stop(ctx, &row.id).await?;
    if flagged || row.status == Status::Cancelled {
        return Ok(());
    }
    Err(GatewayError::new(
        StatusCode::CONFLICT,
        "invalid_request_error",
        format!(
            "The task has finished ({}); only a queued or running task can be cancelled.",
            row.status.as_str()
        ),
    )
    .code("task_finished")
    .param("status"))
}

/// Asks for the task to be cancelled (`store::request_cancel`) and stops its calls at once
/// when they run on this instance. False when the task had already finished.
async fn stop(ctx: &TaskCtx<'_>, id: &str) -> Result<bool, GatewayError> {
    let flagged = store::request_cancel(&ctx.tasks.db, id)
        .await
        .map_err(unavailable)?;
    ctx.tasks.cancel_here(id);
    Ok(flagged)
}

/// `DELETE /api/v1/tasks/{id}`: a running task is cancelled first (its calls stop), then
/// the task and its results are deleted.
#[utoipa::path(
    delete,
    path = "/api/v1/tasks/{id}",
    operation_id = "delete_task",
    tag = "tasks",
    summary = "Delete a task and its results",
    description = "A queued or running task is cancelled first, so its calls stop.",
    params(("id" = String, Path, format = Uuid)),
    responses(
        (status = 200, description = "The task is deleted.", body = Deleted),
        (status = 404, description = "No task of that id that the caller may see.", body = ErrorBody),
        (status = 503, description = "The task queue could not be reached.", body = ErrorBody),
    )
)]
pub async fn delete(ctx: &TaskCtx<'_>, id: &str) -> Response {
    let deleted = async {
        let row = find(ctx, id).await?;
        if !row.status.is_final() {
            stop(ctx, id).await?;
        }
        store::delete(&ctx.tasks.db, id)
            .await
            .map_err(unavailable)?;
        to_json(&Deleted {
            id: row.id,
            object: "task.deleted",
            deleted: true,
        })
    };
    answer(StatusCode::OK, deleted.await)
}
