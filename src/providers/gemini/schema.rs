//! Gemini's wire types: `GenerateContentResponse` (whole, and each stream event), its usage
//! metadata, and the embedding answers, as much of each as the translation reads.

use serde::Deserialize;
use serde_json::{Number, Value};

use crate::metering::{token_count, TokenUsage};
use crate::providers::ReportedUsage;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct Response {
    #[serde(default)]
    pub(super) candidates: Vec<Candidate>,
    #[serde(default)]
    pub(super) usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    pub(super) model_version: Option<String>,
    #[serde(default)]
    pub(super) response_id: Option<String>,
    #[serde(default)]
    pub(super) prompt_feedback: Option<PromptFeedback>,
    /// Gemini reports an error inside a stream as an event with this field.
    #[serde(default)]
    pub(super) error: Option<ErrorBody>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct Candidate {
    #[serde(default)]
    pub(super) content: Option<CandidateContent>,
    #[serde(default)]
    pub(super) finish_reason: Option<String>,
    #[serde(default)]
    pub(super) index: Option<usize>,
}

#[derive(Deserialize, Default)]
pub(super) struct CandidateContent {
    #[serde(default)]
    pub(super) parts: Vec<ResponsePart>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct ResponsePart {
    #[serde(default)]
    pub(super) text: Option<String>,
    #[serde(default)]
    pub(super) thought_signature: Option<String>,
    #[serde(default)]
    pub(super) thought: Option<bool>,
    #[serde(default)]
    pub(super) function_call: Option<FunctionCall>,
}

#[derive(Deserialize)]
pub(super) struct FunctionCall {
    pub(super) name: String,
    #[serde(default)]
    pub(super) args: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct PromptFeedback {
    #[serde(default)]
    pub(super) block_reason: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub(super) message: String,
    #[serde(default)]
    pub(super) status: String,
}

/// Counts kept as the provider sent them (for `raw_usage`); `tokens` clamps them.
#[derive(Deserialize, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UsageMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) prompt_token_count: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) cached_content_token_count: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) candidates_token_count: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) thoughts_token_count: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) tool_use_prompt_token_count: Option<Number>,
}

impl UsageMetadata {
    /// `promptTokenCount` includes the cached part; output is the answer plus thoughts.
    pub(super) fn tokens(&self) -> TokenUsage {
        let count = |n: &Option<Number>| n.as_ref().map_or(0, token_count);
        let prompt = count(&self.prompt_token_count);
        let cached = count(&self.cached_content_token_count).min(prompt);
        let thoughts = count(&self.thoughts_token_count);
        TokenUsage {
            input: prompt - cached + count(&self.tool_use_prompt_token_count),
            cache_read: cached,
            cache_write: 0,
            output: count(&self.candidates_token_count) + thoughts,
            reasoning: thoughts,
        }
    }

    pub(super) fn reported(&self) -> ReportedUsage {
        ReportedUsage {
            tokens: self.tokens(),
            raw: serde_json::to_string(self).unwrap_or_default(),
            estimated: false,
        }
    }
}

#[derive(Deserialize)]
pub(super) struct EmbeddingValues {
    #[serde(default)]
    pub(super) values: Vec<f32>,
}

#[derive(Deserialize)]
pub(super) struct EmbeddingResponse {
    #[serde(default)]
    pub(super) embedding: Option<EmbeddingValues>,
    #[serde(default)]
    pub(super) embeddings: Option<Vec<EmbeddingValues>>,
}
