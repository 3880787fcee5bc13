//! Anthropic's wire types: the message, its content blocks, its usage, and the stream's
//! events, as much of each as the translation reads.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Map, Number, Value};

use crate::metering::{token_count, TokenUsage};

/// Counts kept as the provider sent them (for `raw_usage`); `tokens` clamps them.
#[derive(Debug, Deserialize, Default, Clone)]
pub(super) struct Usage {
    #[serde(default)]
    pub(super) input_tokens: Option<Number>,
    #[serde(default)]
    pub(super) output_tokens: Option<Number>,
    #[serde(default)]
    pub(super) cache_creation_input_tokens: Option<Number>,
    #[serde(default)]
    pub(super) cache_read_input_tokens: Option<Number>,
}

impl Usage {
    /// Later reports (message_delta) override earlier ones (message_start) field by field.
    pub(super) fn merge(&mut self, later: &Usage) {
        let pick = |a: &mut Option<Number>, b: &Option<Number>| {
            if b.is_some() {
                a.clone_from(b);
            }
        };
        pick(&mut self.input_tokens, &later.input_tokens);
        pick(&mut self.output_tokens, &later.output_tokens);
        pick(
            &mut self.cache_creation_input_tokens,
            &later.cache_creation_input_tokens,
        );
        pick(
            &mut self.cache_read_input_tokens,
            &later.cache_read_input_tokens,
        );
    }

    /// Anthropic's `input_tokens` excludes the cached part: it is the uncached input.
    pub(super) fn tokens(&self) -> TokenUsage {
        let count = |n: &Option<Number>| n.as_ref().map_or(0, token_count);
        TokenUsage {
            input: count(&self.input_tokens),
            cache_read: count(&self.cache_read_input_tokens),
            cache_write: count(&self.cache_creation_input_tokens),
            output: count(&self.output_tokens),
            reasoning: 0,
        }
    }

    pub(super) fn raw(&self) -> String {
        let mut m = Map::new();
        for (k, v) in [
            ("input_tokens", &self.input_tokens),
            ("output_tokens", &self.output_tokens),
            (
                "cache_creation_input_tokens",
                &self.cache_creation_input_tokens,
            ),
            ("cache_read_input_tokens", &self.cache_read_input_tokens),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), Value::Number(v.clone()));
            }
        }
        Value::Object(m).to_string()
    }
}

#[derive(Deserialize)]
pub(super) struct Message {
    #[serde(default)]
    pub(super) id: String,
    #[serde(default)]
    pub(super) model: String,
    #[serde(default)]
    pub(super) content: Vec<Block>,
    #[serde(default)]
    pub(super) stop_reason: Option<String>,
    #[serde(default)]
    pub(super) usage: Option<Value>,
    /// Set on an error answered with status 200 (`{"type":"error","error":{...}}`).
    #[serde(default)]
    pub(super) error: Option<Value>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Block {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// thinking, redacted_thinking, server tool blocks: not part of an OpenAI message.
    #[serde(other)]
    Other,
}

/// One stream event. Read as a flat struct rather than a tagged enum: serde then reads an
/// event in one pass instead of buffering it to find its tag, and text stays borrowed from
/// the event unless it has escapes (this runs for every token).
#[derive(Deserialize)]
pub(super) struct Event<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Cow<'a, str>,
    #[serde(default)]
    pub(super) index: usize,
    #[serde(default)]
    pub(super) message: Option<StartMessage>,
    #[serde(default)]
    pub(super) content_block: Option<StartBlock>,
    #[serde(default, borrow)]
    pub(super) delta: Option<Delta<'a>>,
    #[serde(default)]
    pub(super) usage: Option<Usage>,
    #[serde(default)]
    pub(super) error: Option<ErrorBody>,
}

#[derive(Deserialize)]
pub(super) struct StartMessage {
    #[serde(default)]
    pub(super) id: String,
    #[serde(default)]
    pub(super) model: String,
    #[serde(default)]
    pub(super) usage: Option<Usage>,
}

#[derive(Deserialize)]
pub(super) struct StartBlock {
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) text: String,
    #[serde(default)]
    pub(super) id: String,
    #[serde(default)]
    pub(super) name: String,
}

/// A content block's delta (`text_delta`, `input_json_delta`, ...) or, in message_delta,
/// the message's (`stop_reason`).
#[derive(Deserialize)]
pub(super) struct Delta<'a> {
    #[serde(rename = "type", default, borrow)]
    pub(super) kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) partial_json: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) stop_reason: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct ErrorBody {
    #[serde(rename = "type", default)]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) message: String,
}
