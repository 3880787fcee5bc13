//! The API's statements on the task tables: create within the queued bound, read, list,
//! change, cancel and delete, each within the caller's scope.

use super::row::{result_row, task_row, ResultRow, TaskRow, RESULT_COLUMNS, TASK_COLUMNS};
use crate::auth::{Caller, Role};
use crate::store::{timestamp, Arg, Db};

/// Which tasks a caller sees: an admin all of them; anyone else their project's, or, without
/// a project, the ones their key created (or, without a key either, the ones created under
/// the same principal: one JWT subject, or the anonymous callers of an open gateway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Project(String),
    Key(String),
    Principal(String),
}

impl Scope {
    pub fn of(caller: &Caller) -> Scope {
        if caller.role == Role::Admin {
            return Scope::All;
        }
        Scope::own(caller)
    }

    /// The caller's own tasks, whatever its role: what the queued bound counts.
    pub fn own(caller: &Caller) -> Scope {
        match (&caller.project_id, &caller.key_id) {
            (Some(p), _) => Scope::Project(p.to_string()),
            (None, Some(k)) => Scope::Key(k.to_string()),
            (None, None) => Scope::Principal(caller.principal.clone()),
        }
    }

    /// The condition on `tasks`, its parameter numbered `$n` (pushed on `args`).
    fn condition(&self, args: &mut Vec<Arg>) -> String {
        let mut bind = |v: &str| {
            args.push(v.into());
            args.len()
        };
        match self {
            Scope::All => "TRUE".into(),
            Scope::Project(p) => format!("project_id = ${}::uuid", bind(p)),
            Scope::Key(k) => format!("(project_id IS NULL AND api_key_id = ${}::uuid)", bind(k)),
            Scope::Principal(p) => format!(
                "(project_id IS NULL AND api_key_id IS NULL AND owner = ${})",
                bind(p)
            ),
        }
    }
}

/// A task to queue, checked.
pub struct NewTask<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub prompt: &'a str,
    pub models: &'a [String],
    pub max_tokens: u64,
}

fn now() -> String {
    timestamp(chrono::Utc::now())
}

/// Queues the task unless the creator's scope already has `max_queued` queued ones (None).
/// The count and the insert are one statement, so concurrent creations overshoot the bound
/// by at most their number.
pub async fn insert(
    db: &Db,
    caller: &Caller,
    new: &NewTask<'_>,
    max_queued: u64,
) -> anyhow::Result<Option<String>> {
    let id = crate::ids::new_id();
    let role = if caller.role == Role::Admin {
        "admin"
    } else {
        "user"
    };
    let mut args: Vec<Arg> = vec![
        id.clone().into(),
        new.name.into(),
        new.description.into(),
        caller.project_id.as_deref().map(str::to_owned).into(),
        caller.key_id.as_deref().map(str::to_owned).into(),
        caller.principal.clone().into(),
        role.into(),
        new.prompt.into(),
        serde_json::to_string(new.models)?.into(),
        (new.max_tokens as i64).into(),
        now().into(),
        (max_queued.min(i64::MAX as u64) as i64).into(),
    ];
    let scope = Scope::own(caller).condition(&mut args);
    let sql = format!(
        "INSERT INTO tasks (id, name, description, status, project_id, api_key_id, owner,
             owner_role, prompt, models, max_tokens, created_at, updated_at)
         SELECT $1::uuid, $2, $3, 'queued', $4::uuid, $5::uuid, $6, $7, $8, $9::jsonb, $10,
             $11::timestamptz, $11::timestamptz
         WHERE (SELECT COUNT(*) FROM tasks WHERE status = 'queued' AND {scope}) < $12"
    );
    let inserted = db.execute(&sql, &args).await?;
    Ok((inserted == 1).then_some(id))
}

/// One task the scope sees.
pub async fn get(db: &Db, scope: &Scope, id: &str) -> anyhow::Result<Option<TaskRow>> {
    let mut args: Vec<Arg> = vec![id.into()];
    let cond = scope.condition(&mut args);
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1::uuid AND {cond}");
    db.fetch_all(&sql, &args)
        .await?
        .first()
        .map(task_row)
        .transpose()
}

/// A page of the scope's tasks, newest first (ids are time-ordered), after the cursor.
pub async fn list(
    db: &Db,
    scope: &Scope,
    status: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> anyhow::Result<Vec<TaskRow>> {
    let mut args: Vec<Arg> = Vec::new();
    let mut conds = vec![scope.condition(&mut args)];
    if let Some(s) = status {
        args.push(s.into());
        conds.push(format!("status = ${}", args.len()));
    }
    if let Some(a) = after {
        args.push(a.into());
        conds.push(format!("id < ${}::uuid", args.len()));
    }
    args.push((limit as i64).into());
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE {} ORDER BY id DESC LIMIT ${}",
        conds.join(" AND "),
        args.len()
    );
    db.fetch_all(&sql, &args)
        .await?
        .iter()
        .map(task_row)
        .collect()
}

/// The results of these tasks.
pub async fn results(db: &Db, ids: &[&str]) -> anyhow::Result<Vec<ResultRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = (1..=ids.len()).map(|i| format!("${i}::uuid")).collect();
    let sql = format!(
        "SELECT {RESULT_COLUMNS} FROM task_results WHERE task_id IN ({})",
        list.join(", ")
    );
    let args: Vec<Arg> = ids.iter().map(|id| (*id).into()).collect();
    db.fetch_all(&sql, &args)
        .await?
        .iter()
        .map(result_row)
        .collect()
}

/// Renames or re-describes a task (the fields given).
pub async fn rename(
    db: &Db,
    id: &str,
    name: Option<&str>,
    description: Option<&str>,
) -> anyhow::Result<()> {
    let sql = "UPDATE tasks SET name = COALESCE($2, name),
                   description = COALESCE($3, description), updated_at = $4::timestamptz
               WHERE id = $1::uuid";
    let args: Vec<Arg> = vec![
        id.into(),
        name.map(str::to_owned).into(),
        description.map(str::to_owned).into(),
        now().into(),
    ];
    db.execute(sql, &args).await?;
    Ok(())
}

/// Asks for a task to be cancelled: a queued one is cancelled here and now; a running one is
/// flagged for its worker, which stops it at its next lease renewal (or at once, when it runs
/// on this instance). False when the task had already finished.
pub async fn request_cancel(db: &Db, id: &str) -> anyhow::Result<bool> {
    let sql = "UPDATE tasks SET cancel_requested = TRUE,
                   status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
                   finished_at = CASE WHEN status = 'queued' THEN $2::timestamptz
                                      ELSE finished_at END,
                   updated_at = $2::timestamptz
               WHERE id = $1::uuid AND status IN ('queued', 'running')";
    Ok(db.execute(sql, &[id.into(), now().into()]).await? == 1)
}

/// Deletes a task and its results.
pub async fn delete(db: &Db, id: &str) -> anyhow::Result<bool> {
    let sql = "DELETE FROM tasks WHERE id = $1::uuid";
    Ok(db.execute(sql, &[id.into()]).await? == 1)
}
