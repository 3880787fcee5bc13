//! Limits that hold across all gateway instances: token buckets and concurrency leases kept in
//! Redis. Each decision is one Lua script, so it is atomic however many instances race, and it
//! reads the Redis server's clock (TIME), so instances with skewed clocks still agree on how
//! much has refilled. Peers that check local memory, or read-then-write from the client,
//! multiply a limit by the replica count (research/anchors.md §3 items 4-5).
//!
//! Every key carries a format version (`v1`), so a rolling deploy that changes a script's state
//! layout starts fresh keys instead of misreading old ones. When Redis cannot be reached a call
//! fails within about a second; the caller chooses between failing closed and local limits.

mod budget;
mod lease;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

pub use lease::Lease;

/// The connection attempt (including its retries) gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A healthy Redis answers a script in well under a millisecond; one that takes a second is
/// not healthy, and the caller's fallback serves the request better than waiting longer.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// Key format version, part of every key so old and new script versions never share state.
const FORMAT: &str = "v1";
/// Lua numbers are doubles: beyond 2^53 integers stop being exact.
const MAX_EXACT: u64 = 1 << 53;

/// A connection to the Redis that holds the shared limits. Cheap to clone.
#[derive(Clone)]
pub struct SharedLimiter {
    conn: ConnectionManager,
    prefix: Arc<str>,
    scripts: Arc<Scripts>,
    redact: Arc<Redactor>,
}

struct Scripts {
    take: Script,
    settle: Script,
    lease_acquire: Script,
    lease_renew: Script,
    budget_reserve: Script,
    budget_settle: Script,
}

impl Scripts {
    fn new() -> Scripts {
        let prelude = include_str!("shared/bucket_prelude.lua");
        Scripts {
            take: Script::new(&format!("{prelude}\n{}", include_str!("shared/take.lua"))),
            settle: Script::new(&format!("{prelude}\n{}", include_str!("shared/settle.lua"))),
            lease_acquire: Script::new(include_str!("shared/lease_acquire.lua")),
            lease_renew: Script::new(include_str!("shared/lease_renew.lua")),
            budget_reserve: Script::new(include_str!("shared/budget_reserve.lua")),
            budget_settle: Script::new(include_str!("shared/budget_settle.lua")),
        }
    }

    fn all(&self) -> [&Script; 6] {
        [
            &self.take,
            &self.settle,
            &self.lease_acquire,
            &self.lease_renew,
            &self.budget_reserve,
            &self.budget_settle,
        ]
    }
}

impl std::fmt::Debug for SharedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimiter")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// `n` tokens were taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// Whole tokens left after this take.
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset: Duration,
}

/// Not enough tokens; nothing was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    /// Until the `n` asked for will be available (if nobody else takes them first).
    pub retry_after: Duration,
    /// Whole tokens available now (0 while a settlement debt is being paid).
    pub remaining: u64,
}

/// Redis could not be reached or answered with an error. The message never contains the
/// password from the Redis URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shared limits (redis): {0}")]
pub struct SharedError(String);

impl SharedLimiter {
    /// Connects to `url` (giving up after about 2 s) and loads the scripts; every key this
    /// limiter writes starts with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<SharedLimiter> {
        let redact = Arc::new(Redactor::for_url(url));
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, Self::open(url))
            .await
            .map_err(|_| SharedError(format!("no connection within {CONNECT_TIMEOUT:?}")))
            .and_then(|r| r.map_err(|e| redact.error(&e)))?;
        let (conn, scripts) = connected;
        Ok(SharedLimiter {
            conn,
            prefix: prefix.into(),
            scripts: Arc::new(scripts),
            redact,
        })
    }

    async fn open(url: &str) -> redis::RedisResult<(ConnectionManager, Scripts)> {
        let client = redis::Client::open(url)?;
        // Few, quick reconnection retries: while Redis is down every decision waits for them,
        // and the caller has a fallback.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let mut conn = ConnectionManager::new_with_config(client, config).await?;
        let scripts = Scripts::new();
        // Loading up front surfaces a script error at startup; later calls use EVALSHA and fall
        // back to EVAL by themselves if Redis restarted and forgot the scripts.
        for script in scripts.all() {
            script.load_async(&mut conn).await?;
        }
        Ok((conn, scripts))
    }

    /// Takes `n` tokens (capped at `per_minute`, so one oversized request can still pass when
    /// the bucket is full) from the bucket named `bucket`, which holds `per_minute` tokens and
    /// refills them evenly over a minute, fractions kept. A `per_minute` of 0 is treated as 1.
    pub async fn take(
        &self,
        bucket: &str,
        per_minute: u64,
        n: u64,
    ) -> Result<Result<Taken, Exhausted>, SharedError> {
        let per_minute = per_minute.clamp(1, MAX_EXACT);
        let mut call = self.scripts.take.key(self.bucket_key(bucket));
        call.arg(per_minute).arg(n.min(per_minute));
        let (taken, remaining, micros): (i64, i64, i64) = self.run(&call).await?;
        let remaining = remaining.max(0) as u64;
        let micros = Duration::from_micros(micros.max(0) as u64);
        Ok(if taken == 1 {
            Ok(Taken {
                remaining,
                reset: micros,
            })
        } else {
            Err(Exhausted {
                retry_after: micros,
                remaining,
            })
        })
    }

    /// Settles a reservation of `reserved` tokens to the `actual` count: unused tokens go back
    /// (never past full), extra ones are taken even below zero, a debt later takers pay first.
    pub async fn settle(
        &self,
        bucket: &str,
        per_minute: u64,
        reserved: u64,
        actual: u64,
    ) -> Result<(), SharedError> {
        if reserved == actual {
            return Ok(());
        }
        let per_minute = per_minute.clamp(1, MAX_EXACT);
        let mut call = self.scripts.settle.key(self.bucket_key(bucket));
        call.arg(per_minute)
            .arg(reserved.min(MAX_EXACT))
            .arg(actual.min(MAX_EXACT));
        let _: i64 = self.run(&call).await?;
        Ok(())
    }

    /// A concurrency lease among at most `max` live leases in the pool named `pool`.
    /// `Ok(None)` when all are taken. The lease is renewed every `ttl / 3` while the [`Lease`]
    /// lives and released when it is dropped; leases of a crashed instance expire after `ttl`
    /// (at least 100 ms: shorter would expire between renewals).
    pub async fn lease(
        &self,
        pool: &str,
        max: u32,
        ttl: Duration,
    ) -> Result<Option<Lease>, SharedError> {
        let ttl = ttl.max(lease::MIN_TTL);
        let key = self.pool_key(pool);
        let id = uuid::Uuid::now_v7().to_string();
        let mut call = self.scripts.lease_acquire.key(&key);
        call.arg(max).arg(&id).arg(ttl.as_millis() as u64);
        let granted: i64 = self.run(&call).await?;
        Ok((granted == 1).then(|| Lease::start(self.clone(), key, id, ttl)))
    }

    fn bucket_key(&self, bucket: &str) -> String {
        format!("{}{FORMAT}:bucket:{bucket}", self.prefix)
    }

    fn pool_key(&self, pool: &str) -> String {
        format!("{}{FORMAT}:lease:{pool}", self.prefix)
    }

    /// Runs one script call, bounded by [`CALL_TIMEOUT`] whatever state the connection is in.
    async fn run<T: redis::FromRedisValue>(
        &self,
        call: &redis::ScriptInvocation<'_>,
    ) -> Result<T, SharedError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(CALL_TIMEOUT, call.invoke_async(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.redact.error(&e)),
            Err(_) => Err(SharedError(format!("no answer within {CALL_TIMEOUT:?}"))),
        }
    }
}

/// Removes the Redis URL's password (as written and percent-decoded) from error messages.
struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    fn for_url(url: &str) -> Redactor {
        let mut secrets = Vec::new();
        // As written: everything between "scheme://" and the last '@' of the authority, after
        // the first ':' (or all of it, if some tool put a bare password there).
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let authority = rest.split('/').next().unwrap_or(rest);
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            let password = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
            secrets.push(password.to_owned());
        }
        // As the client decoded it.
        if let Ok(client) = redis::Client::open(url) {
            if let Some(password) = client.get_connection_info().redis_settings().password() {
                secrets.push(password.to_owned());
            }
        }
        secrets.retain(|s| !s.is_empty());
        Redactor { secrets }
    }

    fn error(&self, e: &redis::RedisError) -> SharedError {
        let mut message = e.to_string();
        for secret in &self.secrets {
            message = message.replace(secret.as_str(), "***");
        }
        SharedError(message)
    }
}

#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests;
