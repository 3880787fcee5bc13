//! The `tollgate` command line: serve, migrate, check-config, keys, projects, usage,
//! mock-upstream.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use tollgate::config::{Config, LoadedConfig};
use tollgate::mock::{MockOptions, MockUpstream};

use cli::access::{keys_command, projects_command, sign_token, KeysCommand, ProjectsCommand};
use cli::check::check_config;
use cli::usage::{usage_report, UsageArgs};
use cli::{load_config, open_db};

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
        /// Write each stream event, and each of `chunks` slices of a whole OpenAI answer, on
        /// its own (unpaced), as providers that flush every token do.
        #[arg(long)]
        split_writes: bool,
    },
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
            split_writes,
        } => {
            let options = MockOptions {
                ttft_ms,
                chunk_ms,
                chunks,
                fail_rate,
                split_writes,
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
