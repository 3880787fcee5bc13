//! Anthropic's stream as OpenAI chunks: `Translator` is a state machine over the events
//! (message_start, content_block_*, message_delta, message_stop, ping, error).

use bytes::Bytes;

use super::response::finish_reason;
use super::schema::{Delta, ErrorBody, Event, StartBlock, StartMessage, Usage};
use crate::providers::chat::{self, ChunkWriter};
use crate::providers::estimate::{self, OutputSample};
use crate::providers::{
    Endpoint, Prepared, ReportedUsage, StreamTranslator, MAX_EVENT_BYTES, MAX_STREAM_INDEX,
};
use crate::registry::Deployment;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for message_start.
    Start,
    /// Inside the message.
    Message,
    /// message_stop arrived: `[DONE]` was sent.
    Done,
    /// An error event arrived and was told to the client; the rest is ignored.
    Failed,
}

/// What a content block index is, for the deltas that follow its start.
#[derive(Debug, Clone, Copy)]
enum BlockKind {
    Text,
    /// A tool call with its ordinal among the message's tool calls (the OpenAI index), and
    /// whether any argument text was sent for it yet.
    Tool {
        ordinal: usize,
        sent_arguments: bool,
    },
    Ignored,
}

/// The OpenAI error `type` for an Anthropic error type.
fn openai_error_type(kind: &str) -> &'static str {
    match kind {
        "invalid_request_error" | "request_too_large" | "not_found_error" => {
            "invalid_request_error"
        }
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "rate_limit_error" => "rate_limit_exceeded",
        _ => "server_error", // api_error, overloaded_error
    }
}

/// Anthropic SSE in, OpenAI chunks out.
pub struct Translator {
    parser: sse_parse::SseParser,
    phase: Phase,
    writer: ChunkWriter,
    blocks: Vec<BlockKind>,
    tool_calls: usize,
    usage: Usage,
    saw_usage: bool,
    client_wants_usage: bool,
    /// The text and arguments sent so far, counted only if the stream ends without usage.
    sent_text: OutputSample,
    model_id: String,
    request: Bytes,
    error_type: Option<&'static str>,
}

impl Translator {
    pub fn new(dep: &Deployment, prepared: &Prepared) -> Translator {
        Translator {
            parser: sse_parse::SseParser::new().max_buffer(MAX_EVENT_BYTES),
            phase: Phase::Start,
            writer: ChunkWriter::new("", 0, &dep.model_id),
            blocks: Vec::new(),
            tool_calls: 0,
            usage: Usage::default(),
            saw_usage: false,
            client_wants_usage: prepared.client_wants_usage,
            sent_text: OutputSample::default(),
            model_id: dep.model_id.clone(),
            request: prepared.client_body.clone(),
            error_type: None,
        }
    }

    fn drain(&mut self) -> Bytes {
        let mut out = Vec::new();
        while let Some(ev) = self.parser.next_event() {
            if matches!(self.phase, Phase::Done | Phase::Failed) {
                continue;
            }
            self.event(&ev.data, &mut out);
        }
        if self.parser.overflows() > 0 && !matches!(self.phase, Phase::Done | Phase::Failed) {
            chat::event_too_large(&mut out);
            self.phase = Phase::Failed;
            self.error_type = Some("upstream_event_too_large");
        }
        Bytes::from(out)
    }

    /// Bytes this stream holds for counting (the SSE parser's own buffer is capped at
    /// `MAX_EVENT_BYTES`).
    #[cfg(test)]
    pub fn retained_bytes(&self) -> usize {
        self.sent_text.retained_bytes() + self.blocks.capacity() * std::mem::size_of::<BlockKind>()
    }

    fn event(&mut self, data: &str, out: &mut Vec<u8>) {
        let Ok(event) = serde_json::from_str::<Event>(data) else {
            // Not an event we can read. Anthropic may add event types; an unreadable one
            // must not break the answer.
            tracing::debug!(data, "unreadable Anthropic stream event skipped");
            return;
        };
        match event.kind.as_ref() {
            "message_start" => self.message_start(event.message, out),
            "content_block_start" => self.block_start(event.index, event.content_block, out),
            "content_block_delta" => self.block_delta(event.index, event.delta, out),
            "content_block_stop" => self.block_stop(event.index, out),
            "message_delta" => self.message_delta(event.usage, event.delta, out),
            "message_stop" => self.message_stop(out),
            "error" => self.error(event.error.unwrap_or_default(), out),
            _ => {} // ping, and event types added later
        }
    }

    fn message_start(&mut self, message: Option<StartMessage>, out: &mut Vec<u8>) {
        if self.phase != Phase::Start {
            return;
        }
        self.phase = Phase::Message;
        let (id, model, usage) = match message {
            Some(m) => (m.id, m.model, m.usage),
            None => (String::new(), String::new(), None),
        };
        let model = if model.is_empty() {
            &self.model_id
        } else {
            &model
        };
        self.writer = ChunkWriter::new(&id, chat::unix_now(), model);
        if let Some(u) = usage {
            self.usage.merge(&u);
        }
        self.writer.role(out, 0);
    }

    fn block_start(&mut self, index: usize, block: Option<StartBlock>, out: &mut Vec<u8>) {
        let Some(block) = block else {
            return;
        };
        let kind = match block.kind.as_str() {
            "text" => {
                if !block.text.is_empty() {
                    self.sent_text.push(&block.text);
                    self.writer.content(out, 0, &block.text);
                }
                BlockKind::Text
            }
            "tool_use" => {
                let ordinal = self.tool_calls;
                self.tool_calls += 1;
                self.writer
                    .tool_call(out, 0, ordinal, &block.id, &block.name, "");
                BlockKind::Tool {
                    ordinal,
                    sent_arguments: false,
                }
            }
            _ => BlockKind::Ignored, // thinking, server tools
        };
        if index >= MAX_STREAM_INDEX {
            return;
        }
        if self.blocks.len() <= index {
            self.blocks.resize(index + 1, BlockKind::Ignored);
        }
        self.blocks[index] = kind;
    }

    fn block_delta(&mut self, index: usize, delta: Option<Delta>, out: &mut Vec<u8>) {
        let Some(delta) = delta else {
            return;
        };
        match (self.blocks.get_mut(index), delta.kind.as_deref()) {
            (Some(BlockKind::Text), Some("text_delta")) => {
                let text = delta.text.unwrap_or_default();
                if !text.is_empty() {
                    self.sent_text.push(&text);
                    self.writer.content(out, 0, &text);
                }
            }
            (
                Some(BlockKind::Tool {
                    ordinal,
                    sent_arguments,
                }),
                Some("input_json_delta"),
            ) => {
                let partial = delta.partial_json.unwrap_or_default();
                if !partial.is_empty() {
                    *sent_arguments = true;
                    self.sent_text.push(&partial);
                    self.writer.tool_arguments(out, 0, *ordinal, &partial);
                }
            }
            _ => {} // thinking, signatures, citations
        }
    }

    /// A tool called without input streams no JSON at all; the whole answer says `{}`, so
    /// the stream must too.
    fn block_stop(&mut self, index: usize, out: &mut Vec<u8>) {
        if let Some(BlockKind::Tool {
            ordinal,
            sent_arguments: false,
        }) = self.blocks.get(index).copied()
        {
            self.writer.tool_arguments(out, 0, ordinal, "{}");
            self.blocks[index] = BlockKind::Tool {
                ordinal,
                sent_arguments: true,
            };
        }
    }

    fn message_delta(&mut self, usage: Option<Usage>, delta: Option<Delta>, out: &mut Vec<u8>) {
        if let Some(u) = usage {
            self.usage.merge(&u);
            self.saw_usage = true;
        }
        let stop_reason = delta.and_then(|d| d.stop_reason);
        if stop_reason.is_some() {
            let reason =
                chat::finish_reason(finish_reason(stop_reason.as_deref()), self.tool_calls > 0);
            self.writer.finish(out, 0, reason);
        }
    }

    fn message_stop(&mut self, out: &mut Vec<u8>) {
        if self.client_wants_usage {
            if let Some(u) = self.usage() {
                self.writer.usage(out, &u.tokens);
            }
        }
        chat::done(out);
        self.phase = Phase::Done;
    }

    /// Told to the client as an OpenAI error event; the stream ends there.
    fn error(&mut self, error: ErrorBody, out: &mut Vec<u8>) {
        let message = if error.message.is_empty() {
            "The provider reported an error mid-stream."
        } else {
            &error.message
        };
        let kind = if error.kind.is_empty() {
            "api_error"
        } else {
            &error.kind
        };
        chat::error_event(out, openai_error_type(kind), kind, message);
        self.phase = Phase::Failed;
        self.error_type = Some("upstream_stream_error");
    }
}

impl StreamTranslator for Translator {
    fn push(&mut self, chunk: Bytes) -> Bytes {
        self.parser.feed(&chunk);
        self.drain()
    }

    fn finish(&mut self) -> Bytes {
        self.parser.finish();
        self.drain()
    }

    /// The provider's usage once the message is complete; an estimate when the stream
    /// ended early (what the provider counted so far is kept).
    fn usage(&self) -> Option<ReportedUsage> {
        let reported = ReportedUsage {
            tokens: self.usage.tokens(),
            raw: self.usage.raw(),
            estimated: false,
        };
        if self.saw_usage && self.phase != Phase::Failed {
            return Some(reported);
        }
        if self.phase == Phase::Start && self.sent_text.is_empty() {
            return None; // nothing was generated
        }
        let partial = self.usage.input_tokens.is_some().then_some(&reported);
        Some(estimate::estimate_counted(
            &self.model_id,
            Endpoint::ChatCompletions,
            &self.request,
            self.sent_text.tokens(&self.model_id),
            partial,
        ))
    }

    fn error_type(&self) -> Option<&'static str> {
        self.error_type
    }
}

#[cfg(test)]
pub(super) mod tests {
    use serde_json::Value;

    use super::*;
    use crate::config::Api;
    use crate::metering::TokenUsage;
    use crate::providers::chat::testing::collect;
    use crate::providers::testing::{deployment, prepared_for};

    pub(crate) const STREAM: &str = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-x-2025\",\"stop_reason\":null,\"usage\":{\"input_tokens\":100,\"cache_creation_input_tokens\":20,\"cache_read_input_tokens\":500,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me \"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"check. \"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":3,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_02\",\"name\":\"get_time\",\"input\":{}}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":3}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":30}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    pub(crate) fn run(stream: &[u8], include_usage: bool, cuts: &[usize]) -> (Vec<u8>, Translator) {
        let dep = deployment(Api::Anthropic, "claude-x");
        let p = prepared_for(
            &dep,
            r#"{"model":"c","messages":[{"role":"user","content":"hello there"}],"stream":true}"#,
            include_usage,
        );
        let mut t = Translator::new(&dep, &p);
        let out = crate::providers::testing::feed(&mut t, stream, cuts);
        (out, t)
    }

    #[test]
    fn stream_translates_text_tools_and_usage() {
        let (out, t) = run(STREAM.as_bytes(), true, &[]);
        let c = collect(&out);
        assert!(c.done);
        assert_eq!(c.role_chunks, 1);
        assert_eq!(c.choices[0].content, "Let me check. ");
        assert_eq!(c.choices[0].tool_calls.len(), 2);
        assert_eq!(c.choices[0].tool_calls[0].id, "toolu_01");
        assert_eq!(
            c.choices[0].tool_calls[0].arguments,
            "{\"city\": \"Paris\"}"
        );
        assert_eq!(c.choices[0].tool_calls[1].arguments, "{}");
        assert_eq!(c.choices[0].finish_reason, "tool_calls");
        assert_eq!(c.usage_chunks, 1);
        assert_eq!(c.usage.as_ref().unwrap()["prompt_tokens"], 620);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.contains("\"index\":0,\"id\":\"toolu_01\""),
            "tool index is the tool ordinal, not the block index"
        );
        assert!(text.contains("\"index\":1,\"id\":\"toolu_02\""));
        let u = t.usage().unwrap();
        assert!(!u.estimated);
        assert_eq!(
            u.tokens,
            TokenUsage {
                input: 100,
                cache_read: 500,
                cache_write: 20,
                output: 30,
                reasoning: 0
            }
        );
        assert!(t.error_type().is_none());
    }

    #[test]
    fn events_split_at_every_byte_give_the_same_answer() {
        let bytes = STREAM.as_bytes();
        let (whole, _) = run(bytes, true, &[]);
        let want = collect(&whole);
        for cut in 1..bytes.len() {
            let (out, t) = run(bytes, true, &[cut]);
            assert_eq!(collect(&out), want, "cut at {cut}");
            assert_eq!(t.usage().unwrap().tokens.output, 30);
        }
        // and one byte at a time
        let cuts: Vec<usize> = (1..bytes.len()).collect();
        let (out, _) = run(bytes, true, &cuts);
        assert_eq!(collect(&out), want);
    }

    #[test]
    fn crlf_line_endings_are_events_too() {
        let crlf = STREAM.replace('\n', "\r\n");
        let (out, _) = run(crlf.as_bytes(), false, &[]);
        assert_eq!(collect(&out).choices[0].content, "Let me check. ");
    }

    /// Absurd, negative and fractional counts are clamped for billing, in a whole answer and
    /// in a stream, and the raw usage keeps them as the provider sent them.    /// Absurd, negative and fractional counts are clamped for billing in a stream too, and
    /// the raw usage keeps them as the provider sent them.
    #[test]
    fn absurd_usage_is_clamped_and_kept_as_sent() {
        let clamped = TokenUsage {
            input: crate::metering::MAX_TOKENS,
            ..TokenUsage::default()
        };

        let s = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":1e18,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":-3}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let (out, t) = run(s.as_bytes(), false, &[]);
        assert!(collect(&out).done);
        let u = t.usage().unwrap();
        assert!(!u.estimated);
        assert_eq!(u.tokens, clamped);
        let raw: Value = serde_json::from_str(&u.raw).unwrap();
        assert_eq!(raw["input_tokens"], 1e18);
        assert_eq!(raw["output_tokens"], -3);
    }

    #[test]
    fn mid_stream_error_becomes_an_openai_error_event_and_ends_the_stream() {
        let s = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hello world\"}}\n\n",
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"ignored\"}}\n\n",
        );
        let (out, t) = run(s.as_bytes(), true, &[]);
        let c = collect(&out);
        assert!(!c.done);
        assert_eq!(c.choices[0].content, "hello world");
        assert_eq!(c.errors.len(), 1);
        assert_eq!(c.errors[0]["error"]["message"], "Overloaded");
        assert_eq!(c.errors[0]["error"]["code"], "overloaded_error");
        assert_eq!(c.errors[0]["error"]["type"], "server_error");
        assert_eq!(t.error_type(), Some("upstream_stream_error"));
        let u = t.usage().unwrap();
        assert!(u.estimated);
        assert_eq!(
            (u.tokens.input, u.tokens.output),
            (12, 2),
            "prompt as reported, output counted"
        );
    }

    #[test]
    fn cut_stream_is_estimated_and_empty_or_unicode_text_survives() {
        let s = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"日本語 😀 \\\"q\\\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_bl",
        );
        let (out, t) = run(s.as_bytes(), true, &[]);
        let c = collect(&out);
        assert_eq!(c.choices[0].content, "日本語 😀 \"q\"");
        assert!(!c.done && c.errors.is_empty());
        let u = t.usage().unwrap();
        assert!(u.estimated);
        assert_eq!(u.tokens.input, 5);
        assert!(u.tokens.output >= 3);
        // nothing at all: no usage
        let (out, t) = run(b"", true, &[]);
        assert!(out.is_empty());
        assert!(t.usage().is_none());
    }

    #[test]
    fn unknown_and_unreadable_events_are_skipped() {
        let s = format!(
            "event: future\ndata: {{\"type\":\"future_event\"}}\n\ndata: not json\n\n{STREAM}"
        );
        let (out, _) = run(s.as_bytes(), false, &[]);
        assert!(collect(&out).done);
    }

    /// A long answer and a huge block index cost bounded memory; an event that never ends
    /// is cut with an error event.
    #[test]
    fn long_streams_and_endless_events_are_bounded() {
        let dep = deployment(Api::Anthropic, "claude-x");
        let p = prepared_for(
            &dep,
            r#"{"model":"c","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
            false,
        );
        let mut t = Translator::new(&dep, &p);
        let start = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":5}}}\n\n",
            "data: {\"type\":\"content_block_start\",\"index\":4000000000,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        );
        t.push(Bytes::from_static(start.as_bytes()));
        let delta = format!(
            "data: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{}\"}}}}\n\n",
            "hello world ".repeat(1000)
        );
        for _ in 0..(20_000_000 / delta.len()) {
            assert!(!t.push(Bytes::from(delta.clone())).is_empty());
        }
        assert!(t.retained_bytes() <= 2 * estimate::OUTPUT_SAMPLE_BYTES);
        assert!(t.usage().unwrap().tokens.output > 3_000_000);
        let mut out = t
            .push(Bytes::from_static(
                b"data: {\"type\":\"content_block_delta\",",
            ))
            .to_vec();
        for _ in 0..(MAX_EVENT_BYTES / 65536 + 2) {
            out.extend_from_slice(&t.push(Bytes::from_static(&[b'x'; 65536])));
        }
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("upstream_event_too_large"), "{out}");
        assert_eq!(t.error_type(), Some("upstream_event_too_large"));
    }
}
