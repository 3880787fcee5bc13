//! One held concurrency slot in a shared pool. A keeper task renews it in Redis while the
//! `Lease` value lives and removes it once the value is dropped, on every path: normal end,
//! error, panic unwinding or a cancelled future all drop it. If the whole process dies the
//! renewals stop and the slot expires after its ttl, so a crash cannot leak a slot for good.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{SharedLimiter, CALL_TIMEOUT};

/// Shorter leases would expire between renewals on a busy machine.
pub(super) const MIN_TTL: Duration = Duration::from_millis(100);

/// A held slot; dropping it releases the slot.
#[derive(Debug)]
pub struct Lease {
    /// Dropping the sender wakes the keeper, which then removes the lease from Redis.
    _release: oneshot::Sender<()>,
    lost: Arc<AtomicBool>,
}

impl Lease {
    pub(super) fn start(limiter: SharedLimiter, key: String, id: String, ttl: Duration) -> Lease {
        let (release, released) = oneshot::channel();
        let lost = Arc::new(AtomicBool::new(false));
        let keeper = Keeper {
            limiter,
            key,
            id,
            ttl,
            lost: lost.clone(),
        };
        tokio::spawn(keeper.run(released));
        Lease {
            _release: release,
            lost,
        }
    }

    /// True once a renewal found the lease gone: it went unrenewed past its ttl (Redis was
    /// unreachable for that long), so another instance may have been given this slot.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }
}

struct Keeper {
    limiter: SharedLimiter,
    key: String,
    id: String,
    ttl: Duration,
    lost: Arc<AtomicBool>,
}

impl Keeper {
    async fn run(self, mut released: oneshot::Receiver<()>) {
        let period = self.ttl / 3;
        loop {
            tokio::select! {
                _ = &mut released => break,
                _ = tokio::time::sleep(period) => {}
            }
            match self.renew().await {
                Ok(true) => {}
                Ok(false) => {
                    self.lost.store(true, Ordering::Relaxed);
                    tracing::warn!(pool = %self.key, "shared concurrency lease expired before renewal");
                    return;
                }
                // Keep trying: the lease stays valid until its ttl runs out.
                Err(e) => {
                    tracing::warn!(pool = %self.key, error = %e, "renewing a shared lease failed")
                }
            }
        }
        // Runs after any renewal in flight, so a late renewal cannot outlive the release.
        let mut conn = self.limiter.conn.clone();
        let mut release = redis::cmd("ZREM");
        release.arg(&self.key).arg(&self.id);
        let release = release.query_async::<i64>(&mut conn);
        match tokio::time::timeout(CALL_TIMEOUT, release).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                let e = self.limiter.redact.error(&e);
                tracing::warn!(pool = %self.key, error = %e, "releasing a shared lease failed; it expires after its ttl");
            }
            Err(_) => {
                tracing::warn!(pool = %self.key, "releasing a shared lease timed out; it expires after its ttl");
            }
        }
    }

    async fn renew(&self) -> Result<bool, super::SharedError> {
        let mut call = self.limiter.scripts.lease_renew.key(&self.key);
        call.arg(&self.id).arg(self.ttl.as_millis() as u64);
        let renewed: i64 = self.limiter.run(&call).await?;
        Ok(renewed == 1)
    }
}
