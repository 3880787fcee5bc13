//! The registry snapshot: providers and deployments as the data plane sees them.
//!
//! A `Snapshot` is built from the database rows in one go and never changed afterwards; a
//! reload builds a new one and swaps the pointer (`Registry`), so a request sees either the
//! old registry or the new one, never a mix, and takes no lock to read it. The rows are all it
//! is built from (routes and settings included): config.toml reaches it only through the
//! database, like the admin API, so every instance on one database serves the same registry.

mod health;
mod keys;
pub mod routing;

pub use crate::config::{BreakerConfig, ModelType};
pub use health::{CircuitPass, CircuitState, Health, InFlightGuard};
pub use keys::ProviderKeys;
pub use routing::{Needs, NoFit, Strategy};

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};
use rust_decimal::Decimal;

use crate::config::{Api, ProviderTimeouts};
use crate::limits::{LimitSet, LimitSpec, Shared};
use crate::metering::Prices;
use crate::store::{ModelRow, ProviderRow, RegistryRows, ROUTE_SETTING_PREFIX};
use crate::upstream::Target;

#[derive(Debug)]
pub struct Provider {
    pub id: Arc<str>,
    pub name: Arc<str>,
    pub api: Api,
    /// Without a trailing slash.
    pub base_url: String,
    pub api_version: Option<String>,
    /// The header carrying the provider's key, built once (marked sensitive: never logged).
    pub auth_header: Option<(HeaderName, HeaderValue)>,
    /// How the upstream client reaches it (a plain-http one has its own connections).
    pub target: Target,
    /// How long a request may wait for this provider's limits before moving on.
    pub queue_timeout_ms: u64,
    pub timeouts: ProviderTimeouts,
    /// Live limit state; kept across reloads while the limits stay the same.
    pub limits: Arc<LimitSet>,
}

/// One model at one provider: what a public name resolves to.
#[derive(Debug)]
pub struct Deployment {
    pub id: Arc<str>,
    /// The public name clients send.
    pub name: String,
    pub display_name: String,
    /// The provider's own id, sent upstream.
    pub model_id: String,
    pub provider: Arc<Provider>,
    pub model_type: ModelType,
    pub prices: Prices,
    /// Default request parameters, merged under the client's (a JSON object).
    pub parameters: serde_json::Map<String, serde_json::Value>,
    pub context_window: Option<u64>,
    pub max_output_tokens: Option<u64>,
    /// Capability flags: `None` is unknown, which never keeps a request away (see `routing`).
    pub supports_streaming: Option<bool>,
    pub supports_json: Option<bool>,
    pub supports_tools: Option<bool>,
    pub supports_vision: Option<bool>,
    pub priority: i64,
    pub weight: u32,
    pub created_unix: i64,
    /// Per-model limits from `rate_limits`, if any.
    pub limits: Option<Arc<LimitSet>>,
    /// Breaker, latency and load; kept across reloads.
    pub health: Arc<Health>,
    /// The OpenAI-format upstream URL per endpoint, made on first use: formatting and parsing
    /// it was 1.5k instructions a request.
    pub upstream_uris: [std::sync::OnceLock<http::Uri>; ENDPOINTS],
}

/// How many API endpoints a deployment keeps an upstream URL for: `providers::Endpoint::COUNT`,
/// repeated here as the registry sits below the adapters (the request path checks that the two
/// agree).
pub const ENDPOINTS: usize = 3;

impl Deployment {
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.provider.name, self.model_id)
    }
}

/// Why a provider in the database is not serving, for the start-up log.
#[derive(Debug, Clone)]
pub struct Unavailable {
    pub provider: String,
    pub reason: String,
}

/// What a requested name resolves to: candidate deployments and how to choose among them.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub deployments: Arc<[Arc<Deployment>]>,
    pub strategy: Strategy,
}

#[derive(Debug, Default)]
pub struct Snapshot {
    /// Public names, `provider/model_id` and route names, each to its deployments.
    by_name: HashMap<String, Resolved>,
    /// What `GET /v1/models` lists: one entry per public name and route.
    listed: Vec<ListedModel>,
    pub providers: Vec<Arc<Provider>>,
    /// Every serving deployment, once.
    all: Vec<Arc<Deployment>>,
    pub unavailable: Vec<Unavailable>,
    pub deployment_count: usize,
}

#[derive(Debug, Clone)]
pub struct ListedModel {
    pub id: String,
    pub owned_by: String,
    pub created: i64,
}

impl Snapshot {
    pub fn resolve(&self, name: &str) -> Option<&Resolved> {
        self.by_name.get(name)
    }

    /// Every deployment of a provider (for its `provider_up` gauge).
    pub fn deployments_of<'a>(
        &'a self,
        provider: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Deployment>> {
        self.all
            .iter()
            .filter(move |d| *d.provider.name == *provider)
    }

    pub fn listed(&self) -> &[ListedModel] {
        &self.listed
    }

    pub fn listed_model(&self, id: &str) -> Option<&ListedModel> {
        self.listed.iter().find(|m| m.id == id)
    }

    /// Builds the snapshot from the rows alone. Only active (or not yet past-deprecation)
    /// models of enabled providers whose key can be had (`keys`) are served; routes are the
    /// `route:<name>` settings, and each other setting naming a deployment. New deployments
    /// get circuit breakers set by `breaker`.
    /// Limit and health state is carried over from `previous` for the providers and
    /// deployments that are still there (limits only while they are configured the same).
    pub fn build(
        rows: &RegistryRows,
        keys: &ProviderKeys,
        breaker: BreakerConfig,
        previous: Option<&Snapshot>,
        shared: Option<&Shared>,
    ) -> Snapshot {
        let carried = Carried::from_previous(previous);
        let mut snap = Snapshot::default();
        let providers = snap.add_providers(rows, keys, &carried, shared);
        let mut deployments = Deployments::serving(rows, breaker, &providers, &carried, shared);
        snap.deployment_count = deployments.by_qualified.len();
        snap.all = deployments.by_qualified.values().cloned().collect();
        snap.list_public_names(&deployments.by_name);
        let route_strategy = snap.add_routes(route_specs(rows), &mut deployments);
        snap.listed.sort_by(|a, b| a.id.cmp(&b.id));
        snap.by_name = deployments.into_lookup(&route_strategy);
        snap
    }

    /// Makes a provider of each row; one that cannot serve (say, its key is missing) goes to
    /// `unavailable` with the reason. Returns the serving ones by row id, for their models.
    fn add_providers<'r>(
        &mut self,
        rows: &'r RegistryRows,
        keys: &ProviderKeys,
        carried: &Carried<'_>,
        shared: Option<&Shared>,
    ) -> HashMap<&'r str, Arc<Provider>> {
        let mut by_id = HashMap::new();
        for p in &rows.providers {
            let name = || format!("provider:{}", p.name);
            let old = carried.provider_limits.get(p.id.as_str()).copied();
            let limits = limit_set("provider", provider_limit_spec(p), name, old, shared);
            match provider_from_row(p, keys, limits) {
                Ok(provider) => {
                    let provider = Arc::new(provider);
                    by_id.insert(p.id.as_str(), provider.clone());
                    self.providers.push(provider);
                }
                Err(reason) => self.unavailable.push(Unavailable {
                    provider: p.name.clone(),
                    reason,
                }),
            }
        }
        by_id
    }

    /// One `GET /v1/models` entry per public name, owned by the provider of its first
    /// deployment.
    fn list_public_names(&mut self, by_name: &HashMap<String, Vec<Arc<Deployment>>>) {
        for (name, deps) in by_name {
            let first = &deps[0];
            self.listed.push(ListedModel {
                id: name.clone(),
                owned_by: first.provider.name.to_string(),
                created: first.created_unix,
            });
        }
    }

    /// Adds each route that reaches at least one deployment as a name of its own, listed and
    /// resolvable. A route never shadows a public model name. Returns the routes' strategies.
    fn add_routes(
        &mut self,
        routes: Vec<RouteSpec>,
        deployments: &mut Deployments,
    ) -> HashMap<String, Strategy> {
        let mut route_strategy = HashMap::new();
        for (route, targets, strategy) in routes {
            let deps = deployments.route_targets(&targets);
            if deps.is_empty() || deployments.by_name.contains_key(&route) {
                continue;
            }
            self.listed.push(ListedModel {
                id: route.clone(),
                owned_by: "tollgate".into(),
                created: deps[0].created_unix,
            });
            route_strategy.insert(route.clone(), strategy);
            deployments.by_name.insert(route, deps);
        }
        route_strategy
    }
}

/// The limit and health state of the previous snapshot, by row id, for `build` to carry over.
#[derive(Default)]
struct Carried<'a> {
    provider_limits: HashMap<&'a str, &'a Arc<LimitSet>>,
    /// A deployment's health and its per-model limits.
    deployments: HashMap<&'a str, (&'a Arc<Health>, Option<&'a Arc<LimitSet>>)>,
}

impl<'a> Carried<'a> {
    fn from_previous(previous: Option<&'a Snapshot>) -> Self {
        let mut carried = Carried::default();
        if let Some(prev) = previous {
            for p in &prev.providers {
                carried.provider_limits.insert(&p.id, &p.limits);
            }
            for d in &prev.all {
                carried
                    .deployments
                    .insert(&d.id, (&d.health, d.limits.as_ref()));
            }
        }
        carried
    }
}

/// A provider row's limits (negative values in the database count as 0: unlimited).
fn provider_limit_spec(p: &ProviderRow) -> LimitSpec {
    LimitSpec {
        requests_per_minute: p.requests_per_minute.max(0) as u64,
        tokens_per_minute: p.tokens_per_minute.max(0) as u64,
        max_parallel: p.max_parallel_requests.clamp(0, u32::MAX as i64) as u32,
    }
}

/// The serving deployments while a snapshot is built, by the names they answer to.
#[derive(Default)]
struct Deployments {
    /// Public names (and, once added, routes), each to its deployments.
    by_name: HashMap<String, Vec<Arc<Deployment>>>,
    /// `provider/model_id`, each to its one deployment.
    by_qualified: HashMap<String, Arc<Deployment>>,
}

impl Deployments {
    /// A deployment for each model row in service at a serving provider.
    fn serving(
        rows: &RegistryRows,
        breaker: BreakerConfig,
        providers: &HashMap<&str, Arc<Provider>>,
        carried: &Carried<'_>,
        shared: Option<&Shared>,
    ) -> Deployments {
        let today = chrono::Utc::now().date_naive();
        let mut out = Deployments::default();
        for m in &rows.models {
            let Some(provider) = providers.get(m.provider_id.as_str()) else {
                continue;
            };
            if !in_service(&m.status, m.deprecation_date.as_deref(), today) {
                continue;
            }
            let d = Arc::new(carried_deployment(m, provider, breaker, carried, shared));
            out.by_name
                .entry(d.name.clone())
                .or_default()
                .push(d.clone());
            out.by_qualified.insert(d.qualified_name(), d);
        }
        out
    }

    /// A route's deployments in the order of its targets: a target is a `provider/model_id`
    /// or a public name (all of its deployments); one that names nothing is left out.
    fn route_targets(&self, targets: &[String]) -> Vec<Arc<Deployment>> {
        let mut deps = Vec::new();
        for t in targets {
            if let Some(d) = self.by_qualified.get(t) {
                deps.push(d.clone());
            } else if let Some(ds) = self.by_name.get(t) {
                deps.extend(ds.iter().cloned());
            }
        }
        deps
    }

    /// The table requests resolve against: public names and routes, then each
    /// `provider/model_id` that is not already taken by one of those.
    fn into_lookup(self, route_strategy: &HashMap<String, Strategy>) -> HashMap<String, Resolved> {
        let Deployments {
            mut by_name,
            by_qualified,
        } = self;
        for (q, d) in by_qualified {
            by_name.entry(q).or_insert_with(|| vec![d]);
        }
        by_name
            .into_iter()
            .map(|(name, mut deps)| {
                // Plain names are tried by priority; a route keeps its targets' order.
                let strategy = route_strategy.get(&name).copied();
                if strategy.is_none() {
                    deps.sort_by_key(|d| d.priority);
                }
                let resolved = Resolved {
                    deployments: Arc::from(deps),
                    strategy: strategy.unwrap_or_default(),
                };
                (name, resolved)
            })
            .collect()
    }
}

/// A model row as a deployment, with the health (and, while configured the same, the limits)
/// of the deployment that had its id in the previous snapshot.
fn carried_deployment(
    m: &ModelRow,
    provider: &Arc<Provider>,
    breaker: BreakerConfig,
    carried: &Carried<'_>,
    shared: Option<&Shared>,
) -> Deployment {
    let spec = limit_spec(&m.rate_limits);
    let (health, old) = match carried.deployments.get(m.id.as_str()) {
        Some((h, l)) => (Arc::clone(h), *l),
        None => (Arc::new(Health::new(breaker)), None),
    };
    let limits = (spec != LimitSpec::default())
        .then(|| limit_set("model", spec, || format!("model:{}", m.id), old, shared));
    deployment_from_row(m, provider.clone(), limits, health)
}

/// A route's name, its targets and how to choose among them.
type RouteSpec = (String, Vec<String>, Strategy);

/// The routes: each `route:<name>` setting (written by the config sync from `[[routes]]`, or
/// through the admin API), then each other setting that names a deployment
/// (`infra_model_*`), tried as a fallback. A route setting that does not read as one (no
/// `targets`, an unknown `strategy`) is left out.
fn route_specs(rows: &RegistryRows) -> Vec<RouteSpec> {
    let mut routes = Vec::new();
    let mut named_by_settings = Vec::new();
    for (key, value) in &rows.settings {
        if let Some(name) = key.strip_prefix(ROUTE_SETTING_PREFIX) {
            if let Ok(r) = serde_json::from_str::<RouteSetting>(value) {
                routes.push((name.to_owned(), r.targets, r.strategy));
            }
        } else if let Some(target) = setting_target(value) {
            named_by_settings.push((key.clone(), vec![target], Strategy::Fallback));
        }
    }
    routes.extend(named_by_settings);
    routes
}

/// A `route:<name>` setting's value.
#[derive(serde::Deserialize)]
struct RouteSetting {
    targets: Vec<String>,
    #[serde(default)]
    strategy: Strategy,
}

/// Whether a model with this `status` serves on `today`: active, or deprecated and not past
/// its deprecation date (a date, or a timestamp starting with one).
pub fn in_service(status: &str, deprecation_date: Option<&str>, today: chrono::NaiveDate) -> bool {
    match status {
        "active" => true,
        "deprecated" => deprecation_date
            .and_then(|d| chrono::NaiveDate::parse_from_str(&d[..d.len().min(10)], "%Y-%m-%d").ok())
            .is_none_or(|d| d > today),
        _ => false,
    }
}

/// `{"provider": "openai", "model_id": "gpt-4o-mini"}` (or the seed's camelCase spelling)
/// names a deployment; such a setting can be requested as a model name.
fn setting_target(value: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(value).ok()?;
    let provider = v
        .get("provider")
        .or_else(|| v.get("providerId"))?
        .as_str()?;
    let model = v.get("model_id").or_else(|| v.get("modelId"))?.as_str()?;
    Some(format!("{provider}/{model}"))
}

/// The limits of a provider or a model, at start and on every reload: the previous set while
/// it is configured the same (its buckets and slots carry over), else a new one, kept in Redis
/// under `name` when limits are shared.
fn limit_set(
    scope: &'static str,
    spec: LimitSpec,
    name: impl FnOnce() -> String,
    previous: Option<&Arc<LimitSet>>,
    shared: Option<&Shared>,
) -> Arc<LimitSet> {
    match previous {
        Some(l) if l.spec == spec => Arc::clone(l),
        _ => Arc::new(LimitSet::shared(scope, spec, name(), shared)),
    }
}

/// `rate_limits` JSON: `{"requests_per_minute", "tokens_per_minute", "max_parallel_requests"}`
/// (or `rpm`, `tpm`, `max_parallel`).
fn limit_spec(json: &str) -> LimitSpec {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let n = |a: &str, b: &str| {
        v.get(a)
            .or_else(|| v.get(b))
            .and_then(|x| x.as_u64())
            .unwrap_or(0)
    };
    LimitSpec {
        requests_per_minute: n("requests_per_minute", "rpm"),
        tokens_per_minute: n("tokens_per_minute", "tpm"),
        max_parallel: n("max_parallel_requests", "max_parallel").min(u64::from(u32::MAX)) as u32,
    }
}

fn provider_from_row(
    p: &ProviderRow,
    keys: &ProviderKeys,
    limits: Arc<LimitSet>,
) -> Result<Provider, String> {
    if !p.is_enabled {
        return Err("disabled".into());
    }
    let api = Api::parse(&p.api).ok_or_else(|| format!("unknown api {:?}", p.api))?;
    let key = keys.key_of(p)?;
    let auth_header = match key {
        None => None,
        Some(key) => {
            let (name, value) = match api {
                Api::Azure => (HeaderName::from_static("api-key"), key),
                Api::Anthropic => (HeaderName::from_static("x-api-key"), key),
                Api::Gemini => (HeaderName::from_static("x-goog-api-key"), key),
                Api::Openai | Api::Mock => (http::header::AUTHORIZATION, format!("Bearer {key}")),
            };
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| "the API key has characters a header cannot carry".to_owned())?;
            value.set_sensitive(true);
            Some((name, value))
        }
    };
    let timeouts: ProviderTimeouts = serde_json::from_str(&p.timeouts).unwrap_or_default();
    Ok(Provider {
        id: p.id.as_str().into(),
        name: p.name.as_str().into(),
        api,
        base_url: p.base_url.trim_end_matches('/').to_owned(),
        api_version: p.api_version.clone(),
        auth_header,
        target: Target::new(&p.base_url, timeouts.connect_ms),
        queue_timeout_ms: p.queue_timeout_ms.max(0) as u64,
        timeouts,
        limits,
    })
}

fn decimal(s: &str) -> Decimal {
    s.trim().parse().unwrap_or_default()
}

fn deployment_from_row(
    m: &ModelRow,
    provider: Arc<Provider>,
    limits: Option<Arc<LimitSet>>,
    health: Arc<Health>,
) -> Deployment {
    let input = decimal(&m.cost_input_per_million);
    let created_unix = chrono::DateTime::parse_from_rfc3339(&m.created_at)
        .or_else(|_| chrono::DateTime::parse_from_str(&m.created_at, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .map(|t| t.timestamp())
        .unwrap_or(0);
    let model_type = match m.model_type.as_str() {
        "embedding" => ModelType::Embedding,
        "vlm" => ModelType::Vlm,
        // "chat", and the seeds' "llm"
        _ => ModelType::Chat,
    };
    Deployment {
        id: m.id.as_str().into(),
        name: m.name.clone(),
        display_name: m.display_name.clone(),
        model_id: m.model_id.clone(),
        provider,
        model_type,
        prices: Prices {
            input,
            output: decimal(&m.cost_output_per_million),
            cache_read: m
                .cost_cache_read_per_million
                .as_deref()
                .map_or(input, decimal),
            cache_write: m
                .cost_cache_write_per_million
                .as_deref()
                .map_or(input, decimal),
        },
        parameters: serde_json::from_str(&m.parameters).unwrap_or_default(),
        context_window: m.context_window.map(|v| v.max(0) as u64),
        max_output_tokens: m.max_output_tokens.map(|v| v.max(0) as u64),
        supports_streaming: m.supports_streaming,
        supports_json: m.supports_json,
        supports_tools: m.supports_function_calling,
        // A vision-language model takes images unless it says otherwise.
        supports_vision: m
            .supports_vision
            .or((model_type == ModelType::Vlm).then_some(true)),
        priority: m.priority,
        weight: m.weight.clamp(0, u32::MAX as i64) as u32,
        created_unix,
        limits,
        health,
        upstream_uris: Default::default(),
    }
}

/// The current snapshot, swapped atomically on reload.
pub struct Registry {
    current: ArcSwap<Snapshot>,
}

impl Registry {
    pub fn new(snapshot: Snapshot) -> Registry {
        Registry {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    pub fn swap(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::shared::test_support::TestPrefix;
    use crate::limits::{admit, OnRedisFailure};

    fn provider_row(rpm: i64) -> ProviderRow {
        ProviderRow {
            id: "p1".into(),
            name: "up".into(),
            display_name: "Up".into(),
            api: "mock".into(),
            base_url: String::new(),
            api_key_ref: None,
            api_version: None,
            max_parallel_requests: 0,
            requests_per_minute: rpm,
            tokens_per_minute: 0,
            queue_timeout_ms: 0,
            timeouts: "{}".into(),
            is_enabled: true,
        }
    }

    fn model_row(rate_limits: &str) -> ModelRow {
        ModelRow {
            id: "m1".into(),
            provider_id: "p1".into(),
            model_id: "m1".into(),
            name: "m".into(),
            display_name: "M".into(),
            model_type: "chat".into(),
            context_window: None,
            max_output_tokens: None,
            supports_streaming: None,
            supports_json: None,
            supports_function_calling: None,
            supports_vision: None,
            cost_input_per_million: "0".into(),
            cost_output_per_million: "0".into(),
            cost_cache_read_per_million: None,
            cost_cache_write_per_million: None,
            parameters: "{}".into(),
            rate_limits: rate_limits.into(),
            status: "active".into(),
            is_default: false,
            priority: 0,
            weight: 1,
            deprecation_date: None,
            created_at: "2026-11-01T00:00:00Z".into(),
        }
    }

    fn rows(provider_rpm: i64, rate_limits: &str) -> RegistryRows {
        RegistryRows {
            providers: vec![provider_row(provider_rpm)],
            models: vec![model_row(rate_limits)],
            settings: vec![],
        }
    }

    /// Against the real Redis: limits changed by a reload are still decided there, so every
    /// instance keeps counting against one budget.
    #[tokio::test]
    async fn a_reload_that_changes_limits_keeps_them_shared() {
        let prefix = TestPrefix::new();
        let shared = Shared {
            limiter: prefix.limiter().await,
            on_failure: OnRedisFailure::FailClosed,
            instances: 1,
            errors: prometheus::IntCounter::new("errors", "errors").unwrap(),
        };
        let build = |rows: &RegistryRows, previous: Option<&Snapshot>| {
            let keys = ProviderKeys::default();
            Snapshot::build(
                rows,
                &keys,
                BreakerConfig::default(),
                previous,
                Some(&shared),
            )
        };
        let first = build(&rows(100, r#"{"rpm": 5}"#), None);
        let limits = |s: &Snapshot| {
            let d = &s.resolve("m").unwrap().deployments[0];
            (d.provider.limits.clone(), d.limits.clone().unwrap())
        };
        let reloaded = rows(1, r#"{"rpm": 1}"#);
        let after = build(&reloaded, Some(&first));
        let (provider, model) = limits(&after);
        assert_eq!(
            (
                provider.spec.requests_per_minute,
                model.spec.requests_per_minute
            ),
            (1, 1)
        );
        assert!(provider.is_shared() && model.is_shared());

        // The one request a minute is spent through this instance; another instance with the
        // same registry, started afresh, finds the Redis buckets empty.
        let now = tokio::time::Instant::now();
        admit(&[&model], 0, now).await.unwrap();
        admit(&[&provider], 0, now).await.unwrap();
        let other = build(&reloaded, None);
        let (other_provider, other_model) = limits(&other);
        assert_eq!(
            admit(&[&other_model], 0, now).await.unwrap_err().scope,
            "model"
        );
        let refused = admit(&[&other_provider], 0, now).await.unwrap_err();
        assert_eq!(refused.scope, "provider");
    }

    fn authorization(s: &Snapshot, name: &str) -> String {
        let d = &s.resolve(name).unwrap().deployments[0];
        let (_, value) = d.provider.auth_header.as_ref().unwrap();
        value.to_str().unwrap().to_owned()
    }

    /// Everything comes from the rows: the routes (a `route:` setting and a setting naming a
    /// deployment) and the provider's key, sealed in its row and opened with the sealer
    /// passed in. There is no config to read.
    #[test]
    fn a_snapshot_is_built_from_rows_alone() {
        let sealer = crate::secrets::Sealer::new("master-1");
        let mut rows = rows(0, "{}");
        rows.providers[0].api_key_ref = Some(sealer.seal("sk-sealed"));
        rows.settings = vec![
            (
                "infra_model_summary".into(),
                r#"{"provider": "up", "model_id": "m1"}"#.into(),
            ),
            (
                "route:smart".into(),
                r#"{"targets": ["up/m1"], "strategy": "cheapest"}"#.into(),
            ),
            ("route:broken".into(), r#"{"strategy": "fastest"}"#.into()),
        ];
        let keys = ProviderKeys::new(Some(sealer), HashMap::new());
        let snap = Snapshot::build(&rows, &keys, BreakerConfig::default(), None, None);
        assert_eq!(authorization(&snap, "m"), "Bearer sk-sealed");
        let smart = snap.resolve("smart").unwrap();
        assert_eq!(smart.strategy, Strategy::Cheapest);
        assert_eq!(smart.deployments[0].qualified_name(), "up/m1");
        let summary = snap.resolve("infra_model_summary").unwrap();
        assert_eq!(summary.strategy, Strategy::Fallback);
        assert!(snap.resolve("broken").is_none());
        let listed: Vec<&str> = snap.listed().iter().map(|m| m.id.as_str()).collect();
        assert_eq!(listed, ["infra_model_summary", "m", "smart"]);

        // Without the master key the sealed key cannot be had: the provider says why.
        let none = Snapshot::build(
            &rows,
            &ProviderKeys::default(),
            BreakerConfig::default(),
            None,
            None,
        );
        assert!(none.resolve("m").is_none());
        assert!(none.unavailable[0]
            .reason
            .contains("auth.master_key is not set"));
    }

    /// A key written in a config file with no master key set stays out of the database
    /// (`config`): the instance whose file has it serves the provider, another says why not.
    #[test]
    fn a_key_kept_in_a_file_serves_only_where_the_file_has_it() {
        let mut rows = rows(0, "{}");
        rows.providers[0].api_key_ref = Some(crate::store::KEY_IN_CONFIG.into());
        let in_file = HashMap::from([("up".to_owned(), "sk-file".to_owned())]);
        let here = ProviderKeys::new(None, in_file);
        let snap = Snapshot::build(&rows, &here, BreakerConfig::default(), None, None);
        assert_eq!(authorization(&snap, "m"), "Bearer sk-file");
        let elsewhere = Snapshot::build(
            &rows,
            &ProviderKeys::default(),
            BreakerConfig::default(),
            None,
            None,
        );
        assert!(elsewhere.resolve("m").is_none());
        assert!(elsewhere.unavailable[0]
            .reason
            .contains("another instance's config file"));
    }
}
