//! `llm_providers` as the admin API reads and writes them: live rows by name, soft deletes.
//! Only rows the API created (`managed_by = 'api'`) are ever changed here; the condition is in
//! each statement, so a row the config sync owns is refused even by a racing request.

use super::columns::{select_list, Columns, JsonRow, Kind, Query};
use super::{timestamp, Db, Tx};

pub const PROVIDER_COLUMNS: &Columns = &[
    ("id", Kind::Id),
    ("name", Kind::Text),
    ("display_name", Kind::Text),
    ("api", Kind::Text),
    ("base_url", Kind::Text),
    ("api_key_ref", Kind::Text),
    ("api_version", Kind::Text),
    ("max_parallel_requests", Kind::Int),
    ("requests_per_minute", Kind::Int),
    ("tokens_per_minute", Kind::Int),
    ("queue_timeout_ms", Kind::Int),
    ("timeouts", Kind::Json),
    ("is_enabled", Kind::Bool),
    ("description", Kind::Text),
    ("managed_by", Kind::Text),
    ("created_at", Kind::Time),
    ("updated_at", Kind::Time),
    ("deleted_at", Kind::Time),
];

/// The live provider named `name`.
fn by_name(name: &str, lock: &str) -> Query {
    let mut q = Query::new(format!(
        "SELECT {} FROM llm_providers p WHERE p.deleted_at IS NULL",
        select_list("p", PROVIDER_COLUMNS)
    ));
    q.and(" AND p.name = ?", Some(name)).push(lock);
    q
}

/// The provider `id`, live or deleted.
fn by_id(id: &str) -> Query {
    let mut q = Query::new(format!(
        "SELECT {} FROM llm_providers p WHERE TRUE",
        select_list("p", PROVIDER_COLUMNS)
    ));
    q.and(" AND p.id = ?::uuid", Some(id));
    q
}

impl Db {
    /// Up to `limit` live providers by name, after the name `after`.
    pub async fn list_providers(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<JsonRow>> {
        let mut q = Query::new(format!(
            "SELECT {} FROM llm_providers p WHERE p.deleted_at IS NULL",
            select_list("p", PROVIDER_COLUMNS)
        ));
        q.and(" AND p.name > ?", after)
            .push(&format!(" ORDER BY p.name LIMIT {limit}"));
        self.fetch_json(&q, PROVIDER_COLUMNS, &[]).await
    }

    pub async fn provider(&self, name: &str) -> anyhow::Result<Option<JsonRow>> {
        let q = by_name(name, "");
        Ok(self.fetch_json(&q, PROVIDER_COLUMNS, &[]).await?.pop())
    }
}

impl Tx {
    /// The live provider named `name`, held until the commit.
    pub async fn lock_provider(&mut self, name: &str) -> anyhow::Result<Option<JsonRow>> {
        let q = by_name(name, self.for_update());
        Ok(self.fetch_json(&q, PROVIDER_COLUMNS, &[]).await?.pop())
    }

    /// The provider `id` as this transaction sees it: a change's "after".
    pub async fn provider_by_id(&mut self, id: &str) -> anyhow::Result<Option<JsonRow>> {
        Ok(self
            .fetch_json(&by_id(id), PROVIDER_COLUMNS, &[])
            .await?
            .pop())
    }

    /// A new provider of the API's from `values` (columns of `PROVIDER_COLUMNS`); its id.
    pub async fn insert_provider(&mut self, values: &JsonRow) -> anyhow::Result<String> {
        self.insert_api_row("llm_providers", PROVIDER_COLUMNS, values)
            .await
    }

    /// Sets `values` on the live API provider `id`; false when there is none.
    pub async fn update_provider(&mut self, id: &str, values: &JsonRow) -> anyhow::Result<bool> {
        self.update_api_row("llm_providers", PROVIDER_COLUMNS, values, id)
            .await
    }

    /// Disables and soft-deletes the live API provider `id` (a trigger soft-deletes its
    /// models); false when there is none.
    pub async fn delete_provider(&mut self, id: &str) -> anyhow::Result<bool> {
        let now = timestamp(chrono::Utc::now());
        let n = self
            .execute(
                "UPDATE llm_providers SET is_enabled = FALSE, deleted_at = $2::timestamptz,
                    updated_at = $2::timestamptz
                 WHERE id = $1::uuid AND managed_by = 'api' AND deleted_at IS NULL",
                &[id.into(), now.into()],
            )
            .await?;
        Ok(n == 1)
    }
}
