//! Budget accounts kept in Redis for every instance (see `limits::budget` for what they
//! mean): a reservation is one script that checks and reserves in all of a request's
//! accounts at once, and its settlement another.

use std::time::Duration;

use super::{SharedError, SharedLimiter, FORMAT, MAX_EXACT};
use crate::limits::budget::{BudgetDecision, Nanos};

/// An account nobody used for this long leaves Redis; its next use reads the database again,
/// which by then holds every request it counted.
const IDLE: Duration = Duration::from_secs(24 * 3600);

impl SharedLimiter {
    /// Reserves `cost` in every one of `accounts` (each with its limit, and its spend as the
    /// database has it where that was read), or in none. The reservation is named by `id`
    /// (unique) and counts for `ttl` at most unless settled.
    pub async fn reserve_budget(
        &self,
        accounts: &[String],
        limits: &[Nanos],
        known: &[Option<Nanos>],
        cost: Nanos,
        id: &str,
        ttl: Duration,
    ) -> Result<BudgetDecision, SharedError> {
        let mut call = self.scripts.budget_reserve.prepare_invoke();
        for account in accounts {
            let key = self.budget_key(account);
            call.key(&key).key(format!("{key}:flight"));
        }
        let cost = cost.min(MAX_EXACT);
        call.arg(cost)
            .arg(member(id, cost))
            .arg(ttl.as_millis().max(1) as u64)
            .arg(IDLE.as_millis() as u64);
        for (limit, known) in limits.iter().zip(known) {
            call.arg((*limit).min(MAX_EXACT));
            match known {
                Some(spent) => call.arg((*spent).min(MAX_EXACT)),
                None => call.arg(""),
            };
        }
        let answer: Vec<i64> = self.run(&call).await?;
        decision(&answer)
    }

    /// Ends the reservation `id` of `reserved`, which cost `actual`.
    pub async fn settle_budget(
        &self,
        accounts: &[String],
        id: &str,
        reserved: Nanos,
        actual: Nanos,
    ) -> Result<(), SharedError> {
        let reserved = reserved.min(MAX_EXACT);
        let mut call = self.scripts.budget_settle.prepare_invoke();
        for account in accounts {
            let key = self.budget_key(account);
            call.key(&key).key(format!("{key}:flight"));
        }
        call.arg(member(id, reserved))
            .arg(reserved)
            .arg(actual.min(MAX_EXACT))
            .arg(IDLE.as_millis() as u64);
        let _: i64 = self.run(&call).await?;
        Ok(())
    }

    fn budget_key(&self, account: &str) -> String {
        format!("{}{FORMAT}:budget:{account}", self.prefix)
    }
}

/// A reservation as the set of those in flight holds it: its id and amount, so that one
/// which expires can be taken off the account's reserved total.
fn member(id: &str, amount: Nanos) -> String {
    format!("{id}:{amount}")
}

/// The script's answer: `{1}`, `{0, i, committed}` or `{2, i, j, ...}` (1-based indexes).
fn decision(answer: &[i64]) -> Result<BudgetDecision, SharedError> {
    let index = |i: &i64| usize::try_from(*i - 1).ok();
    match answer {
        [1] => Ok(BudgetDecision::Reserved),
        [0, i, committed] => Ok(BudgetDecision::Over {
            index: index(i).ok_or_else(|| unexpected(answer))?,
            committed: (*committed).max(0) as Nanos,
        }),
        [2, rest @ ..] if !rest.is_empty() => rest
            .iter()
            .map(|i| index(i).ok_or_else(|| unexpected(answer)))
            .collect::<Result<_, _>>()
            .map(BudgetDecision::Missing),
        _ => Err(unexpected(answer)),
    }
}

fn unexpected(answer: &[i64]) -> SharedError {
    SharedError(format!("unexpected budget script answer {answer:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_answers_are_read_as_decisions() {
        assert_eq!(decision(&[1]), Ok(BudgetDecision::Reserved));
        assert_eq!(
            decision(&[0, 2, 1_500]),
            Ok(BudgetDecision::Over {
                index: 1,
                committed: 1_500
            })
        );
        assert_eq!(
            decision(&[2, 1, 2]),
            Ok(BudgetDecision::Missing(vec![0, 1]))
        );
        for nonsense in [&[][..], &[2], &[0, 0, 5], &[7]] {
            assert!(decision(nonsense).is_err(), "{nonsense:?}");
        }
        assert_eq!(member("01a2", 300), "01a2:300");
    }
}
