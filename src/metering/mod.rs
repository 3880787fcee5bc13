//! Metering: what a request used and cost, and the Prometheus metrics it is counted in.
//!
//! `UsageRecord` is the one row every request produces (success or failure). The request path
//! only builds it and hands it to the store's `UsageSink`, whose batch writer does the
//! database work.

mod cost;
mod metrics;
mod refusals;

pub use cost::{cost_e10, Prices};
pub use metrics::Metrics;

use std::borrow::Cow;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The most tokens one field of one provider's usage report may count: a thousand times the
/// largest context window offered today. A larger count is a provider's bug; clamped, it
/// still prices within `cost_usd` and sums within the roll-up's BIGINT columns. The row's
/// `raw_usage` keeps the report as sent.
pub const MAX_TOKENS: u64 = 1_000_000_000;

/// One count from a provider's usage report, as the gateway bills it: clamped to
/// `MAX_TOKENS`; a negative or fractional count, which no provider means, is 0. Integers
/// beyond u64 and exponent forms (`1e18`) arrive as floats.
pub fn token_count(n: &serde_json::Number) -> u64 {
    match n.as_u64() {
        Some(v) => v.min(MAX_TOKENS),
        None => match n.as_f64() {
            Some(f) if f >= 1.0 && f.fract() == 0.0 => MAX_TOKENS.min(f as u64),
            _ => 0,
        },
    }
}

/// Tokens normalised across providers. `input` is the uncached part of the prompt, so
/// `input + cache_read + cache_write` is the whole prompt. `output` is every completion token
/// (reasoning included, as providers bill it); `reasoning` says how many of those were
/// reasoning and is not priced a second time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub input: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub output: u64,
    pub reasoning: u64,
}

impl TokenUsage {
    pub fn prompt_total(&self) -> u64 {
        self.input + self.cache_read + self.cache_write
    }

    /// Reads an OpenAI-shaped `usage` object (also what DeepSeek, xAI, Mistral, vLLM and the
    /// mock send), given as its JSON text. Returns None when it has no token counts at all.
    /// Read into a typed shape: this runs on every answer, and building a `Value` tree first
    /// cost twice as much.
    pub fn from_openai(usage: &str) -> Option<TokenUsage> {
        #[derive(Deserialize)]
        struct Usage {
            prompt_tokens: Option<serde_json::Number>,
            completion_tokens: Option<serde_json::Number>,
            prompt_tokens_details: Option<PromptDetails>,
            /// DeepSeek reports its cache hits under its own name.
            prompt_cache_hit_tokens: Option<serde_json::Number>,
            completion_tokens_details: Option<CompletionDetails>,
        }
        #[derive(Deserialize)]
        struct PromptDetails {
            cached_tokens: Option<serde_json::Number>,
        }
        #[derive(Deserialize)]
        struct CompletionDetails {
            reasoning_tokens: Option<serde_json::Number>,
        }
        let u: Usage = serde_json::from_str(usage).ok()?;
        let n = |v: Option<serde_json::Number>| v.as_ref().map(token_count);
        let prompt = n(u.prompt_tokens);
        let completion = n(u.completion_tokens);
        if prompt.is_none() && completion.is_none() {
            return None;
        }
        let prompt = prompt.unwrap_or(0);
        let cached = n(u.prompt_tokens_details.and_then(|d| d.cached_tokens))
            .or_else(|| n(u.prompt_cache_hit_tokens))
            .unwrap_or(0)
            .min(prompt);
        let reasoning =
            n(u.completion_tokens_details.and_then(|d| d.reasoning_tokens)).unwrap_or(0);
        Some(TokenUsage {
            input: prompt - cached,
            cache_read: cached,
            cache_write: 0,
            output: completion.unwrap_or(0),
            reasoning,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageSource {
    /// Counted by the provider.
    Provider,
    /// Counted by the gateway because the provider reported nothing.
    Estimated,
    /// Nothing was used (the request failed before reaching a model).
    None,
}

impl UsageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Provider => "provider",
            UsageSource::Estimated => "estimated",
            UsageSource::None => "none",
        }
    }
}

/// One request's row in `llm_usage_logs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageRecord {
    pub id: String,
    pub request_id: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    // Shared with the registry and the caller (a request copies none of them): the record is
    // dropped on the usage writer's thread, and each copy would be one more allocation made on
    // one thread and freed on another.
    pub llm_model_id: Option<Arc<str>>,
    pub provider_id: Option<Arc<str>>,
    pub project_id: Option<Arc<str>>,
    pub api_key_id: Option<Arc<str>>,
    /// The public name the client asked for.
    pub model_name: String,
    /// The `model` metric label. Not stored: the row has `model_name` and the model's id.
    #[serde(skip)]
    pub model_label: ModelLabel,
    /// Names for metric labels; the row itself refers to providers and projects by id.
    pub provider_name: Arc<str>,
    pub project_name: Arc<str>,
    pub endpoint: Cow<'static, str>,
    pub stream: bool,
    pub status_code: u16,
    pub error_type: Option<String>,
    pub tokens: TokenUsage,
    pub raw_usage: Option<String>,
    pub usage_source: UsageSource,
    pub cache_hit: bool,
    pub cost_usd: Decimal,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    pub upstream_ms: Option<u64>,
    pub attempts: u32,
}

/// Which name a request is counted under in metrics: always one from the registry, so that
/// the label set stays as small as the registry (client text never becomes a label).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ModelLabel {
    /// `model_name` itself: a public name, route or `provider/model_id` the registry knows.
    AsRequested,
    /// The public name of the deployment that served, where it differs from `model_name`.
    Deployment(String),
    /// Anything the registry does not know (or a request that named no model).
    #[default]
    Unknown,
}

impl UsageRecord {
    /// The `model` label of this request's metrics.
    pub fn metric_model(&self) -> &str {
        match &self.model_label {
            ModelLabel::AsRequested => &self.model_name,
            ModelLabel::Deployment(name) => name,
            ModelLabel::Unknown => "unknown",
        }
    }
}

/// A successful chat request's record, for unit tests to vary with `..sample_record()`.
#[cfg(test)]
pub(crate) fn sample_record() -> UsageRecord {
    UsageRecord {
        id: crate::ids::new_id(),
        request_id: "r".into(),
        created_at: chrono::Utc::now(),
        llm_model_id: None,
        provider_id: None,
        project_id: None,
        api_key_id: None,
        model_name: "m".into(),
        model_label: ModelLabel::AsRequested,
        provider_name: "".into(),
        project_name: "".into(),
        endpoint: "chat.completions".into(),
        stream: false,
        status_code: 200,
        error_type: None,
        tokens: TokenUsage::default(),
        raw_usage: None,
        usage_source: UsageSource::None,
        cache_hit: false,
        cost_usd: Decimal::ZERO,
        latency_ms: 1,
        ttft_ms: None,
        upstream_ms: None,
        attempts: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    macro_rules! json_text {
        ($($t:tt)*) => {
            json!($($t)*).to_string()
        };
    }

    #[test]
    fn openai_usage_splits_cached_prompt_tokens() {
        let u = TokenUsage::from_openai(&json_text!({
            "prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 1000},
            "completion_tokens_details": {"reasoning_tokens": 120}
        }))
        .unwrap();
        assert_eq!(
            u,
            TokenUsage {
                input: 200,
                cache_read: 1000,
                cache_write: 0,
                output: 300,
                reasoning: 120
            }
        );
        assert_eq!(u.prompt_total(), 1200);
    }

    #[test]
    fn deepseek_cache_hits_count_as_cache_reads() {
        let u = TokenUsage::from_openai(&json_text!({
            "prompt_tokens": 50, "completion_tokens": 5,
            "prompt_cache_hit_tokens": 32, "prompt_cache_miss_tokens": 18
        }))
        .unwrap();
        assert_eq!((u.input, u.cache_read), (18, 32));
    }

    #[test]
    fn usage_without_counts_is_none() {
        assert!(TokenUsage::from_openai(&json_text!({})).is_none());
        assert!(TokenUsage::from_openai("null").is_none());
        // Odd values in optional places do not lose the counts.
        let u = TokenUsage::from_openai(&json_text!({
            "prompt_tokens": 7, "completion_tokens": 2, "prompt_tokens_details": null,
            "completion_tokens_details": {"reasoning_tokens": null}
        }))
        .unwrap();
        assert_eq!((u.input, u.output, u.reasoning), (7, 2, 0));
    }

    #[test]
    fn absurd_negative_and_fractional_counts_are_clamped() {
        let u = TokenUsage::from_openai(&json_text!({
            "prompt_tokens": 1_000_000_000_000_000_000u64, "completion_tokens": -4,
            "prompt_tokens_details": {"cached_tokens": 2.5},
            "completion_tokens_details": {"reasoning_tokens": 1e30}
        }))
        .unwrap();
        assert_eq!(
            u,
            TokenUsage {
                input: MAX_TOKENS,
                cache_read: 0,
                cache_write: 0,
                output: 0,
                reasoning: MAX_TOKENS
            }
        );
        let count = |text: &str| token_count(&serde_json::from_str(text).unwrap());
        assert_eq!(count("12"), 12);
        assert_eq!(count("12.0"), 12);
        assert_eq!(count("1e18"), MAX_TOKENS);
        assert_eq!(count("184467440737095516150"), MAX_TOKENS);
        assert_eq!(count("1000000000"), MAX_TOKENS);
        assert_eq!(count("1000000001"), MAX_TOKENS);
        assert_eq!(count("0.5"), 0);
        assert_eq!(count("-1"), 0);
        assert_eq!(count("-1e30"), 0);
    }
}
