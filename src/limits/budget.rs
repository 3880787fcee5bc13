//! Budgets in USD that concurrent requests cannot overspend: a gateway key's over its life, a
//! project's over its life or per calendar month (UTC).
//!
//! Checking a budget and recording what a request cost are separate moments, and peers that
//! check `spent < budget` and add the cost afterwards let every request in flight pass the
//! same check (LiteLLM #34732, #40095). Here admission *reserves* the request's worst case
//! (its prompt estimate and its `max_tokens` at the dearest deployment it may be sent to):
//! it is admitted only when `spent + reserved + worst case <= budget`, and the reservation is
//! held until the request's usage is recorded, which replaces it with the actual cost (and so
//! gives back the unused part). However many requests race, what they may cost together never
//! exceeds the budget; only a request that costs more than its reservation (a prompt estimate
//! too low, a provider that ignores `max_tokens`) can take the recorded spend past it.
//!
//! The authoritative spend is the database's (the usage roll-up, through [`SpendSource`]). It
//! is read once per account (a key's, or a project's for one period) and then kept:
//! - in memory ([`local`]), when this instance is the only one deciding: no database round
//!   trip per request, no lock held across an await;
//! - in Redis, when `[redis] url` is set, so every instance decides against the same numbers:
//!   each decision is one atomic script, and an account missing there (first use, a flush, a
//!   restart, a day idle) is filled from the database again. When Redis fails, `[redis]
//!   on_failure` says what happens: `fail_closed` refuses, `local` decides in memory against
//!   the database's spend read at most a minute earlier.
//!
//! Money is counted in whole nano-dollars (`Nanos`), exact integers everywhere, Redis's Lua
//! numbers included (exact up to 2^53 nano-dollars, about $9 million: a larger budget is
//! enforced as that much there).

mod local;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use super::shared::SharedLimiter;
use super::{OnRedisFailure, Shared};

pub use local::{Account, Accounts};

/// An amount of money in nano-dollars (1e-9 USD).
pub type Nanos = u64;

const NANOS_PER_USD: u64 = 1_000_000_000;

/// `usd` in nano-dollars, rounded up: what a request may cost is never under-reserved.
pub fn nanos_ceil(usd: Decimal) -> Nanos {
    to_nanos(usd, Decimal::ceil)
}

/// `usd` in nano-dollars, rounded down: a budget never grows by rounding.
pub fn nanos_floor(usd: Decimal) -> Nanos {
    to_nanos(usd, Decimal::floor)
}

fn to_nanos(usd: Decimal, round: fn(&Decimal) -> Decimal) -> Nanos {
    if usd <= Decimal::ZERO {
        return 0;
    }
    usd.checked_mul(Decimal::from(NANOS_PER_USD))
        .map_or(Nanos::MAX, |n| round(&n).to_u64().unwrap_or(Nanos::MAX))
}

/// Nano-dollars as USD, for messages.
pub fn usd(nanos: Nanos) -> Decimal {
    Decimal::from_i128_with_scale(i128::from(nanos), 9).normalize()
}

/// Whose budget: a gateway key's or a project's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Key,
    Project,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Key => "key",
            Scope::Project => "project",
        }
    }
}

/// Every scope (the `scope` label of `tollgate_budget_exceeded_total`).
pub const SCOPES: [&str; 2] = ["key", "project"];

/// What a budget covers: everything ever spent, or the current calendar month (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, utoipa::ToSchema)]
#[schema(as = BudgetPeriod, rename_all = "lowercase")]
pub enum Period {
    #[default]
    Total,
    Monthly,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Total => "total",
            Period::Monthly => "monthly",
        }
    }

    /// The window of this period that `now` falls in.
    pub fn window(self, now: DateTime<Utc>) -> Window {
        match self {
            Period::Total => Window { month: None },
            Period::Monthly => Window {
                month: Some((now.year(), now.month())),
            },
        }
    }
}

impl std::str::FromStr for Period {
    type Err = String;
    fn from_str(s: &str) -> Result<Period, String> {
        match s {
            "total" => Ok(Period::Total),
            "monthly" => Ok(Period::Monthly),
            other => Err(format!(
                "budget period must be `total` or `monthly`, not {other:?}"
            )),
        }
    }
}

/// One period of a budget: all time, or one calendar month. Spend is counted per window, so
/// a monthly budget starts again from nothing when a month starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// (year, month) of a monthly window.
    month: Option<(i32, u32)>,
}

impl Window {
    /// When the window starts; None for all time.
    pub fn since(self) -> Option<DateTime<Utc>> {
        let (year, month) = self.month?;
        Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).single()
    }

    /// The window as part of a name: `total` or `2026-11`.
    fn name(self) -> String {
        match self.month {
            None => "total".to_owned(),
            Some((year, month)) => format!("{year:04}-{month:02}"),
        }
    }
}

/// The budget of one key or project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub scope: Scope,
    /// The key's or project's id.
    pub id: Arc<str>,
    /// How a refusal names it: the key's name and prefix, the project's name. Never the key.
    pub label: Arc<str>,
    pub limit: Nanos,
    pub period: Period,
}

/// The budgets a request is checked against: its key's and its project's, either or both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Budgets {
    pub key: Option<Budget>,
    pub project: Option<Budget>,
}

impl Budgets {
    pub fn is_empty(&self) -> bool {
        self.key.is_none() && self.project.is_none()
    }

    /// The key's first: accounts are always locked in this order.
    pub fn iter(&self) -> impl Iterator<Item = &Budget> {
        self.key.iter().chain(self.project.iter())
    }

    pub fn of(&self, scope: Scope) -> Option<&Budget> {
        match scope {
            Scope::Key => self.key.as_ref(),
            Scope::Project => self.project.as_ref(),
        }
    }
}

/// Why a reservation was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The budget of `scope` has no room: `committed` is spent or reserved already.
    Over { scope: Scope, committed: Nanos },
    /// The spend could not be read (database or Redis down, Redis set to fail closed).
    Unavailable(String),
}

/// Where the authoritative spend comes from: the database's usage roll-up.
pub trait SpendSource: Send + Sync + 'static {
    /// What the key or project `id` has spent since `since` (its whole life with None).
    fn spent(&self, scope: Scope, id: &str, since: Option<DateTime<Utc>>) -> SpendFuture;
}

pub type SpendFuture = Pin<Box<dyn Future<Output = anyhow::Result<Nanos>> + Send>>;

/// How long an idle in-memory fallback account is trusted before the database is read again.
const FALLBACK_FRESHNESS: Duration = Duration::from_secs(60);

/// How long a spend read to fill a Redis account is used again: requests that find the same
/// account missing together (a cold start, a flush) share one database read.
const FILL_REUSE: Duration = Duration::from_secs(1);

/// The budgets' state for one gateway: in memory, or in Redis with memory as the fallback.
pub struct Ledger {
    source: Arc<dyn SpendSource>,
    local: Accounts,
    shared: Option<(Shared, Accounts)>,
    /// Recent reads of the database's spend, by Redis account.
    fills: moka::future::Cache<String, Nanos>,
}

impl Ledger {
    pub fn new(source: Arc<dyn SpendSource>, shared: Option<Shared>) -> Ledger {
        Ledger {
            local: Accounts::new(source.clone(), None),
            shared: shared.map(|sh| (sh, Accounts::new(source.clone(), Some(FALLBACK_FRESHNESS)))),
            source,
            fills: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(FILL_REUSE)
                .build(),
        }
    }

    /// Reserves `cost` in every budget of `budgets`, or in none. The reservation is held
    /// (in Redis: for `ttl` at most, in case this instance dies) until the hold is settled.
    pub async fn reserve(
        &self,
        budgets: &Budgets,
        cost: Nanos,
        ttl: Duration,
    ) -> Result<Hold, Refusal> {
        let now = Utc::now();
        let Some((sh, fallback)) = &self.shared else {
            return self.local.reserve(budgets, cost, now).await;
        };
        match self
            .reserve_shared(&sh.limiter, budgets, cost, ttl, now)
            .await
        {
            Ok(decided) => decided,
            Err(e) => {
                sh.errors.inc();
                tracing::warn!(error = %e, fallback = ?sh.on_failure, "shared budgets unavailable");
                if sh.on_failure == OnRedisFailure::FailClosed {
                    return Err(Refusal::Unavailable("Redis is unreachable".into()));
                }
                fallback.reserve(budgets, cost, now).await
            }
        }
    }

    /// One script decides; an account Redis does not have is read from the database and the
    /// script runs again with it (another instance may have filled it meanwhile: then its
    /// numbers win).
    async fn reserve_shared(
        &self,
        limiter: &SharedLimiter,
        budgets: &Budgets,
        cost: Nanos,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Result<Hold, Refusal>, super::shared::SharedError> {
        let list: Vec<&Budget> = budgets.iter().collect();
        let windows: Vec<Window> = list.iter().map(|b| b.period.window(now)).collect();
        let accounts: Vec<String> = list
            .iter()
            .zip(&windows)
            .map(|(b, w)| format!("{}:{}:{}", b.scope.as_str(), b.id, w.name()))
            .collect();
        let limits: Vec<Nanos> = list.iter().map(|b| b.limit).collect();
        let mut known: Vec<Option<Nanos>> = vec![None; list.len()];
        let id = crate::ids::new_id();
        // Twice is enough: the second call has every account filled.
        for _ in 0..2 {
            let decision = limiter
                .reserve_budget(&accounts, &limits, &known, cost, &id, ttl)
                .await?;
            match decision {
                BudgetDecision::Reserved => {
                    return Ok(Ok(Hold::shared(limiter.clone(), accounts, id, cost)))
                }
                BudgetDecision::Over { index, committed } => {
                    let scope = list[index].scope;
                    return Ok(Err(Refusal::Over { scope, committed }));
                }
                BudgetDecision::Missing(indexes) => {
                    for i in indexes {
                        let (b, since) = (list[i], windows[i].since());
                        let read = self.source.spent(b.scope, &b.id, since);
                        match self.fills.try_get_with(accounts[i].clone(), read).await {
                            Ok(spent) => known[i] = Some(spent),
                            Err(e) => return Ok(Err(unreadable(b, &e))),
                        }
                    }
                }
            }
        }
        Ok(Err(Refusal::Unavailable(
            "the shared budget accounts could not be filled".into(),
        )))
    }
}

/// The spend of `b` could not be read from the database.
fn unreadable(b: &Budget, e: &anyhow::Error) -> Refusal {
    tracing::error!(scope = b.scope.as_str(), id = %b.id, error = %e, "reading the spend of a budget failed");
    Refusal::Unavailable("the database is unreachable".into())
}

/// What one Redis reservation script decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetDecision {
    Reserved,
    /// The account at `index` has no room: `committed` is spent or reserved.
    Over {
        index: usize,
        committed: Nanos,
    },
    /// These accounts are not in Redis: fill them from the database and ask again.
    Missing(Vec<usize>),
}

/// A request's reservation, held until its usage is recorded. Settling replaces it with the
/// actual cost; a hold dropped unsettled gives it back whole (nothing was recorded).
pub struct Hold {
    cost: Nanos,
    place: Place,
    settled: bool,
}

enum Place {
    Local(Vec<Arc<Account>>),
    Shared {
        limiter: SharedLimiter,
        accounts: Vec<String>,
        /// The reservation's id.
        id: String,
    },
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold").field("cost", &self.cost).finish()
    }
}

impl Hold {
    fn local(accounts: Vec<Arc<Account>>, cost: Nanos) -> Hold {
        Hold {
            cost,
            place: Place::Local(accounts),
            settled: false,
        }
    }

    fn shared(limiter: SharedLimiter, accounts: Vec<String>, id: String, cost: Nanos) -> Hold {
        Hold {
            cost,
            place: Place::Shared {
                limiter,
                accounts,
                id,
            },
            settled: false,
        }
    }

    /// What was reserved.
    pub fn reserved(&self) -> Nanos {
        self.cost
    }

    /// The request cost `actual`: the reservation becomes that spend.
    pub fn settle(mut self, actual: Nanos) {
        self.finish(actual);
    }

    fn finish(&mut self, actual: Nanos) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        match &mut self.place {
            Place::Local(accounts) => {
                for account in accounts.iter() {
                    account.settle(self.cost, actual);
                }
            }
            Place::Shared {
                limiter,
                accounts,
                id,
            } => {
                let (limiter, accounts) = (limiter.clone(), std::mem::take(accounts));
                let (id, reserved) = (std::mem::take(id), self.cost);
                // Off the request path: nobody waits for bookkeeping. Without a runtime (the
                // process is ending) the reservation expires in Redis by itself.
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        let settled = limiter
                            .settle_budget(&accounts, &id, reserved, actual)
                            .await;
                        if let Err(e) = settled {
                            tracing::warn!(error = %e, "settling a shared budget reservation failed; it expires by itself");
                        }
                    });
                }
            }
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.finish(0);
    }
}

#[cfg(test)]
mod redis_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn money_becomes_whole_nano_dollars_rounded_the_safe_way() {
        assert_eq!(nanos_ceil(d("0.0000003")), 300);
        assert_eq!(
            nanos_ceil(d("0.00000000001")),
            1,
            "a cost is never reserved as 0"
        );
        assert_eq!(nanos_floor(d("0.0000000019")), 1);
        assert_eq!(nanos_floor(d("12.5")), 12_500_000_000);
        assert_eq!(nanos_ceil(d("-1")), 0);
        assert_eq!(nanos_ceil(Decimal::MAX), Nanos::MAX);
        assert_eq!(usd(12_500_000_001), d("12.500000001"));
    }

    #[test]
    fn monthly_windows_start_on_the_first_of_the_month_utc() {
        let t = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        let w = Period::Monthly.window(t);
        assert_eq!(w.name(), "2026-12");
        assert_eq!(
            w.since(),
            Some(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap())
        );
        let next = Period::Monthly.window(t + chrono::Duration::seconds(1));
        assert_eq!(next.name(), "2027-01");
        assert_ne!(w, next);
        assert_eq!(
            Period::Total.window(t),
            Period::Total.window(t + chrono::Duration::days(40))
        );
        assert_eq!(Period::Total.window(t).since(), None);
        assert_eq!("monthly".parse::<Period>(), Ok(Period::Monthly));
        assert!("weekly".parse::<Period>().is_err());
    }
}
