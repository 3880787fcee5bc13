//! `audit_log`: one row per admin change. The admin API writes it in the change's own
//! transaction, so a change is never without its row nor a row without its change; the CLI,
//! whose store calls commit on their own, writes it right after.

use serde_json::{Map, Value};

use super::columns::{row_json, select_list, Columns, Kind, Query};
use super::{timestamp, Db, Tx};
use crate::ids::new_id;

/// One change: who made it, what it did to which row, and the row before and after, as the
/// admin API shows it (so without secrets).
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub actor: &'a str,
    /// `create`, `update`, `delete` or `revoke`.
    pub action: &'static str,
    /// `provider`, `model`, `setting`, `project` or `key`.
    pub resource: &'static str,
    /// The row's name, id or key, as its URL names it.
    pub resource_id: &'a str,
    pub before: Option<&'a Value>,
    pub after: Option<&'a Value>,
}

const AUDIT_COLUMNS: &Columns = &[
    ("id", Kind::Id),
    ("at", Kind::Time),
    ("actor", Kind::Text),
    ("action", Kind::Text),
    ("resource", Kind::Text),
    ("resource_id", Kind::Text),
    ("before", Kind::Json),
    ("after", Kind::Json),
];

/// Which audit rows to list: newest first, older than `before_id` when it is given.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub resource: Option<String>,
    pub actor: Option<String>,
    pub resource_id: Option<String>,
}

impl Tx {
    pub async fn audit(&mut self, entry: AuditEntry<'_>) -> anyhow::Result<()> {
        let json = |v: Option<&Value>| v.map(Value::to_string);
        self.execute(
            "INSERT INTO audit_log (id, at, actor, action, resource, resource_id, before, after)
             VALUES ($1::uuid, $2::timestamptz, $3, $4, $5, $6, $7::jsonb, $8::jsonb)",
            &[
                new_id().into(),
                timestamp(chrono::Utc::now()).into(),
                entry.actor.into(),
                entry.action.into(),
                entry.resource.into(),
                entry.resource_id.into(),
                json(entry.before).into(),
                json(entry.after).into(),
            ],
        )
        .await?;
        Ok(())
    }
}

impl Db {
    /// An audit row in a transaction of its own, for a change already committed (the CLI's).
    pub async fn audit(&self, entry: AuditEntry<'_>) -> anyhow::Result<()> {
        let mut tx = self.begin().await?;
        tx.audit(entry).await?;
        tx.commit().await
    }

    /// Up to `limit` audit rows, newest first (ids are time-ordered), older than the row
    /// `before_id` when given.
    pub async fn list_audit(
        &self,
        filter: &AuditFilter,
        before_id: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<Map<String, Value>>> {
        let mut q = Query::new(format!(
            "SELECT {} FROM audit_log a WHERE TRUE",
            select_list("a", AUDIT_COLUMNS)
        ));
        q.and(" AND a.resource = ?", filter.resource.as_deref())
            .and(" AND a.actor = ?", filter.actor.as_deref())
            .and(" AND a.resource_id = ?", filter.resource_id.as_deref())
            .and(" AND a.id < ?::uuid", before_id)
            .push(&format!(" ORDER BY a.id DESC LIMIT {limit}"));
        let rows = self.fetch_all(&q.sql, &q.args).await?;
        rows.iter().map(|r| row_json(r, AUDIT_COLUMNS)).collect()
    }
}
