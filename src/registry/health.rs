//! What the gateway has seen of one deployment: a circuit breaker over its recent error ratio,
//! an EWMA of its latency (for `lowest_latency`), and how many requests it has in flight (for
//! `least_busy`). It outlives registry reloads, so a reload does not forget an outage.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::BreakerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    /// The value of `tollgate_provider_up`.
    pub fn gauge(self) -> f64 {
        match self {
            CircuitState::Closed => 1.0,
            CircuitState::HalfOpen => 0.5,
            CircuitState::Open => 0.0,
        }
    }
}

const SLOTS: usize = 10;

#[derive(Debug)]
struct Breaker {
    state: CircuitState,
    /// Open: when the cool-down ends. Half-open: when the probe was let through.
    since: Instant,
    /// Ring of per-slot (slot number, attempts, failures) over the window.
    slots: [(u64, u32, u32); SLOTS],
}

#[derive(Debug)]
pub struct Health {
    config: BreakerConfig,
    started: Instant,
    breaker: Mutex<Breaker>,
    latency_ewma_us: AtomicU64,
    in_flight: AtomicI64,
    /// Until when (ms since `started`) the provider asked us to stay away (429 retry-after).
    paused_until_ms: AtomicU64,
}

impl Health {
    pub fn new(config: BreakerConfig) -> Health {
        let now = Instant::now();
        Health {
            config,
            started: now,
            breaker: Mutex::new(Breaker {
                state: CircuitState::Closed,
                since: now,
                slots: [(0, 0, 0); SLOTS],
            }),
            latency_ewma_us: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            paused_until_ms: AtomicU64::new(0),
        }
    }

    /// Keeps requests away for `d` (a provider's `retry-after` on a 429): it is skipped, not
    /// tried, until then. Rate limiting is not ill health, so the circuit is not touched.
    pub fn pause(&self, d: Duration) {
        let until = (self.started.elapsed() + d.min(Duration::from_secs(60))).as_millis() as u64;
        self.paused_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    fn paused(&self) -> bool {
        self.started.elapsed().as_millis() as u64 <= self.paused_until_ms.load(Ordering::Relaxed)
            && self.paused_until_ms.load(Ordering::Relaxed) > 0
    }

    /// How much longer the provider asked us to stay away, if it did.
    pub fn paused_for(&self) -> Option<Duration> {
        let until = self.paused_until_ms.load(Ordering::Relaxed);
        let now = self.started.elapsed().as_millis() as u64;
        (until > 0 && now <= until).then(|| Duration::from_millis((until - now).max(1)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cooldown(&self) -> Duration {
        Duration::from_secs(self.config.cooldown_secs)
    }

    /// A probe that has not reported back after this long is taken as lost (its client went
    /// away mid-attempt), and another one is let through.
    fn probe_timeout(&self) -> Duration {
        self.cooldown() + Duration::from_secs(30)
    }

    pub fn state(&self) -> CircuitState {
        self.lock().state
    }

    /// Whether routing should consider this deployment (no side effect).
    pub fn admits(&self) -> bool {
        if self.paused() {
            return false;
        }
        let b = self.lock();
        match b.state {
            CircuitState::Closed => true,
            CircuitState::Open => b.since <= Instant::now(),
            CircuitState::HalfOpen => b.since.elapsed() > self.probe_timeout(),
        }
    }

    /// Claims the right to send one attempt now. An open circuit past its cool-down lets
    /// exactly one probe through (half-open); everything else waits for the probe's result,
    /// which the returned pass reports on every path (see [`CircuitPass`]).
    pub fn try_begin(&self) -> Option<CircuitPass<'_>> {
        if self.paused() {
            return None;
        }
        let mut b = self.lock();
        let now = Instant::now();
        let probe = match b.state {
            CircuitState::Closed => None,
            CircuitState::Open if b.since <= now => {
                b.state = CircuitState::HalfOpen;
                Some(now)
            }
            CircuitState::Open => return None,
            // A probe that never reported back (its request vanished) is replaced.
            CircuitState::HalfOpen if b.since.elapsed() > self.probe_timeout() => Some(now),
            CircuitState::HalfOpen => return None,
        };
        if let Some(at) = probe {
            b.since = at;
        }
        Some(CircuitPass {
            health: self,
            probe,
        })
    }

    /// The probe sent at `at` ended without a verdict: the next request may probe at once.
    fn release_probe(&self, at: Instant) {
        let mut b = self.lock();
        if b.state == CircuitState::HalfOpen && b.since == at {
            b.state = CircuitState::Open;
            b.since = Instant::now();
        }
    }

    /// Records an attempt's outcome; returns the new state when it changed.
    pub fn record(&self, ok: bool, latency: Duration) -> Option<CircuitState> {
        if ok {
            self.observe_latency(latency);
        }
        self.judge(ok)
    }

    /// Counts an outcome against the breaker; returns the new state when it changed.
    fn judge(&self, ok: bool) -> Option<CircuitState> {
        let slot_len = (self.config.window_secs.max(1) * 1000 / SLOTS as u64).max(1);
        let slot = self.started.elapsed().as_millis() as u64 / slot_len;
        let mut b = self.lock();
        let before = b.state;
        match b.state {
            CircuitState::HalfOpen => {
                if ok {
                    b.state = CircuitState::Closed;
                    b.slots = [(0, 0, 0); SLOTS];
                } else {
                    b.state = CircuitState::Open;
                    b.since = Instant::now() + self.cooldown();
                }
            }
            CircuitState::Closed => {
                let s = &mut b.slots[(slot % SLOTS as u64) as usize];
                if s.0 != slot {
                    *s = (slot, 0, 0);
                }
                s.1 += 1;
                s.2 += u32::from(!ok);
                let (attempts, failures) = b
                    .slots
                    .iter()
                    .filter(|s| s.0 + SLOTS as u64 > slot)
                    .fold((0, 0), |(a, f), s| (a + s.1, f + s.2));
                if !ok
                    && attempts >= self.config.min_requests
                    && f64::from(failures) >= self.config.error_ratio * f64::from(attempts)
                {
                    b.state = CircuitState::Open;
                    b.since = Instant::now() + self.cooldown();
                }
            }
            CircuitState::Open => {}
        }
        (b.state != before).then_some(b.state)
    }

    fn observe_latency(&self, latency: Duration) {
        let sample = latency.as_micros() as u64;
        // EWMA with weight 1/8: recent enough to follow a slowdown, smooth enough to ignore one.
        let _ = self
            .latency_ewma_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    sample
                } else {
                    old - old / 8 + sample / 8
                })
            });
    }

    pub fn latency_ewma_us(&self) -> u64 {
        self.latency_ewma_us.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn start(self: &std::sync::Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self.clone())
    }
}

/// The right to send one attempt, from [`Health::try_begin`]. While a circuit is half-open
/// its single probe decides for everyone, so the probe must always come back: `succeeded` and
/// `failed` record the attempt, `answered` says the provider answered but refused the request
/// (a 429 or another 4xx: it is up), and a pass dropped without any of them (our own limits
/// refused, the client left) releases the probe so that the next request probes instead.
#[must_use = "dropping the pass releases a probe without a verdict"]
pub struct CircuitPass<'a> {
    health: &'a Health,
    /// When this attempt is the half-open probe: when it was let through.
    probe: Option<Instant>,
}

impl CircuitPass<'_> {
    /// The attempt worked; returns the circuit's new state when it changed.
    pub fn succeeded(mut self, latency: Duration) -> Option<CircuitState> {
        self.probe = None;
        self.health.record(true, latency)
    }

    /// The attempt failed (connect error, timeout, 5xx, a broken answer).
    pub fn failed(mut self, latency: Duration) -> Option<CircuitState> {
        self.probe = None;
        self.health.record(false, latency)
    }

    /// The provider answered with a refusal of this request (429, 4xx): healthy enough to
    /// close a half-open circuit. A closed circuit's error ratio and the latency average
    /// leave it out: a refusal says nothing about either.
    pub fn answered(mut self) -> Option<CircuitState> {
        self.probe.take().and_then(|_| self.health.judge(true))
    }
}

impl Drop for CircuitPass<'_> {
    fn drop(&mut self) {
        if let Some(at) = self.probe {
            self.health.release_probe(at);
        }
    }
}

pub struct InFlightGuard(std::sync::Arc<Health>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_on_the_error_ratio_then_probes_once_and_closes() {
        let config = BreakerConfig {
            error_ratio: 0.5,
            min_requests: 4,
            window_secs: 30,
            cooldown_secs: 0,
        };
        let h = Health::new(config);
        let ms = Duration::from_millis(5);
        assert_eq!(h.record(true, ms), None);
        assert_eq!(h.record(false, ms), None);
        assert_eq!(h.record(true, ms), None);
        // 2 failures of 4 attempts = 0.5: open
        assert_eq!(h.record(false, ms), Some(CircuitState::Open));
        // cool-down of 0 s is over at once: exactly one probe goes through
        let probe = h.try_begin().expect("the probe");
        assert_eq!(h.state(), CircuitState::HalfOpen);
        assert!(h.try_begin().is_none());
        assert_eq!(probe.succeeded(ms), Some(CircuitState::Closed));
        assert!(h.try_begin().is_some() && h.try_begin().is_some());
    }

    /// An open circuit whose cool-down (0 s) is over.
    fn opened() -> Health {
        let h = Health::new(BreakerConfig {
            min_requests: 1,
            cooldown_secs: 0,
            ..Default::default()
        });
        assert_eq!(h.record(false, Duration::ZERO), Some(CircuitState::Open));
        h
    }

    #[test]
    fn a_probe_without_a_verdict_lets_the_next_request_probe() {
        let h = opened();
        let probe = h.try_begin().expect("the probe");
        assert!(h.try_begin().is_none(), "one probe at a time");
        drop(probe); // our own limits refused it, or its client left
        assert_eq!(h.state(), CircuitState::Open);
        let probe = h.try_begin().expect("the next request probes at once");
        assert_eq!(probe.failed(Duration::ZERO), Some(CircuitState::Open));
    }

    #[test]
    fn a_provider_that_answers_a_probe_with_a_refusal_closes_the_circuit() {
        let h = opened();
        let probe = h.try_begin().expect("the probe");
        assert_eq!(probe.answered(), Some(CircuitState::Closed), "a 429 or 400");
        assert!(h.try_begin().is_some() && h.try_begin().is_some());
        assert_eq!(h.latency_ewma_us(), 0, "a refusal is no latency sample");
    }

    #[test]
    fn refusals_do_not_count_in_a_closed_circuits_error_ratio() {
        let h = Health::new(BreakerConfig {
            min_requests: 2,
            error_ratio: 0.5,
            ..Default::default()
        });
        assert_eq!(h.record(false, Duration::ZERO), None);
        for _ in 0..5 {
            assert_eq!(h.try_begin().unwrap().answered(), None);
        }
        // two attempts, both failed: the five refusals were not counted as successes
        assert_eq!(h.record(false, Duration::ZERO), Some(CircuitState::Open));
    }

    #[test]
    fn a_failed_probe_opens_again_and_few_requests_never_open() {
        let h = Health::new(BreakerConfig {
            min_requests: 3,
            cooldown_secs: 60,
            ..Default::default()
        });
        assert_eq!(h.record(false, Duration::ZERO), None);
        assert_eq!(h.record(false, Duration::ZERO), None, "below min_requests");
        assert_eq!(h.record(false, Duration::ZERO), Some(CircuitState::Open));
        assert!(
            !h.admits() && h.try_begin().is_none(),
            "open for its cool-down"
        );
    }

    #[test]
    fn latency_is_smoothed() {
        let h = Health::new(BreakerConfig::default());
        h.record(true, Duration::from_millis(100));
        assert_eq!(h.latency_ewma_us(), 100_000);
        h.record(true, Duration::from_millis(900));
        assert_eq!(h.latency_ewma_us(), 100_000 - 12_500 + 112_500);
    }
}
