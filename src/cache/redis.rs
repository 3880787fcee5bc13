//! The Redis backend, shared by every instance: `SET key value EX ttl` and `GET key`, each
//! bounded by a short timeout. The connection is opened on first use (and again after it
//! failed); after a failure Redis is left alone for a moment, so that while it is down
//! requests pay nothing for the cache rather than a timeout each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::entry::Entry;
use super::key::Key;

/// After a failed call, the cache is skipped for this long before Redis is tried again.
const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// At most one warning this often while Redis keeps failing; the counter counts them all.
const LOG_EVERY: Duration = Duration::from_secs(30);

pub struct RedisCache {
    client: Result<redis::Client, String>,
    conn: OnceCell<ConnectionManager>,
    /// `[redis] key_prefix` and the cache's own part: `tollgate:v1:cache:`.
    prefix: String,
    timeout: Duration,
    /// Milliseconds since `epoch` until which Redis is not tried (after a failure).
    paused_until: AtomicU64,
    epoch: Instant,
    /// The Redis URL's password, removed from any error message before it is logged.
    password: Option<String>,
    log: Mutex<FailureLog>,
}

/// Why a call did not give an answer.
pub enum Failure {
    /// Redis failed or did not answer in time: counted and logged.
    Error(String),
    /// Skipped without a call, in the pause after a failure.
    Paused,
}

#[derive(Default)]
struct FailureLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RedisCache {
    pub fn new(url: &str, key_prefix: &str, timeout: Duration) -> RedisCache {
        let client = redis::Client::open(url).map_err(|e| e.to_string());
        let password = client.as_ref().ok().and_then(|c| {
            c.get_connection_info()
                .redis_settings()
                .password()
                .map(str::to_owned)
        });
        let client = client.map_err(|e| match &password {
            Some(p) => e.replace(p.as_str(), "***"),
            None => e,
        });
        RedisCache {
            client,
            conn: OnceCell::new(),
            prefix: format!("{key_prefix}v1:cache:"),
            timeout,
            paused_until: AtomicU64::new(0),
            epoch: Instant::now(),
            password,
            log: Mutex::new(FailureLog::default()),
        }
    }

    pub async fn get(&self, key: &Key) -> Result<Option<Entry>, Failure> {
        let name = self.name(key);
        let found: Option<Vec<u8>> = self.call(redis::cmd("GET").arg(&name)).await?;
        Ok(found.as_deref().and_then(Entry::decode))
    }

    pub async fn put(&self, key: &Key, entry: &Entry, ttl: Duration) -> Result<(), Failure> {
        let name = self.name(key);
        let mut cmd = redis::cmd("SET");
        cmd.arg(&name)
            .arg(entry.encode())
            .arg("EX")
            .arg(ttl.as_secs().max(1));
        let _: () = self.call(&cmd).await?;
        Ok(())
    }

    fn name(&self, key: &Key) -> String {
        format!("{}{}", self.prefix, hex::encode(key.0))
    }

    /// One command within the timeout (the connection's opening included).
    async fn call<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Failure> {
        let now = self.epoch.elapsed().as_millis() as u64;
        if now < self.paused_until.load(Ordering::Relaxed) {
            return Err(Failure::Paused);
        }
        let run = async {
            let mut conn = self.connection().await?.clone();
            cmd.query_async::<T>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        let result = match tokio::time::timeout(self.timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        };
        result.map_err(|e| {
            let until = self.epoch.elapsed() + PAUSE_AFTER_FAILURE;
            self.paused_until
                .store(until.as_millis() as u64, Ordering::Relaxed);
            Failure::Error(self.redact(e))
        })
    }

    async fn connection(&self) -> Result<&ConnectionManager, String> {
        let client = self.client.as_ref().map_err(Clone::clone)?;
        self.conn
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(0);
                ConnectionManager::new_with_config(client.clone(), config)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
    }

    fn redact(&self, message: String) -> String {
        match &self.password {
            Some(p) if !p.is_empty() => message.replace(p.as_str(), "***"),
            _ => message,
        }
    }

    /// Logs a failure, at most once every `LOG_EVERY` (saying how many were not logged).
    pub fn log_failure(&self, message: &str) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            log.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut log.suppressed);
        log.last = Some(Instant::now());
        drop(log);
        tracing::warn!(
            error = %message,
            unlogged_failures = suppressed,
            "response cache: Redis failed; requests go on without the cache"
        );
    }
}
