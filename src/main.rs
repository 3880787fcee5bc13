//! The `tollgate` command line: serve, migrate, check-config, keys, usage, mock-upstream.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rust_decimal::Decimal;

use tollgate::config::{Config, LoadedConfig};
use tollgate::mock::{MockOptions, MockUpstream};
use tollgate::store::{Db, NewApiKey};

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
    /// Usage and cost totals from the usage log.
    Usage {
        /// Group by model, provider, project or key.
        #[arg(long, default_value = "model")]
        by: String,
        /// Start date (UTC), e.g. 2026-11-01. Default: the first of this month.
        #[arg(long)]
        since: Option<String>,
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
        #[arg(long)]
        rpm: Option<i64>,
        #[arg(long)]
        tpm: Option<i64>,
        /// Stored with the key; not enforced yet.
        #[arg(long)]
        budget_usd: Option<Decimal>,
    },
    /// List keys (never the keys themselves).
    List,
    /// Revoke a key by id or prefix.
    Revoke { id_or_prefix: String },
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
        Command::Usage { by, since } => {
            let db = open_db(loaded).await?;
            usage_report(&db, &by, usage_since(since.as_deref())?).await
        }
        Command::Serve | Command::CheckConfig | Command::MockUpstream { .. } => {
            unreachable!("handled in run")
        }
    }
}

async fn keys_command(db: &Db, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            name,
            project,
            role,
            rpm,
            tpm,
            budget_usd,
        } => {
            let new = NewApiKey {
                name,
                project,
                role,
                rpm,
                tpm,
                budget_usd,
            };
            create_key(db, &new).await
        }
        KeysCommand::List => list_keys(db).await,
        KeysCommand::Revoke { id_or_prefix } => {
            if !db.revoke_api_key(&id_or_prefix).await? {
                anyhow::bail!("no active key with id or prefix {id_or_prefix:?}");
            }
            println!("revoked {id_or_prefix}");
            Ok(())
        }
    }
}

/// The key goes to stdout alone, so a script can capture it; the rest goes to stderr.
async fn create_key(db: &Db, new: &NewApiKey) -> anyhow::Result<()> {
    let (key, prefix, hash) = tollgate::auth::generate_key();
    let id = db.insert_api_key(new, &hash, &prefix).await?;
    eprintln!("created key {id} ({prefix}...); it is shown only once:");
    println!("{key}");
    Ok(())
}

async fn list_keys(db: &Db) -> anyhow::Result<()> {
    println!(
        "{:<38} {:<12} {:<20} {:<16} {:<6} status",
        "id", "prefix", "name", "project", "role"
    );
    for k in db.list_api_keys().await? {
        let status = if k.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        };
        println!(
            "{:<38} {:<12} {:<20} {:<16} {:<6} {status}",
            k.id,
            k.key_prefix,
            k.name,
            k.project_name.unwrap_or_default(),
            k.role
        );
    }
    Ok(())
}

/// Midnight UTC of `--since`, or of the first of this month without it.
fn usage_since(since: Option<&str>) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    let date = match since {
        Some(s) => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map_err(|_| anyhow::anyhow!("--since must be a date like 2026-11-01"))?,
        None => {
            use chrono::Datelike;
            let today = chrono::Utc::now().date_naive();
            today.with_day(1).unwrap_or(today)
        }
    };
    Ok(date
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc())
}

async fn usage_report(
    db: &Db,
    by: &str,
    since: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let rows = db.usage_report(by, since).await?;
    println!(
        "{:<40} {:>9} {:>7} {:>12} {:>12} {:>12} {:>12} {:>16}",
        by, "requests", "errors", "input", "cache_read", "cache_write", "output", "cost_usd"
    );
    for r in rows {
        let t = r.totals;
        println!(
            "{:<40} {:>9} {:>7} {:>12} {:>12} {:>12} {:>12} {:>16}",
            r.group,
            t.requests,
            t.errors,
            t.input_tokens,
            t.cache_read_tokens,
            t.cache_write_tokens,
            t.output_tokens,
            t.cost_usd
        );
    }
    Ok(())
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
