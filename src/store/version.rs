//! The registry's version: a counter the database bumps (triggers, migration 0004 / 0007) in
//! the same transaction as every change to `llm_providers`, `llm_models` or `system_settings`,
//! whoever writes them. An instance whose snapshot was built at an older version rebuilds it.
//! On PostgreSQL each bump is also announced on the `tollgate_registry` channel (NOTIFY, sent
//! at commit), which `RegistryListener` receives.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

use super::Db;

/// The channel the bumps are announced on, with the new version as the payload.
pub const REGISTRY_CHANNEL: &str = "tollgate_registry";

/// The `application_name` of each instance's LISTEN connection, so an operator can find it in
/// `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "tollgate-registry-listener";

impl Db {
    /// The registry's current version: one indexed read, cheap enough to make every second.
    pub async fn registry_version(&self) -> anyhow::Result<i64> {
        let rows = self
            .fetch_all("SELECT version FROM registry_version WHERE id = 1", &[])
            .await?;
        match rows.first() {
            Some(row) => row.int("version"),
            None => anyhow::bail!("the registry_version row is missing"),
        }
    }

    /// Bumps the version (and, on PostgreSQL, announces it) for a change the triggers cannot
    /// see. Writes to the registry's tables need no call: they bump it themselves.
    pub async fn bump_registry_version(&self) -> anyhow::Result<i64> {
        let sql = match self {
            Db::Postgres(_) => {
                "WITH v AS (UPDATE registry_version SET version = version + 1 WHERE id = 1
                     RETURNING version)
                 SELECT version, pg_notify('tollgate_registry', version::text) AS notified FROM v"
            }
            Db::Sqlite(_) => {
                "UPDATE registry_version SET version = version + 1 WHERE id = 1 RETURNING version"
            }
        };
        let rows = self.fetch_all(sql, &[]).await?;
        match rows.first() {
            Some(row) => row.int("version"),
            None => anyhow::bail!("the registry_version row is missing"),
        }
    }

    /// A connection of its own LISTENing for version bumps; `None` on SQLite, which has no
    /// notifications (its instances read the version periodically only).
    pub async fn registry_listener(&self) -> anyhow::Result<Option<RegistryListener>> {
        let Db::Postgres(pool) = self else {
            return Ok(None);
        };
        let options: PgConnectOptions = (*pool.connect_options())
            .clone()
            .application_name(LISTENER_APPLICATION_NAME);
        // A pool of one that never retires its connection: the listener reconnects through it.
        let own = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(options)
            .await?;
        let mut listener = PgListener::connect_with(&own).await?;
        // A lost connection is the caller's to replace (see `next_version`).
        listener.eager_reconnect(false);
        listener.listen(REGISTRY_CHANNEL).await?;
        Ok(Some(RegistryListener { listener }))
    }
}

/// Version bumps as PostgreSQL announces them.
pub struct RegistryListener {
    listener: PgListener,
}

impl RegistryListener {
    /// Waits for the next bump and returns its version. An error means the connection was lost
    /// (notifications sent meanwhile are gone): the caller makes a new listener and reads the
    /// version to make up for them.
    pub async fn next_version(&mut self) -> anyhow::Result<i64> {
        loop {
            match self.listener.try_recv().await? {
                Some(n) => match i64::from_str(n.payload()) {
                    Ok(v) => return Ok(v),
                    // Someone else's NOTIFY on the channel: not a version, not ours.
                    Err(_) => continue,
                },
                None => anyhow::bail!("the LISTEN connection was lost"),
            }
        }
    }
}
