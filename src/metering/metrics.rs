//! Prometheus metrics (prefix `tollgate_`) plus the OpenTelemetry GenAI histograms.
//!
//! Each gateway owns its registry, so several gateways in one process (the tests) do not mix
//! their numbers. Labels stay low-cardinality: provider, public model name (from the registry,
//! `unknown` for any other), project, status.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use prometheus::{
    core::Collector, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use prometheus::{Counter, CounterVec, GaugeVec};
use rust_decimal::prelude::ToPrimitive;

use super::UsageRecord;

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
];
// OpenTelemetry GenAI semantic conventions' explicit bucket boundaries.
const GENAI_TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
const GENAI_DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
const GENAI_TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

pub struct Metrics {
    registry: Registry,
    pub requests_total: IntCounterVec,
    pub request_duration_seconds: HistogramVec,
    pub time_to_first_token_seconds: HistogramVec,
    pub upstream_duration_seconds: HistogramVec,
    pub gateway_overhead_seconds: Histogram,
    pub tokens_total: IntCounterVec,
    pub cost_usd_total: CounterVec,
    pub rate_limited_total: IntCounterVec,
    pub budget_exceeded_total: IntCounterVec,
    pub shared_limiter_errors_total: IntCounter,
    pub fallbacks_total: IntCounterVec,
    pub cache_hits_total: IntCounterVec,
    pub cache_misses_total: IntCounterVec,
    pub cache_errors_total: IntCounterVec,
    pub in_flight: IntGaugeVec,
    pub provider_up: GaugeVec,
    pub config_reloads_total: IntCounterVec,
    pub registry_deployments: IntGauge,
    pub registry_version: IntGauge,
    pub usage_log_queue_depth: IntGauge,
    pub usage_log_dropped_total: IntCounter,
    pub usage_log_spooled_total: IntCounter,
    pub usage_log_written_total: IntCounter,
    pub usage_log_rejected_total: IntCounter,
    pub auth_failures_total: IntCounterVec,
    pub tasks_queue_depth: IntGauge,
    pub tasks_running: IntGauge,
    pub task_duration_seconds: HistogramVec,
    /// The warning lines that go with `auth_failures_total`.
    refusals: super::refusals::RefusalLog,
    pub genai_token_usage: HistogramVec,
    pub genai_operation_duration: HistogramVec,
    pub genai_time_to_first_token: HistogramVec,
    /// Per label combination, the children `observe` touches, found with one lookup.
    series: RwLock<HashMap<String, Arc<Series>>>,
}

/// The metric children of one (operation, provider, model, project, status, error type),
/// each made on first use so that exposition stays as without the cache. Looking them up
/// here once replaces a dozen `with_label_values` calls a request, each hashing its labels.
#[derive(Default)]
struct Series {
    requests: OnceLock<IntCounter>,
    duration: OnceLock<Histogram>,
    ttft: OnceLock<Histogram>,
    genai_ttft: OnceLock<Histogram>,
    upstream: OnceLock<Histogram>,
    tokens: [OnceLock<IntCounter>; 5],
    cost: OnceLock<Counter>,
    genai_input: OnceLock<Histogram>,
    genai_output: OnceLock<Histogram>,
    genai_duration: OnceLock<Histogram>,
}

/// A metric as Prometheus shows it: name, help text and label names.
struct Def {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
}

const PM: &[&str] = &["provider", "model"];

// The definitions are data, apart from `Metrics::new`, so that the list of what is exported
// reads as one table. Names here get the `tollgate_` prefix; the GenAI ones keep the
// OpenTelemetry names.
const REQUESTS_TOTAL: Def = Def {
    name: "requests_total",
    help: "Requests answered, by provider, model and HTTP status.",
    labels: &["provider", "model", "status"],
};
const REQUEST_DURATION: Def = Def {
    name: "request_duration_seconds",
    help: "Time from request received to last byte sent.",
    labels: PM,
};
const TIME_TO_FIRST_TOKEN: Def = Def {
    name: "time_to_first_token_seconds",
    help: "Time from request received to first content byte sent.",
    labels: PM,
};
const UPSTREAM_DURATION: Def = Def {
    name: "upstream_duration_seconds",
    help: "Time spent waiting on providers.",
    labels: PM,
};
const GATEWAY_OVERHEAD: Def = Def {
    name: "gateway_overhead_seconds",
    help: "Request time not spent waiting on a provider.",
    labels: &[],
};
const TOKENS_TOTAL: Def = Def {
    name: "tokens_total",
    help: "Tokens by kind: input (uncached), cache_read, cache_write, output, reasoning (part of output).",
    labels: &["provider", "model", "project", "kind"],
};
const COST_USD_TOTAL: Def = Def {
    name: "cost_usd_total",
    help: "Cost in USD (the usage table holds the exact decimal).",
    labels: &["provider", "model", "project"],
};
const RATE_LIMITED_TOTAL: Def = Def {
    name: "rate_limited_total",
    help: "Requests refused or delayed by a limit, by scope.",
    labels: &["scope"],
};
const BUDGET_EXCEEDED_TOTAL: Def = Def {
    name: "budget_exceeded_total",
    help: "Requests refused because a key's or project's budget had no room, by scope.",
    labels: &["scope"],
};
const SHARED_LIMITER_ERRORS_TOTAL: Def = Def {
    name: "shared_limiter_errors_total",
    help: "Limit decisions Redis could not make (answered by [redis] on_failure).",
    labels: &[],
};
const FALLBACKS_TOTAL: Def = Def {
    name: "fallbacks_total",
    help: "Attempts moved on to the next deployment.",
    labels: &["model"],
};
const CACHE_HITS_TOTAL: Def = Def {
    name: "cache_hits_total",
    help: "Requests answered from the response cache, by model.",
    labels: &["model"],
};
const CACHE_MISSES_TOTAL: Def = Def {
    name: "cache_misses_total",
    help: "Cacheable requests the response cache had no answer for, by model.",
    labels: &["model"],
};
const CACHE_ERRORS_TOTAL: Def = Def {
    name: "cache_errors_total",
    help: "Response cache calls that failed (the request went on without the cache), by backend.",
    labels: &["backend"],
};
const IN_FLIGHT: Def = Def {
    name: "in_flight",
    help: "Requests currently being answered, by provider.",
    labels: &["provider"],
};
const PROVIDER_UP: Def = Def {
    name: "provider_up",
    help: "1 when the provider's circuit is closed, 0.5 half-open, 0 open.",
    labels: &["provider"],
};
const CONFIG_RELOADS_TOTAL: Def = Def {
    name: "config_reloads_total",
    help: "Registry and config reloads, by result.",
    labels: &["result"],
};
const REGISTRY_DEPLOYMENTS: Def = Def {
    name: "registry_deployments",
    help: "Deployments (model entries) that can serve in the current snapshot.",
    labels: &[],
};
const REGISTRY_VERSION: Def = Def {
    name: "registry_version",
    help: "The registry version the current snapshot was built at: instances on one database converge to the same value.",
    labels: &[],
};
const USAGE_LOG_QUEUE_DEPTH: Def = Def {
    name: "usage_log_queue_depth",
    help: "Usage records waiting for the batch writer.",
    labels: &[],
};
const TASKS_QUEUE_DEPTH: Def = Def {
    name: "tasks_queue_depth",
    help: "Background tasks queued in the database, waiting for a worker (all instances).",
    labels: &[],
};
const TASKS_RUNNING: Def = Def {
    name: "tasks_running",
    help: "Background tasks this instance's workers are running.",
    labels: &[],
};
const TASK_DURATION: Def = Def {
    name: "task_duration_seconds",
    help: "Time from a background task's claim to its end, by final status.",
    labels: &["status"],
};
/// Background tasks run several model calls, one after another when limits say so.
const TASK_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];
const USAGE_LOG_DROPPED_TOTAL: Def = Def {
    name: "usage_log_dropped_total",
    help: "Usage records lost (must stay 0).",
    labels: &[],
};
const USAGE_LOG_SPOOLED_TOTAL: Def = Def {
    name: "usage_log_spooled_total",
    help: "Usage records written to the local spool file while the database was unavailable.",
    labels: &[],
};
const USAGE_LOG_WRITTEN_TOTAL: Def = Def {
    name: "usage_log_written_total",
    help: "Usage records written to the database.",
    labels: &[],
};
const USAGE_LOG_REJECTED_TOTAL: Def = Def {
    name: "usage_log_rejected_total",
    help: "Usage records the database refused (a value or constraint it would refuse again), set aside in the rejected file.",
    labels: &[],
};
const AUTH_FAILURES_TOTAL: Def = Def {
    name: "auth_failures_total",
    help: "Requests refused before a caller was authenticated, by reason (they have no usage row).",
    labels: &["reason"],
};
const GENAI_TOKEN_USAGE: Def = Def {
    name: "gen_ai_client_token_usage",
    help: "OpenTelemetry GenAI: tokens used per operation.",
    labels: &[
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_token_type",
        "gen_ai_request_model",
    ],
};
const GENAI_OPERATION_DURATION: Def = Def {
    name: "gen_ai_client_operation_duration_seconds",
    help: "OpenTelemetry GenAI: operation duration.",
    labels: &[
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_request_model",
        "error_type",
    ],
};
const GENAI_TIME_TO_FIRST_TOKEN: Def = Def {
    name: "gen_ai_server_time_to_first_token_seconds",
    help: "OpenTelemetry GenAI: time to first token.",
    labels: &[
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_request_model",
    ],
};

fn opts(def: &Def) -> Opts {
    Opts::new(def.name, def.help).namespace("tollgate")
}

fn hopts(def: &Def, buckets: &[f64]) -> HistogramOpts {
    HistogramOpts::new(def.name, def.help)
        .namespace("tollgate")
        .buckets(buckets.to_vec())
}

/// OpenTelemetry names have no `tollgate_` prefix.
fn genai_hopts(def: &Def, buckets: &[f64]) -> HistogramOpts {
    HistogramOpts::new(def.name, def.help).buckets(buckets.to_vec())
}

/// Makes metrics and registers them with one gateway's registry. The definitions are
/// constants, so a failure here is a bug, not an input error: it panics.
struct Registrar(Registry);

impl Registrar {
    fn add<M: Collector + Clone + 'static>(&self, made: prometheus::Result<M>) -> M {
        let m = made.expect("metric definitions are valid");
        self.0
            .register(Box::new(m.clone()))
            .expect("metric names are unique");
        m
    }

    fn int_counter(&self, def: &Def) -> IntCounter {
        self.add(IntCounter::with_opts(opts(def)))
    }

    fn int_counter_vec(&self, def: &Def) -> IntCounterVec {
        self.add(IntCounterVec::new(opts(def), def.labels))
    }

    fn int_gauge(&self, def: &Def) -> IntGauge {
        self.add(IntGauge::with_opts(opts(def)))
    }

    fn histogram_vec(&self, def: &Def, buckets: &[f64]) -> HistogramVec {
        self.add(HistogramVec::new(hopts(def, buckets), def.labels))
    }

    fn genai_histogram_vec(&self, def: &Def, buckets: &[f64]) -> HistogramVec {
        self.add(HistogramVec::new(genai_hopts(def, buckets), def.labels))
    }
}

/// The labels of one finished request, borrowed from its usage record.
#[derive(Clone, Copy)]
struct Labels<'a> {
    op: &'static str,
    provider: &'a str,
    model: &'a str,
    project: &'a str,
    status: &'a str,
    error: &'a str,
}

impl Labels<'_> {
    /// The key of the request's `Series`: the labels joined by a separator no label holds.
    fn series_key(&self) -> String {
        let parts = [
            self.op,
            self.provider,
            self.model,
            self.project,
            self.status,
            self.error,
        ];
        let mut key = String::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + 16);
        for part in parts {
            key.push_str(part);
            key.push('\u{1f}');
        }
        key
    }
}

// Borrowed, not cloned: a clone is an atomic count on memory both workers share.
#[inline]
fn child<'s>(cell: &'s OnceLock<Histogram>, vec: &HistogramVec, labels: &[&str]) -> &'s Histogram {
    cell.get_or_init(|| vec.with_label_values(labels))
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registrar(Registry::new());
        let metrics = Metrics {
            requests_total: r.int_counter_vec(&REQUESTS_TOTAL),
            request_duration_seconds: r.histogram_vec(&REQUEST_DURATION, LATENCY_BUCKETS),
            time_to_first_token_seconds: r.histogram_vec(&TIME_TO_FIRST_TOKEN, LATENCY_BUCKETS),
            upstream_duration_seconds: r.histogram_vec(&UPSTREAM_DURATION, LATENCY_BUCKETS),
            gateway_overhead_seconds: r.add(Histogram::with_opts(hopts(
                &GATEWAY_OVERHEAD,
                OVERHEAD_BUCKETS,
            ))),
            tokens_total: r.int_counter_vec(&TOKENS_TOTAL),
            cost_usd_total: r.add(CounterVec::new(
                opts(&COST_USD_TOTAL),
                COST_USD_TOTAL.labels,
            )),
            rate_limited_total: r.int_counter_vec(&RATE_LIMITED_TOTAL),
            budget_exceeded_total: r.int_counter_vec(&BUDGET_EXCEEDED_TOTAL),
            shared_limiter_errors_total: r.int_counter(&SHARED_LIMITER_ERRORS_TOTAL),
            fallbacks_total: r.int_counter_vec(&FALLBACKS_TOTAL),
            cache_hits_total: r.int_counter_vec(&CACHE_HITS_TOTAL),
            cache_misses_total: r.int_counter_vec(&CACHE_MISSES_TOTAL),
            cache_errors_total: r.int_counter_vec(&CACHE_ERRORS_TOTAL),
            in_flight: r.add(IntGaugeVec::new(opts(&IN_FLIGHT), IN_FLIGHT.labels)),
            provider_up: r.add(GaugeVec::new(opts(&PROVIDER_UP), PROVIDER_UP.labels)),
            config_reloads_total: r.int_counter_vec(&CONFIG_RELOADS_TOTAL),
            registry_deployments: r.int_gauge(&REGISTRY_DEPLOYMENTS),
            registry_version: r.int_gauge(&REGISTRY_VERSION),
            usage_log_queue_depth: r.int_gauge(&USAGE_LOG_QUEUE_DEPTH),
            usage_log_dropped_total: r.int_counter(&USAGE_LOG_DROPPED_TOTAL),
            usage_log_spooled_total: r.int_counter(&USAGE_LOG_SPOOLED_TOTAL),
            usage_log_written_total: r.int_counter(&USAGE_LOG_WRITTEN_TOTAL),
            usage_log_rejected_total: r.int_counter(&USAGE_LOG_REJECTED_TOTAL),
            auth_failures_total: r.int_counter_vec(&AUTH_FAILURES_TOTAL),
            tasks_queue_depth: r.int_gauge(&TASKS_QUEUE_DEPTH),
            tasks_running: r.int_gauge(&TASKS_RUNNING),
            task_duration_seconds: r.histogram_vec(&TASK_DURATION, TASK_BUCKETS),
            refusals: Default::default(),
            genai_token_usage: r.genai_histogram_vec(&GENAI_TOKEN_USAGE, GENAI_TOKEN_BUCKETS),
            genai_operation_duration: r
                .genai_histogram_vec(&GENAI_OPERATION_DURATION, GENAI_DURATION_BUCKETS),
            genai_time_to_first_token: r
                .genai_histogram_vec(&GENAI_TIME_TO_FIRST_TOKEN, GENAI_TTFT_BUCKETS),
            series: RwLock::new(HashMap::new()),
            registry: r.0,
        };
        metrics.start_known_series_at_zero();
        metrics
    }

    /// Counters whose label values are known up front are exported at 0 from the start, so
    /// a dashboard or an alert on them sees a series before the first event (a counter that
    /// appears only when it first moves hides that first increase from `rate()`).
    fn start_known_series_at_zero(&self) {
        for result in ["success", "error"] {
            self.config_reloads_total.with_label_values(&[result]);
        }
        for scope in crate::limits::SCOPES {
            self.rate_limited_total.with_label_values(&[scope]);
        }
        for scope in crate::limits::budget::SCOPES {
            self.budget_exceeded_total.with_label_values(&[scope]);
        }
        for backend in ["memory", "redis"] {
            self.cache_errors_total.with_label_values(&[backend]);
        }
        for reason in super::refusals::REASONS {
            self.auth_failures_total.with_label_values(&[reason]);
        }
    }

    fn series(&self, key: &str) -> Arc<Series> {
        if let Some(s) = self
            .series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
        {
            return s.clone();
        }
        self.series
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    /// Counts a request refused before it had a caller, and logs it (see `refusals`).
    pub fn refused(self: &Arc<Self>, status: u16, error_type: Option<&str>) {
        let reason = super::refusals::reason(status, error_type);
        self.auth_failures_total.with_label_values(&[reason]).inc();
        if self.refusals.count(reason) {
            let metrics = self.clone();
            tokio::spawn(async move { metrics.refusals.write_lines().await });
        }
    }

    /// Counts one finished request. `upstream_secs` is the time spent waiting on providers.
    pub fn observe(&self, rec: &UsageRecord) {
        let code = http::StatusCode::from_u16(rec.status_code);
        // A code `http` does not know (the record keeps what the provider said) is printed.
        let other;
        let status = match &code {
            Ok(code) => code.as_str(),
            Err(_) => {
                other = rec.status_code.to_string();
                &other
            }
        };
        let labels = Labels {
            op: operation(&rec.endpoint),
            provider: &rec.provider_name,
            model: rec.metric_model(),
            project: &rec.project_name,
            status,
            error: rec.error_type.as_deref().unwrap_or(""),
        };
        // One lookup for all the children below, instead of one per metric.
        let s = self.series(&labels.series_key());
        let total = secs(rec.latency_ms);
        self.observe_request(&s, labels, total);
        self.observe_timings(&s, labels, rec, total);
        self.count_tokens(&s, labels, rec);
        self.observe_genai(&s, labels, rec, total);
    }

    /// The request count and its duration.
    #[inline]
    fn observe_request(&self, s: &Series, l: Labels, total: f64) {
        s.requests
            .get_or_init(|| {
                self.requests_total
                    .with_label_values(&[l.provider, l.model, l.status])
            })
            .inc();
        child(
            &s.duration,
            &self.request_duration_seconds,
            &[l.provider, l.model],
        )
        .observe(total);
    }

    /// Time to first token and time waiting on providers, when the request had them.
    #[inline]
    fn observe_timings(&self, s: &Series, l: Labels, rec: &UsageRecord, total: f64) {
        if let Some(ttft) = rec.ttft_ms {
            let ttft = secs(ttft);
            let pm: &[&str] = &[l.provider, l.model];
            child(&s.ttft, &self.time_to_first_token_seconds, pm).observe(ttft);
            child(
                &s.genai_ttft,
                &self.genai_time_to_first_token,
                &[l.op, l.provider, l.model],
            )
            .observe(ttft);
        }
        if let Some(up) = rec.upstream_ms {
            let up = secs(up);
            child(
                &s.upstream,
                &self.upstream_duration_seconds,
                &[l.provider, l.model],
            )
            .observe(up);
            self.gateway_overhead_seconds.observe((total - up).max(0.0));
        }
    }

    /// Tokens by kind and the cost; a kind never used is never exported.
    #[inline]
    fn count_tokens(&self, s: &Series, l: Labels, rec: &UsageRecord) {
        // `tokens_total` counts what providers processed; an answer from the cache took none
        // (its row keeps the stored counts).
        if rec.cache_hit {
            return;
        }
        let t = &rec.tokens;
        let kinds = [
            ("input", t.input),
            ("cache_read", t.cache_read),
            ("cache_write", t.cache_write),
            ("output", t.output),
            ("reasoning", t.reasoning),
        ];
        for (cell, (kind, n)) in s.tokens.iter().zip(kinds) {
            if n > 0 {
                cell.get_or_init(|| {
                    self.tokens_total
                        .with_label_values(&[l.provider, l.model, l.project, kind])
                })
                .inc_by(n);
            }
        }
        if !rec.cost_usd.is_zero() {
            s.cost
                .get_or_init(|| {
                    self.cost_usd_total
                        .with_label_values(&[l.provider, l.model, l.project])
                })
                .inc_by(rec.cost_usd.to_f64().unwrap_or(0.0));
        }
    }

    /// The OpenTelemetry GenAI token usage (only when usage is known) and duration.
    #[inline]
    fn observe_genai(&self, s: &Series, l: Labels, rec: &UsageRecord, total: f64) {
        if rec.usage_source != super::UsageSource::None {
            let usage = &self.genai_token_usage;
            let t = &rec.tokens;
            child(&s.genai_input, usage, &[l.op, l.provider, "input", l.model])
                .observe(t.prompt_total() as f64);
            child(
                &s.genai_output,
                usage,
                &[l.op, l.provider, "output", l.model],
            )
            .observe(t.output as f64);
        }
        child(
            &s.genai_duration,
            &self.genai_operation_duration,
            &[l.op, l.provider, l.model, l.error],
        )
        .observe(total);
    }

    /// The text exposition format Prometheus scrapes.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("exposition format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn operation(endpoint: &str) -> &'static str {
    match endpoint {
        "embeddings" => "embeddings",
        "completions" => "text_completion",
        _ => "chat",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cached children count into the same series as direct lookups, and a series that
    /// was never used (no cache tokens here) is not exposed.
    #[test]
    fn cached_series_count_like_direct_lookups() {
        let m = Metrics::new();
        let rec = UsageRecord {
            model_name: "fast".into(),
            provider_name: "up".into(),
            tokens: crate::metering::TokenUsage {
                input: 9,
                output: 16,
                ..Default::default()
            },
            usage_source: crate::metering::UsageSource::Provider,
            cost_usd: "0.0001".parse().unwrap(),
            latency_ms: 5,
            upstream_ms: Some(4),
            ..crate::metering::sample_record()
        };
        m.observe(&rec);
        m.observe(&rec);
        assert_eq!(
            m.requests_total
                .with_label_values(&["up", "fast", "200"])
                .get(),
            2
        );
        assert_eq!(
            m.tokens_total
                .with_label_values(&["up", "fast", "", "output"])
                .get(),
            32
        );
        let text = m.render();
        assert!(!text.contains("kind=\"cache_read\""), "{text}");
        assert!(text
            .contains("tollgate_request_duration_seconds_count{model=\"fast\",provider=\"up\"} 2"));
    }

    /// A name the registry does not know is counted as `unknown`, and one a route resolved
    /// to under the deployment's public name: what a client typed is never a label.
    #[test]
    fn only_registry_names_become_model_labels() {
        let m = Metrics::new();
        let unknown = UsageRecord {
            model_name: "sk-pasted-secret".into(),
            model_label: crate::metering::ModelLabel::Unknown,
            status_code: 404,
            ..crate::metering::sample_record()
        };
        m.observe(&unknown);
        let routed = UsageRecord {
            model_name: "smart".into(),
            model_label: crate::metering::ModelLabel::Deployment("gpt-4o".into()),
            ..crate::metering::sample_record()
        };
        m.observe(&routed);
        let text = m.render();
        assert!(!text.contains("sk-pasted-secret"), "{text}");
        assert!(!text.contains("smart"), "{text}");
        assert!(
            text.contains(r#"tollgate_requests_total{model="unknown",provider="",status="404"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tollgate_requests_total{model="gpt-4o",provider="",status="200"} 1"#),
            "{text}"
        );
    }
}
