//! The `tollgate` command line: serve, migrate, check-config, keys, projects, usage,
//! mock-upstream.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rust_decimal::Decimal;

use tollgate::config::{Config, LoadedConfig};
use tollgate::limits::budget::Scope;
use tollgate::mock::{MockOptions, MockUpstream};
use tollgate::store::{
    ApiKeyUpdate, Db, NewApiKey, NewProject, Period, UsageQuery, UsageReport, UsageTotals,
};

// The request path allocates many small short-lived buffers; mimalloc measured cheaper than
// glibc malloc for that (malloc/free were a fifth of the benchmark's instructions).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc maps its memory in large aligned regions; where transparent huge pages are set to
/// `always` (common on Linux hosts) every region it touches becomes a 2 MiB page, which measured
/// about 20 MB more resident memory under load and no speed gain. Turned off for this
/// process only, before the runtime starts; pages already mapped keep their size.
fn small_pages_only() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and reads or writes no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[derive(Parser)]
#[command(name = "tollgate", version, about = "An OpenAI-compatible LLM gateway")]
struct Cli {
    /// The config file.
    #[arg(
        long,
        global = true,
        default_value = "config.toml",
        env = "TOLLGATE_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the config, show what would be loaded, exit non-zero on error.
    CheckConfig,
    /// Gateway API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Projects: what keys belong to, with a budget shared by all their keys.
    Projects {
        #[command(subcommand)]
        command: ProjectsCommand,
    },
    /// Usage and cost totals from the hourly roll-up.
    Usage(UsageArgs),
    /// Sign a JWT (HS256, with `auth.jwt_secret` or else the master key) for a user or an
    /// admin; the token is printed alone on the last line.
    Token {
        /// Who the token is for (the `sub` claim; the audit log names it).
        #[arg(long)]
        sub: String,
        #[arg(long, default_value = "user", value_parser = ["admin", "user"])]
        role: String,
        /// The project its requests belong to (and whose budget they spend).
        #[arg(long)]
        project: Option<String>,
        /// Seconds until it expires.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
    /// A fake OpenAI-compatible server for tests, demos and benchmarks.
    MockUpstream {
        #[arg(long, default_value_t = 9000)]
        port: u16,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Delay before the first byte of each answer.
        #[arg(long, default_value_t = 0)]
        ttft_ms: u64,
        /// Delay between stream chunks.
        #[arg(long, default_value_t = 0)]
        chunk_ms: u64,
        /// Content chunks (words, completion tokens) per answer.
        #[arg(long, default_value_t = 16)]
        chunks: usize,
        /// Share of requests answered with HTTP 500 (0.0 to 1.0).
        #[arg(long, default_value_t = 0.0)]
        fail_rate: f64,
    },
}

/// `tollgate usage`: the same parameters as `GET /admin/usage`, checked by the same code.
#[derive(clap::Args)]
struct UsageArgs {
    /// Group by model, provider, project or key.
    #[arg(long, default_value = "model")]
    by: String,
    /// One row per group and hour, day or month (UTC). Default: one per group.
    #[arg(long)]
    period: Option<String>,
    /// Start (UTC, included): 2026-11-01 or 2026-11-01T10:00:00Z. Default: the first of
    /// this month.
    #[arg(long)]
    since: Option<String>,
    /// End (UTC, not included), as --since. Default: now.
    #[arg(long)]
    until: Option<String>,
    /// Only this project's usage.
    #[arg(long)]
    project: Option<String>,
    /// Only this key's usage (its id or prefix).
    #[arg(long)]
    key: Option<String>,
    /// Only this model's usage (its public name).
    #[arg(long)]
    model: Option<String>,
    /// Only this provider's usage.
    #[arg(long)]
    provider: Option<String>,
    /// The most rows shown (1 to 10000); the total covers them all.
    #[arg(long)]
    limit: Option<String>,
    /// The report as JSON (costs as exact decimal strings).
    #[arg(long)]
    json: bool,
}

impl UsageArgs {
    /// The options as the report's named parameters.
    fn params(&self) -> Vec<(&'static str, &str)> {
        let options = [
            ("period", &self.period),
            ("since", &self.since),
            ("until", &self.until),
            ("project", &self.project),
            ("key", &self.key),
            ("model", &self.model),
            ("provider", &self.provider),
            ("limit", &self.limit),
        ];
        let given = options
            .into_iter()
            .filter_map(|(name, value)| Some((name, value.as_deref()?)));
        std::iter::once(("by", self.by.as_str()))
            .chain(given)
            .collect()
    }
}

#[derive(Subcommand)]
enum KeysCommand {
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
enum ProjectsCommand {
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

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn load_config(path: &std::path::Path) -> Result<LoadedConfig, ExitCode> {
    match Config::load(path) {
        Ok(c) => Ok(c),
        Err(e) => {
            eprint!("{e}");
            Err(ExitCode::from(2))
        }
    }
}

fn main() -> ExitCode {
    small_pages_only();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::MockUpstream { .. } = command {
        init_logging(false);
    }
    let workers = match &command {
        Command::Serve => Config::load(&cli.config)
            .map(|c| c.config.server.workers)
            .unwrap_or(0),
        _ => 0,
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        rt.worker_threads(workers);
    }
    let rt = rt.enable_all().build().expect("the tokio runtime starts");
    rt.block_on(run(cli.config, command))
}

async fn run(config_path: PathBuf, command: Command) -> ExitCode {
    match command {
        Command::Serve => serve(&config_path).await,
        Command::CheckConfig => check_config(&config_path).await,
        Command::MockUpstream {
            port,
            host,
            ttft_ms,
            chunk_ms,
            chunks,
            fail_rate,
        } => {
            let options = MockOptions {
                ttft_ms,
                chunk_ms,
                chunks,
                fail_rate,
            };
            mock_upstream(options, &host, port).await
        }
        other => {
            let loaded = match load_config(&config_path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match admin_command(&loaded, other).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Runs the gateway until a signal stops it.
async fn serve(config_path: &std::path::Path) -> ExitCode {
    let loaded = match load_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Logging starts only now: its format is a config setting.
    init_logging(loaded.config.server.log_format.get() == tollgate::config::LogFormat::Json);
    tracing::info!(config = %config_path.display(), version = env!("CARGO_PKG_VERSION"), "starting tollgate");
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    match tollgate::server::start(loaded).await {
        Ok(running) => {
            running.serve_until_signal().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("cannot start: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the fake upstream until Ctrl-C.
async fn mock_upstream(options: MockOptions, host: &str, port: u16) -> ExitCode {
    let mock = MockUpstream {
        options,
        ..Default::default()
    };
    let addr = match format!("{host}:{port}").parse() {
        Ok(a) => a,
        Err(_) => {
            eprintln!("invalid --host/--port");
            return ExitCode::from(2);
        }
    };
    match mock.start(addr).await {
        Ok(addr) => {
            tracing::info!("mock upstream listening on http://{addr}/v1");
            let _ = tokio::signal::ctrl_c().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn open_db(loaded: &LoadedConfig) -> anyhow::Result<Db> {
    let db = Db::connect(&loaded.config.database.url, 2).await?;
    db.migrate().await?;
    Ok(db)
}

/// The commands that work on the database and exit.
async fn admin_command(loaded: &LoadedConfig, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Migrate => {
            let db = open_db(loaded).await?;
            println!(
                "migrations applied to {} ({})",
                tollgate::store::redact_url(&loaded.config.database.url),
                db.kind()
            );
            Ok(())
        }
        Command::Keys { command } => keys_command(&open_db(loaded).await?, command).await,
        Command::Projects { command } => projects_command(&open_db(loaded).await?, command).await,
        Command::Usage(args) => usage_report(loaded, &args).await,
        Command::Token {
            sub,
            role,
            project,
            ttl_secs,
        } => sign_token(loaded, sub, role, project, ttl_secs),
        Command::Serve | Command::CheckConfig | Command::MockUpstream { .. } => {
            unreachable!("handled in run")
        }
    }
}

fn sign_token(
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

async fn keys_command(db: &Db, command: KeysCommand) -> anyhow::Result<()> {
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

async fn projects_command(db: &Db, command: ProjectsCommand) -> anyhow::Result<()> {
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

/// Prints the report as a table with a total line, or as JSON.
async fn usage_report(loaded: &LoadedConfig, args: &UsageArgs) -> anyhow::Result<()> {
    let query = UsageQuery::from_params(args.params(), chrono::Utc::now())
        .map_err(|e| anyhow::anyhow!("invalid --{}: {}", e.param, e.problem))?;
    let report = open_db(loaded).await?.usage_report(&query).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_usage_table(&report);
    if report.truncated {
        eprintln!(
            "showing the first {} rows (--limit shows more); the total covers all of them",
            query.limit
        );
    }
    Ok(())
}

fn print_usage_table(report: &UsageReport) {
    let period = report.query.period;
    let until = report
        .query
        .until
        .map_or("now".to_owned(), |t| t.format("%Y-%m-%d %H:%M").to_string());
    println!(
        "usage by {}{} from {} to {until} (UTC)",
        report.query.by.as_str(),
        period.map_or(String::new(), |p| format!(" per {}", p.as_str())),
        report.query.since.format("%Y-%m-%d %H:%M"),
    );
    let mut header = vec![report.query.by.as_str().to_owned()];
    header.extend(
        [
            "requests",
            "errors",
            "input",
            "cache_read",
            "cache_write",
            "output",
            "reasoning",
            "cost_usd",
        ]
        .map(String::from),
    );
    let mut lines = vec![header];
    for r in &report.rows {
        lines.push(usage_cells(r.group.clone(), &r.totals));
    }
    lines.push(usage_cells("total".to_owned(), &report.total));
    if let Some(period) = period {
        let buckets = report.rows.iter().map(|r| bucket_text(r.bucket, period));
        let column = std::iter::once(period.as_str().to_owned())
            .chain(buckets)
            .chain([String::new()]);
        for (line, bucket) in lines.iter_mut().zip(column) {
            line.insert(0, bucket);
        }
    }
    print_columns(&lines, if period.is_some() { 2 } else { 1 });
}

fn usage_cells(group: String, t: &UsageTotals) -> Vec<String> {
    let mut cells = vec![group];
    cells.extend(
        [
            t.requests,
            t.errors,
            t.input_tokens,
            t.cache_read_tokens,
            t.cache_write_tokens,
            t.output_tokens,
            t.reasoning_tokens,
        ]
        .map(|n| n.to_string()),
    );
    cells.push(t.cost_usd.to_string());
    cells
}

fn bucket_text(bucket: Option<chrono::DateTime<chrono::Utc>>, period: Period) -> String {
    let format = match period {
        Period::Hour => "%Y-%m-%d %H:00",
        Period::Day => "%Y-%m-%d",
        Period::Month => "%Y-%m",
    };
    bucket.map_or(String::new(), |b| b.format(format).to_string())
}

/// Prints lines of cells in columns as wide as their widest cell: the first `text` columns
/// aligned left, the numbers right. A rule goes above the last line (the total).
fn print_columns(lines: &[Vec<String>], text: usize) {
    let columns = lines.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let render = |line: &Vec<String>| {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| {
                if c < text {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        cells.join("  ").trim_end().to_owned()
    };
    for (i, line) in lines.iter().enumerate() {
        if i + 1 == lines.len() {
            println!(
                "{}",
                "-".repeat(widths.iter().sum::<usize>() + 2 * columns.saturating_sub(1))
            );
        }
        println!("{}", render(line));
    }
}

/// Prints what the config would load and what a reload would change in the database's
/// registry (nothing is written); the errors were already printed by `load_config`.
async fn check_config(path: &std::path::Path) -> ExitCode {
    let loaded = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let c = &loaded.config;
    println!("{}: OK", path.display());
    println!("  listen      {}", c.server.listen);
    println!(
        "  database    {}",
        tollgate::store::redact_url(&c.database.url)
    );
    println!("  auth        require_api_key = {}", c.auth.require_api_key);
    println!("  admin API   {}", admin_access(&c.auth));
    print_providers(c);
    println!("  models      {}", c.models.len());
    println!("  routes      {}", c.routes.len());
    for w in &loaded.warnings {
        println!("  warning: {w}");
    }
    print_registry_changes(c).await;
    ExitCode::SUCCESS
}

/// Who can reach `/admin/*` with these settings (the router lets only admins in).
fn admin_access(auth: &tollgate::config::AuthConfig) -> String {
    let keys = "admin keys (`tollgate keys create --role admin`)";
    match (&auth.master_key, &auth.jwt_secret) {
        (Some(_), None) => format!(
            "reachable with the master key, admin JWTs signed with it (HS256), or {keys}"
        ),
        (Some(_), Some(_)) => format!(
            "reachable with the master key, admin JWTs signed with auth.jwt_secret (HS256), or {keys}"
        ),
        (None, Some(_)) => format!(
            "reachable with admin JWTs signed with auth.jwt_secret (HS256) or {keys}; no master key is set"
        ),
        (None, None) => format!(
            "reachable only with {keys}: no master key or JWT secret is set"
        ),
    }
}

fn print_providers(c: &Config) {
    println!("  providers   {}", c.providers.len());
    for p in &c.providers {
        let p = p.get_ref();
        let models = c
            .models
            .iter()
            .filter(|m| m.get_ref().provider == p.name)
            .count();
        // Where the key is kept: see README "Provider keys".
        let key = match p.api_key.as_deref() {
            None => "none",
            Some(k) if k.starts_with("env:") => "env",
            Some(_) if c.auth.master_key.is_some() => "sealed",
            Some(_) => "in-memory",
        };
        println!(
            "    {:<12} api={:<9} models={:<3} rpm={:<5} parallel={:<3} key={:<9} {}",
            p.name,
            p.api.as_str(),
            models,
            p.requests_per_minute,
            p.max_parallel_requests,
            key,
            if p.enabled { "" } else { "(disabled)" }
        );
    }
}

/// What a reload (or a start) with this file would change in the database's registry, read
/// without writing anything; the database may well be unreachable from where this runs.
async fn print_registry_changes(c: &Config) {
    use tollgate::store::Change;
    let plan = match Db::connect_read_only(&c.database.url).await {
        Ok(db) => {
            let sealer = c
                .auth
                .master_key
                .as_deref()
                .map(tollgate::secrets::Sealer::new);
            let plan = db.plan_sync(c, sealer.as_ref()).await;
            db.close().await;
            plan
        }
        Err(e) => Err(e),
    };
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => {
            println!(
                "  registry    not compared with the database ({e:#}); `tollgate migrate` \
                 creates or updates its tables"
            );
            return;
        }
    };
    if plan.is_empty() {
        println!("  registry    the database already holds what the file describes");
        return;
    }
    println!("  registry    a reload would change in the database:");
    for p in plan {
        let (mark, what) = match &p.change {
            Change::Added => ("+", "added".to_owned()),
            Change::Changed(fields) => ("~", format!("changed: {}", fields.join(", "))),
            Change::Removed if p.table == "provider" => ("-", "removed: disabled".into()),
            Change::Removed if p.table == "model" => ("-", "removed: deactivated".into()),
            Change::Removed => ("-", "removed".into()),
            Change::Kept => ("=", "managed through the admin API: left as it is".into()),
        };
        println!("    {mark} {:<9} {} {what}", p.table, p.name);
    }
}
