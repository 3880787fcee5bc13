//! The data plane: the state every API request shares (`Gateway`) and the settings it reads
//! (`Runtime`). A request's path through it is in `handler`, phase by phase; the server
//! (`crate::server`) accepts connections, routes them and hands API requests to `handle`.

mod admit;
mod answer;
mod attempt;
mod choose;
mod context;
mod handler;
mod lookup;
mod meter;
mod opening;
mod outcome;
mod prompt;
mod respond;
mod send;
mod stream;
mod trace;

pub use handler::{handle, read_json, request_id};
pub use prompt::{ask, Answered, Prompt};
pub use respond::{error_response, full, json_response, text_response, ClientBody};

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::limits::{LimitSet, LimitSpec, Shared};
use crate::metering::Metrics;
use crate::registry::{Registry, Snapshot};
use crate::store::{Db, UsageSink};
use crate::telemetry::Telemetry;
use crate::upstream::UpstreamClient;

// A deployment keeps one upstream URL per endpoint, by the endpoint's index.
const _: () = assert!(crate::providers::Endpoint::COUNT == crate::registry::ENDPOINTS);

/// Everything a request needs, shared by all connections.
pub struct Gateway {
    pub db: Db,
    pub registry: Registry,
    /// The settings a reload can change, swapped whole.
    pub runtime: ArcSwap<Runtime>,
    pub client: UpstreamClient,
    pub usage: UsageSink,
    pub metrics: Arc<Metrics>,
    /// Per-key limit state, by key id (kept while the key is in use).
    key_limits: moka::sync::Cache<Arc<str>, Arc<LimitSet>>,
    /// Limits shared through Redis, when `[redis] url` is set.
    shared: Option<Shared>,
    /// Keys' and projects' budgets: what is spent and reserved.
    budgets: crate::limits::budget::Ledger,
    /// OpenTelemetry traces, when `[telemetry]` is on (read at start: a restart changes it).
    pub telemetry: Option<Telemetry>,
}

/// The settings a request reads, in one piece: one atomic load a request, and a reload
/// swaps them all at once.
pub struct Runtime {
    pub auth: Arc<Authenticator>,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// The largest whole answer read from a provider.
    pub max_response_bytes: usize,
    /// The response cache; None when `[cache]` is off.
    pub cache: Option<Arc<crate::cache::ResponseCache>>,
}

impl Runtime {
    /// The running authenticator (and its cache of looked-up keys) is kept while the auth
    /// settings are the same as in the config it was made from; so is the response cache
    /// (and what it holds) while `[cache]` is.
    pub fn new(
        db: &Db,
        config: &Config,
        running: Option<(&Runtime, &Config)>,
        metrics: &Metrics,
    ) -> Runtime {
        let auth = match running {
            Some((runtime, old)) if old.auth == config.auth => runtime.auth.clone(),
            _ => Arc::new(Authenticator::new(db.clone(), &config.auth)),
        };
        let cache = match running {
            Some((runtime, old)) if old.cache == config.cache && old.redis == config.redis => {
                runtime.cache.clone()
            }
            _ => crate::cache::ResponseCache::new(&config.cache, config.redis.as_ref(), metrics),
        };
        Runtime {
            auth,
            request_timeout: Duration::from_secs(config.server.request_timeout_secs),
            max_body_bytes: config.server.max_body_bytes,
            max_response_bytes: config.server.max_response_bytes,
            cache,
        }
    }
}

impl Gateway {
    /// A gateway with an empty registry: `install` puts the first snapshot in.
    pub fn new(
        db: Db,
        config: &Config,
        usage: UsageSink,
        metrics: Arc<Metrics>,
        shared: Option<Shared>,
        telemetry: Option<Telemetry>,
    ) -> Gateway {
        let budgets = crate::limits::budget::Ledger::new(Arc::new(db.clone()), shared.clone());
        Gateway {
            runtime: ArcSwap::from_pointee(Runtime::new(&db, config, None, &metrics)),
            db,
            registry: Registry::new(Snapshot::default()),
            client: UpstreamClient::new(),
            usage,
            metrics,
            key_limits: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            budgets,
            shared,
            telemetry,
        }
    }

    /// Redis for limits shared by every instance, when configured and reachable at start.
    pub fn shared(&self) -> Option<&Shared> {
        self.shared.as_ref()
    }

    /// Puts a new snapshot in service: requests that start from now on use it, those in
    /// flight finish on the one they started with.
    pub fn install(&self, snapshot: Snapshot) {
        self.metrics
            .registry_deployments
            .set(snapshot.deployment_count as i64);
        for p in &snapshot.providers {
            self.report_provider_health(&snapshot, &p.name);
        }
        self.registry.swap(snapshot);
    }

    /// `tollgate_provider_up{provider}`: the worst circuit among the provider's deployments.
    pub fn report_provider_health(&self, snapshot: &Snapshot, provider: &str) {
        let up = snapshot
            .deployments_of(provider)
            .map(|d| d.health.state().gauge())
            .fold(1.0, f64::min);
        self.metrics
            .provider_up
            .with_label_values(&[provider])
            .set(up);
    }

    /// The limits of a gateway key with `rpm`/`tpm` set, shared by all its requests.
    pub fn limits_of_key(&self, caller: &crate::auth::Caller) -> Option<Arc<LimitSet>> {
        let id = caller.key_id.as_ref()?;
        if caller.limits == LimitSpec::default() {
            return None;
        }
        let make = || {
            Arc::new(LimitSet::shared(
                "key",
                caller.limits,
                format!("key:{id}"),
                self.shared.as_ref(),
            ))
        };
        let set = self.key_limits.get_with_by_ref(id, make);
        if set.spec == caller.limits {
            return Some(set);
        }
        // The key's limits were changed: start over with the new ones.
        let fresh = make();
        self.key_limits.insert(id.clone(), fresh.clone());
        Some(fresh)
    }
}
