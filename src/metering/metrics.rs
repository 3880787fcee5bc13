//! Prometheus metrics (prefix `tollgate_`) plus the OpenTelemetry GenAI histograms.
//!
//! Each gateway owns its registry, so several gateways in one process (the tests) do not mix
//! their numbers. Labels stay low-cardinality: provider, public model name (from the registry,
//! `unknown` for any other), project, status.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use prometheus::{Counter, CounterVec, GaugeVec};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
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
    pub shared_limiter_errors_total: IntCounter,
    pub fallbacks_total: IntCounterVec,
    pub in_flight: IntGaugeVec,
    pub provider_up: GaugeVec,
    pub config_reloads_total: IntCounterVec,
    pub registry_deployments: IntGauge,
    pub usage_log_queue_depth: IntGauge,
    pub usage_log_dropped_total: IntCounter,
    pub usage_log_spooled_total: IntCounter,
    pub usage_log_written_total: IntCounter,
    pub usage_log_rejected_total: IntCounter,
    pub auth_failures_total: IntCounterVec,
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

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("tollgate")
}

fn hopts(name: &str, help: &str, buckets: &[f64]) -> HistogramOpts {
    HistogramOpts::new(name, help)
        .namespace("tollgate")
        .buckets(buckets.to_vec())
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("metric definitions are valid");
                registry
                    .register(Box::new(m.clone()))
                    .expect("metric names are unique");
                m
            }};
        }
        let pm = &["provider", "model"];
        let auth_failures_total = reg!(IntCounterVec::new(
            opts("auth_failures_total", "Requests refused before a caller was authenticated, by reason (they have no usage row)."),
            &["reason"]
        ));
        let metrics = Metrics {
            requests_total: reg!(IntCounterVec::new(
                opts("requests_total", "Requests answered, by provider, model and HTTP status."),
                &["provider", "model", "status"]
            )),
            request_duration_seconds: reg!(HistogramVec::new(
                hopts("request_duration_seconds", "Time from request received to last byte sent.", LATENCY_BUCKETS),
                pm
            )),
            time_to_first_token_seconds: reg!(HistogramVec::new(
                hopts("time_to_first_token_seconds", "Time from request received to first content byte sent.", LATENCY_BUCKETS),
                pm
            )),
            upstream_duration_seconds: reg!(HistogramVec::new(
                hopts("upstream_duration_seconds", "Time spent waiting on providers.", LATENCY_BUCKETS),
                pm
            )),
            gateway_overhead_seconds: reg!(Histogram::with_opts(hopts(
                "gateway_overhead_seconds",
                "Request time not spent waiting on a provider.",
                OVERHEAD_BUCKETS
            ))),
            tokens_total: reg!(IntCounterVec::new(
                opts("tokens_total", "Tokens by kind: input (uncached), cache_read, cache_write, output, reasoning (part of output)."),
                &["provider", "model", "project", "kind"]
            )),
            cost_usd_total: reg!(CounterVec::new(
                opts("cost_usd_total", "Cost in USD (the usage table holds the exact decimal)."),
                &["provider", "model", "project"]
            )),
            rate_limited_total: reg!(IntCounterVec::new(
                opts("rate_limited_total", "Requests refused or delayed by a limit, by scope."),
                &["scope"]
            )),
            shared_limiter_errors_total: reg!(IntCounter::with_opts(opts(
                "shared_limiter_errors_total",
                "Limit decisions Redis could not make (answered by [redis] on_failure)."
            ))),
            fallbacks_total: reg!(IntCounterVec::new(
                opts("fallbacks_total", "Attempts moved on to the next deployment."),
                &["model"]
            )),
            in_flight: reg!(IntGaugeVec::new(
                opts("in_flight", "Requests currently being answered, by provider."),
                &["provider"]
            )),
            provider_up: reg!(GaugeVec::new(
                opts("provider_up", "1 when the provider's circuit is closed, 0.5 half-open, 0 open."),
                &["provider"]
            )),
            config_reloads_total: reg!(IntCounterVec::new(
                opts("config_reloads_total", "Registry and config reloads, by result."),
                &["result"]
            )),
            registry_deployments: reg!(IntGauge::with_opts(opts(
                "registry_deployments",
                "Deployments (model entries) that can serve in the current snapshot."
            ))),
            usage_log_queue_depth: reg!(IntGauge::with_opts(opts(
                "usage_log_queue_depth",
                "Usage records waiting for the batch writer."
            ))),
            usage_log_dropped_total: reg!(IntCounter::with_opts(opts(
                "usage_log_dropped_total",
                "Usage records lost (must stay 0)."
            ))),
            usage_log_spooled_total: reg!(IntCounter::with_opts(opts(
                "usage_log_spooled_total",
                "Usage records written to the local spool file while the database was unavailable."
            ))),
            usage_log_written_total: reg!(IntCounter::with_opts(opts(
                "usage_log_written_total",
                "Usage records written to the database."
            ))),
            usage_log_rejected_total: reg!(IntCounter::with_opts(opts(
                "usage_log_rejected_total",
                "Usage records the database refused (a value or constraint it would refuse again), set aside in the rejected file."
            ))),
            auth_failures_total,
            refusals: Default::default(),
            genai_token_usage: reg!(HistogramVec::new(
                HistogramOpts::new("gen_ai_client_token_usage", "OpenTelemetry GenAI: tokens used per operation.")
                    .buckets(GENAI_TOKEN_BUCKETS.to_vec()),
                &["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_token_type", "gen_ai_request_model"]
            )),
            genai_operation_duration: reg!(HistogramVec::new(
                HistogramOpts::new("gen_ai_client_operation_duration_seconds", "OpenTelemetry GenAI: operation duration.")
                    .buckets(GENAI_DURATION_BUCKETS.to_vec()),
                &["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "error_type"]
            )),
            genai_time_to_first_token: reg!(HistogramVec::new(
                HistogramOpts::new("gen_ai_server_time_to_first_token_seconds", "OpenTelemetry GenAI: time to first token.")
                    .buckets(GENAI_TTFT_BUCKETS.to_vec()),
                &["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"]
            )),
            series: RwLock::new(HashMap::new()),
            registry,
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
        let provider = rec.provider_name.as_str();
        let model = rec.metric_model();
        let project = rec.project_name.as_str();
        let op = operation(&rec.endpoint);
        let error = rec.error_type.as_deref().unwrap_or("");
        let code = http::StatusCode::from_u16(rec.status_code);
        let other;
        let status = match &code {
            Ok(code) => code.as_str(),
            Err(_) => {
                other = rec.status_code.to_string();
                &other
            }
        };
        let mut key = String::with_capacity(
            op.len() + provider.len() + model.len() + project.len() + error.len() + 16,
        );
        for part in [op, provider, model, project, status, error] {
            key.push_str(part);
            key.push('\u{1f}');
        }
        let s = self.series(&key);
        // Borrowed, not cloned: a clone is an atomic count on memory both workers share.
        fn child<'s>(
            cell: &'s OnceLock<Histogram>,
            vec: &HistogramVec,
            labels: &[&str],
        ) -> &'s Histogram {
            cell.get_or_init(|| vec.with_label_values(labels))
        }

        s.requests
            .get_or_init(|| {
                self.requests_total
                    .with_label_values(&[provider, model, status])
            })
            .inc();
        let total = rec.latency_ms as f64 / 1000.0;
        child(
            &s.duration,
            &self.request_duration_seconds,
            &[provider, model],
        )
        .observe(total);
        if let Some(ttft) = rec.ttft_ms {
            let ttft = ttft as f64 / 1000.0;
            child(
                &s.ttft,
                &self.time_to_first_token_seconds,
                &[provider, model],
            )
            .observe(ttft);
            child(
                &s.genai_ttft,
                &self.genai_time_to_first_token,
                &[op, provider, model],
            )
            .observe(ttft);
        }
        if let Some(up) = rec.upstream_ms {
            let up = up as f64 / 1000.0;
            child(
                &s.upstream,
                &self.upstream_duration_seconds,
                &[provider, model],
            )
            .observe(up);
            self.gateway_overhead_seconds.observe((total - up).max(0.0));
        }
        let t = &rec.tokens;
        for (i, (kind, n)) in [
            ("input", t.input),
            ("cache_read", t.cache_read),
            ("cache_write", t.cache_write),
            ("output", t.output),
            ("reasoning", t.reasoning),
        ]
        .into_iter()
        .enumerate()
        {
            if n > 0 {
                s.tokens[i]
                    .get_or_init(|| {
                        self.tokens_total
                            .with_label_values(&[provider, model, project, kind])
                    })
                    .inc_by(n);
            }
        }
        if !rec.cost_usd.is_zero() {
            s.cost
                .get_or_init(|| {
                    self.cost_usd_total
                        .with_label_values(&[provider, model, project])
                })
                .inc_by(rec.cost_usd.to_f64().unwrap_or(0.0));
        }
        if rec.usage_source != super::UsageSource::None {
            let usage = &self.genai_token_usage;
            child(&s.genai_input, usage, &[op, provider, "input", model])
                .observe(t.prompt_total() as f64);
            child(&s.genai_output, usage, &[op, provider, "output", model])
                .observe(t.output as f64);
        }
        child(
            &s.genai_duration,
            &self.genai_operation_duration,
            &[op, provider, model, error],
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
