//! `projects`: a name that keys belong to, and a budget in USD over the project's life
//! (`total`) or per calendar month in UTC (`monthly`), shared by all its keys.

use anyhow::Context;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::{timestamp, Changes, Db, DbRow};
use crate::ids::new_id;
use crate::limits::budget::Period;

#[derive(Debug, Clone, Default)]
pub struct NewProject {
    pub name: String,
    pub budget_usd: Option<Decimal>,
    pub budget_period: Period,
}

/// Changes to a project: a field left None stays as it is; `budget_usd: Some(None)` removes
/// the budget.
#[derive(Debug, Clone, Default)]
pub struct ProjectUpdate {
    pub name: Option<String>,
    pub budget_usd: Option<Option<Decimal>>,
    pub budget_period: Option<Period>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProjectRow {
    pub id: String,
    pub name: String,
    pub budget_usd: Option<Decimal>,
    pub budget_period: Period,
    pub created_at: DateTime<Utc>,
}

const PROJECT_COLUMNS: &str = "id::text AS id, name, budget_usd::text AS budget_usd,
    budget_period, created_at::text AS created_at";

impl Db {
    /// Creates a project; an error names a project of that name that exists already.
    pub async fn create_project(&self, new: &NewProject) -> anyhow::Result<ProjectRow> {
        check_name(&new.name)?;
        check_budget("budget_usd", new.budget_usd)?;
        if self.get_project(&new.name).await?.is_some() {
            anyhow::bail!("a project named {:?} exists already", new.name);
        }
        let id = new_id();
        self.execute(
            "INSERT INTO projects (id, name, budget_usd, budget_period, created_at)
             VALUES ($1::uuid, $2, $3::numeric, $4, $5::timestamptz)",
            &[
                id.as_str().into(),
                new.name.as_str().into(),
                new.budget_usd.map(|d| d.to_string()).into(),
                new.budget_period.as_str().into(),
                timestamp(Utc::now()).into(),
            ],
        )
        .await?;
        self.get_project(&id).await?.context("project vanished")
    }

    /// Creates the project (without a budget) when it does not exist yet; returns its id.
    pub async fn ensure_project(&self, name: &str) -> anyhow::Result<String> {
        check_name(name)?;
        self.execute(
            "INSERT INTO projects (id, name, created_at) VALUES ($1::uuid, $2, $3::timestamptz)
             ON CONFLICT (name) DO NOTHING",
            &[new_id().into(), name.into(), timestamp(Utc::now()).into()],
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

    /// The project with this id or name.
    pub async fn get_project(&self, id_or_name: &str) -> anyhow::Result<Option<ProjectRow>> {
        let sql =
            format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE id::text = $1 OR name = $1");
        let rows = self.fetch_all(&sql, &[id_or_name.into()]).await?;
        rows.first().map(project_row).transpose()
    }

    pub async fn list_projects(&self) -> anyhow::Result<Vec<ProjectRow>> {
        let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects ORDER BY name");
        self.fetch_all(&sql, &[])
            .await?
            .iter()
            .map(project_row)
            .collect()
    }

    /// Applies `update` to the project with this id or name; the project as it is now, or
    /// None when there is no such project. Gateways see a budget change within
    /// `key_cache_ttl_secs`.
    pub async fn update_project(
        &self,
        id_or_name: &str,
        update: &ProjectUpdate,
    ) -> anyhow::Result<Option<ProjectRow>> {
        let Some(project) = self.get_project(id_or_name).await? else {
            return Ok(None);
        };
        let mut changes = Changes::default();
        if let Some(name) = &update.name {
            check_name(name)?;
            changes.set("name", "", name.as_str());
        }
        if let Some(budget) = update.budget_usd {
            check_budget("budget_usd", budget)?;
            changes.set("budget_usd", "::numeric", budget.map(|d| d.to_string()));
        }
        if let Some(period) = update.budget_period {
            changes.set("budget_period", "", period.as_str());
        }
        if !changes.is_empty() {
            let id = vec![project.id.clone().into()];
            let (sql, args) = changes.update("projects", "id::text = $W1", id);
            self.execute(&sql, &args).await?;
        }
        self.get_project(&project.id).await
    }
}

fn check_name(name: &str) -> anyhow::Result<()> {
    if name.trim().is_empty() {
        anyhow::bail!("a project needs a name");
    }
    Ok(())
}

/// A budget is a decimal of at least 0 that the column (NUMERIC(18,6)) holds exactly.
pub(super) fn check_budget(field: &str, budget: Option<Decimal>) -> anyhow::Result<()> {
    let Some(b) = budget else { return Ok(()) };
    if b.is_sign_negative() && !b.is_zero() {
        anyhow::bail!("{field} must be 0 or more, not {b}");
    }
    if b.normalize().scale() > 6 || b.trunc() >= Decimal::from(1_000_000_000_000u64) {
        anyhow::bail!("{field} {b} does not fit: at most 6 decimals and under 10^12");
    }
    Ok(())
}

/// A `budget_period` column; NULL (a key without a project) reads as `total`.
pub(super) fn period(r: &DbRow, col: &str) -> anyhow::Result<Period> {
    match r.opt_text(col)? {
        None => Ok(Period::Total),
        Some(p) => p.parse().map_err(anyhow::Error::msg),
    }
}

fn project_row(r: &DbRow) -> anyhow::Result<ProjectRow> {
    Ok(ProjectRow {
        id: r.text("id")?,
        name: r.text("name")?,
        budget_usd: r.opt_decimal("budget_usd")?,
        budget_period: period(r, "budget_period")?,
        created_at: r.opt_time("created_at")?.context("created_at is NULL")?,
    })
}
