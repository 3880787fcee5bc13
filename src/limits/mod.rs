//! Limits: requests and tokens per minute, and parallel requests, for each scope (a provider,
//! a model, a gateway key). A request is admitted only when every scope it touches has room;
//! it may wait for room up to the provider's `queue_timeout_ms`, in arrival order.
//!
//! Concurrency slots are RAII permits: they go back when the `Admission` is dropped, which
//! happens on every path (answer sent, stream ended, error, client gone, panic).

pub mod bucket;
pub mod shared;

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use bucket::{Bucket, Exhausted};

/// The configured limits of one scope; 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitSpec {
    pub requests_per_minute: u64,
    pub tokens_per_minute: u64,
    pub max_parallel: u32,
}

/// The live state of one scope's limits.
pub struct LimitSet {
    pub scope: &'static str,
    pub spec: LimitSpec,
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    parallel: Option<Arc<Semaphore>>,
}

impl std::fmt::Debug for LimitSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitSet")
            .field("scope", &self.scope)
            .field("spec", &self.spec)
            .finish()
    }
}

impl LimitSet {
    pub fn new(scope: &'static str, spec: LimitSpec) -> LimitSet {
        let bucket = |n: u64| (n > 0).then(|| Bucket::per_minute(n));
        LimitSet {
            scope,
            spec,
            requests: bucket(spec.requests_per_minute),
            tokens: bucket(spec.tokens_per_minute),
            parallel: (spec.max_parallel > 0)
                .then(|| Arc::new(Semaphore::new(spec.max_parallel as usize))),
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.spec == LimitSpec::default()
    }

    /// Slots in use right now (for tests and least-busy routing).
    pub fn parallel_in_use(&self) -> u32 {
        self.parallel
            .as_ref()
            .map_or(0, |s| self.spec.max_parallel - s.available_permits() as u32)
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone)]
pub struct Refused {
    pub scope: &'static str,
    pub what: &'static str,
    pub retry_after: Duration,
}

/// What a request holds while it runs: slots, and the token reservations to settle.
#[derive(Default)]
pub struct Admission {
    permits: Vec<OwnedSemaphorePermit>,
    reserved: Vec<(Arc<LimitSet>, u64)>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("permits", &self.permits.len())
            .finish()
    }
}

impl Admission {
    /// Corrects the token reservations to what the request really used.
    pub fn settle(&mut self, actual_tokens: u64) {
        for (set, reserved) in self.reserved.drain(..) {
            if let Some(b) = &set.tokens {
                b.settle(reserved, actual_tokens);
            }
        }
    }

    /// Joins another admission (the key's and the deployment's are taken separately).
    pub fn merge(&mut self, other: Admission) {
        let mut other = other;
        self.permits.append(&mut other.permits);
        self.reserved.append(&mut other.reserved);
    }
}

/// Admits a request that will use about `tokens` tokens into every set, waiting until
/// `deadline` at most. On refusal nothing is kept: reservations made so far are given back.
pub async fn admit(
    sets: &[&Arc<LimitSet>],
    tokens: u64,
    deadline: tokio::time::Instant,
) -> Result<Admission, Refused> {
    let mut admission = Admission::default();
    let mut taken_requests: Vec<&Arc<LimitSet>> = Vec::new();
    let refuse = |admission: &mut Admission, taken: &[&Arc<LimitSet>], r: Refused| {
        for set in taken {
            if let Some(b) = &set.requests {
                b.settle(1, 0);
            }
        }
        admission.settle(0);
        r
    };
    for set in sets {
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Some(b) = &set.requests {
            if let Err(e) = b.reserve(1, wait).await {
                let r = Refused {
                    scope: set.scope,
                    what: "requests",
                    retry_after: e.retry_after,
                };
                return Err(refuse(&mut admission, &taken_requests, r));
            }
            taken_requests.push(set);
        }
        if let Some(b) = &set.tokens {
            let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Err(e) = b.reserve(tokens, wait).await {
                let r = Refused {
                    scope: set.scope,
                    what: "tokens",
                    retry_after: e.retry_after,
                };
                return Err(refuse(&mut admission, &taken_requests, r));
            }
            admission.reserved.push(((*set).clone(), tokens));
        }
        if let Some(sem) = &set.parallel {
            let permit = match sem.clone().try_acquire_owned() {
                Ok(p) => Ok(p),
                Err(_) => tokio::time::timeout_at(deadline, sem.clone().acquire_owned())
                    .await
                    .map_err(|_| ())
                    .and_then(|r| r.map_err(|_| ())),
            };
            match permit {
                Ok(p) => admission.permits.push(p),
                Err(()) => {
                    let r = Refused {
                        scope: set.scope,
                        what: "parallel requests",
                        retry_after: Duration::from_secs(1),
                    };
                    return Err(refuse(&mut admission, &taken_requests, r));
                }
            }
        }
    }
    Ok(admission)
}

/// OpenAI's six `x-ratelimit-*` headers for the tightest of the given limits.
pub fn rate_limit_headers(sets: &[&Arc<LimitSet>]) -> Vec<(&'static str, HeaderValue)> {
    let tightest = |pick: fn(&LimitSet) -> Option<&Bucket>| {
        sets.iter().filter_map(|s| pick(s)).min_by(|a, b| {
            let ra = a.remaining() as f64 / a.per_minute_limit() as f64;
            let rb = b.remaining() as f64 / b.per_minute_limit() as f64;
            ra.total_cmp(&rb).then(a.remaining().cmp(&b.remaining()))
        })
    };
    let mut out = Vec::new();
    for (kind, bucket) in [
        ("requests", tightest(|s| s.requests.as_ref())),
        ("tokens", tightest(|s| s.tokens.as_ref())),
    ] {
        let Some(b) = bucket else { continue };
        let (limit, remaining, reset) = match kind {
            "requests" => (
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ),
            _ => (
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ),
        };
        out.push((limit, HeaderValue::from(b.per_minute_limit())));
        out.push((remaining, HeaderValue::from(b.remaining())));
        let ms = b.time_to_full().as_millis();
        out.push((
            reset,
            HeaderValue::from_str(&format!("{ms}ms")).expect("ascii"),
        ));
    }
    out
}

/// `retry-after` (whole seconds, rounded up) and `retry-after-ms` for a refusal.
pub fn retry_headers(retry_after: Duration) -> [(&'static str, HeaderValue); 2] {
    let ms = retry_after.as_millis().max(1);
    [
        ("retry-after", HeaderValue::from(ms.div_ceil(1000) as u64)),
        ("retry-after-ms", HeaderValue::from(ms as u64)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadline(ms: u64) -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn a_refusal_keeps_nothing() {
        let provider = Arc::new(LimitSet::new(
            "provider",
            LimitSpec {
                requests_per_minute: 10,
                tokens_per_minute: 0,
                max_parallel: 1,
            },
        ));
        let key = Arc::new(LimitSet::new(
            "key",
            LimitSpec {
                requests_per_minute: 0,
                tokens_per_minute: 100,
                max_parallel: 0,
            },
        ));
        let first = admit(&[&key, &provider], 60, deadline(0)).await.unwrap();
        // the key's tokens are short: the provider's request must not be spent on it
        let refused = admit(&[&key, &provider], 60, deadline(0))
            .await
            .unwrap_err();
        assert_eq!((refused.scope, refused.what), ("key", "tokens"));
        assert_eq!(provider.requests.as_ref().unwrap().remaining(), 9);
        // the slot is held until the admission is dropped
        let busy = admit(&[&provider], 0, deadline(0)).await.unwrap_err();
        assert_eq!(busy.what, "parallel requests");
        assert_eq!(provider.parallel_in_use(), 1);
        drop(first);
        assert_eq!(provider.parallel_in_use(), 0);
        admit(&[&provider], 0, deadline(0)).await.unwrap();
    }

    #[tokio::test]
    async fn waiting_for_a_slot_ends_at_the_deadline_or_when_one_frees() {
        let set = Arc::new(LimitSet::new(
            "provider",
            LimitSpec {
                max_parallel: 1,
                ..Default::default()
            },
        ));
        let held = admit(&[&set], 0, deadline(0)).await.unwrap();
        assert!(admit(&[&set], 0, deadline(50)).await.is_err());
        let waiter = tokio::spawn({
            let set = set.clone();
            async move { admit(&[&set], 0, deadline(2000)).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        assert!(waiter.await.unwrap());
    }

    #[test]
    fn headers_describe_the_tightest_limit() {
        let loose = Arc::new(LimitSet::new(
            "provider",
            LimitSpec {
                requests_per_minute: 1000,
                ..Default::default()
            },
        ));
        let tight = Arc::new(LimitSet::new(
            "key",
            LimitSpec {
                requests_per_minute: 10,
                ..Default::default()
            },
        ));
        let h = rate_limit_headers(&[&loose, &tight]);
        let get = |n: &str| {
            h.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
        };
        assert_eq!(get("x-ratelimit-limit-requests").as_deref(), Some("10"));
        assert_eq!(get("x-ratelimit-remaining-requests").as_deref(), Some("10"));
        assert!(get("x-ratelimit-limit-tokens").is_none());
        let r = retry_headers(Duration::from_millis(1500));
        assert_eq!(r[0].1, "2");
        assert_eq!(r[1].1, "1500");
    }
}
