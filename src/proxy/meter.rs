//! One request's metering: it collects what the request path learns (caller, model,
//! deployment, attempts, timings) and turns it into exactly one `UsageRecord`, whichever way
//! the request ends. Its upstream time is added up here only (`end_attempt`), and what an
//! attempt holds is released by the guards below when they are dropped. With traces on, the
//! request's span travels with the meter and ends when the row is recorded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::Caller;
use crate::limits::budget::Hold;
use crate::metering::{ModelLabel, UsageRecord, UsageSource};
use crate::providers::{Endpoint, ReportedUsage};
use crate::registry::Deployment;
use crate::store::UsageSink;
use crate::telemetry::{Finished, RequestSpan, Tokens};

pub struct RequestMeter {
    pub request_id: String,
    pub endpoint: Endpoint,
    /// The usage row's `endpoint` when the request came in through another surface than the
    /// OpenAI API (the dashboard's query), else the endpoint's own name.
    pub surface: Option<&'static str>,
    pub stream: bool,
    pub model_name: String,
    /// Whether the registry knows `model_name` (only then may it become a metric label).
    pub known_model: bool,
    pub caller: Option<Arc<Caller>>,
    /// The deployment of the last attempt sent, and how many were (`start_attempt`).
    deployment: Option<Arc<Deployment>>,
    attempts: u32,
    /// The time the ended attempts spent with their providers.
    upstream: Duration,
    /// When the attempt still running was sent.
    attempt_sent: Option<Instant>,
    pub started: Instant,
    created_at: chrono::DateTime<chrono::Utc>,
    sink: UsageSink,
    recorded: bool,
    /// The request's budget reservation, replaced by its actual cost when it is recorded.
    pub budget: Option<Hold>,
    /// The cost the usage row recorded, for a caller that reports it in its answer.
    pub cost: Option<rust_decimal::Decimal>,
    /// Answered from the response cache: no provider, cost 0, the stored usage.
    pub cache_hit: bool,
    /// The request's span, when traces are on (`proxy::trace`).
    pub trace: Option<Box<RequestSpan>>,
}

impl RequestMeter {
    pub fn new(request_id: String, endpoint: Endpoint, sink: UsageSink) -> RequestMeter {
        RequestMeter {
            request_id,
            endpoint,
            surface: None,
            stream: false,
            model_name: String::new(),
            known_model: false,
            caller: None,
            deployment: None,
            attempts: 0,
            upstream: Duration::ZERO,
            attempt_sent: None,
            started: Instant::now(),
            created_at: chrono::Utc::now(),
            sink,
            recorded: false,
            budget: None,
            cost: None,
            cache_hit: false,
            trace: None,
        }
    }

    /// Hands the metering (and the budget reservation) over to a stream that outlives the
    /// handler; this one keeps only the request's id, and records nothing.
    pub fn hand_over(&mut self) -> RequestMeter {
        let stays = RequestMeter {
            request_id: self.request_id.clone(),
            endpoint: self.endpoint,
            surface: self.surface,
            stream: self.stream,
            model_name: String::new(),
            known_model: self.known_model,
            caller: None,
            deployment: None,
            attempts: 0,
            upstream: Duration::ZERO,
            attempt_sent: None,
            started: self.started,
            created_at: self.created_at,
            sink: self.sink.clone(),
            recorded: true,
            budget: None,
            cost: None,
            cache_hit: false,
            trace: None,
        };
        std::mem::replace(self, stays)
    }

    /// An attempt is sent to `dep`: it counts, and its time with the provider runs until
    /// `end_attempt`.
    pub fn start_attempt(&mut self, dep: &Arc<Deployment>) {
        self.attempts += 1;
        self.deployment = Some(dep.clone());
        self.attempt_sent = Some(Instant::now());
    }

    /// How long the running attempt has been with its provider.
    pub fn attempt_time(&self) -> Duration {
        self.attempt_sent.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// The running attempt is over (its answer read, or it failed): its time is added to the
    /// request's upstream time, once. `record` ends one still running: a stream's, which runs
    /// until the stream ends, or one whose client went away.
    pub fn end_attempt(&mut self) {
        if let Some(sent) = self.attempt_sent.take() {
            self.upstream += sent.elapsed();
        }
        if let Some(trace) = self.trace.as_deref_mut() {
            trace.end_attempt();
        }
    }

    /// Records the request's one usage row. Later calls do nothing.
    pub fn record(
        &mut self,
        status: u16,
        error_type: Option<&str>,
        usage: Option<&ReportedUsage>,
        ttft: Option<Duration>,
    ) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        self.end_attempt();
        let Some(caller) = self.caller.as_deref() else {
            // Refused before authentication: nobody to bill, so no row (see `refusals`).
            self.sink.refused(status, error_type);
            self.finish_trace(status, error_type, usage, ttft);
            return;
        };
        let dep = self.deployment.as_deref();
        let tokens = usage.map(|u| u.tokens).unwrap_or_default();
        let cost = dep.map(|d| d.prices.cost(&tokens)).unwrap_or_default();
        self.cost = Some(cost);
        if let Some(hold) = self.budget.take() {
            // The reservation becomes the cost the row records.
            hold.settle(crate::limits::budget::nanos_ceil(cost));
        }
        let source = match usage {
            Some(u) if u.estimated => UsageSource::Estimated,
            Some(_) => UsageSource::Provider,
            None => UsageSource::None,
        };
        let model_label = match dep {
            Some(d) if d.name != self.model_name => ModelLabel::Deployment(d.name.clone()),
            Some(_) => ModelLabel::AsRequested,
            None if self.known_model => ModelLabel::AsRequested,
            None => ModelLabel::Unknown,
        };
        let ms = |d: Duration| d.as_millis() as u64;
        self.sink.record(UsageRecord {
            id: crate::ids::new_id(),
            request_id: self.request_id.clone(),
            created_at: self.created_at,
            llm_model_id: dep.map(|d| d.id.clone()),
            provider_id: dep.map(|d| d.provider.id.clone()),
            project_id: caller.project_id.clone(),
            api_key_id: caller.key_id.clone(),
            model_name: self.model_name.clone(),
            model_label,
            provider_name: dep.map(|d| d.provider.name.clone()).unwrap_or_default(),
            project_name: caller.project_name.clone(),
            endpoint: self.surface.unwrap_or(self.endpoint.as_str()).into(),
            stream: self.stream,
            status_code: status,
            error_type: error_type.map(str::to_owned),
            tokens,
            raw_usage: usage.map(|u| u.raw.clone()),
            usage_source: source,
            cache_hit: self.cache_hit,
            cost_usd: cost,
            latency_ms: ms(self.started.elapsed()),
            ttft_ms: ttft.map(ms),
            upstream_ms: (self.attempts > 0).then(|| ms(self.upstream)),
            attempts: self.attempts,
        });
        self.finish_trace(status, error_type, usage, ttft);
    }

    /// Ends the request's span, when it has one, with what its usage row records.
    fn finish_trace(
        &mut self,
        status: u16,
        error_type: Option<&str>,
        usage: Option<&ReportedUsage>,
        ttft: Option<Duration>,
    ) {
        let Some(trace) = self.trace.take() else {
            return;
        };
        let tokens = usage.map(|u| u.tokens);
        trace.finish(&Finished {
            status,
            error_type,
            tokens: tokens.map(|t| Tokens {
                input: t.input,
                cache_read: t.cache_read,
                cache_write: t.cache_write,
                output: t.output,
                reasoning: t.reasoning,
            }),
            cost_usd: self.cost,
            cache_hit: self.cache_hit,
            attempts: self.attempts,
            upstream: self.deployment.as_deref().map(super::trace::upstream),
            first_chunk: ttft.filter(|_| self.stream),
        });
    }
}

/// A meter dropped before it recorded belongs to a request whose client went away before the
/// answer began (hyper drops the request's future when its connection closes). The provider
/// may already be working on it, so it gets its row too: 499, as nginx logs a client that
/// closed its request. One that left before it was authenticated was not refused: nothing.
impl Drop for RequestMeter {
    fn drop(&mut self) {
        if self.caller.is_some() {
            self.record(499, Some("client_disconnected"), None, None);
        }
    }
}

/// Counts a request in `tollgate_in_flight{provider}` for as long as it is alive.
pub struct InFlight(prometheus::IntGauge);

impl InFlight {
    pub fn new(gauge: prometheus::IntGauge) -> InFlight {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Everything an attempt holds until its answer is complete: limit slots and token
/// reservations (the key's and the deployment's), and the in-flight counts.
pub struct Guards {
    pub admission: crate::limits::Admission,
    pub deployment: crate::limits::Admission,
    /// Held, not read: dropping them ends the in-flight counts.
    pub _in_flight: InFlight,
    pub _busy: crate::registry::InFlightGuard,
}

impl Guards {
    /// Settles the token reservations to what the answer used.
    pub fn settle(&mut self, usage: Option<&ReportedUsage>) {
        let used = usage.map_or(0, |u| u.tokens.prompt_total() + u.tokens.output);
        self.admission.settle(used);
        self.deployment.settle(used);
    }
}
