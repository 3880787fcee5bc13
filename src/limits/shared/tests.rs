//! Against the real Redis (TOLLGATE_TEST_REDIS or redis://127.0.0.1:6379); each test has its
//! own key prefix.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::test_support::{proxy_to_test_redis, redis_url, TestPrefix};
use super::*;

/// Polls `attempt` every 20 ms until it gives `Some`, or panics after `limit`.
async fn within<T, F, Fut>(limit: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn take_until_exhausted(limiter: &SharedLimiter, bucket: &str, per_minute: u64) -> u64 {
    let mut taken = 0;
    while limiter.take(bucket, per_minute, 1).await.unwrap().is_ok() {
        taken += 1;
    }
    taken
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_takes_from_three_instances_let_exactly_five_through() {
    let prefix = TestPrefix::new();
    let instances = [
        prefix.limiter().await,
        prefix.limiter().await,
        prefix.limiter().await,
    ];
    let mut takes = JoinSet::new();
    for i in 0..12 {
        let limiter = instances[i % 3].clone();
        takes.spawn(async move { limiter.take("provider:openai:rpm", 5, 1).await });
    }
    let results: Vec<_> = takes.join_all().await;
    let taken = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    assert_eq!(taken, 5, "{results:?}");
    for result in results {
        match result.expect("Redis answers") {
            Ok(_) => {}
            Err(exhausted) => {
                // One request comes back every 12 s.
                assert!(
                    exhausted.retry_after > Duration::ZERO
                        && exhausted.retry_after <= Duration::from_secs(12),
                    "{exhausted:?}"
                );
                assert_eq!(exhausted.remaining, 0);
            }
        }
    }
}

#[tokio::test]
async fn a_drained_bucket_refills_evenly_over_the_minute() {
    let prefix = TestPrefix::new();
    let limiter = prefix.limiter().await;
    // 600 a minute is 10 a second.
    let taken = limiter.take("b", 600, 600).await.unwrap().unwrap();
    assert_eq!(taken.remaining, 0);
    assert!(
        taken.reset > Duration::from_secs(59) && taken.reset <= Duration::from_secs(60),
        "{taken:?}"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    let back = take_until_exhausted(&limiter, "b", 600).await;
    assert!((2..=3).contains(&back), "{back} tokens came back in 250 ms");
}

#[tokio::test]
async fn fractions_of_a_token_are_kept_between_decisions() {
    let prefix = TestPrefix::new();
    let limiter = prefix.limiter().await;
    // One token a second: half a token after 500 ms is not enough...
    limiter.take("b", 60, 60).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let exhausted = limiter.take("b", 60, 1).await.unwrap().unwrap_err();
    assert!(
        exhausted.retry_after < Duration::from_millis(500),
        "{exhausted:?}"
    );
    // ...but that half still counts: a limiter that floored it would refuse again here.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(limiter.take("b", 60, 1).await.unwrap().is_ok());
}

#[tokio::test]
async fn settle_gives_back_unused_tokens_and_charges_overruns_as_debt() {
    let prefix = TestPrefix::new();
    let limiter = prefix.limiter().await;
    let remaining = |r: Result<Result<Taken, Exhausted>, SharedError>| match r.unwrap() {
        Ok(taken) => taken.remaining,
        Err(exhausted) => exhausted.remaining,
    };

    // Giving back never fills past full.
    limiter.settle("tpm", 100, 100, 0).await.unwrap();
    assert_eq!(remaining(limiter.take("tpm", 100, 0).await), 100);

    // Reserved 50, used 20: 30 come back.
    assert_eq!(remaining(limiter.take("tpm", 100, 50).await), 50);
    limiter.settle("tpm", 100, 50, 20).await.unwrap();
    let after_refund = remaining(limiter.take("tpm", 100, 0).await);
    assert!((80..=81).contains(&after_refund), "{after_refund}");

    // Reserved 10, used 200: the bucket goes 190 below, to about -110.
    limiter.settle("tpm", 100, 10, 200).await.unwrap();
    let exhausted = limiter.take("tpm", 100, 1).await.unwrap().unwrap_err();
    assert_eq!(exhausted.remaining, 0);
    // 111 tokens at 100 a minute: longer than any debt-free wait (at most a minute).
    assert!(
        exhausted.retry_after > Duration::from_secs(65)
            && exhausted.retry_after <= Duration::from_secs(67),
        "{exhausted:?}"
    );
}

#[tokio::test]
async fn an_oversized_take_is_capped_at_the_bucket_size() {
    let prefix = TestPrefix::new();
    let limiter = prefix.limiter().await;
    let taken = limiter.take("tpm", 1000, 50_000).await.unwrap().unwrap();
    assert_eq!(taken.remaining, 0);
    let exhausted = limiter
        .take("tpm", 1000, 50_000)
        .await
        .unwrap()
        .unwrap_err();
    assert!(exhausted.retry_after <= Duration::from_secs(60));
}

#[tokio::test]
async fn every_key_is_prefixed_versioned_and_expires() {
    let prefix = TestPrefix::new();
    let limiter = prefix.limiter().await;
    limiter.take("rpm", 60, 1).await.unwrap().unwrap();
    let lease = limiter.lease("parallel", 2, Duration::from_secs(5)).await;
    let mut keys = prefix.keys();
    keys.sort();
    assert_eq!(
        keys,
        [
            format!("{}v1:bucket:rpm", prefix.0),
            format!("{}v1:lease:parallel", prefix.0)
        ]
    );
    let mut conn = limiter.conn.clone();
    for key in keys {
        let ttl_ms: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl_ms > 0 && ttl_ms <= 300_000, "{key}: {ttl_ms} ms");
    }
    drop(lease);
}

#[tokio::test]
async fn a_full_pool_refuses_and_a_dropped_lease_frees_its_slot() {
    let prefix = TestPrefix::new();
    let limiter = prefix.limiter().await;
    let ttl = Duration::from_secs(10);
    let first = limiter.lease("p", 2, ttl).await.unwrap().expect("slot 1");
    let _second = limiter.lease("p", 2, ttl).await.unwrap().expect("slot 2");
    assert!(limiter.lease("p", 2, ttl).await.unwrap().is_none());
    drop(first);
    // The release runs on a spawned task; well before the 10 s ttl.
    within(Duration::from_secs(1), || async {
        limiter.lease("p", 2, ttl).await.unwrap()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_released_when_its_holder_panics_or_is_cancelled() {
    let prefix = TestPrefix::new();
    let limiter = prefix.limiter().await;
    let ttl = Duration::from_secs(10);

    let holder = limiter.clone();
    let panicked = tokio::spawn(async move {
        let _lease = holder
            .lease("panicked", 1, ttl)
            .await
            .unwrap()
            .expect("free");
        panic!("the request handler panics while holding the slot");
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());
    within(Duration::from_secs(1), || async {
        limiter.lease("panicked", 1, ttl).await.unwrap()
    })
    .await;

    let holder = limiter.clone();
    let cancelled = tokio::time::timeout(Duration::from_millis(100), async move {
        let _lease = holder
            .lease("cancelled", 1, ttl)
            .await
            .unwrap()
            .expect("free");
        std::future::pending::<()>().await;
    })
    .await;
    assert!(cancelled.is_err(), "the holder ran until cancelled");
    within(Duration::from_secs(1), || async {
        limiter.lease("cancelled", 1, ttl).await.unwrap()
    })
    .await;
}

#[tokio::test]
async fn a_crashed_holders_lease_expires_after_its_ttl() {
    let prefix = TestPrefix::new();
    let ttl = Duration::from_millis(300);
    let crashed_prefix = prefix.0.clone();
    let crashed_at = Instant::now();
    // Another "instance" on its own runtime takes the slot and dies: the lease is forgotten
    // (no drop, so no release) and the runtime's end stops the renewals, as a crash would.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let limiter = SharedLimiter::connect(&redis_url(), &crashed_prefix)
                .await
                .unwrap();
            let lease = limiter.lease("p", 1, ttl).await.unwrap().expect("free");
            std::mem::forget(lease);
        });
    })
    .join()
    .unwrap();

    let limiter = prefix.limiter().await;
    assert!(limiter.lease("p", 1, ttl).await.unwrap().is_none());
    within(Duration::from_secs(2), || async {
        limiter.lease("p", 1, ttl).await.unwrap()
    })
    .await;
    assert!(crashed_at.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn a_held_lease_is_renewed_past_its_ttl() {
    let prefix = TestPrefix::new();
    let limiter = prefix.limiter().await;
    let ttl = Duration::from_millis(300);
    let held = limiter.lease("p", 1, ttl).await.unwrap().expect("free");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(limiter.lease("p", 1, ttl).await.unwrap().is_none());
    assert!(!held.lost());
    drop(held);
    within(Duration::from_secs(1), || async {
        limiter.lease("p", 1, ttl).await.unwrap()
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_redis_fails_fast_without_showing_the_password() {
    let started = Instant::now();
    let err = SharedLimiter::connect("redis://:s3cr%21t-pw@127.0.0.1:1", "tollgate:test:")
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("s3cr"), "{shown}");
}

#[tokio::test]
async fn a_redis_that_never_answers_fails_fast() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", silent.local_addr().unwrap());
    // Accepts connections and holds them open without a word.
    let accepting = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    assert!(SharedLimiter::connect(&url, "tollgate:test:")
        .await
        .is_err());
    assert!(started.elapsed() < Duration::from_secs(3));
    accepting.abort();
}

#[tokio::test]
async fn a_redis_lost_after_connecting_fails_decisions_fast() {
    let prefix = TestPrefix::new();
    let (url, mut proxy) = proxy_to_test_redis().await;
    let limiter = SharedLimiter::connect(&url, &prefix.0).await.unwrap();
    assert!(limiter.take("b", 60, 1).await.unwrap().is_ok());
    // Redis goes away: its connections close and new ones are refused.
    proxy.abort_all();
    while proxy.join_next().await.is_some() {}
    for _ in 0..3 {
        let started = Instant::now();
        assert!(limiter.take("b", 60, 1).await.is_err());
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
