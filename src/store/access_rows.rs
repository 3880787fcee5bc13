//! `projects` and `api_keys` as the admin API reads and writes them: as JSON rows, in the
//! transaction that also writes the change's audit row (the `Db` functions of `projects` and
//! `keys`, which the CLI uses, each run on their own). A key's hash never leaves here.

use super::columns::{insert, select_list, update, Columns, JsonRow, Kind, Query};
use super::{timestamp, Db, Tx};
use crate::ids::new_id;

pub const PROJECT_COLUMNS: &Columns = &[
    ("id", Kind::Id),
    ("name", Kind::Text),
    ("budget_usd", Kind::Decimal),
    ("budget_period", Kind::Text),
    ("created_at", Kind::Time),
];

/// Every column but `key_hash`, which is written once and never read back.
pub const KEY_COLUMNS: &Columns = &[
    ("id", Kind::Id),
    ("name", Kind::Text),
    ("key_prefix", Kind::Text),
    ("project_id", Kind::Id),
    ("role", Kind::Text),
    ("allowed_models", Kind::Json),
    ("rpm", Kind::Int),
    ("tpm", Kind::Int),
    ("budget_usd", Kind::Decimal),
    ("expires_at", Kind::Time),
    ("revoked_at", Kind::Time),
    ("created_at", Kind::Time),
];

/// The key's project's name, beside its own columns.
const KEY_JOINED: &Columns = &[("project", Kind::Text)];

fn projects() -> Query {
    Query::new(format!(
        "SELECT {} FROM projects j WHERE TRUE",
        select_list("j", PROJECT_COLUMNS)
    ))
}

fn keys() -> Query {
    Query::new(format!(
        "SELECT {}, j.name AS project FROM api_keys k
         LEFT JOIN projects j ON j.id = k.project_id WHERE TRUE",
        select_list("k", KEY_COLUMNS)
    ))
}

impl Db {
    /// Up to `limit` projects by name, after the name `after`.
    pub async fn list_project_rows(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<JsonRow>> {
        let mut q = projects();
        q.and(" AND j.name > ?", after)
            .push(&format!(" ORDER BY j.name LIMIT {limit}"));
        self.fetch_json(&q, PROJECT_COLUMNS, &[]).await
    }

    pub async fn project_row(&self, name: &str) -> anyhow::Result<Option<JsonRow>> {
        let mut q = projects();
        q.and(" AND j.name = ?", Some(name));
        Ok(self.fetch_json(&q, PROJECT_COLUMNS, &[]).await?.pop())
    }

    /// Up to `limit` keys in creation order (ids are time-ordered), of one project when
    /// `project` is given, after the id `after`.
    pub async fn list_key_rows(
        &self,
        project: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<JsonRow>> {
        let mut q = keys();
        q.and(" AND j.name = ?", project)
            .and(" AND k.id > ?::uuid", after)
            .push(&format!(" ORDER BY k.id LIMIT {limit}"));
        self.fetch_json(&q, KEY_COLUMNS, KEY_JOINED).await
    }

    pub async fn key_row(&self, id: &str) -> anyhow::Result<Option<JsonRow>> {
        let mut q = keys();
        q.and(" AND k.id = ?::uuid", Some(id));
        Ok(self.fetch_json(&q, KEY_COLUMNS, KEY_JOINED).await?.pop())
    }
}

impl Tx {
    /// The project named `name`, held until the commit.
    pub async fn lock_project(&mut self, name: &str) -> anyhow::Result<Option<JsonRow>> {
        let mut q = projects();
        q.and(" AND j.name = ?", Some(name)).push(self.for_update());
        Ok(self.fetch_json(&q, PROJECT_COLUMNS, &[]).await?.pop())
    }

    /// The project `id` as this transaction sees it.
    pub async fn project_by_id(&mut self, id: &str) -> anyhow::Result<Option<JsonRow>> {
        let mut q = projects();
        q.and(" AND j.id = ?::uuid", Some(id));
        Ok(self.fetch_json(&q, PROJECT_COLUMNS, &[]).await?.pop())
    }

    /// A new project from `values` (columns of `PROJECT_COLUMNS`); its id.
    pub async fn insert_project(&mut self, values: &JsonRow) -> anyhow::Result<String> {
        let id = new_id();
        let mut row = values.clone();
        row.insert("id".into(), id.clone().into());
        row.insert("created_at".into(), timestamp(chrono::Utc::now()).into());
        let (sql, args) = insert("projects", PROJECT_COLUMNS, &row);
        self.execute(&sql, &args).await?;
        Ok(id)
    }

    pub async fn update_project(&mut self, id: &str, values: &JsonRow) -> anyhow::Result<()> {
        let (sql, args) = update("projects", PROJECT_COLUMNS, values, id, "");
        self.execute(&sql, &args).await?;
        Ok(())
    }

    /// The key `id`, held until the commit.
    pub async fn lock_key(&mut self, id: &str) -> anyhow::Result<Option<JsonRow>> {
        let lock = self.for_update_of("k");
        let mut q = keys();
        q.and(" AND k.id = ?::uuid", Some(id)).push(&lock);
        Ok(self.fetch_json(&q, KEY_COLUMNS, KEY_JOINED).await?.pop())
    }

    /// A new key from `values` (columns of `KEY_COLUMNS`) and its hash; its id.
    pub async fn insert_key(&mut self, values: &JsonRow, key_hash: &str) -> anyhow::Result<String> {
        let id = new_id();
        let mut row = values.clone();
        row.insert("id".into(), id.clone().into());
        row.insert("created_at".into(), timestamp(chrono::Utc::now()).into());
        row.insert("key_hash".into(), key_hash.into());
        // The hash is written here and nowhere read back: it is not in KEY_COLUMNS.
        let with_hash: Vec<_> = KEY_COLUMNS
            .iter()
            .copied()
            .chain([("key_hash", Kind::Text)])
            .collect();
        let (sql, args) = insert("api_keys", &with_hash, &row);
        self.execute(&sql, &args).await?;
        Ok(id)
    }

    pub async fn update_key(&mut self, id: &str, values: &JsonRow) -> anyhow::Result<()> {
        let (sql, args) = update("api_keys", KEY_COLUMNS, values, id, "");
        self.execute(&sql, &args).await?;
        Ok(())
    }

    /// Marks the key revoked (it stops working within `key_cache_ttl_secs`).
    pub async fn revoke_key(&mut self, id: &str) -> anyhow::Result<bool> {
        let n = self
            .execute(
                "UPDATE api_keys SET revoked_at = $2::timestamptz
                 WHERE id = $1::uuid AND revoked_at IS NULL",
                &[id.into(), timestamp(chrono::Utc::now()).into()],
            )
            .await?;
        Ok(n == 1)
    }
}
