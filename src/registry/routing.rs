//! Model selection: which deployments may serve a request, and in which order they are tried.
//!
//! Every strategy first keeps only the deployments that fit the request (context window,
//! vision, tools, JSON mode) and are not cut off by their circuit breaker; then it orders what
//! is left. The first in the order is tried first, the rest are the fallbacks.
//!
//! A capability flag nobody set is unknown: only an explicit `false` keeps a request that
//! needs the capability away. Deployments that declare what the request needs go before those
//! whose support is unknown, each group in the strategy's order.

use std::sync::Arc;

use rand::Rng;
use rust_decimal::Decimal;

use super::Deployment;
use crate::metering::TokenUsage;

pub use crate::config::Strategy;

/// What a request needs from a model, read cheaply from the request body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Estimated prompt tokens.
    pub prompt_tokens: u64,
    /// The output the client allows (`max_tokens`), if it said.
    pub max_tokens: Option<u64>,
    pub vision: bool,
    pub tools: bool,
    pub json: bool,
}

impl Needs {
    /// Tokens to reserve against token limits before the answer is known.
    pub fn reserve(&self) -> u64 {
        self.prompt_tokens + self.max_tokens.unwrap_or(0)
    }
}

/// Why nothing fit, for the client's error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoFit {
    ContextTooLong { needed: u64, largest: u64 },
    Capability(&'static str),
}

/// Does this deployment fit the request?
pub fn fits(d: &Deployment, needs: &Needs) -> Result<(), NoFit> {
    if let Some(window) = d.context_window {
        let needed = needs.prompt_tokens + needs.max_tokens.unwrap_or(0);
        if needed > window {
            return Err(NoFit::ContextTooLong {
                needed,
                largest: window,
            });
        }
    }
    for (needed, flag, what) in capabilities(d, needs) {
        if needed && flag == Some(false) {
            return Err(NoFit::Capability(what));
        }
    }
    Ok(())
}

/// Per capability: whether the request needs it, what the deployment says, its name.
fn capabilities(d: &Deployment, needs: &Needs) -> [(bool, Option<bool>, &'static str); 3] {
    [
        (needs.vision, d.supports_vision, "images"),
        (needs.tools, d.supports_tools, "tools"),
        (needs.json, d.supports_json, "JSON mode"),
    ]
}

/// Whether the deployment declares every capability the request needs.
fn declares_all(d: &Deployment, needs: &Needs) -> bool {
    capabilities(d, needs)
        .iter()
        .all(|&(needed, flag, _)| !needed || flag == Some(true))
}

/// The deployments to try, in order. `Err` when none fits the request at all (a 400, since no
/// retry can help); an empty list when all fit but are cut off by their breakers.
pub fn plan(
    candidates: &[Arc<Deployment>],
    strategy: Strategy,
    needs: &Needs,
) -> Result<Vec<Arc<Deployment>>, NoFit> {
    let mut first_misfit = None;
    let mut fit: Vec<Arc<Deployment>> = Vec::with_capacity(candidates.len());
    for d in candidates {
        match fits(d, needs) {
            Ok(()) => fit.push(d.clone()),
            Err(e) => {
                first_misfit.get_or_insert(e);
            }
        }
    }
    if fit.is_empty() {
        return Err(first_misfit.unwrap_or(NoFit::Capability("this endpoint")));
    }
    fit.retain(|d| d.health.admits());
    order(&mut fit, strategy, needs);
    if needs.vision || needs.tools || needs.json {
        // A stable sort: each group keeps the strategy's order.
        fit.sort_by_key(|d| !declares_all(d, needs));
    }
    Ok(fit)
}

fn order(list: &mut [Arc<Deployment>], strategy: Strategy, needs: &Needs) {
    match strategy {
        // The snapshot already holds them in order: priority for plain names, the
        // route's own target order for routes.
        Strategy::Fallback => {}
        Strategy::Cheapest => list.sort_by_cached_key(|d| (estimated_cost(d, needs), d.priority)),
        Strategy::LowestLatency => {
            list.sort_by_cached_key(|d| (d.health.latency_ewma_us(), d.priority))
        }
        Strategy::LeastBusy => list.sort_by_cached_key(|d| (d.health.in_flight(), d.priority)),
        Strategy::Weighted => weighted_shuffle(list),
    }
}

/// Orders by repeated weighted draws: each next deployment is picked with probability
/// proportional to its weight among those left (weight 0 goes last).
fn weighted_shuffle(list: &mut [Arc<Deployment>]) {
    let mut rng = rand::thread_rng();
    for i in 0..list.len() {
        let total: u64 = list[i..].iter().map(|d| u64::from(d.weight)).sum();
        if total == 0 {
            break;
        }
        let mut pick = rng.gen_range(0..total);
        let mut j = i;
        for (k, d) in list[i..].iter().enumerate() {
            if pick < u64::from(d.weight) {
                j = i + k;
                break;
            }
            pick -= u64::from(d.weight);
        }
        list.swap(i, j);
    }
}

/// The estimated cost of a request on a deployment (for `cheapest`).
pub fn estimated_cost(d: &Deployment, needs: &Needs) -> Decimal {
    d.prices.cost(&TokenUsage {
        input: needs.prompt_tokens,
        output: needs.max_tokens.unwrap_or(256),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Api;
    use crate::providers::testing::deployment;
    use std::time::Duration;

    /// A registry built for the test: four deployments with different prices, windows,
    /// capabilities, latency and load.
    fn registry() -> Vec<Arc<Deployment>> {
        let make = |id: &str, input: &str, priority: i64, f: &dyn Fn(&mut Deployment)| {
            let mut d = deployment(Api::Openai, id);
            d.id = id.into();
            d.prices.input = input.parse().unwrap();
            d.prices.output = input.parse().unwrap();
            d.priority = priority;
            f(&mut d);
            Arc::new(d)
        };
        vec![
            make("big", "3", 1, &|d| d.context_window = Some(1_000_000)),
            make("cheap", "0.1", 2, &|d| {
                d.context_window = Some(8_000);
                d.supports_vision = Some(false);
            }),
            make("mid", "1", 3, &|d| d.supports_tools = Some(false)),
            make("light", "2", 4, &|d| d.weight = 0),
        ]
    }

    fn ids(plan: &[Arc<Deployment>]) -> Vec<&str> {
        plan.iter().map(|d| &*d.id).collect()
    }

    fn needs(prompt: u64) -> Needs {
        Needs {
            prompt_tokens: prompt,
            max_tokens: Some(100),
            ..Default::default()
        }
    }

    #[test]
    fn fallback_keeps_the_configured_order() {
        let mut reg = registry();
        reg.reverse(); // a route may list its targets against their priorities
        assert_eq!(
            ids(&plan(&reg, Strategy::Fallback, &needs(10)).unwrap()),
            ["light", "mid", "cheap", "big"]
        );
    }

    #[test]
    fn fallback_keeps_priority_order() {
        assert_eq!(
            ids(&plan(&registry(), Strategy::Fallback, &needs(10)).unwrap()),
            ["big", "cheap", "mid", "light"]
        );
    }

    #[test]
    fn cheapest_orders_by_the_estimated_cost_of_this_request() {
        assert_eq!(
            ids(&plan(&registry(), Strategy::Cheapest, &needs(10)).unwrap()),
            ["cheap", "mid", "light", "big"]
        );
    }

    #[test]
    fn capability_fit_comes_before_any_strategy() {
        // too long for "cheap" (8k) and for the 200k default of the others, only "big" fits
        assert_eq!(
            ids(&plan(&registry(), Strategy::Cheapest, &needs(500_000)).unwrap()),
            ["big"]
        );
        let images = Needs {
            vision: true,
            ..needs(10)
        };
        assert!(!ids(&plan(&registry(), Strategy::Cheapest, &images).unwrap()).contains(&"cheap"));
        let tools = Needs {
            tools: true,
            ..needs(10)
        };
        assert!(!ids(&plan(&registry(), Strategy::Fallback, &tools).unwrap()).contains(&"mid"));
        let too_long = plan(&registry(), Strategy::Fallback, &needs(5_000_000)).unwrap_err();
        assert!(matches!(too_long, NoFit::ContextTooLong { .. }));
    }

    #[test]
    fn only_an_explicit_false_keeps_a_request_away() {
        let needing = |what: &str| Needs {
            vision: what == "images",
            tools: what == "tools",
            json: what == "JSON mode",
            ..needs(10)
        };
        for what in ["images", "tools", "JSON mode"] {
            for (flag, expected) in [
                (None, Ok(())),
                (Some(true), Ok(())),
                (Some(false), Err(NoFit::Capability(what))),
            ] {
                let mut d = deployment(Api::Openai, "m");
                match what {
                    "images" => d.supports_vision = flag,
                    "tools" => d.supports_tools = flag,
                    _ => d.supports_json = flag,
                }
                assert_eq!(fits(&d, &needing(what)), expected, "{what}, flag {flag:?}");
                assert_eq!(fits(&d, &needs(10)), Ok(()), "{what} not needed, {flag:?}");
            }
        }
    }

    #[test]
    fn deployments_that_declare_what_is_needed_go_before_unknown_ones() {
        let make = |id: &str, priority: i64, vision: Option<bool>| {
            let mut d = deployment(Api::Openai, id);
            d.id = id.into();
            d.priority = priority;
            d.supports_vision = vision;
            Arc::new(d)
        };
        let reg = vec![
            make("unknown", 1, None),
            make("declared", 2, Some(true)),
            make("unknown-too", 3, None),
            make("refuses", 4, Some(false)),
        ];
        let images = Needs {
            vision: true,
            ..needs(10)
        };
        assert_eq!(
            ids(&plan(&reg, Strategy::Fallback, &images).unwrap()),
            ["declared", "unknown", "unknown-too"]
        );
        assert_eq!(
            ids(&plan(&reg, Strategy::Fallback, &needs(10)).unwrap()),
            ["unknown", "declared", "unknown-too", "refuses"],
            "no images: the configured order"
        );
    }

    #[test]
    fn lowest_latency_follows_the_observed_ewma() {
        let reg = registry();
        for (i, ms) in [(0, 900), (1, 50), (2, 300), (3, 120)] {
            reg[i].health.record(true, Duration::from_millis(ms));
        }
        assert_eq!(
            ids(&plan(&reg, Strategy::LowestLatency, &needs(10)).unwrap()),
            ["cheap", "light", "mid", "big"]
        );
    }

    #[test]
    fn least_busy_prefers_fewest_in_flight() {
        let reg = registry();
        let _a = reg[0].health.start();
        let _b = reg[0].health.start();
        let _c = reg[1].health.start();
        assert_eq!(
            ids(&plan(&reg, Strategy::LeastBusy, &needs(10)).unwrap()),
            ["mid", "light", "cheap", "big"]
        );
    }

    #[test]
    fn weighted_picks_in_proportion_and_never_first_picks_weight_zero() {
        let reg = registry();
        let mut first = std::collections::HashMap::new();
        for _ in 0..3000 {
            let p = plan(&reg, Strategy::Weighted, &needs(10)).unwrap();
            *first.entry(p[0].id.clone()).or_insert(0) += 1;
            assert_eq!(p.len(), 4, "every deployment stays available as a fallback");
        }
        assert!(
            !first.contains_key("light"),
            "weight 0 is never picked first"
        );
        for id in ["big", "cheap", "mid"] {
            let n = first[id];
            assert!((800..1200).contains(&n), "{id} first {n} times of 3000");
        }
    }

    #[test]
    fn open_circuits_are_skipped() {
        let reg = registry();
        let h = &reg[0].health;
        for _ in 0..10 {
            h.record(false, Duration::ZERO);
        }
        assert_eq!(
            ids(&plan(&reg, Strategy::Fallback, &needs(10)).unwrap()),
            ["cheap", "mid", "light"]
        );
    }
}
