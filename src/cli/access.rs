//! Who may use the gateway: `tollgate keys`, `tollgate projects` and `tollgate token`. Every
//! change is written to the audit log, as the admin API's are.

use clap::Subcommand;
use rust_decimal::Decimal;

use tollgate::config::LoadedConfig;
use tollgate::limits::budget::Scope;
use tollgate::store::{ApiKeyUpdate, Db, NewApiKey, NewProject};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key; the key itself is printed once, alone on the last line.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        project: Option<String>,
        #[arg(long, default_value = "user", value_parser = ["admin", "user"])]
        role: String,
        /// Requests per minute (none without it).
        #[arg(long)]
        rpm: Option<i64>,
        /// Tokens per minute (none without it).
        #[arg(long)]
        tpm: Option<i64>,
        /// The models the key may ask for: public names, routes or provider/model_id,
        /// comma-separated (all without it).
        #[arg(long, value_delimiter = ',')]
        allowed_models: Option<Vec<String>>,
        /// What the key may spend over its whole life, in USD (e.g. 25 or 0.50).
        #[arg(long)]
        budget_usd: Option<Decimal>,
        /// The key stops working this many days from now.
        #[arg(long, conflicts_with = "expires_at")]
        expires_in_days: Option<u32>,
        /// The key stops working at this time (RFC 3339, e.g. 2026-12-31T23:59:59Z).
        #[arg(long)]
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Change a key's limits, budget, allowed models or expiry (by id or prefix); what is
    /// not given stays. The admin API (`PATCH /admin/keys/{id}`) can also clear them.
    Update {
        id_or_prefix: String,
        #[arg(long)]
        rpm: Option<i64>,
        #[arg(long)]
        tpm: Option<i64>,
        #[arg(long, value_delimiter = ',')]
        allowed_models: Option<Vec<String>>,
        #[arg(long)]
        budget_usd: Option<Decimal>,
        #[arg(long)]
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// List keys (never the keys themselves).
    List,
    /// Revoke a key by id or prefix.
    Revoke { id_or_prefix: String },
}

#[derive(Subcommand)]
pub enum ProjectsCommand {
    /// Create a project.
    Create {
        #[arg(long)]
        name: String,
        /// What the project's keys may spend together, in USD, per budget period.
        #[arg(long)]
        budget_usd: Option<Decimal>,
        /// `total` (the project's whole life) or `monthly` (each calendar month, UTC).
        #[arg(long, default_value = "total", value_parser = ["total", "monthly"])]
        budget_period: String,
    },
    /// List projects with their budgets and what they spent in the current period.
    List,
}

pub async fn keys_command(db: &Db, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            name,
            project,
            role,
            rpm,
            tpm,
            allowed_models,
            budget_usd,
            expires_in_days,
            expires_at,
        } => {
            let in_days =
                expires_in_days.map(|d| chrono::Utc::now() + chrono::Duration::days(d.into()));
            let new = NewApiKey {
                name,
                project,
                role,
                allowed_models,
                rpm,
                tpm,
                budget_usd,
                expires_at: expires_at.or(in_days),
            };
            create_key(db, &new).await
        }
        KeysCommand::List => list_keys(db).await,
        KeysCommand::Update {
            id_or_prefix,
            rpm,
            tpm,
            allowed_models,
            budget_usd,
            expires_at,
        } => {
            let update = ApiKeyUpdate {
                rpm: rpm.map(Some),
                tpm: tpm.map(Some),
                allowed_models: allowed_models.map(Some),
                budget_usd: budget_usd.map(Some),
                expires_at: expires_at.map(Some),
                ..Default::default()
            };
            update_key(db, &id_or_prefix, &update).await
        }
        KeysCommand::Revoke { id_or_prefix } => revoke_key(db, &id_or_prefix).await,
    }
}

/// The key goes to stdout alone, so a script can capture it; the rest goes to stderr.
async fn create_key(db: &Db, new: &NewApiKey) -> anyhow::Result<()> {
    let (key, prefix, hash) = tollgate::auth::generate_key();
    let id = db.insert_api_key(new, &hash, &prefix).await?;
    let after = db.key_row(&id).await?.map(serde_json::Value::Object);
    audit(db, "create", "key", &id, None, after.as_ref()).await?;
    eprintln!("created key {id} ({prefix}...); it is shown only once:");
    println!("{key}");
    Ok(())
}

async fn update_key(db: &Db, id_or_prefix: &str, update: &ApiKeyUpdate) -> anyhow::Result<()> {
    let Some(key) = db.get_api_key(id_or_prefix).await? else {
        anyhow::bail!("no key with id or prefix {id_or_prefix:?}");
    };
    let before = db.key_row(&key.id).await?.map(serde_json::Value::Object);
    db.update_api_key(&key.id, update).await?;
    let after = db.key_row(&key.id).await?.map(serde_json::Value::Object);
    audit(
        db,
        "update",
        "key",
        &key.id,
        before.as_ref(),
        after.as_ref(),
    )
    .await?;
    println!("updated key {} ({}...)", key.id, key.key_prefix);
    Ok(())
}

async fn revoke_key(db: &Db, id_or_prefix: &str) -> anyhow::Result<()> {
    let id = db.get_api_key(id_or_prefix).await?.map(|k| k.id);
    let row = |id: String| async move {
        db.key_row(&id)
            .await
            .map(|r| r.map(serde_json::Value::Object))
    };
    let before = match &id {
        Some(id) => row(id.clone()).await?,
        None => None,
    };
    if !db.revoke_api_key(id_or_prefix).await? {
        anyhow::bail!("no active key with id or prefix {id_or_prefix:?}");
    }
    let id = id.unwrap_or_else(|| id_or_prefix.to_owned());
    let after = row(id.clone()).await?;
    audit(db, "revoke", "key", &id, before.as_ref(), after.as_ref()).await?;
    println!("revoked {id_or_prefix}");
    Ok(())
}

/// The audit row of a change made with the CLI: the actor is `cli` and the system user.
async fn audit(
    db: &Db,
    action: &'static str,
    resource: &'static str,
    resource_id: &str,
    before: Option<&serde_json::Value>,
    after: Option<&serde_json::Value>,
) -> anyhow::Result<()> {
    let user = std::env::var("USER").unwrap_or_default();
    let actor = format!("cli {user}").trim_end().to_owned();
    let entry = tollgate::store::AuditEntry {
        actor: &actor,
        action,
        resource,
        resource_id,
        before,
        after,
    };
    db.audit(entry).await
}

async fn list_keys(db: &Db) -> anyhow::Result<()> {
    println!(
        "{:<38} {:<12} {:<20} {:<16} {:<6} {:<8} {:>12} {:>14} {:<20} models",
        "id", "prefix", "name", "project", "role", "status", "budget_usd", "spent_usd", "expires"
    );
    let now = chrono::Utc::now();
    for k in db.list_api_keys().await? {
        let status = match (k.revoked_at, k.expires_at) {
            (Some(_), _) => "revoked",
            (None, Some(t)) if t < now => "expired",
            _ => "active",
        };
        let spent = db.spent_usd(Scope::Key, &k.id, None).await?;
        println!(
            "{:<38} {:<12} {:<20} {:<16} {:<6} {status:<8} {:>12} {spent:>14} {:<20} {}",
            k.id,
            k.key_prefix,
            k.name,
            k.project_name.unwrap_or_default(),
            k.role,
            k.budget_usd.map_or("-".into(), |b| b.to_string()),
            k.expires_at
                .map_or("-".into(), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            k.allowed_models.map_or("all".into(), |m| m.join(",")),
        );
    }
    Ok(())
}

pub async fn projects_command(db: &Db, command: ProjectsCommand) -> anyhow::Result<()> {
    match command {
        ProjectsCommand::Create {
            name,
            budget_usd,
            budget_period,
        } => {
            let new = NewProject {
                name,
                budget_usd,
                budget_period: budget_period.parse().map_err(anyhow::Error::msg)?,
            };
            let p = db.create_project(&new).await?;
            let after = db
                .project_row(&p.name)
                .await?
                .map(serde_json::Value::Object);
            audit(db, "create", "project", &p.name, None, after.as_ref()).await?;
            println!("created project {} ({})", p.name, p.id);
            Ok(())
        }
        ProjectsCommand::List => list_projects(db).await,
    }
}

async fn list_projects(db: &Db) -> anyhow::Result<()> {
    println!(
        "{:<38} {:<20} {:>12} {:<8} {:>14}",
        "id", "name", "budget_usd", "period", "spent_usd"
    );
    for p in db.list_projects().await? {
        // What the budget is checked against: this month's spend for a monthly budget.
        let since = p.budget_period.window(chrono::Utc::now()).since();
        let spent = db.spent_usd(Scope::Project, &p.id, since).await?;
        println!(
            "{:<38} {:<20} {:>12} {:<8} {spent:>14}",
            p.id,
            p.name,
            p.budget_usd.map_or("-".into(), |b| b.to_string()),
            p.budget_period.as_str(),
        );
    }
    Ok(())
}

/// `tollgate token`: a JWT signed with the config's secret, printed alone.
pub fn sign_token(
    loaded: &LoadedConfig,
    sub: String,
    role: String,
    project: Option<String>,
    ttl_secs: u64,
) -> anyhow::Result<()> {
    let auth = &loaded.config.auth;
    let Some(secret) = auth.jwt_secret.as_ref().or(auth.master_key.as_ref()) else {
        anyhow::bail!(
            "neither [auth] jwt_secret nor master_key is set: there is no secret to sign with"
        );
    };
    let exp = chrono::Utc::now().timestamp().max(0) as u64 + ttl_secs;
    let claims = tollgate::auth::Claims {
        sub,
        role,
        project,
        exp,
    };
    println!("{}", tollgate::auth::sign_jwt(&claims, secret));
    Ok(())
}
