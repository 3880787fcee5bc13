//! Budgets shared through the real Redis (TOLLGATE_TEST_REDIS or redis://127.0.0.1:6379),
//! each test under its own key prefix, with a stand-in for the database's spend.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::*;
use crate::limits::shared::test_support::{proxy_to_test_redis, TestPrefix};

/// The database's recorded spend, the same for every account, counting its reads.
#[derive(Default)]
struct Recorded {
    spent: AtomicU64,
    reads: AtomicU32,
}

impl SpendSource for Arc<Recorded> {
    fn spent(&self, _: Scope, _: &str, _: Option<DateTime<Utc>>) -> SpendFuture {
        let this = self.clone();
        // Counted when the read runs, not when it is merely prepared.
        Box::pin(async move {
            this.reads.fetch_add(1, Ordering::SeqCst);
            Ok(this.spent.load(Ordering::SeqCst))
        })
    }
}

fn shared(limiter: SharedLimiter, on_failure: OnRedisFailure) -> Shared {
    Shared {
        limiter,
        on_failure,
        instances: 3,
        errors: prometheus::IntCounter::new("errors", "errors").unwrap(),
    }
}

async fn ledger(prefix: &TestPrefix, source: &Arc<Recorded>) -> Ledger {
    let limiter = prefix.limiter().await;
    Ledger::new(
        Arc::new(source.clone()),
        Some(shared(limiter, OnRedisFailure::Local)),
    )
}

fn key_budget(limit: Nanos) -> Budgets {
    Budgets {
        key: Some(Budget {
            scope: Scope::Key,
            id: "key-1".into(),
            label: "key `ci`".into(),
            limit,
            period: Period::Total,
        }),
        project: Some(Budget {
            scope: Scope::Project,
            id: "project-1".into(),
            label: "project `alpha`".into(),
            limit: limit * 10,
            period: Period::Monthly,
        }),
    }
}

const TTL: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_reservations_from_three_instances_let_exactly_ten_through() {
    let prefix = TestPrefix::new();
    let source = Arc::new(Recorded::default());
    let instances = [
        Arc::new(ledger(&prefix, &source).await),
        Arc::new(ledger(&prefix, &source).await),
        Arc::new(ledger(&prefix, &source).await),
    ];
    let budgets = Arc::new(key_budget(1_000));
    let mut tries = JoinSet::new();
    for i in 0..30 {
        let (ledger, budgets) = (instances[i % 3].clone(), budgets.clone());
        tries.spawn(async move { ledger.reserve(&budgets, 100, TTL).await });
    }
    let results = tries.join_all().await;
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(admitted, 10, "{results:?}");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(
            refused,
            &Refusal::Over {
                scope: Scope::Key,
                committed: 1_000
            }
        );
    }
    // Each account was read from the database once per instance at most, never per request.
    assert!(source.reads.load(Ordering::SeqCst) <= 6);
}

/// Polls until `ledger` admits `cost`, or panics after two seconds (settling is off the
/// request path).
async fn admitted_soon(ledger: &Ledger, budgets: &Budgets, cost: Nanos) -> Hold {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match ledger.reserve(budgets, cost, TTL).await {
            Ok(hold) => return hold,
            Err(e) if Instant::now() > deadline => panic!("still refused: {e:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test]
async fn settling_gives_back_the_unused_part_and_counts_the_cost() {
    let prefix = TestPrefix::new();
    let source = Arc::new(Recorded::default());
    source.spent.store(400, Ordering::SeqCst);
    let ledger = ledger(&prefix, &source).await;
    let budgets = key_budget(1_000);
    let hold = ledger.reserve(&budgets, 600, TTL).await.unwrap();
    assert!(
        ledger.reserve(&budgets, 1, TTL).await.is_err(),
        "400 + 600 is all"
    );
    hold.settle(250);
    // 400 + 250 spent: 350 fits again, 351 does not.
    let more = admitted_soon(&ledger, &budgets, 350).await;
    assert_eq!(
        ledger.reserve(&budgets, 1, TTL).await.unwrap_err(),
        Refusal::Over {
            scope: Scope::Key,
            committed: 1_000
        }
    );
    drop(more); // settled at 0: a request that cost nothing
    admitted_soon(&ledger, &budgets, 350).await;
}

#[tokio::test]
async fn a_flushed_account_is_filled_from_the_database_again() {
    let prefix = TestPrefix::new();
    let source = Arc::new(Recorded::default());
    let ledger = ledger(&prefix, &source).await;
    let budgets = key_budget(1_000);
    ledger
        .reserve(&budgets, 900, TTL)
        .await
        .unwrap()
        .settle(900);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(ledger.reserve(&budgets, 200, TTL).await.is_err());
    // Redis loses everything; the database has the 900 recorded meanwhile.
    source.spent.store(900, Ordering::SeqCst);
    let keys = prefix.keys();
    assert!(keys.iter().all(|k| k.contains(":v1:budget:")), "{keys:?}");
    let client = redis::Client::open(crate::limits::shared::test_support::redis_url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let _: i64 = redis::cmd("DEL").arg(&keys).query(&mut conn).unwrap();
    let reads = source.reads.load(Ordering::SeqCst);
    tokio::time::sleep(FILL_REUSE).await; // the last read is not used again
    assert!(ledger.reserve(&budgets, 200, TTL).await.is_err());
    assert_eq!(
        source.reads.load(Ordering::SeqCst),
        reads + 2,
        "both accounts re-read"
    );
    ledger.reserve(&budgets, 100, TTL).await.unwrap();
}

#[tokio::test]
async fn a_reservation_whose_instance_died_expires() {
    let prefix = TestPrefix::new();
    let source = Arc::new(Recorded::default());
    let ledger = ledger(&prefix, &source).await;
    let budgets = key_budget(1_000);
    // A reservation for 150 ms that is never settled (std::mem::forget: no Drop runs, as
    // when the process dies).
    let hold = ledger
        .reserve(&budgets, 1_000, Duration::from_millis(150))
        .await
        .unwrap();
    std::mem::forget(hold);
    assert!(ledger.reserve(&budgets, 1, TTL).await.is_err());
    tokio::time::sleep(Duration::from_millis(250)).await;
    ledger.reserve(&budgets, 1_000, TTL).await.unwrap();
}

#[tokio::test]
async fn without_redis_the_fallback_decides_or_refuses_as_configured() {
    let source = Arc::new(Recorded::default());
    source.spent.store(950, Ordering::SeqCst);
    let budgets = key_budget(1_000);
    for on_failure in [OnRedisFailure::Local, OnRedisFailure::FailClosed] {
        let prefix = TestPrefix::new();
        let (url, mut proxy) = proxy_to_test_redis().await;
        let limiter = SharedLimiter::connect(&url, &prefix.0).await.unwrap();
        let sh = shared(limiter, on_failure);
        let errors = sh.errors.clone();
        let ledger = Ledger::new(Arc::new(source.clone()), Some(sh));
        drop(ledger.reserve(&budgets, 40, TTL).await.unwrap());
        // Redis goes away.
        proxy.abort_all();
        while proxy.join_next().await.is_some() {}
        let started = Instant::now();
        let decided = ledger.reserve(&budgets, 50, TTL).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(errors.get(), 1);
        if on_failure == OnRedisFailure::FailClosed {
            assert!(
                matches!(decided, Err(Refusal::Unavailable(_))),
                "{decided:?}"
            );
            continue;
        }
        // In memory, against the database's 950: 50 fits, and then nothing more.
        let _held = decided.unwrap();
        assert_eq!(
            ledger.reserve(&budgets, 1, TTL).await.unwrap_err(),
            Refusal::Over {
                scope: Scope::Key,
                committed: 1_000
            }
        );
    }
}
