//! One attempt at one deployment, from its admission to its verdict. `admit` lets it start
//! (the deployment's circuit lets it through, its limits have room, waiting up to the
//! provider's queue timeout); `conclude` is where every attempt ends, whatever its outcome:
//! the verdict goes to the circuit, its time upstream to the meter, and (traces on) its
//! outcome to its span.
//!
//! What an attempt holds is released by guards when dropped, on every path (an error, a
//! client gone mid-attempt): a circuit pass without a verdict gives a half-open probe back,
//! and the limit slots, token reservations and in-flight counts go back with the `Guards`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::answer::Answer;
use super::context::RequestCtx;
use super::meter::{Guards, InFlight, RequestMeter};
use super::outcome::{Outcome, Reason};
use super::{trace, Gateway};
use crate::config::ProviderTimeouts;
use crate::limits::{self, LimitSet};
use crate::registry::{CircuitPass, CircuitState, Deployment};

pub struct Attempt<'p> {
    pub dep: &'p Arc<Deployment>,
    /// The circuit's leave to try: it takes the verdict.
    pass: CircuitPass<'p>,
    /// What the deployment's admission gave it.
    admitted: Admitted<'p>,
    /// The first content must arrive by then, the whole answer by `until`.
    pub first_until: Instant,
    pub until: Instant,
}

/// What an attempt was admitted with, and holds until its answer is complete.
pub struct Admitted<'p> {
    /// The provider's and the model's limits, which admitted it: their state goes out with the
    /// answer, in `x-ratelimit-*`.
    pub limits: Vec<&'p Arc<LimitSet>>,
    /// Limit slots and token reservations (the key's and the deployment's), in-flight counts.
    pub guards: Guards,
}

/// Lets an attempt at `dep` start, or says why not: a circuit that lets nothing through is
/// skipped, a refusal by the deployment's limits is noted in the context.
pub async fn admit<'p>(
    gw: &Gateway,
    ctx: &mut RequestCtx<'_>,
    dep: &'p Arc<Deployment>,
) -> Option<Attempt<'p>> {
    // None when the circuit lets nothing through now: another request's half-open probe is
    // out, and its verdict is awaited.
    let Some(pass) = dep.health.try_begin() else {
        trace::skipped(ctx.meter, dep, "circuit_open");
        return None;
    };
    let provider = &dep.provider;
    let mut sets: Vec<&Arc<LimitSet>> = vec![&provider.limits];
    sets.extend(dep.limits.as_ref());
    let queue = Duration::from_millis(provider.queue_timeout_ms);
    let queue_until = ctx.deadline.min(Instant::now() + queue);
    let granted = match limits::admit(&sets, ctx.needs.reserve(), queue_until).await {
        Ok(granted) => granted,
        Err(refused) => {
            gw.metrics
                .rate_limited_total
                .with_label_values(&[refused.scope])
                .inc();
            trace::skipped(ctx.meter, dep, trace::limit_reason(refused.scope));
            ctx.passed_over.limits_refused(refused, &sets);
            return None;
        }
    };
    let guards = Guards {
        admission: std::mem::take(&mut ctx.key_admission),
        deployment: granted,
        _in_flight: InFlight::new(gw.metrics.in_flight.with_label_values(&[&provider.name])),
        _busy: dep.health.start(),
    };
    let (first_until, until) = deadlines(&provider.timeouts, ctx.deadline);
    Some(Attempt {
        dep,
        pass,
        admitted: Admitted {
            limits: sets,
            guards,
        },
        first_until,
        until,
    })
}

/// By when the first content and the whole answer must arrive: the provider's timeouts from
/// now, within the request's own deadline.
fn deadlines(t: &ProviderTimeouts, deadline: Instant) -> (Instant, Instant) {
    let now = Instant::now();
    let until = t
        .total_ms
        .map_or(deadline, |ms| deadline.min(now + Duration::from_millis(ms)));
    let first_until = t
        .first_token_ms
        .map_or(until, |ms| until.min(now + Duration::from_millis(ms)));
    (first_until, until)
}

impl<'p> Attempt<'p> {
    /// Reports how the attempt went: the verdict to the deployment's circuit (a 429 pauses
    /// the deployment for the provider's `retry-after`; an answered refusal shows it is up),
    /// and the attempt's time upstream to the meter, unless a stream goes on with it. An
    /// answer still needs what it was admitted with.
    pub fn conclude(
        self,
        gw: &Gateway,
        meter: &mut RequestMeter,
        outcome: &Outcome,
    ) -> Admitted<'p> {
        let latency = meter.attempt_time();
        trace::concluded(meter, outcome);
        let changed = match outcome {
            Outcome::Answered(_) => self.pass.succeeded(latency),
            Outcome::Next(Reason::Failed(_)) => self.pass.failed(latency),
            Outcome::Next(Reason::RateLimited { pause, .. }) => {
                if let Some(wait) = pause {
                    self.dep.health.pause(*wait);
                }
                self.pass.answered()
            }
            Outcome::Stop(_) => self.pass.answered(),
        };
        if !matches!(outcome, Outcome::Answered(Answer::Stream { .. })) {
            meter.end_attempt();
        }
        note_circuit(gw, self.dep, changed);
        self.admitted
    }
}

/// Keeps `provider_up` current when an attempt's outcome changed its deployment's circuit.
fn note_circuit(gw: &Gateway, dep: &Deployment, changed: Option<CircuitState>) {
    if let Some(state) = changed {
        tracing::warn!(provider = %dep.provider.name, model = %dep.name, state = ?state, "circuit breaker changed state");
        gw.report_provider_health(&gw.registry.load(), &dep.provider.name);
    }
}
