//! `api_keys`: gateway keys, stored as SHA-256 digests only. Create, read, list, change and
//! revoke, in typed rows (money as `Decimal`) for the CLI and the admin API alike.

use anyhow::Context;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::{timestamp, Arg, Changes, Db, DbRow};
use crate::ids::new_id;
use crate::limits::budget::Period;

/// A key to create. `project` is a project's name: created when it does not exist yet.
#[derive(Debug, Clone, Default)]
pub struct NewApiKey {
    pub name: String,
    pub project: Option<String>,
    pub role: String,
    /// Public names, routes or `provider/model_id` the key may ask for; None or empty: all.
    pub allowed_models: Option<Vec<String>>,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    /// What the key may spend over its whole life.
    pub budget_usd: Option<Decimal>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Changes to a key: a field left None stays as it is; `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct ApiKeyUpdate {
    pub name: Option<String>,
    pub project: Option<Option<String>>,
    pub role: Option<String>,
    pub allowed_models: Option<Option<Vec<String>>>,
    pub rpm: Option<Option<i64>>,
    pub tpm: Option<Option<i64>>,
    pub budget_usd: Option<Option<Decimal>>,
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

/// A stored key (never the key itself), with its project's budget.
#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub key_prefix: String,
    pub project_id: Option<String>,
    pub project_name: Option<String>,
    pub role: String,
    pub allowed_models: Option<Vec<String>>,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub budget_usd: Option<Decimal>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub project_budget_usd: Option<Decimal>,
    pub project_budget_period: Period,
}

const KEY_COLUMNS: &str =
    "k.id::text AS id, k.name, k.key_prefix, k.project_id::text AS project_id,
    p.name AS project_name, k.role, k.allowed_models::text AS allowed_models, k.rpm, k.tpm,
    k.budget_usd::text AS budget_usd, k.expires_at::text AS expires_at,
    k.revoked_at::text AS revoked_at, k.created_at::text AS created_at,
    p.budget_usd::text AS project_budget_usd, p.budget_period AS project_budget_period";

const KEY_FROM: &str = "FROM api_keys k LEFT JOIN projects p ON p.id = k.project_id";

impl Db {
    pub async fn insert_api_key(
        &self,
        key: &NewApiKey,
        key_hash: &str,
        key_prefix: &str,
    ) -> anyhow::Result<String> {
        check_key_fields(&key.role, key.rpm, key.tpm, key.budget_usd)?;
        let project_id = match &key.project {
            Some(p) => Some(self.ensure_project(p).await?),
            None => None,
        };
        let id = new_id();
        self.execute(
            "INSERT INTO api_keys (id, name, key_prefix, key_hash, project_id, role,
                allowed_models, rpm, tpm, budget_usd, expires_at, created_at)
             VALUES ($1::uuid, $2, $3, $4, $5::uuid, $6, $7::jsonb, $8, $9, $10::numeric,
                $11::timestamptz, $12::timestamptz)",
            &[
                id.as_str().into(),
                key.name.as_str().into(),
                key_prefix.into(),
                key_hash.into(),
                project_id.into(),
                key.role.as_str().into(),
                models_json(key.allowed_models.as_deref())?.into(),
                key.rpm.into(),
                key.tpm.into(),
                key.budget_usd.map(|d| d.to_string()).into(),
                key.expires_at.map(timestamp).into(),
                timestamp(Utc::now()).into(),
            ],
        )
        .await?;
        Ok(id)
    }

    /// The key with this digest, whatever its state; the caller decides what revoked or
    /// expired means.
    pub async fn find_api_key(&self, key_hash: &str) -> anyhow::Result<Option<ApiKeyRow>> {
        let sql = format!("SELECT {KEY_COLUMNS} {KEY_FROM} WHERE k.key_hash = $1");
        let rows = self.fetch_all(&sql, &[key_hash.into()]).await?;
        rows.first().map(key_row).transpose()
    }

    /// The key with this id or prefix, whatever its state.
    pub async fn get_api_key(&self, id_or_prefix: &str) -> anyhow::Result<Option<ApiKeyRow>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} {KEY_FROM} WHERE k.id::text = $1 OR k.key_prefix = $1
             ORDER BY k.created_at"
        );
        let rows = self.fetch_all(&sql, &[id_or_prefix.into()]).await?;
        if rows.len() > 1 {
            anyhow::bail!("{id_or_prefix:?} is the prefix of several keys: use the key's id");
        }
        rows.first().map(key_row).transpose()
    }

    pub async fn list_api_keys(&self) -> anyhow::Result<Vec<ApiKeyRow>> {
        let sql = format!("SELECT {KEY_COLUMNS} {KEY_FROM} ORDER BY k.created_at");
        self.fetch_all(&sql, &[])
            .await?
            .iter()
            .map(key_row)
            .collect()
    }

    /// Applies `update` to the key with this id or prefix; the key as it is now, or None
    /// when there is no such key. Gateways see the change within `key_cache_ttl_secs`.
    pub async fn update_api_key(
        &self,
        id_or_prefix: &str,
        update: &ApiKeyUpdate,
    ) -> anyhow::Result<Option<ApiKeyRow>> {
        let Some(key) = self.get_api_key(id_or_prefix).await? else {
            return Ok(None);
        };
        let role = update.role.as_deref().unwrap_or(&key.role);
        let rpm = update.rpm.unwrap_or(key.rpm);
        let tpm = update.tpm.unwrap_or(key.tpm);
        check_key_fields(role, rpm, tpm, update.budget_usd.unwrap_or(key.budget_usd))?;
        let mut changes = Changes::default();
        if let Some(name) = &update.name {
            changes.set("name", "", name.as_str());
        }
        if let Some(project) = &update.project {
            let id = match project {
                Some(p) => Some(self.ensure_project(p).await?),
                None => None,
            };
            changes.set("project_id", "::uuid", id);
        }
        if let Some(role) = &update.role {
            changes.set("role", "", role.as_str());
        }
        if let Some(models) = &update.allowed_models {
            changes.set("allowed_models", "::jsonb", models_json(models.as_deref())?);
        }
        if let Some(rpm) = update.rpm {
            changes.set("rpm", "", rpm);
        }
        if let Some(tpm) = update.tpm {
            changes.set("tpm", "", tpm);
        }
        if let Some(budget) = update.budget_usd {
            changes.set("budget_usd", "::numeric", budget.map(|d| d.to_string()));
        }
        if let Some(expires) = update.expires_at {
            changes.set("expires_at", "::timestamptz", expires.map(timestamp));
        }
        if !changes.is_empty() {
            let (sql, args) =
                changes.update("api_keys", "id::text = $W1", vec![key.id.clone().into()]);
            self.execute(&sql, &args).await?;
        }
        self.get_api_key(&key.id).await
    }

    /// Marks the key revoked; true when a key with this id or prefix was found.
    pub async fn revoke_api_key(&self, id_or_prefix: &str) -> anyhow::Result<bool> {
        let n = self
            .execute(
                "UPDATE api_keys SET revoked_at = $1::timestamptz
                 WHERE (id::text = $2 OR key_prefix = $2) AND revoked_at IS NULL",
                &[timestamp(Utc::now()).into(), Arg::from(id_or_prefix)],
            )
            .await?;
        Ok(n > 0)
    }
}

/// The rules the columns' CHECKs also hold, said with the field's name.
fn check_key_fields(
    role: &str,
    rpm: Option<i64>,
    tpm: Option<i64>,
    budget: Option<Decimal>,
) -> anyhow::Result<()> {
    if !matches!(role, "admin" | "user") {
        anyhow::bail!("role must be `admin` or `user`, not {role:?}");
    }
    for (field, value) in [("rpm", rpm), ("tpm", tpm)] {
        if value.is_some_and(|v| v < 0) {
            anyhow::bail!("{field} must be 0 or more");
        }
    }
    super::projects::check_budget("budget_usd", budget)
}

/// `allowed_models` as the JSON array stored (None stays NULL).
fn models_json(models: Option<&[String]>) -> anyhow::Result<Option<String>> {
    let Some(models) = models else {
        return Ok(None);
    };
    if let Some(blank) = models
        .iter()
        .find(|m| m.trim().is_empty() || m.trim() != m.as_str())
    {
        anyhow::bail!("allowed_models: {blank:?} is not a model name");
    }
    Ok(Some(serde_json::to_string(models)?))
}

fn key_row(r: &DbRow) -> anyhow::Result<ApiKeyRow> {
    let allowed_models = r
        .opt_text("allowed_models")?
        .map(|json| serde_json::from_str::<Vec<String>>(&json))
        .transpose()
        .context("allowed_models is not a JSON array of names")?;
    Ok(ApiKeyRow {
        id: r.text("id")?,
        name: r.text("name")?,
        key_prefix: r.text("key_prefix")?,
        project_id: r.opt_text("project_id")?,
        project_name: r.opt_text("project_name")?,
        role: r.text("role")?,
        allowed_models,
        rpm: r.opt_int("rpm")?,
        tpm: r.opt_int("tpm")?,
        budget_usd: r.opt_decimal("budget_usd")?,
        expires_at: r.opt_time("expires_at")?,
        revoked_at: r.opt_time("revoked_at")?,
        created_at: r.opt_time("created_at")?.context("created_at is NULL")?,
        project_budget_usd: r.opt_decimal("project_budget_usd")?,
        project_budget_period: super::projects::period(r, "project_budget_period")?,
    })
}
