//! `api_keys` and `projects`: gateway keys are stored as SHA-256 digests only.

use anyhow::Context;
use rust_decimal::Decimal;

use super::{timestamp, Arg, Db, DbRow};
use crate::ids::new_id;

#[derive(Debug, Clone, Default)]
pub struct NewApiKey {
    pub name: String,
    pub project: Option<String>,
    pub role: String,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub budget_usd: Option<Decimal>,
}

#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub key_prefix: String,
    pub project_id: Option<String>,
    pub project_name: Option<String>,
    pub role: String,
    pub allowed_models: Option<String>,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub budget_usd: Option<String>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub created_at: String,
}

const KEY_COLUMNS: &str =
    "k.id::text AS id, k.name, k.key_prefix, k.project_id::text AS project_id,
    p.name AS project_name, k.role, k.allowed_models::text AS allowed_models, k.rpm, k.tpm,
    k.budget_usd::text AS budget_usd, k.expires_at::text AS expires_at,
    k.revoked_at::text AS revoked_at, k.created_at::text AS created_at";

impl Db {
    /// Creates the project when it does not exist yet; returns its id.
    pub async fn ensure_project(&self, name: &str) -> anyhow::Result<String> {
        self.execute(
            "INSERT INTO projects (id, name, created_at) VALUES ($1::uuid, $2, $3::timestamptz)
             ON CONFLICT (name) DO NOTHING",
            &[
                new_id().into(),
                name.into(),
                timestamp(chrono::Utc::now()).into(),
            ],
        )
        .await?;
        let rows = self
            .fetch_all(
                "SELECT id::text AS id FROM projects WHERE name = $1",
                &[name.into()],
            )
            .await?;
        rows.first().context("project vanished")?.text("id")
    }

    /// The id of the project with this name, if there is one.
    pub async fn project_id(&self, name: &str) -> anyhow::Result<Option<String>> {
        let rows = self
            .fetch_all(
                "SELECT id::text AS id FROM projects WHERE name = $1",
                &[name.into()],
            )
            .await?;
        rows.first().map(|r| r.text("id")).transpose()
    }

    pub async fn insert_api_key(
        &self,
        key: &NewApiKey,
        key_hash: &str,
        key_prefix: &str,
    ) -> anyhow::Result<String> {
        let project_id = match &key.project {
            Some(p) => Some(self.ensure_project(p).await?),
            None => None,
        };
        let id = new_id();
        self.execute(
            "INSERT INTO api_keys (id, name, key_prefix, key_hash, project_id, role, rpm, tpm,
                budget_usd, created_at)
             VALUES ($1::uuid, $2, $3, $4, $5::uuid, $6, $7, $8, $9::numeric, $10::timestamptz)",
            &[
                id.as_str().into(),
                key.name.as_str().into(),
                key_prefix.into(),
                key_hash.into(),
                project_id.into(),
                key.role.as_str().into(),
                key.rpm.into(),
                key.tpm.into(),
                key.budget_usd.map(|d| d.to_string()).into(),
                timestamp(chrono::Utc::now()).into(),
            ],
        )
        .await?;
        Ok(id)
    }

    /// The key with this digest, whatever its state; the caller decides what revoked or
    /// expired means.
    pub async fn find_api_key(&self, key_hash: &str) -> anyhow::Result<Option<ApiKeyRow>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k LEFT JOIN projects p ON p.id = k.project_id
             WHERE k.key_hash = $1"
        );
        let rows = self.fetch_all(&sql, &[key_hash.into()]).await?;
        rows.first().map(key_row).transpose()
    }

    pub async fn list_api_keys(&self) -> anyhow::Result<Vec<ApiKeyRow>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k LEFT JOIN projects p ON p.id = k.project_id
             ORDER BY k.created_at"
        );
        self.fetch_all(&sql, &[])
            .await?
            .iter()
            .map(key_row)
            .collect()
    }

    /// Marks the key revoked; true when a key with this id or prefix was found.
    pub async fn revoke_api_key(&self, id_or_prefix: &str) -> anyhow::Result<bool> {
        let n = self
            .execute(
                "UPDATE api_keys SET revoked_at = $1::timestamptz
                 WHERE (id::text = $2 OR key_prefix = $2) AND revoked_at IS NULL",
                &[
                    timestamp(chrono::Utc::now()).into(),
                    Arg::from(id_or_prefix),
                ],
            )
            .await?;
        Ok(n > 0)
    }
}

fn key_row(r: &DbRow) -> anyhow::Result<ApiKeyRow> {
    Ok(ApiKeyRow {
        id: r.text("id")?,
        name: r.text("name")?,
        key_prefix: r.text("key_prefix")?,
        project_id: r.opt_text("project_id")?,
        project_name: r.opt_text("project_name")?,
        role: r.text("role")?,
        allowed_models: r.opt_text("allowed_models")?,
        rpm: r.opt_int("rpm")?,
        tpm: r.opt_int("tpm")?,
        budget_usd: r.opt_text("budget_usd")?,
        expires_at: r.opt_text("expires_at")?,
        revoked_at: r.opt_text("revoked_at")?,
        created_at: r.text("created_at")?,
    })
}
