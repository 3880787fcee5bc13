//! `llm_models` as the admin API reads and writes them: by id, with their provider's name,
//! soft-deleted (usage rows keep their foreign key). Only rows the API created
//! (`managed_by = 'api'`) are changed here, the condition in each statement.

use super::columns::{select_list, Columns, JsonRow, Kind, Query};
use super::{timestamp, Db, Tx};

pub const MODEL_COLUMNS: &Columns = &[
    ("id", Kind::Id),
    ("provider_id", Kind::Id),
    ("model_id", Kind::Text),
    ("name", Kind::Text),
    ("display_name", Kind::Text),
    ("model_type", Kind::Text),
    ("family", Kind::Text),
    ("version", Kind::Text),
    ("tier", Kind::Text),
    ("context_window", Kind::Int),
    ("max_output_tokens", Kind::Int),
    ("supports_streaming", Kind::Bool),
    ("supports_json", Kind::Bool),
    ("supports_function_calling", Kind::Bool),
    ("supports_vision", Kind::Bool),
    ("supports_audio", Kind::Bool),
    ("supports_system_prompt", Kind::Bool),
    ("cost_input_per_million", Kind::Decimal),
    ("cost_output_per_million", Kind::Decimal),
    ("cost_cache_read_per_million", Kind::Decimal),
    ("cost_cache_write_per_million", Kind::Decimal),
    ("parameters", Kind::Json),
    ("rate_limits", Kind::Json),
    ("capabilities", Kind::Json),
    ("metadata", Kind::Json),
    ("status", Kind::Text),
    ("is_default", Kind::Bool),
    ("priority", Kind::Int),
    ("weight", Kind::Int),
    ("release_date", Kind::Date),
    ("deprecation_date", Kind::Date),
    ("typical_latency_ms", Kind::Int),
    ("managed_by", Kind::Text),
    ("created_at", Kind::Time),
    ("updated_at", Kind::Time),
    ("deleted_at", Kind::Time),
];

/// The provider's name, beside the model's own columns.
const JOINED: &Columns = &[("provider", Kind::Text)];

/// Which models to list.
#[derive(Debug, Clone, Default)]
pub struct ModelFilter {
    pub provider: Option<String>,
    pub status: Option<String>,
    pub name: Option<String>,
    pub include_deleted: bool,
}

fn select() -> Query {
    Query::new(format!(
        "SELECT {}, p.name AS provider FROM llm_models m
         JOIN llm_providers p ON p.id = m.provider_id WHERE TRUE",
        select_list("m", MODEL_COLUMNS)
    ))
}

fn by_id(id: &str, lock: &str) -> Query {
    let mut q = select();
    q.and(" AND m.id = ?::uuid", Some(id)).push(lock);
    q
}

impl Db {
    /// Up to `limit` models in creation order (ids are time-ordered), after the id `after`.
    pub async fn list_models(
        &self,
        filter: &ModelFilter,
        after: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<JsonRow>> {
        let mut q = select();
        if !filter.include_deleted {
            q.push(" AND m.deleted_at IS NULL");
        }
        q.and(" AND p.name = ?", filter.provider.as_deref())
            .and(" AND m.status = ?", filter.status.as_deref())
            .and(" AND m.name = ?", filter.name.as_deref())
            .and(" AND m.id > ?::uuid", after)
            .push(&format!(" ORDER BY m.id LIMIT {limit}"));
        self.fetch_json(&q, MODEL_COLUMNS, JOINED).await
    }

    /// The model `id`, live or deleted.
    pub async fn model(&self, id: &str) -> anyhow::Result<Option<JsonRow>> {
        let q = by_id(id, "");
        Ok(self.fetch_json(&q, MODEL_COLUMNS, JOINED).await?.pop())
    }
}

impl Tx {
    /// The model `id`, live or deleted, held until the commit.
    pub async fn lock_model(&mut self, id: &str) -> anyhow::Result<Option<JsonRow>> {
        // The model's row only: a provider's deletion locks the provider, then its models.
        let q = by_id(id, &self.for_update_of("m"));
        Ok(self.fetch_json(&q, MODEL_COLUMNS, JOINED).await?.pop())
    }

    /// The ids of the provider's live models, held until the commit.
    pub async fn live_models_of(&mut self, provider_id: &str) -> anyhow::Result<Vec<String>> {
        let mut q =
            Query::new("SELECT id::text AS id FROM llm_models WHERE deleted_at IS NULL".into());
        q.and(" AND provider_id = ?::uuid", Some(provider_id))
            .push(" ORDER BY id")
            .push(self.for_update());
        let rows = self.fetch_all(&q.sql, &q.args).await?;
        rows.iter().map(|r| r.text("id")).collect()
    }

    /// A new model of the API's from `values` (columns of `MODEL_COLUMNS`); its id.
    pub async fn insert_model(&mut self, values: &JsonRow) -> anyhow::Result<String> {
        self.insert_api_row("llm_models", MODEL_COLUMNS, values)
            .await
    }

    /// Sets `values` on the live API model `id`; false when there is none.
    pub async fn update_model(&mut self, id: &str, values: &JsonRow) -> anyhow::Result<bool> {
        self.update_api_row("llm_models", MODEL_COLUMNS, values, id)
            .await
    }

    /// Soft-deletes the live API model `id`: inactive, no longer the default, `deleted_at`
    /// set; false when there is none.
    pub async fn delete_model(&mut self, id: &str) -> anyhow::Result<bool> {
        let now = timestamp(chrono::Utc::now());
        let n = self
            .execute(
                "UPDATE llm_models SET status = 'inactive', is_default = FALSE,
                    deleted_at = $2::timestamptz, updated_at = $2::timestamptz
                 WHERE id = $1::uuid AND managed_by = 'api' AND deleted_at IS NULL",
                &[id.into(), now.into()],
            )
            .await?;
        Ok(n == 1)
    }
}
