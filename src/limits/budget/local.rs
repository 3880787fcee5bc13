//! Budget accounts in this instance's memory: the spend read from the database once per
//! account, then every reservation and settlement counted here. A decision locks the
//! request's accounts (the key's before the project's, so two decisions never wait on each
//! other in a cycle) for a few additions, and never across an await.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{unreadable, Budget, Budgets, Hold, Nanos, Refusal, SpendSource, Window};

/// Accounts idle this long are dropped (and read from the database again if used again).
const IDLE: Duration = Duration::from_secs(24 * 3600);
/// More accounts than any deployment has keys and projects with budgets.
const MAX_ACCOUNTS: u64 = 1_000_000;

/// Which account: a key's or project's budget in one window (a monthly budget has one
/// account per month, so a new month starts from nothing).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AccountId {
    scope: super::Scope,
    id: Arc<str>,
    window: Window,
}

/// The in-memory accounts, by key or project and window.
pub struct Accounts {
    accounts: moka::sync::Cache<AccountId, Arc<Account>>,
    source: Arc<dyn SpendSource>,
}

/// One budget's money in one window. Its state exists once the database's spend is read.
#[derive(Default)]
pub struct Account {
    state: tokio::sync::OnceCell<Mutex<State>>,
}

/// What an account has spent and what requests in flight have reserved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct State {
    spent: Nanos,
    reserved: Nanos,
}

impl State {
    /// Spent and reserved together.
    fn committed(&self) -> Nanos {
        self.spent.saturating_add(self.reserved)
    }

    /// Whether `cost` more fits within `limit`: only while everything committed, this
    /// included, stays within it.
    fn fits(&self, cost: Nanos, limit: Nanos) -> bool {
        // In u128, where the sum cannot overflow (saturating would make room at the top).
        let sum = u128::from(self.spent) + u128::from(self.reserved) + u128::from(cost);
        sum <= u128::from(limit)
    }

    /// A reservation of `reserved` ended, having cost `actual`.
    fn settle(&mut self, reserved: Nanos, actual: Nanos) {
        self.reserved = self.reserved.saturating_sub(reserved);
        self.spent = self.spent.saturating_add(actual);
    }
}

impl Accounts {
    /// `fresh_for`: how long an account is trusted before the database is read again (None:
    /// for as long as it is in use, this instance being the only one that spends).
    pub fn new(source: Arc<dyn SpendSource>, fresh_for: Option<Duration>) -> Accounts {
        let mut builder = moka::sync::Cache::builder()
            .max_capacity(MAX_ACCOUNTS)
            .time_to_idle(IDLE);
        if let Some(ttl) = fresh_for {
            builder = builder.time_to_live(ttl);
        }
        Accounts {
            accounts: builder.build(),
            source,
        }
    }

    /// Reserves `cost` in every budget of `budgets`, or in none.
    pub async fn reserve(
        &self,
        budgets: &Budgets,
        cost: Nanos,
        now: DateTime<Utc>,
    ) -> Result<Hold, Refusal> {
        let mut accounts = Vec::with_capacity(2);
        for budget in budgets.iter() {
            accounts.push(self.loaded(budget, now).await?);
        }
        let limits: Vec<&Budget> = budgets.iter().collect();
        let mut states: Vec<MutexGuard<'_, State>> = accounts.iter().map(|a| a.lock()).collect();
        for (state, budget) in states.iter().zip(&limits) {
            if !state.fits(cost, budget.limit) {
                let (scope, committed) = (budget.scope, state.committed());
                return Err(Refusal::Over { scope, committed });
            }
        }
        for state in states.iter_mut() {
            state.reserved = state.reserved.saturating_add(cost);
        }
        drop(states);
        Ok(Hold::local(accounts, cost))
    }

    /// The account of `budget` now, its spend read from the database on first use (once,
    /// however many requests arrive together).
    async fn loaded(&self, budget: &Budget, now: DateTime<Utc>) -> Result<Arc<Account>, Refusal> {
        let window = budget.period.window(now);
        let id = AccountId {
            scope: budget.scope,
            id: budget.id.clone(),
            window,
        };
        let account = self.accounts.get_with(id, Arc::default);
        account
            .state
            .get_or_try_init(|| async {
                let spent = self
                    .source
                    .spent(budget.scope, &budget.id, window.since())
                    .await
                    .map_err(|e| unreadable(budget, &e))?;
                Ok::<_, Refusal>(Mutex::new(State { spent, reserved: 0 }))
            })
            .await?;
        Ok(account)
    }
}

impl Account {
    /// The state of a loaded account (holds only refer to loaded ones).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .get()
            .expect("accounts are loaded before they are used")
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn settle(&self, reserved: Nanos, actual: Nanos) {
        self.lock().settle(reserved, actual);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Period, Scope, SpendFuture};
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A database that has recorded `spent` for everything, and counts how often it is read.
    struct Recorded {
        spent: Nanos,
        reads: AtomicU32,
    }

    impl SpendSource for Recorded {
        fn spent(&self, _: Scope, _: &str, _: Option<DateTime<Utc>>) -> SpendFuture {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let spent = self.spent;
            Box::pin(async move { Ok(spent) })
        }
    }

    fn accounts(spent: Nanos) -> (Accounts, Arc<Recorded>) {
        let source = Arc::new(Recorded {
            spent,
            reads: AtomicU32::new(0),
        });
        (Accounts::new(source.clone(), None), source)
    }

    fn budget(scope: Scope, id: &str, limit: Nanos, period: Period) -> Budget {
        Budget {
            scope,
            id: id.into(),
            label: id.into(),
            limit,
            period,
        }
    }

    fn key(limit: Nanos) -> Budgets {
        Budgets {
            key: Some(budget(Scope::Key, "k", limit, Period::Total)),
            project: None,
        }
    }

    #[test]
    fn a_cost_fits_while_everything_committed_stays_within_the_limit() {
        let s = State {
            spent: 60,
            reserved: 30,
        };
        assert!(s.fits(10, 100), "exactly the limit fits");
        assert!(!s.fits(11, 100));
        assert!(!State::default().fits(1, 0), "a budget of 0 admits nothing");
        assert!(State::default().fits(0, 0));
        let huge = State {
            spent: Nanos::MAX,
            reserved: 1,
        };
        assert!(!huge.fits(1, Nanos::MAX), "no overflow into room");
        let mut s = s;
        s.settle(30, 12);
        assert_eq!(
            s,
            State {
                spent: 72,
                reserved: 0
            }
        );
    }

    #[tokio::test]
    async fn reservations_fill_the_budget_and_settling_gives_back_the_unused_part() {
        let (accounts, source) = accounts(100);
        let now = Utc::now();
        let budgets = key(1_000);
        let mut held = Vec::new();
        for _ in 0..9 {
            held.push(accounts.reserve(&budgets, 100, now).await.unwrap());
        }
        assert_eq!(
            accounts.reserve(&budgets, 100, now).await.unwrap_err(),
            Refusal::Over {
                scope: Scope::Key,
                committed: 1_000
            }
        );
        assert_eq!(source.reads.load(Ordering::SeqCst), 1, "read once");
        // Nine requests that cost 40 each instead of 100: 540 comes back.
        for hold in held.drain(..) {
            hold.settle(40);
        }
        for _ in 0..5 {
            held.push(accounts.reserve(&budgets, 100, now).await.unwrap());
        }
        assert!(accounts.reserve(&budgets, 100, now).await.is_err());
        // A hold dropped unsettled cost nothing.
        held.pop();
        accounts
            .reserve(&budgets, 100, now)
            .await
            .unwrap()
            .settle(100);
    }

    #[tokio::test]
    async fn a_refusal_in_one_budget_reserves_nothing_in_the_other() {
        let (accounts, _) = accounts(0);
        let now = Utc::now();
        let both = Budgets {
            key: Some(budget(Scope::Key, "k", 1_000, Period::Total)),
            project: Some(budget(Scope::Project, "p", 150, Period::Monthly)),
        };
        let first = accounts.reserve(&both, 100, now).await.unwrap();
        let refused = accounts.reserve(&both, 100, now).await.unwrap_err();
        assert_eq!(
            refused,
            Refusal::Over {
                scope: Scope::Project,
                committed: 100
            }
        );
        // The key alone still has 900 of room: the refusal took none of it.
        let key_only = Budgets {
            key: both.key.clone(),
            project: None,
        };
        let held = accounts.reserve(&key_only, 900, now).await.unwrap();
        drop((first, held));
        // Next month the project starts again from what the database says (0 here).
        let later = now + chrono::Duration::days(32);
        let fresh = accounts.reserve(&both, 150, later).await.unwrap();
        assert_eq!(fresh.reserved(), 150);
    }

    #[tokio::test]
    async fn the_spend_already_recorded_counts() {
        let (accounts, _) = accounts(950);
        let budgets = key(1_000);
        let refused = accounts
            .reserve(&budgets, 51, Utc::now())
            .await
            .unwrap_err();
        assert_eq!(
            refused,
            Refusal::Over {
                scope: Scope::Key,
                committed: 950
            }
        );
        accounts.reserve(&budgets, 50, Utc::now()).await.unwrap();
    }
}
