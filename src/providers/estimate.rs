//! Token counts for the answers whose provider reported none (an OpenAI-compatible server
//! that ignores `stream_options`, Gemini embeddings, a stream cut short, a client that went
//! away). Counted with OpenAI's BPE tokenizers (tiktoken-rs, whose vocabularies are compiled
//! into the binary: nothing is downloaded at run time). For other vendors' models the count
//! is an estimate, and the usage row says so (`usage_source = estimated`).
//!
//! Nothing here runs when the provider reports usage: callers estimate only on that path.

use serde_json::Value;
use tiktoken_rs::CoreBPE;

use super::{Endpoint, ReportedUsage};
use crate::metering::TokenUsage;

/// o200k_base for the models that use it (GPT-4o, GPT-4.1, GPT-5, the o-series), cl100k_base
/// for everything else: the closest public vocabulary for other vendors' models.
fn tokenizer(model_id: &str) -> (&'static CoreBPE, &'static str) {
    let m = model_id.to_ascii_lowercase();
    let o200k = [
        "gpt-4o",
        "gpt-4.1",
        "gpt-4.5",
        "gpt-5",
        "chatgpt-4o",
        "o1",
        "o3",
        "o4",
    ]
    .iter()
    .any(|p| m.starts_with(p) || m.contains(&format!("/{p}")));
    if o200k {
        (tiktoken_rs::o200k_base_singleton(), "o200k_base")
    } else {
        (tiktoken_rs::cl100k_base_singleton(), "cl100k_base")
    }
}

pub fn count_text(model_id: &str, text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    tokenizer(model_id).0.encode_ordinary(text).len() as u64
}

/// Every string inside a JSON value (message contents, tool schemas), concatenated.
fn strings_of(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push(' ');
        }
        Value::Array(a) => a.iter().for_each(|v| strings_of(v, out)),
        Value::Object(o) => {
            for (k, v) in o {
                // Images are billed by size, which a text tokenizer cannot know: skip their
                // bytes; part types are framing, not text.
                if k == "image_url" || k == "input_audio" || k == "type" {
                    continue;
                }
                strings_of(v, out);
            }
        }
        _ => {}
    }
}

/// Prompt tokens of an OpenAI-format request body, counted the way OpenAI's cookbook
/// does for chat: each message costs its text plus 3 tokens of framing, and the reply is
/// primed with 3 more.
pub fn prompt_tokens(model_id: &str, endpoint: Endpoint, request: &[u8]) -> u64 {
    let Ok(body) = serde_json::from_slice::<Value>(request) else {
        return 0;
    };
    let mut text = String::new();
    match endpoint {
        Endpoint::ChatCompletions => {
            let messages = body["messages"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            for m in messages {
                strings_of(m, &mut text);
            }
            if let Some(tools) = body.get("tools") {
                text.push_str(&tools.to_string());
            }
            count_text(model_id, &text) + 3 * messages.len() as u64 + 3
        }
        Endpoint::Completions => {
            strings_of(&body["prompt"], &mut text);
            count_text(model_id, &text)
        }
        Endpoint::Embeddings => match &body["input"] {
            Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => count_text(model_id, s),
                    Value::Array(tokens) => tokens.len() as u64,
                    _ => 1,
                })
                .sum(),
            Value::String(s) => count_text(model_id, s),
            _ => 0,
        },
    }
}

/// What to put in `raw_usage` for an estimate: the counts and how they were made.
fn raw(model_id: &str, tokens: &TokenUsage, provider_raw: Option<&str>) -> String {
    let mut v = serde_json::json!({
        "estimated_by": "tollgate",
        "tokenizer": tokenizer(model_id).1,
        "prompt_tokens": tokens.prompt_total(),
        "completion_tokens": tokens.output,
    });
    if let Some(p) = provider_raw.and_then(|p| serde_json::from_str::<Value>(p).ok()) {
        v["provider_partial"] = p;
    }
    v.to_string()
}

/// Usage for a request whose provider reported none. `partial` is what the provider did
/// report before it stopped (Anthropic's prompt count in `message_start`, say): its
/// numbers win where they are known, as they are the provider's own.
pub fn estimate(
    model_id: &str,
    endpoint: Endpoint,
    request: &[u8],
    output_text: &str,
    partial: Option<&ReportedUsage>,
) -> ReportedUsage {
    let output = count_text(model_id, output_text);
    estimate_counted(model_id, endpoint, request, output, partial)
}

/// `estimate` for an answer whose output tokens are already counted.
pub fn estimate_counted(
    model_id: &str,
    endpoint: Endpoint,
    request: &[u8],
    output_tokens: u64,
    partial: Option<&ReportedUsage>,
) -> ReportedUsage {
    let mut tokens = match partial {
        Some(p) if p.tokens.prompt_total() > 0 => p.tokens,
        _ => TokenUsage {
            input: prompt_tokens(model_id, endpoint, request),
            ..TokenUsage::default()
        },
    };
    tokens.output = tokens.output.max(output_tokens);
    ReportedUsage {
        tokens,
        raw: raw(model_id, &tokens, partial.map(|p| p.raw.as_str())),
        estimated: true,
    }
}

/// How much of a stream's generated text is kept to count its tokens by, should the provider
/// report none: enough for a close count, small enough that a huge answer costs no memory.
pub const OUTPUT_SAMPLE_BYTES: usize = 256 * 1024;

/// Scales a count made on the first `sample_bytes` of an answer to the whole of it, at the
/// sample's tokens per byte.
pub fn scale_to_whole(sample_tokens: u64, sample_bytes: usize, more_bytes: u64) -> u64 {
    if more_bytes == 0 || sample_bytes == 0 {
        return sample_tokens;
    }
    let more = u128::from(sample_tokens) * u128::from(more_bytes) / sample_bytes as u128;
    sample_tokens.saturating_add(u64::try_from(more).unwrap_or(u64::MAX))
}

/// A stream's generated text as far as it is kept for counting: the first
/// `OUTPUT_SAMPLE_BYTES`, and the length of the rest.
#[derive(Debug, Default)]
pub struct OutputSample {
    text: String,
    more_bytes: u64,
}

impl OutputSample {
    pub fn push(&mut self, s: &str) {
        let room = OUTPUT_SAMPLE_BYTES.saturating_sub(self.text.len());
        let mut cut = room.min(s.len());
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.text.push_str(&s[..cut]);
        self.more_bytes += (s.len() - cut) as u64;
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty() && self.more_bytes == 0
    }

    /// The answer's tokens: the sample counted, the rest scaled from it.
    pub fn tokens(&self, model_id: &str) -> u64 {
        let sample = count_text(model_id, &self.text);
        scale_to_whole(sample, self.text.len(), self.more_bytes)
    }

    /// Bytes held in memory.
    pub fn retained_bytes(&self) -> usize {
        self.text.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_with_the_real_vocabularies() {
        // Known counts: "hello world" is 2 tokens in both vocabularies.
        assert_eq!(count_text("gpt-4o-mini", "hello world"), 2);
        assert_eq!(count_text("claude-sonnet-4", "hello world"), 2);
        assert_eq!(count_text("x", ""), 0);
        assert_eq!(tokenizer("gpt-4o").1, "o200k_base");
        assert_eq!(tokenizer("openai/gpt-5").1, "o200k_base");
        assert_eq!(tokenizer("gemini-2.0-flash").1, "cl100k_base");
    }

    #[test]
    fn chat_prompt_counts_messages_and_framing() {
        let req = br#"{"model":"m","messages":[{"role":"user","content":"hello world"}]}"#;
        // "user hello world " plus 3 per message and 3 for the reply
        let n = prompt_tokens("gpt-4o", Endpoint::ChatCompletions, req);
        assert!((7..=10).contains(&n), "{n}");
        let emb = br#"{"model":"m","input":["hello world","hello"]}"#;
        assert_eq!(prompt_tokens("x", Endpoint::Embeddings, emb), 3);
    }

    #[test]
    fn provider_partial_counts_win() {
        let partial = ReportedUsage {
            tokens: TokenUsage {
                input: 40,
                cache_read: 2,
                output: 1,
                ..Default::default()
            },
            raw: r#"{"input_tokens":40}"#.into(),
            estimated: false,
        };
        let u = estimate(
            "claude",
            Endpoint::ChatCompletions,
            b"{}",
            "hello world",
            Some(&partial),
        );
        assert!(u.estimated);
        assert_eq!(
            (u.tokens.input, u.tokens.cache_read, u.tokens.output),
            (40, 2, 2)
        );
        assert!(u.raw.contains("provider_partial"));
        let none = estimate("claude", Endpoint::ChatCompletions, b"not json", "", None);
        assert_eq!(none.tokens, TokenUsage::default());
    }

    #[test]
    fn a_long_output_is_counted_from_a_bounded_sample() {
        let mut sample = OutputSample::default();
        let word = "hello world ";
        for _ in 0..(4 * OUTPUT_SAMPLE_BYTES / word.len()) {
            sample.push(word);
        }
        assert!(sample.retained_bytes() <= 2 * OUTPUT_SAMPLE_BYTES);
        // "hello world " is 2 tokens plus a space that joins the next word: 2 per repeat
        let repeats = (4 * OUTPUT_SAMPLE_BYTES / word.len()) as u64;
        let counted = sample.tokens("gpt-4o");
        assert!(
            counted.abs_diff(2 * repeats) <= repeats / 100,
            "{counted} vs {}",
            2 * repeats
        );
        // a multi-byte character is never split at the sample's edge
        let mut s = OutputSample::default();
        s.push(&"a".repeat(OUTPUT_SAMPLE_BYTES - 1));
        s.push("é");
        assert_eq!(s.text.len(), OUTPUT_SAMPLE_BYTES - 1);
        assert_eq!(s.more_bytes, 2);
        assert_eq!(scale_to_whole(10, 100, 300), 40);
        assert_eq!(scale_to_whole(10, 0, 300), 10);
    }
}
