//! The response cache: answers to requests that ask for the same thing again (temperature 0,
//! or `x-tollgate-cache: on`) are served from memory (moka) or from a Redis every instance
//! shares, without a provider. `key` says what is cacheable and what an answer's key covers,
//! `entry` what an entry holds, `assemble` which answers are complete enough to store,
//! `replay` how a hit is sent (whole, or as a stream), `recorder` how a stream is kept as it
//! goes by. A cache that fails (Redis away) is skipped: requests go on without it.

mod assemble;
mod entry;
mod key;
mod memory;
mod recorder;
mod redis;
mod replay;

pub use entry::Entry;
pub use key::{cacheable, Key, Mode, Scope, HEADER};
pub use recorder::{Pending, Recorder};
pub use replay::replay;

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;

use crate::config::{CacheBackend, CacheConfig, RedisConfig, DEFAULT_CACHE_BYTES};
use crate::metering::Metrics;
use crate::providers::{Endpoint, JsonObject};

pub struct ResponseCache {
    backend: Backend,
    ttl: Duration,
    /// The largest answer stored.
    pub max_entry_bytes: usize,
    share_across_projects: bool,
    /// `tollgate_cache_errors_total{backend}` of this cache's backend.
    errors: IntCounter,
}

enum Backend {
    Memory(memory::Memory),
    // Boxed: the Redis state is large and lives once per cache.
    Redis(Box<redis::RedisCache>),
}

/// What a lookup found.
pub enum Lookup {
    Hit(Entry),
    Miss,
    /// The cache could not be asked (Redis away): neither looked up nor stored.
    Unavailable,
}

impl ResponseCache {
    /// The cache `[cache]` describes; None when it is off.
    pub fn new(
        config: &CacheConfig,
        redis: Option<&RedisConfig>,
        metrics: &Metrics,
    ) -> Option<Arc<ResponseCache>> {
        if !config.enabled {
            return None;
        }
        let ttl = Duration::from_secs(config.ttl_secs);
        let kind = config.backend.get();
        let backend = match (kind, redis.and_then(|r| Some((r.url.as_deref()?, r)))) {
            (CacheBackend::Redis, Some((url, r))) => {
                Backend::Redis(Box::new(redis::RedisCache::new(
                    url,
                    &r.key_prefix,
                    Duration::from_millis(config.redis_timeout_ms),
                )))
            }
            // Validation refuses a Redis backend without a URL: memory is what remains.
            _ => {
                let bound = match (config.max_entries, config.max_bytes) {
                    (Some(n), _) => memory::Bound::Entries(n),
                    (None, b) => memory::Bound::Bytes(b.unwrap_or(DEFAULT_CACHE_BYTES)),
                };
                Backend::Memory(memory::Memory::new(bound, ttl))
            }
        };
        let label = match backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
        };
        Some(Arc::new(ResponseCache {
            backend,
            ttl,
            max_entry_bytes: config.max_entry_bytes,
            share_across_projects: config.share_across_projects,
            errors: metrics.cache_errors_total.with_label_values(&[label]),
        }))
    }

    /// The key of a request: its endpoint, public model name and answer-changing fields, and
    /// the tenant it belongs to (its project, else its key) unless entries are shared.
    pub fn key(
        &self,
        endpoint: Endpoint,
        model: &str,
        tenant: Scope<'_>,
        body: &JsonObject,
    ) -> Key {
        let scope = match (self.share_across_projects, tenant) {
            (true, _) => String::new(),
            (
                false,
                Scope {
                    project: Some(p), ..
                },
            ) => format!("project:{p}"),
            (false, Scope { key: Some(k), .. }) => format!("key:{k}"),
            (false, _) => "open".to_owned(),
        };
        key::key(endpoint, model, &scope, body)
    }

    pub async fn get(&self, key: &Key) -> Lookup {
        match &self.backend {
            Backend::Memory(m) => match m.get(key) {
                Some(e) => Lookup::Hit(Entry::clone(&e)),
                None => Lookup::Miss,
            },
            Backend::Redis(r) => match r.get(key).await {
                Ok(Some(e)) => Lookup::Hit(e),
                Ok(None) => Lookup::Miss,
                Err(failure) => {
                    self.failed(r, failure);
                    Lookup::Unavailable
                }
            },
        }
    }

    /// Stores an entry: at once in memory, in the background in Redis.
    pub fn put(self: &Arc<Self>, key: Key, entry: Entry) {
        if entry.body.len() > self.max_entry_bytes {
            return;
        }
        match &self.backend {
            Backend::Memory(m) => m.put(key, entry),
            Backend::Redis(_) => {
                let cache = self.clone();
                tokio::spawn(async move {
                    let Backend::Redis(r) = &cache.backend else {
                        return;
                    };
                    if let Err(failure) = r.put(&key, &entry, cache.ttl).await {
                        cache.failed(r, failure);
                    }
                });
            }
        }
    }

    fn failed(&self, r: &redis::RedisCache, failure: redis::Failure) {
        if let redis::Failure::Error(message) = failure {
            self.errors.inc();
            r.log_failure(&message);
        }
    }
}
