//! Exact cost from per-million-token prices.

use rust_decimal::{Decimal, RoundingStrategy};

use super::TokenUsage;

/// Per-million-token prices of one deployment. Cache prices default to the input price.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prices {
    pub input: Decimal,
    pub output: Decimal,
    pub cache_read: Decimal,
    pub cache_write: Decimal,
}

/// Costs are kept to 1e-10 USD, the scale of `llm_usage_logs.cost_usd`, so the row, the
/// metric and the hourly roll-up all hold the same number.
pub const COST_SCALE: u32 = 10;

/// The most one request can cost: the largest value of `cost_usd NUMERIC(18,10)`. Only
/// prices near the columns' own limit reach it, with counts near `MAX_TOKENS`; the row keeps
/// its tokens and raw usage to show what happened. (999_999_999_999_999_999 at scale 10, in
/// the 32-bit parts a `const` takes; a test checks it.)
pub const MAX_COST: Decimal = Decimal::from_parts(2_808_348_671, 232_830_643, 0, false, 10);

impl Prices {
    pub fn cost(&self, t: &TokenUsage) -> Decimal {
        let total = Decimal::from(t.input) * self.input
            + Decimal::from(t.cache_read) * self.cache_read
            + Decimal::from(t.cache_write) * self.cache_write
            + Decimal::from(t.output) * self.output;
        (total / Decimal::from(1_000_000u32))
            .round_dp_with_strategy(COST_SCALE, RoundingStrategy::MidpointAwayFromZero)
            .min(MAX_COST)
            .normalize()
    }
}

impl Prices {
    /// The most `prompt` input tokens and `output` output tokens can cost, rounded up: the
    /// prompt at the dearest of the input prices (a cache write may cost more than input).
    pub fn most(&self, prompt: u64, output: u64) -> Decimal {
        let input = self.input.max(self.cache_read).max(self.cache_write);
        let total = Decimal::from(prompt)
            .checked_mul(input)
            .zip(Decimal::from(output).checked_mul(self.output))
            .and_then(|(p, o)| p.checked_add(o));
        let Some(total) = total else {
            return MAX_COST;
        };
        (total / Decimal::from(1_000_000u32))
            .round_dp_with_strategy(COST_SCALE, RoundingStrategy::AwayFromZero)
            .min(MAX_COST)
            .normalize()
    }
}

/// The cost as an integer count of 1e-10 USD (what the hourly roll-up adds up).
pub fn cost_e10(cost: Decimal) -> i64 {
    use rust_decimal::prelude::ToPrimitive;
    (cost * Decimal::from(10_000_000_000u64))
        .trunc()
        .to_i64()
        .unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn cost_is_exact_per_component() {
        let p = Prices {
            input: d("0.15"),
            output: d("0.60"),
            cache_read: d("0.075"),
            cache_write: d("0.15"),
        };
        let t = TokenUsage {
            input: 200,
            cache_read: 1000,
            cache_write: 0,
            output: 300,
            reasoning: 120,
        };
        // 200*0.15 + 1000*0.075 + 300*0.60 = 30 + 75 + 180 = 285 per million
        assert_eq!(p.cost(&t), d("0.000285"));
        assert_eq!(cost_e10(p.cost(&t)), 2_850_000);
    }

    #[test]
    fn cost_stays_within_the_column() {
        assert_eq!(MAX_COST, d("99999999.9999999999"));
        let dearest = Prices {
            input: d("999999.999999"),
            output: d("999999.999999"),
            cache_read: d("999999.999999"),
            cache_write: d("999999.999999"),
        };
        let most = TokenUsage {
            input: crate::metering::MAX_TOKENS,
            cache_read: crate::metering::MAX_TOKENS,
            cache_write: crate::metering::MAX_TOKENS,
            output: crate::metering::MAX_TOKENS,
            reasoning: 0,
        };
        assert_eq!(dearest.cost(&most), MAX_COST);
        assert_eq!(cost_e10(MAX_COST), 999_999_999_999_999_999);
    }

    #[test]
    fn the_most_a_request_can_cost_takes_the_dearest_input_price() {
        let p = Prices {
            input: d("3"),
            output: d("15"),
            cache_read: d("0.3"),
            cache_write: d("3.75"),
        };
        // 1000 * 3.75 + 500 * 15 = 11250 per million
        assert_eq!(p.most(1000, 500), d("0.01125"));
        let actual = TokenUsage {
            input: 400,
            cache_read: 300,
            cache_write: 300,
            output: 500,
            reasoning: 0,
        };
        assert!(p.cost(&actual) <= p.most(1000, 500));
        // Rounded up at the tenth decimal, never down.
        let tiny = Prices {
            input: d("0.000001"),
            ..Default::default()
        };
        assert_eq!(tiny.most(1, 0), d("0.0000000001"));
        assert_eq!(p.most(u64::MAX, u64::MAX), MAX_COST);
    }

    #[test]
    fn tiny_costs_are_not_lost_to_floats() {
        let p = Prices {
            input: d("0.1"),
            output: d("0.2"),
            ..Default::default()
        };
        let one = TokenUsage {
            input: 1,
            output: 1,
            ..Default::default()
        };
        // 0.1 + 0.2 per million: a float would say 3.0000000000000004e-7
        assert_eq!(p.cost(&one), d("0.0000003"));
    }
}
