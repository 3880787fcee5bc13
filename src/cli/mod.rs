//! The binary's subcommands beside `serve` and `mock-upstream`, one file each concern.

pub mod access;
pub mod check;
pub mod usage;

use std::process::ExitCode;

use tollgate::config::{Config, LoadedConfig};
use tollgate::store::Db;

/// The config, or exit code 2 with every problem in it printed.
pub fn load_config(path: &std::path::Path) -> Result<LoadedConfig, ExitCode> {
    match Config::load(path) {
        Ok(c) => Ok(c),
        Err(e) => {
            eprint!("{e}");
            Err(ExitCode::from(2))
        }
    }
}

/// The config's database, migrated.
pub async fn open_db(loaded: &LoadedConfig) -> anyhow::Result<Db> {
    let db = Db::connect(&loaded.config.database.url, 2).await?;
    db.migrate().await?;
    Ok(db)
}
