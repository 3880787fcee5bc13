//! Limits: requests and tokens per minute, and parallel requests, for each scope (a provider,
//! a model, a gateway key). A request is admitted only when every scope it touches has room;
//! it may wait for room up to the provider's `queue_timeout_ms`, in arrival order.
//!
//! Concurrency slots are RAII permits: they go back when the `Admission` is dropped, which
//! happens on every path (answer sent, stream ended, error, client gone, panic).

pub mod bucket;
pub mod budget;
pub mod shared;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderName, HeaderValue};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use crate::config::OnRedisFailure;
pub use bucket::{Bucket, Exhausted};

/// Every scope a `LimitSet` is made for (the `scope` label of `tollgate_rate_limited_total`).
pub const SCOPES: [&str; 3] = ["provider", "model", "key"];

/// The configured limits of one scope; 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitSpec {
    pub requests_per_minute: u64,
    pub tokens_per_minute: u64,
    pub max_parallel: u32,
}

/// Limits shared by every instance through Redis.
#[derive(Clone)]
pub struct Shared {
    pub limiter: shared::SharedLimiter,
    pub on_failure: OnRedisFailure,
    /// How many instances share the limits (the local fallback enforces limit / instances).
    pub instances: u32,
    /// Counts decisions Redis could not make (`tollgate_shared_limiter_errors_total`).
    pub errors: prometheus::IntCounter,
}

/// The live state of one scope's limits.
pub struct LimitSet {
    pub scope: &'static str,
    pub spec: LimitSpec,
    /// Local buckets: the limits themselves, or this instance's share of shared limits.
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    parallel: Option<Arc<Semaphore>>,
    /// With Redis: the bucket/pool name these limits have there.
    shared: Option<(Shared, String)>,
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
        Self::with_share(scope, spec, 1, None)
    }

    /// Limits kept in Redis under `name` (when `shared` is set), with local buckets of one
    /// instance's share as the fallback.
    pub fn shared(
        scope: &'static str,
        spec: LimitSpec,
        name: String,
        shared: Option<&Shared>,
    ) -> LimitSet {
        match shared {
            Some(sh) => {
                Self::with_share(scope, spec, sh.instances.max(1), Some((sh.clone(), name)))
            }
            None => Self::new(scope, spec),
        }
    }

    fn with_share(
        scope: &'static str,
        spec: LimitSpec,
        share: u32,
        shared: Option<(Shared, String)>,
    ) -> LimitSet {
        let part = |n: u64| n.div_ceil(u64::from(share));
        let bucket = |n: u64| (n > 0).then(|| Bucket::per_minute(part(n)));
        let parallel = part(u64::from(spec.max_parallel)) as usize;
        LimitSet {
            scope,
            spec,
            requests: bucket(spec.requests_per_minute),
            tokens: bucket(spec.tokens_per_minute),
            parallel: (spec.max_parallel > 0).then(|| Arc::new(Semaphore::new(parallel))),
            shared,
        }
    }

    /// Whether these limits are decided in Redis, for every instance together.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Slots in use right now (for tests and least-busy routing).
    pub fn parallel_in_use(&self) -> u32 {
        let size = self
            .spec
            .max_parallel
            .div_ceil(self.shared.as_ref().map_or(1, |(s, _)| s.instances.max(1)));
        self.parallel
            .as_ref()
            .map_or(0, |s| size - s.available_permits() as u32)
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
    leases: Vec<shared::Lease>,
    reserved: Vec<(Arc<LimitSet>, u64)>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("permits", &self.permits.len())
            .finish()
    }
}

/// Reservations never settled (the attempt failed, the client left early) are given back.
impl Drop for Admission {
    fn drop(&mut self) {
        self.settle(0);
    }
}

impl Admission {
    /// Corrects the token reservations to what the request really used.
    pub fn settle(&mut self, actual_tokens: u64) {
        for (set, reserved) in self.reserved.drain(..) {
            set.settle_tokens(reserved, actual_tokens);
        }
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
    let mut took_request: Vec<&Arc<LimitSet>> = Vec::new();
    for set in sets {
        let refused = |what: &'static str, retry_after: Duration| Refused {
            scope: set.scope,
            what,
            retry_after,
        };
        let step = async {
            if set.spec.requests_per_minute > 0 {
                set.take("requests", set.spec.requests_per_minute, 1, deadline)
                    .await
                    .map_err(|d| refused("requests", d))?;
                took_request.push(set);
            }
            if set.spec.tokens_per_minute > 0 && tokens > 0 {
                set.take("tokens", set.spec.tokens_per_minute, tokens, deadline)
                    .await
                    .map_err(|d| refused("tokens", d))?;
                admission.reserved.push(((*set).clone(), tokens));
            }
            if set.spec.max_parallel > 0 {
                set.slot(&mut admission, deadline)
                    .await
                    .map_err(|d| refused("parallel requests", d))?;
            }
            Ok::<(), Refused>(())
        };
        if let Err(r) = step.await {
            for set in took_request {
                set.give_back_request();
            }
            admission.settle(0);
            return Err(r);
        }
    }
    Ok(admission)
}

impl LimitSet {
    fn local_bucket(&self, kind: &str) -> Option<&Bucket> {
        if kind == "requests" {
            self.requests.as_ref()
        } else {
            self.tokens.as_ref()
        }
    }

    /// Whether Redis failed for this decision and the configured fallback is to refuse.
    fn redis_failed(&self, sh: &Shared, e: &shared::SharedError) -> bool {
        sh.errors.inc();
        tracing::warn!(scope = self.scope, error = %e, fallback = ?sh.on_failure, "shared limits unavailable");
        sh.on_failure == OnRedisFailure::FailClosed
    }

    /// Takes `n` from the requests or tokens budget; Err holds the suggested wait.
    async fn take(
        &self,
        kind: &str,
        per_minute: u64,
        n: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(), Duration> {
        if let Some((sh, name)) = &self.shared {
            let bucket = format!("{name}:{kind}");
            loop {
                match sh.limiter.take(&bucket, per_minute, n).await {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err(ex)) => {
                        // Not strictly first come, first served across instances: each
                        // waiter retries when its tokens should be there.
                        let now = tokio::time::Instant::now();
                        if now + ex.retry_after > deadline {
                            return Err(ex.retry_after);
                        }
                        tokio::time::sleep(ex.retry_after).await;
                    }
                    Err(e) if self.redis_failed(sh, &e) => return Err(Duration::from_secs(1)),
                    Err(_) => break, // the local share decides
                }
            }
        }
        let Some(b) = self.local_bucket(kind) else {
            return Ok(());
        };
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        b.reserve(n, wait).await.map_err(|e| e.retry_after)
    }

    fn give_back_request(&self) {
        self.settle_kind("requests", self.spec.requests_per_minute, 1, 0);
    }

    fn settle_tokens(&self, reserved: u64, actual: u64) {
        self.settle_kind("tokens", self.spec.tokens_per_minute, reserved, actual);
    }

    fn settle_kind(&self, kind: &'static str, per_minute: u64, reserved: u64, actual: u64) {
        if reserved == actual {
            return;
        }
        if let Some(b) = self.local_bucket(kind) {
            b.settle(reserved, actual);
        }
        if let Some((sh, name)) = &self.shared {
            let (limiter, bucket) = (sh.limiter.clone(), format!("{name}:{kind}"));
            // Off the request path: settlement is bookkeeping, nobody waits for it.
            tokio::spawn(async move {
                let _ = limiter.settle(&bucket, per_minute, reserved, actual).await;
            });
        }
    }

    /// A parallel-request slot: a Redis lease when shared, else a local permit.
    async fn slot(
        &self,
        admission: &mut Admission,
        deadline: tokio::time::Instant,
    ) -> Result<(), Duration> {
        if let Some((sh, name)) = &self.shared {
            let pool = format!("{name}:parallel");
            loop {
                match sh
                    .limiter
                    .lease(&pool, self.spec.max_parallel, LEASE_TTL)
                    .await
                {
                    Ok(Some(lease)) => {
                        admission.leases.push(lease);
                        return Ok(());
                    }
                    Ok(None) if tokio::time::Instant::now() + LEASE_POLL < deadline => {
                        tokio::time::sleep(LEASE_POLL).await
                    }
                    Ok(None) => return Err(Duration::from_secs(1)),
                    Err(e) if self.redis_failed(sh, &e) => return Err(Duration::from_secs(1)),
                    Err(_) => break,
                }
            }
        }
        let Some(sem) = &self.parallel else {
            return Ok(());
        };
        let permit = match sem.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => tokio::time::timeout_at(deadline, sem.clone().acquire_owned())
                .await
                .map_err(|_| Duration::from_secs(1))?
                .map_err(|_| Duration::from_secs(1))?,
        };
        admission.permits.push(permit);
        Ok(())
    }
}

/// A shared slot lives this long unless renewed; a crashed instance's slots free up after it.
const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often a request waiting for a shared slot asks again.
const LEASE_POLL: Duration = Duration::from_millis(25);

// Constants, so the names are checked once at compile time (`from_static` called at run time
// validates the name again on every answer).
const REQUEST_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
];
const TOKEN_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];

/// OpenAI's six `x-ratelimit-*` headers for the tightest of the given limits.
pub fn rate_limit_headers(sets: &[&Arc<LimitSet>]) -> Vec<(HeaderName, HeaderValue)> {
    // Each bucket is read once; the tightest has the smallest share of its limit left.
    let tightest = |pick: fn(&LimitSet) -> Option<&Bucket>| {
        sets.iter()
            .filter_map(|s| pick(s))
            .map(|b| (b, b.remaining()))
            .min_by(|(a, ra), (b, rb)| {
                let fa = *ra as f64 / a.per_minute_limit() as f64;
                let fb = *rb as f64 / b.per_minute_limit() as f64;
                fa.total_cmp(&fb).then(ra.cmp(rb))
            })
    };
    let buckets = [
        (tightest(|s| s.requests.as_ref()), REQUEST_HEADERS),
        (tightest(|s| s.tokens.as_ref()), TOKEN_HEADERS),
    ];
    // The numbers are written into one buffer their values share: one allocation instead of
    // one or two a value, on every answer.
    let mut text = BytesMut::with_capacity(64);
    let ranges = buckets.each_ref().map(|(bucket, _)| {
        bucket.map(|(b, left)| {
            let remaining = push_number(&mut text, u128::from(left), b"");
            let reset = push_number(&mut text, b.time_to_full(left).as_millis(), b"ms");
            (remaining, reset)
        })
    });
    let text = text.freeze();
    let value = |range| {
        HeaderValue::from_maybe_shared(text.slice(range)).expect("digits are a valid header value")
    };
    let mut out = Vec::with_capacity(6);
    for ((bucket, [limit, remaining, reset]), ranges) in buckets.into_iter().zip(ranges) {
        let (Some((b, _)), Some((left, full_in))) = (bucket, ranges) else {
            continue;
        };
        out.push((limit, b.limit_header()));
        out.push((remaining, value(left)));
        out.push((reset, value(full_in)));
    }
    out
}

/// Appends `n` and `suffix` to `text`; returns where they are.
fn push_number(text: &mut BytesMut, n: u128, suffix: &[u8]) -> std::ops::Range<usize> {
    let at = text.len();
    text.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    text.extend_from_slice(suffix);
    at..text.len()
}

/// `retry-after` (whole seconds, rounded up) and `retry-after-ms` for a refusal.
pub fn retry_headers(retry_after: Duration) -> [(HeaderName, HeaderValue); 2] {
    let ms = retry_after.as_millis().max(1);
    [
        (
            http::header::RETRY_AFTER,
            HeaderValue::from(ms.div_ceil(1000) as u64),
        ),
        (
            HeaderName::from_static("retry-after-ms"),
            HeaderValue::from(ms as u64),
        ),
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
        assert_eq!(
            get("x-ratelimit-reset-requests").as_deref(),
            Some("0ms"),
            "full"
        );
        let mut text = BytesMut::from(&b"12"[..]);
        assert_eq!(push_number(&mut text, 61_250, b"ms"), 2..9);
        assert_eq!(&text[..], b"1261250ms");
        assert!(get("x-ratelimit-limit-tokens").is_none());
        let r = retry_headers(Duration::from_millis(1500));
        assert_eq!(r[0].1, "2");
        assert_eq!(r[1].1, "1500");
    }
}
