//! What a config sync would change in the registry, found without writing anything (for
//! `tollgate check-config`). Each entry of the file is compared, column by column, with the
//! row the sync would write it to, using the very arguments the sync would bind, so the two
//! cannot disagree about what a field means.

use std::collections::{HashMap, HashSet};

use rust_decimal::Decimal;

use super::registry::{model_args, provider_args, route_value, stored_key_ref};
use super::{Arg, Db, DbRow, ROUTE_SETTING_PREFIX};
use crate::config::Config;
use crate::secrets::Sealer;

/// What the sync would do to one provider, model or route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added,
    /// The columns whose values would change.
    Changed(Vec<&'static str>),
    /// Left the file: a provider is disabled, a model deactivated, a route removed.
    Removed,
    /// The admin API owns the row (or the model's provider): the sync leaves it alone.
    Kept,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedChange {
    /// `provider`, `model` or `route`.
    pub table: &'static str,
    /// The provider's or route's name, or the model's `provider/model_id`.
    pub name: String,
    pub change: Change,
}

/// How a column's values compare: the database spells some of them its own way (`0.150000`
/// for `0.15`, `t` for true, JSON with its keys reordered).
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int,
    Bool,
    /// An exact decimal.
    Exact,
    Json,
    Date,
}

use Kind::*;

/// The provider columns the sync writes, at their index in `provider_args` (the key is
/// compared apart: see `stored_key_ref`).
const PROVIDER_COLUMNS: [(usize, &str, Kind); 11] = [
    (2, "display_name", Text),
    (3, "api", Text),
    (4, "base_url", Text),
    (6, "api_version", Text),
    (7, "max_parallel_requests", Int),
    (8, "requests_per_minute", Int),
    (9, "tokens_per_minute", Int),
    (10, "queue_timeout_ms", Int),
    (11, "timeouts", Json),
    (12, "is_enabled", Bool),
    (13, "description", Text),
];

/// The model columns the sync writes, at their index in `model_args`.
const MODEL_COLUMNS: [(usize, &str, Kind); 25] = [
    (3, "name", Text),
    (4, "display_name", Text),
    (5, "model_type", Text),
    (6, "family", Text),
    (7, "version", Text),
    (8, "tier", Text),
    (9, "context_window", Int),
    (10, "max_output_tokens", Int),
    (11, "supports_streaming", Bool),
    (12, "supports_json", Bool),
    (13, "supports_function_calling", Bool),
    (14, "supports_vision", Bool),
    (15, "supports_audio", Bool),
    (16, "supports_system_prompt", Bool),
    (17, "cost_input_per_million", Exact),
    (18, "cost_output_per_million", Exact),
    (19, "cost_cache_read_per_million", Exact),
    (20, "cost_cache_write_per_million", Exact),
    (21, "parameters", Json),
    (22, "rate_limits", Json),
    (23, "status", Text),
    (24, "is_default", Bool),
    (25, "priority", Int),
    (26, "weight", Int),
    (27, "deprecation_date", Date),
];

/// Every column read as text, so both databases answer alike.
fn as_text(prefix: &str, columns: &[(usize, &str, Kind)]) -> String {
    columns
        .iter()
        .map(|(_, c, _)| format!("CAST({prefix}{c} AS TEXT) AS {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn arg_text(arg: &Arg) -> Option<String> {
    match arg {
        Arg::Text(v) => v.clone(),
        Arg::Int(v) => v.map(|n| n.to_string()),
        Arg::Bool(v) => v.map(|b| b.to_string()),
    }
}

fn same(kind: Kind, want: Option<&str>, have: Option<&str>) -> bool {
    let (Some(want), Some(have)) = (want, have) else {
        return want.is_none() && have.is_none();
    };
    let flag = |s: &str| matches!(s, "true" | "t" | "1");
    match kind {
        Text => want == have,
        Int => want.parse::<i64>().ok() == have.parse::<i64>().ok(),
        Bool => flag(want) == flag(have),
        Exact => {
            let d = |s: &str| s.trim().parse::<Decimal>().ok().map(|d| d.normalize());
            d(want) == d(have)
        }
        Json => {
            let j = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
            j(want) == j(have)
        }
        Date => want.get(..10) == have.get(..10),
    }
}

/// The columns whose stored value differs from the argument the sync would bind.
fn changed_columns(
    args: &[Arg],
    row: &DbRow,
    columns: &[(usize, &'static str, Kind)],
) -> anyhow::Result<Vec<&'static str>> {
    let mut changed = Vec::new();
    for &(i, column, kind) in columns {
        let have = row.opt_text(column)?;
        if !same(kind, arg_text(&args[i]).as_deref(), have.as_deref()) {
            changed.push(column);
        }
    }
    Ok(changed)
}

/// The entries that left the file, by name.
fn removals(table: &'static str, mut names: Vec<String>) -> impl Iterator<Item = PlannedChange> {
    names.sort();
    names.into_iter().map(move |name| PlannedChange {
        table,
        name,
        change: Change::Removed,
    })
}

/// The config rows that are no longer in the file and that the sync would change (`live`:
/// a provider still enabled, a model not yet inactive), by name.
fn left_the_file(
    table: &'static str,
    rows: &HashMap<String, DbRow>,
    in_file: &HashSet<String>,
    live: impl Fn(&DbRow) -> anyhow::Result<bool>,
) -> anyhow::Result<Vec<PlannedChange>> {
    let mut names = Vec::new();
    for (name, r) in rows {
        if !in_file.contains(name) && r.text("managed_by")? == "config" && live(r)? {
            names.push(name.clone());
        }
    }
    Ok(removals(table, names).collect())
}

/// The rows `sql` returns, each under the name `name_of` gives it.
async fn rows_by_name(
    db: &Db,
    sql: &str,
    name_of: impl Fn(&DbRow) -> anyhow::Result<String>,
) -> anyhow::Result<HashMap<String, DbRow>> {
    db.fetch_all(sql, &[])
        .await?
        .into_iter()
        .map(|r| Ok((name_of(&r)?, r)))
        .collect()
}

fn change_of(changed: Vec<&'static str>) -> Option<Change> {
    (!changed.is_empty()).then_some(Change::Changed(changed))
}

impl Db {
    /// What `sync_config(config, sealer)` would change, in file order (providers, models,
    /// routes), then what it would remove. Entries that would stay as they are are left out.
    pub async fn plan_sync(
        &self,
        config: &Config,
        sealer: Option<&Sealer>,
    ) -> anyhow::Result<Vec<PlannedChange>> {
        let mut plan = self.plan_providers(config, sealer).await?;
        plan.extend(self.plan_models(config).await?);
        plan.extend(self.plan_routes(config).await?);
        Ok(plan)
    }

    async fn plan_providers(
        &self,
        config: &Config,
        sealer: Option<&Sealer>,
    ) -> anyhow::Result<Vec<PlannedChange>> {
        let sql = format!(
            "SELECT name, managed_by, api_key_ref, {} FROM llm_providers WHERE deleted_at IS NULL",
            as_text("", &PROVIDER_COLUMNS)
        );
        let rows = rows_by_name(self, &sql, |r| r.text("name")).await?;
        let mut plan = Vec::new();
        let mut in_file = HashSet::new();
        for p in config.providers.iter().map(|p| p.get_ref()) {
            in_file.insert(p.name.clone());
            let change = match rows.get(&p.name) {
                None => Some(Change::Added),
                Some(r) if r.text("managed_by")? != "config" => Some(Change::Kept),
                Some(r) => {
                    let stored = r.opt_text("api_key_ref")?;
                    let key = stored_key_ref(p, sealer, stored.as_deref());
                    let mut changed =
                        changed_columns(&provider_args(p, None, ""), r, &PROVIDER_COLUMNS)?;
                    if key != stored {
                        changed.push("api_key");
                    }
                    change_of(changed)
                }
            };
            if let Some(change) = change {
                plan.push(PlannedChange {
                    table: "provider",
                    name: p.name.clone(),
                    change,
                });
            }
        }
        plan.extend(left_the_file("provider", &rows, &in_file, |r| {
            Ok(same(
                Bool,
                Some("true"),
                r.opt_text("is_enabled")?.as_deref(),
            ))
        })?);
        Ok(plan)
    }

    async fn plan_models(&self, config: &Config) -> anyhow::Result<Vec<PlannedChange>> {
        let sql = format!(
            "SELECT p.name AS provider, p.managed_by AS provider_managed_by, m.model_id,
                m.managed_by, CAST(m.deleted_at AS TEXT) AS deleted_at, {}
             FROM llm_models m JOIN llm_providers p ON p.id = m.provider_id
             WHERE p.deleted_at IS NULL",
            as_text("m.", &MODEL_COLUMNS)
        );
        let rows = rows_by_name(self, &sql, |r| {
            Ok(format!("{}/{}", r.text("provider")?, r.text("model_id")?))
        })
        .await?;
        let mut plan = Vec::new();
        let mut in_file = HashSet::new();
        for (i, m) in config.models.iter().map(|m| m.get_ref()).enumerate() {
            let name = format!("{}/{}", m.provider, m.model_id);
            let change = match rows.get(&name) {
                None => Some(Change::Added),
                Some(r)
                    if r.text("managed_by")? != "config"
                        || r.text("provider_managed_by")? != "config" =>
                {
                    Some(Change::Kept)
                }
                Some(r) => {
                    let mut changed = changed_columns(&model_args(m, i, ""), r, &MODEL_COLUMNS)?;
                    if r.opt_text("deleted_at")?.is_some() {
                        changed.push("deleted_at");
                    }
                    change_of(changed)
                }
            };
            if let Some(change) = change {
                plan.push(PlannedChange {
                    table: "model",
                    name: name.clone(),
                    change,
                });
            }
            in_file.insert(name);
        }
        plan.extend(left_the_file("model", &rows, &in_file, |r| {
            Ok(r.opt_text("status")?.as_deref() != Some("inactive"))
        })?);
        Ok(plan)
    }

    async fn plan_routes(&self, config: &Config) -> anyhow::Result<Vec<PlannedChange>> {
        let rows = self
            .fetch_all(
                "SELECT key, CAST(value AS TEXT) AS value, managed_by FROM system_settings",
                &[],
            )
            .await?;
        let mut stored = HashMap::new();
        for r in &rows {
            if let Some(name) = r.text("key")?.strip_prefix(ROUTE_SETTING_PREFIX) {
                stored.insert(name.to_owned(), (r.text("value")?, r.text("managed_by")?));
            }
        }
        let mut plan = Vec::new();
        let mut in_file = HashSet::new();
        for r in config.routes.iter().map(|r| r.get_ref()) {
            in_file.insert(r.name.as_str());
            let change = match stored.get(&r.name) {
                None => Some(Change::Added),
                Some((_, managed_by)) if managed_by != "config" => Some(Change::Kept),
                Some((value, _)) => {
                    let want = route_value(r);
                    let have: serde_json::Value = serde_json::from_str(value).unwrap_or_default();
                    let changed = ["targets", "strategy"]
                        .into_iter()
                        .filter(|f| want.get(f) != have.get(f))
                        .collect();
                    change_of(changed)
                }
            };
            if let Some(change) = change {
                plan.push(PlannedChange {
                    table: "route",
                    name: r.name.clone(),
                    change,
                });
            }
        }
        let removed = stored
            .iter()
            .filter(|(name, (_, by))| by == "config" && !in_file.contains(name.as_str()))
            .map(|(name, _)| name.clone())
            .collect();
        plan.extend(removals("route", removed));
        Ok(plan)
    }
}
