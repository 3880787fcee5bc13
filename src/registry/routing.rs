//! Model selection: which deployments may serve a request, and in which order they are tried.
//!
//! Every strategy first keeps only the deployments that fit the request (context window,
//! vision, tools, JSON mode) and are not cut off by their circuit breaker; then it orders what
//! is left. The first in the order is tried first, the rest are the fallbacks.

use std::sync::Arc;

use rand::Rng;
use rust_decimal::Decimal;

use super::Deployment;
use crate::metering::TokenUsage;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Priority order (lower first), as configured.
    #[default]
    Fallback,
    /// Lowest estimated cost of this request first.
    Cheapest,
    /// Lowest observed latency (EWMA) first.
    LowestLatency,
    /// Fewest requests in flight first.
    LeastBusy,
    /// Random, in proportion to `weight`.
    Weighted,
}

impl Strategy {
    pub fn parse(s: &str) -> Option<Strategy> {
        Some(match s {
            "fallback" => Strategy::Fallback,
            "cheapest" => Strategy::Cheapest,
            "lowest_latency" => Strategy::LowestLatency,
            "least_busy" => Strategy::LeastBusy,
            "weighted" => Strategy::Weighted,
            _ => return None,
        })
    }
}

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
    if needs.vision && !d.supports_vision {
        return Err(NoFit::Capability("images"));
    }
    if needs.tools && !d.supports_tools {
        return Err(NoFit::Capability("tools"));
    }
    if needs.json && !d.supports_json {
        return Err(NoFit::Capability("JSON mode"));
    }
    Ok(())
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
    Ok(fit)
}

fn order(list: &mut [Arc<Deployment>], strategy: Strategy, needs: &Needs) {
    match strategy {
        Strategy::Fallback => list.sort_by_key(|d| d.priority),
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
