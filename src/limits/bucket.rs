//! A per-minute budget of requests or tokens: leaky-bucket's fair token bucket (waiters are
//! served in arrival order) plus the one thing it lacks, settlement. Token reservations are
//! made from an estimate; when the actual count is known the difference is kept as a signed
//! adjustment that the next reservation takes first: unused tokens come back, tokens used
//! beyond the estimate are paid before anyone else gets more.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use leaky_bucket::RateLimiter;

pub struct Bucket {
    limiter: RateLimiter,
    per_minute: u64,
    /// `per_minute` as a header value, made once: it goes out with every answer.
    limit_header: http::HeaderValue,
    adjustment: AtomicI64,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("per_minute", &self.per_minute)
            .finish()
    }
}

/// Why a reservation was refused, and when it could pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    pub retry_after: Duration,
}

impl Bucket {
    /// A bucket that holds a minute's worth and refills it evenly over the minute.
    pub fn per_minute(n: u64) -> Bucket {
        let n = n.max(1);
        // Refill in small steps so capacity comes back smoothly, not once a minute.
        let (interval, refill) = if n >= 600 {
            (Duration::from_millis(100), n.div_ceil(600))
        } else {
            (Duration::from_millis(60_000 / n), 1)
        };
        let limiter = RateLimiter::builder()
            .max(n as usize)
            .initial(n as usize)
            .refill(refill as usize)
            .interval(interval)
            .fair(true)
            .build();
        Bucket {
            limiter,
            per_minute: n,
            limit_header: http::HeaderValue::from(n),
            adjustment: AtomicI64::new(0),
        }
    }

    pub fn per_minute_limit(&self) -> u64 {
        self.per_minute
    }

    pub fn limit_header(&self) -> http::HeaderValue {
        self.limit_header.clone()
    }

    /// What is left right now (for the x-ratelimit-remaining-* headers).
    pub fn remaining(&self) -> u64 {
        let credit = self.adjustment.load(Ordering::Relaxed);
        (self.limiter.balance() as i64 + credit).clamp(0, self.per_minute as i64) as u64
    }

    /// How long until the bucket is full again from `remaining` (x-ratelimit-reset-*).
    pub fn time_to_full(&self, remaining: u64) -> Duration {
        self.time_for(self.per_minute.saturating_sub(remaining))
    }

    fn time_for(&self, tokens: u64) -> Duration {
        let per_interval = self.limiter.refill() as u64;
        let steps = tokens.div_ceil(per_interval.max(1));
        self.limiter.interval() * steps as u32
    }

    /// Takes `n` (capped at the bucket's size, so one huge request can still pass once the
    /// bucket is full), waiting up to `wait` in arrival order.
    pub async fn reserve(&self, n: u64, wait: Duration) -> Result<(), Exhausted> {
        // Settle the adjustment first: credit lowers what is taken, debt adds to it.
        let adj = self.adjustment.swap(0, Ordering::AcqRel);
        let need = (n as i64 - adj).max(0) as u64;
        let leftover_credit = (adj - n as i64).max(0);
        if leftover_credit > 0 {
            self.adjustment.fetch_add(leftover_credit, Ordering::AcqRel);
        }
        let take = need.min(self.per_minute) as usize;
        if take == 0 {
            return Ok(());
        }
        let ok = if wait.is_zero() {
            self.limiter.try_acquire(take)
        } else {
            tokio::time::timeout(wait, self.limiter.acquire(take))
                .await
                .is_ok()
        };
        if ok {
            Ok(())
        } else {
            // Put the settlement back for whoever comes next.
            self.adjustment
                .fetch_add(adj.min(n as i64), Ordering::AcqRel);
            let missing = (take as u64).saturating_sub(self.limiter.balance() as u64);
            Err(Exhausted {
                retry_after: self.time_for(missing).max(Duration::from_millis(1)),
            })
        }
    }

    /// Corrects a reservation of `reserved` to the `actual` count.
    pub fn settle(&self, reserved: u64, actual: u64) {
        let diff = reserved as i64 - actual as i64;
        if diff == 0 {
            return;
        }
        let cap = self.per_minute as i64;
        let _ = self
            .adjustment
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some((v + diff).clamp(-cap, cap))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_takes_the_minute_and_no_more() {
        let b = Bucket::per_minute(5);
        for _ in 0..5 {
            b.reserve(1, Duration::ZERO).await.unwrap();
        }
        let err = b.reserve(1, Duration::ZERO).await.unwrap_err();
        // one request comes back every 12 s
        assert!(
            err.retry_after > Duration::from_secs(10) && err.retry_after <= Duration::from_secs(12),
            "{err:?}"
        );
        assert_eq!(b.remaining(), 0);
    }

    #[tokio::test]
    async fn unused_reservations_come_back_and_overruns_are_paid() {
        let b = Bucket::per_minute(1000);
        b.reserve(800, Duration::ZERO).await.unwrap();
        assert!(b.reserve(300, Duration::ZERO).await.is_err());
        b.settle(800, 100); // only 100 were used
        b.reserve(600, Duration::ZERO).await.unwrap();
        b.settle(600, 900); // 300 more than reserved: a debt
        assert!(
            b.reserve(300, Duration::ZERO).await.is_err(),
            "the debt is paid first"
        );
    }

    #[tokio::test]
    async fn waiters_get_capacity_as_it_refills() {
        let b = Bucket::per_minute(600); // one every 100 ms
        b.reserve(600, Duration::ZERO).await.unwrap();
        assert!(b.reserve(1, Duration::from_millis(30)).await.is_err());
        assert!(b.reserve(1, Duration::from_millis(250)).await.is_ok());
    }
}
