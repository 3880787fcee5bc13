//! Which of the schema's rules a refused statement broke. The database is where the rules
//! hold against concurrent writers (a unique index, a CHECK, a trigger); this names the rule
//! from PostgreSQL's constraint name or SQLite's message, so that the API above can answer
//! with the field at fault instead of a 500.

use sqlx::error::ErrorKind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Another live provider has this name.
    ProviderNameTaken,
    /// The provider already has a model (live or deleted) with this `model_id`.
    ModelTaken,
    /// The provider already has a default model.
    SecondDefault,
    /// `llm_models.model_id` is never rewritten.
    ModelIdImmutable,
    /// A model stays at the provider it was created at.
    ProviderImmutable,
    /// A live model at a deleted provider.
    ProviderDeleted,
    /// Another project has this name.
    ProjectNameTaken,
    /// A CHECK on this column.
    Check(String),
    /// Any other unique rule, by its constraint (PostgreSQL) or columns (SQLite).
    Unique(String),
    ForeignKey,
}

/// Unique rules: PostgreSQL's constraint or index name, then SQLite's column list.
const UNIQUE_RULES: [(&str, &str, Violation); 4] = [
    (
        "llm_providers_live_name",
        "llm_providers.name",
        Violation::ProviderNameTaken,
    ),
    (
        "llm_models_provider_id_model_id_key",
        "llm_models.provider_id, llm_models.model_id",
        Violation::ModelTaken,
    ),
    (
        "llm_models_one_default_per_provider",
        "llm_models.provider_id",
        Violation::SecondDefault,
    ),
    (
        "projects_name_key",
        "projects.name",
        Violation::ProjectNameTaken,
    ),
];

/// Trigger refusals, by the message the migrations raise.
const TRIGGER_RULES: [(&str, Violation); 3] = [
    ("model_id is immutable", Violation::ModelIdImmutable),
    ("provider_id is immutable", Violation::ProviderImmutable),
    ("the provider is deleted", Violation::ProviderDeleted),
];

/// The rule `e` broke, when it is a database's refusal of one.
pub fn violation(e: &anyhow::Error) -> Option<Violation> {
    let sqlx::Error::Database(db) = e.downcast_ref::<sqlx::Error>()? else {
        return None;
    };
    let message = db.message();
    match db.kind() {
        ErrorKind::UniqueViolation => Some(unique(db.constraint(), message)),
        ErrorKind::CheckViolation => Some(Violation::Check(check_column(
            db.constraint(),
            db.table(),
            message,
        ))),
        ErrorKind::ForeignKeyViolation => Some(Violation::ForeignKey),
        _ => TRIGGER_RULES
            .iter()
            .find(|(text, _)| message.contains(text))
            .map(|(_, v)| v.clone()),
    }
}

fn unique(constraint: Option<&str>, message: &str) -> Violation {
    // SQLite: "UNIQUE constraint failed: llm_models.provider_id, llm_models.model_id"
    let columns = message.strip_prefix("UNIQUE constraint failed: ");
    UNIQUE_RULES
        .iter()
        .find(|(name, cols, _)| constraint == Some(*name) || columns == Some(*cols))
        .map(|(_, _, v)| v.clone())
        .unwrap_or_else(|| Violation::Unique(constraint.or(columns).unwrap_or("").to_owned()))
}

/// PostgreSQL names a column's CHECK `<table>_<column>_check`; SQLite quotes the expression,
/// e.g. "CHECK constraint failed: CAST(cost_input_per_million AS REAL) >= 0".
fn check_column(constraint: Option<&str>, table: Option<&str>, message: &str) -> String {
    if let Some(name) = constraint {
        let name = name.strip_suffix("_check").unwrap_or(name);
        let prefix = table.map(|t| format!("{t}_")).unwrap_or_default();
        return name.strip_prefix(&prefix).unwrap_or(name).to_owned();
    }
    let expr = message
        .strip_prefix("CHECK constraint failed: ")
        .unwrap_or(message);
    let expr = expr.strip_prefix("CAST(").unwrap_or(expr);
    expr.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_columns_are_read_from_either_database() {
        let pg = check_column(
            Some("llm_models_cost_input_per_million_check"),
            Some("llm_models"),
            "",
        );
        assert_eq!(pg, "cost_input_per_million");
        let sqlite = check_column(
            None,
            None,
            "CHECK constraint failed: CAST(cost_output_per_million AS REAL) >= 0",
        );
        assert_eq!(sqlite, "cost_output_per_million");
        assert_eq!(
            check_column(None, None, "CHECK constraint failed: weight >= 0"),
            "weight"
        );
    }

    #[test]
    fn unique_rules_are_named_from_either_database() {
        assert_eq!(
            unique(Some("llm_models_one_default_per_provider"), ""),
            Violation::SecondDefault
        );
        assert_eq!(
            unique(
                None,
                "UNIQUE constraint failed: llm_models.provider_id, llm_models.model_id"
            ),
            Violation::ModelTaken
        );
        assert_eq!(
            unique(None, "UNIQUE constraint failed: llm_models.provider_id"),
            Violation::SecondDefault
        );
        assert_eq!(
            unique(None, "UNIQUE constraint failed: api_keys.key_hash"),
            Violation::Unique("api_keys.key_hash".into())
        );
    }
}
