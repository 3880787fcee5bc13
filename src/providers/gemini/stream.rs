//! Gemini's stream as OpenAI chunks: every SSE event is a whole `GenerateContentResponse`
//! holding the next piece; there is no end marker, so `[DONE]` is added when the body ends
//! after a finishReason.

use bytes::Bytes;

use super::response::{args_json, finish_reason};
use super::schema::{Candidate, ErrorBody, Response, UsageMetadata};
use super::{model_path, tool_call_id};
use crate::providers::chat::{self, ChunkWriter};
use crate::providers::estimate::{self, OutputSample};
use crate::providers::{
    Endpoint, Prepared, ReportedUsage, StreamTranslator, MAX_EVENT_BYTES, MAX_STREAM_INDEX,
};
use crate::registry::Deployment;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Streaming,
    /// The body ended after a finishReason: `[DONE]` was sent.
    Done,
    /// An error event was told to the client; the rest is ignored.
    Failed,
}

#[derive(Debug, Default, Clone, Copy)]
struct CandidateState {
    started: bool,
    tool_calls: usize,
    /// A finishReason arrived. Older models put `STOP` on every event, not only the last,
    /// so the text that follows it is still the answer's.
    finished: bool,
    /// The finish chunk to send when the body ends, after all of the candidate's text.
    finish: Option<&'static str>,
}

/// Gemini SSE in, OpenAI chunks out.
pub struct Translator {
    parser: sse_parse::SseParser,
    phase: Phase,
    writer: Option<ChunkWriter>,
    candidates: Vec<CandidateState>,
    /// The last usageMetadata (Gemini repeats it, growing, on many events).
    usage: Option<UsageMetadata>,
    client_wants_usage: bool,
    sent_text: OutputSample,
    model_id: String,
    request: Bytes,
    error_type: Option<&'static str>,
}

impl Translator {
    pub fn new(dep: &Deployment, prepared: &Prepared) -> Translator {
        Translator {
            parser: sse_parse::SseParser::new().max_buffer(MAX_EVENT_BYTES),
            phase: Phase::Streaming,
            writer: None,
            candidates: Vec::new(),
            usage: None,
            client_wants_usage: prepared.client_wants_usage,
            sent_text: OutputSample::default(),
            model_id: model_path(dep).to_owned(),
            request: prepared.client_body.clone(),
            error_type: None,
        }
    }

    fn drain(&mut self, out: &mut Vec<u8>) {
        while let Some(ev) = self.parser.next_event() {
            if self.phase != Phase::Streaming {
                continue;
            }
            self.event(&ev.data, out);
        }
        if self.parser.overflows() > 0 && self.phase == Phase::Streaming {
            chat::event_too_large(out);
            self.phase = Phase::Failed;
            self.error_type = Some("upstream_event_too_large");
        }
    }

    /// Bytes this stream holds for counting and per choice (the SSE parser's own buffer is
    /// capped at `MAX_EVENT_BYTES`).
    #[cfg(test)]
    pub fn retained_bytes(&self) -> usize {
        self.sent_text.retained_bytes()
            + self.candidates.capacity() * std::mem::size_of::<CandidateState>()
    }

    fn event(&mut self, data: &str, out: &mut Vec<u8>) {
        let Ok(resp) = serde_json::from_str::<Response>(data) else {
            tracing::debug!(data, "unreadable Gemini stream event skipped");
            return;
        };
        if let Some(err) = resp.error {
            self.error(err, out);
            return;
        }
        if let Some(u) = resp.usage_metadata {
            self.usage = Some(u);
        }
        let writer = self.writer.get_or_insert_with(|| {
            let id = resp
                .response_id
                .clone()
                .unwrap_or_else(crate::ids::new_completion_id);
            let model = resp.model_version.as_deref().unwrap_or(&self.model_id);
            ChunkWriter::new(&id, chat::unix_now(), model)
        });
        if resp.candidates.is_empty() {
            if resp.prompt_feedback.and_then(|f| f.block_reason).is_some() {
                prompt_blocked(writer, &mut self.candidates, out);
            }
            return;
        }
        for (pos, cand) in resp.candidates.into_iter().enumerate() {
            let i = cand.index.unwrap_or(pos);
            if i >= MAX_STREAM_INDEX {
                continue;
            }
            if self.candidates.len() <= i {
                self.candidates.resize(i + 1, CandidateState::default());
            }
            let state = &mut self.candidates[i];
            candidate(writer, state, &mut self.sent_text, i, cand, out);
        }
    }

    /// Told to the client as an OpenAI error event; the stream ends there.
    fn error(&mut self, err: ErrorBody, out: &mut Vec<u8>) {
        let message = if err.message.is_empty() {
            "The provider reported an error mid-stream."
        } else {
            &err.message
        };
        let code = if err.status.is_empty() {
            "upstream_error"
        } else {
            &err.status
        };
        let kind = match code {
            "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "NOT_FOUND" => "invalid_request_error",
            "RESOURCE_EXHAUSTED" => "rate_limit_exceeded",
            _ => "server_error",
        };
        chat::error_event(out, kind, code, message);
        self.phase = Phase::Failed;
        self.error_type = Some("upstream_stream_error");
    }
}

/// A blocked prompt has no candidates: the first choice ends with `content_filter`.
fn prompt_blocked(writer: &ChunkWriter, candidates: &mut Vec<CandidateState>, out: &mut Vec<u8>) {
    if candidates.is_empty() {
        candidates.push(CandidateState::default());
    }
    let state = &mut candidates[0];
    if !state.started {
        writer.role(out, 0);
        state.started = true;
    }
    writer.finish(out, 0, "content_filter");
    state.finished = true;
}

/// Choice `i`'s next piece: its role chunk first, then its text and function calls; a
/// finishReason is kept for the end of the body (`finish_candidates`).
fn candidate(
    writer: &ChunkWriter,
    state: &mut CandidateState,
    sent_text: &mut OutputSample,
    i: usize,
    cand: Candidate,
    out: &mut Vec<u8>,
) {
    if !state.started {
        writer.role(out, i);
        state.started = true;
    }
    for part in cand.content.into_iter().flat_map(|c| c.parts) {
        if let Some(call) = part.function_call {
            let args = args_json(call.args.as_ref());
            sent_text.push(&args);
            writer.tool_call(
                out,
                i,
                state.tool_calls,
                &tool_call_id(part.thought_signature.as_deref()),
                &call.name,
                &args,
            );
            state.tool_calls += 1;
        } else if let (Some(text), None | Some(false)) = (part.text, part.thought) {
            if !text.is_empty() {
                sent_text.push(&text);
                writer.content(out, i, &text);
            }
        }
    }
    if let Some(reason) = cand.finish_reason {
        state.finish = Some(finish_reason(&reason));
        state.finished = true;
    }
}

/// Each finished candidate's finish chunk, once its text is complete: tool calls present
/// make it `tool_calls`, whatever Gemini's reason says.
fn finish_candidates(writer: &ChunkWriter, candidates: &mut [CandidateState], out: &mut Vec<u8>) {
    for (i, state) in candidates.iter_mut().enumerate() {
        if let Some(reason) = state.finish.take() {
            writer.finish(out, i, chat::finish_reason(reason, state.tool_calls > 0));
        }
    }
}

impl StreamTranslator for Translator {
    fn push(&mut self, chunk: Bytes) -> Bytes {
        self.parser.feed(&chunk);
        let mut out = Vec::new();
        self.drain(&mut out);
        Bytes::from(out)
    }

    /// The body ended: a stream that finished gets its usage chunk and `[DONE]`.
    fn finish(&mut self) -> Bytes {
        self.parser.finish();
        let mut out = Vec::new();
        self.drain(&mut out);
        let finished =
            !self.candidates.is_empty() && self.candidates.iter().all(|c| c.finished || !c.started);
        if self.phase == Phase::Streaming && finished {
            if let Some(w) = &self.writer {
                finish_candidates(w, &mut self.candidates, &mut out);
            }
            if self.client_wants_usage {
                if let (Some(w), Some(u)) = (&self.writer, self.usage()) {
                    w.usage(&mut out, &u.tokens);
                }
            }
            chat::done(&mut out);
            self.phase = Phase::Done;
        }
        Bytes::from(out)
    }

    /// The last usageMetadata of a finished stream; an estimate for a stream that broke
    /// off or failed (the provider's partial counts kept where known).
    fn usage(&self) -> Option<ReportedUsage> {
        let complete = self.candidates.iter().any(|c| c.finished) && self.phase != Phase::Failed;
        match (self.usage.as_ref(), complete) {
            (Some(u), true) => Some(u.reported()),
            (None, _) if self.writer.is_none() => None, // nothing arrived
            (partial, _) => {
                let partial = partial.map(|u| u.reported());
                Some(estimate::estimate_counted(
                    &self.model_id,
                    Endpoint::ChatCompletions,
                    &self.request,
                    self.sent_text.tokens(&self.model_id),
                    partial.as_ref(),
                ))
            }
        }
    }

    fn error_type(&self) -> Option<&'static str> {
        self.error_type
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::response::read_response;
    use super::super::tests::dep;
    use super::*;
    use crate::providers::chat::testing::collect;
    use crate::providers::testing::prepared_for;

    pub(crate) const STREAM: &str = concat!(
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"thinking\",\"thought\":true}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":120,\"cachedContentTokenCount\":100,\"thoughtsTokenCount\":10},\"modelVersion\":\"gemini-x-001\",\"responseId\":\"resp-1\"}\r\n\r\n",
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Checking \"}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":120,\"candidatesTokenCount\":2,\"cachedContentTokenCount\":100,\"thoughtsTokenCount\":10},\"modelVersion\":\"gemini-x-001\",\"responseId\":\"resp-1\"}\r\n\r\n",
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"now.\"},{\"functionCall\":{\"name\":\"get_weather\",\"args\":{\"city\":\"Paris\"}}},{\"functionCall\":{\"name\":\"get_time\"}}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":120,\"candidatesTokenCount\":20,\"totalTokenCount\":150,\"cachedContentTokenCount\":100,\"thoughtsTokenCount\":10},\"modelVersion\":\"gemini-x-001\",\"responseId\":\"resp-1\"}\r\n\r\n",
    );

    pub(crate) fn run(stream: &[u8], include_usage: bool, cuts: &[usize]) -> (Vec<u8>, Translator) {
        let d = dep();
        let p = prepared_for(
            &d,
            r#"{"model":"g","messages":[{"role":"user","content":"hello"}],"stream":true}"#,
            include_usage,
        );
        let mut t = Translator::new(&d, &p);
        let out = crate::providers::testing::feed(&mut t, stream, cuts);
        (out, t)
    }

    #[test]
    fn stream_translates_and_ends_with_usage_and_done() {
        let (out, t) = run(STREAM.as_bytes(), true, &[]);
        let c = collect(&out);
        assert!(c.done);
        assert_eq!(c.role_chunks, 1);
        assert_eq!(c.choices[0].content, "Checking now.");
        assert_eq!(c.choices[0].tool_calls.len(), 2);
        assert!(c.choices[0].tool_calls[1].id.starts_with("call_"));
        assert_eq!(c.choices[0].finish_reason, "tool_calls");
        assert_eq!(c.usage_chunks, 1);
        assert_eq!(
            c.usage.unwrap()["completion_tokens"],
            30,
            "the last usageMetadata counts"
        );
        assert!(!t.usage().unwrap().estimated);
    }

    #[test]
    fn events_split_at_every_byte_give_the_same_answer() {
        let bytes = STREAM.as_bytes();
        let norm = |out: &[u8]| {
            let mut c = collect(out);
            for ch in &mut c.choices {
                for t in &mut ch.tool_calls {
                    t.id.clear(); // fresh random ids every run
                }
            }
            c
        };
        let want = norm(&run(bytes, true, &[]).0);
        for cut in 1..bytes.len() {
            let (out, t) = run(bytes, true, &[cut]);
            assert_eq!(norm(&out), want, "cut at {cut}");
            assert_eq!(t.usage().unwrap().tokens.output, 30);
        }
    }

    #[test]
    fn mid_stream_error_cut_stream_and_unicode() {
        let s = concat!(
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"日本 😀\"}]},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":9}}\n\n",
            "data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":\"UNAVAILABLE\"}}\n\n",
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"ignored\"}]},\"finishReason\":\"STOP\"}]}\n\n",
        );
        let (out, t) = run(s.as_bytes(), true, &[]);
        let c = collect(&out);
        assert_eq!(c.choices[0].content, "日本 😀");
        assert!(!c.done);
        assert_eq!(c.errors[0]["error"]["code"], "UNAVAILABLE");
        assert_eq!(t.error_type(), Some("upstream_stream_error"));
        let u = t.usage().unwrap();
        assert!(u.estimated);
        assert_eq!(u.tokens.input, 9);
        // cut: no finishReason, no [DONE], estimated usage
        let cut = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"hello world\"}]},\"index\":0}]}\n\ndata: {\"candi";
        let (out, t) = run(cut.as_bytes(), true, &[]);
        let c = collect(&out);
        assert!(!c.done && c.errors.is_empty());
        let u = t.usage().unwrap();
        assert!(u.estimated && u.tokens.output == 2 && u.tokens.input > 0);
        // empty
        let (out, t) = run(b"", true, &[]);
        assert!(out.is_empty() && t.usage().is_none());
    }

    #[test]
    fn several_candidates_stream_as_several_choices() {
        let s = concat!(
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"A\"}]},\"index\":0},{\"content\":{\"parts\":[{\"text\":\"B\"}]},\"index\":1}]}\n\n",
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]},\"finishReason\":\"STOP\",\"index\":0},{\"content\":{\"parts\":[{\"text\":\"\"}]},\"finishReason\":\"MAX_TOKENS\",\"index\":1}],\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":4}}\n\n",
        );
        let (out, _) = run(s.as_bytes(), false, &[]);
        let c = collect(&out);
        assert!(c.done);
        assert_eq!(c.choices.len(), 2);
        assert_eq!(
            (c.choices[0].content.as_str(), c.choices[0].finish_reason),
            ("Aa", "stop")
        );
        assert_eq!(
            (c.choices[1].content.as_str(), c.choices[1].finish_reason),
            ("B", "length")
        );
    }

    /// A long answer and a huge candidate index cost bounded memory; an event that never
    /// ends is cut with an error event.
    #[test]
    fn long_streams_and_endless_events_are_bounded() {
        let d = dep();
        let p = prepared_for(
            &d,
            r#"{"model":"g","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
            false,
        );
        let mut t = Translator::new(&d, &p);
        t.push(Bytes::from_static(b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"}]},\"index\":4000000000}]}\n\n"));
        let event = format!(
            "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"{}\"}}]}},\"index\":0}}]}}\n\n",
            "hello world ".repeat(1000)
        );
        for _ in 0..(20_000_000 / event.len()) {
            assert!(!t.push(Bytes::from(event.clone())).is_empty());
        }
        assert!(t.retained_bytes() <= 2 * estimate::OUTPUT_SAMPLE_BYTES);
        assert!(t.usage().unwrap().tokens.output > 3_000_000);
        let mut out = t
            .push(Bytes::from_static(b"data: {\"candidates\":"))
            .to_vec();
        for _ in 0..(MAX_EVENT_BYTES / 65536 + 2) {
            out.extend_from_slice(&t.push(Bytes::from_static(&[b'x'; 65536])));
        }
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("upstream_event_too_large"), "{out}");
        assert_eq!(t.error_type(), Some("upstream_event_too_large"));
        // a whole answer with such an index is refused, not allocated for
        let whole = br#"{"candidates":[{"content":{"parts":[{"text":"x"}]},"index":4000000000}]}"#;
        assert_eq!(read_response(&d, &p, whole).unwrap_err().status, 502);
        let error = br#"{"error":{"code":500,"message":"boom","status":"INTERNAL"}}"#;
        assert_eq!(read_response(&d, &p, error).unwrap_err().status, 502);
    }
}
