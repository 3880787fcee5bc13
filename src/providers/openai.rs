//! The OpenAI wire format, spoken by OpenAI, Azure OpenAI and every OpenAI-compatible API
//! (xAI, DeepSeek, Mistral, Hugging Face TGI, vLLM, Ollama) and by the mock.
//!
//! Requests change only where they must: `model` becomes the provider's id, the model's default
//! parameters are added where the client gave none, and a stream asks for usage. Responses are
//! passed through as the provider sent them; a stream is forwarded chunk by chunk and only the
//! events that can carry usage (found by a byte scan for `"usage"`) are parsed.

use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::HeaderMap;
use memchr::memmem;

use super::{
    chat, estimate, Adapter, Endpoint, JsonObject, Prepared, ReportedUsage, StreamTranslator,
    UpstreamRequest, MAX_EVENT_BYTES,
};
use crate::config::Api;
use crate::error::GatewayError;
use crate::metering::TokenUsage;
use crate::registry::Deployment;

/// OpenAI's format, spoken by OpenAI, Azure OpenAI, the compatible APIs and the mock.
pub struct OpenAi;

impl Adapter for OpenAi {
    fn prepare(
        &self,
        dep: &Deployment,
        endpoint: Endpoint,
        body: &JsonObject,
    ) -> Result<Prepared, GatewayError> {
        prepare(dep, endpoint, body)
    }

    fn read_response(
        &self,
        dep: &Deployment,
        prepared: &Prepared,
        body: Bytes,
    ) -> Result<(Bytes, Option<ReportedUsage>), GatewayError> {
        read_response(dep, prepared, body)
    }

    fn stream_translator(
        &self,
        dep: &Deployment,
        prepared: &Prepared,
    ) -> Box<dyn StreamTranslator> {
        Box::new(PassThrough::new(dep, prepared))
    }
}

impl StreamTranslator for PassThrough {
    fn push(&mut self, chunk: Bytes) -> Bytes {
        PassThrough::push(self, chunk)
    }
    fn finish(&mut self) -> Bytes {
        PassThrough::finish(self)
    }
    fn usage(&self) -> Option<ReportedUsage> {
        PassThrough::usage(self)
    }
    fn error_type(&self) -> Option<&'static str> {
        PassThrough::error_type(self)
    }
}

pub fn prepare(
    dep: &Deployment,
    endpoint: Endpoint,
    body: &JsonObject,
) -> Result<Prepared, GatewayError> {
    let provider = &dep.provider;
    let uri = match dep.upstream_uris[endpoint.index()].get() {
        Some(uri) => uri.clone(),
        None => {
            let uri = upstream_uri(dep, endpoint)?;
            dep.upstream_uris[endpoint.index()]
                .get_or_init(|| uri)
                .clone()
        }
    };

    let model = serde_json::to_vec(&dep.model_id).expect("strings serialise");
    let stream = endpoint.can_stream() && body.bool("stream") == Some(true);
    let mut client_wants_usage = false;
    let stream_options;
    let mut replace: Vec<(&str, Option<&[u8]>)> = vec![("model", Some(&model))];
    if stream {
        // Always ask for usage upstream; remember whether the client asked too.
        let given: Option<serde_json::Map<String, serde_json::Value>> =
            body.get("stream_options").ok().flatten();
        stream_options = match given {
            None => br#"{"include_usage":true}"#.to_vec(),
            Some(mut opts) => {
                client_wants_usage =
                    opts.get("include_usage") == Some(&serde_json::Value::Bool(true));
                opts.insert("include_usage".into(), true.into());
                serde_json::to_vec(&opts).expect("maps serialise")
            }
        };
        replace.push(("stream_options", Some(&stream_options)));
    }
    let defaults: Vec<(String, Vec<u8>)> = dep
        .parameters
        .iter()
        .filter(|(k, _)| !body.contains(k) && k.as_str() != "model")
        .map(|(k, v)| (k.clone(), serde_json::to_vec(v).expect("values serialise")))
        .collect();
    let append: Vec<(&str, &[u8])> = defaults
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    let new_body = body.rewrite(&replace, &append);

    let mut headers = HeaderMap::with_capacity(3);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if stream {
        headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
    }
    if let Some((name, value)) = &provider.auth_header {
        headers.insert(name.clone(), value.clone());
    }
    Ok(Prepared {
        request: UpstreamRequest {
            uri,
            headers,
            body: Bytes::from(new_body),
        },
        stream,
        client_wants_usage,
        endpoint,
        client_body: body.bytes().clone(),
    })
}

fn upstream_uri(dep: &Deployment, endpoint: Endpoint) -> Result<http::Uri, GatewayError> {
    let provider = &dep.provider;
    let uri = match provider.api {
        Api::Azure => format!(
            "{}/openai/deployments/{}{}?api-version={}",
            provider.base_url,
            dep.model_id,
            endpoint.path(),
            provider.api_version.as_deref().unwrap_or_default()
        ),
        Api::Mock => format!("mock://{}{}", provider.name, endpoint.path()),
        _ => format!("{}{}", provider.base_url, endpoint.path()),
    };
    uri.parse().map_err(|_| {
        GatewayError::internal(format!(
            "provider {} has a base_url that does not form a valid URL",
            provider.name
        ))
    })
}

/// A successful non-streamed answer: passed on as is. Its usage is found by a byte scan and
/// only that member is parsed (the answer itself goes to the client untouched, as a
/// pass-through proxy would); when the provider sent none, the tokenizer counts it.
pub fn read_response(
    dep: &Deployment,
    prepared: &Prepared,
    body: Bytes,
) -> Result<(Bytes, Option<ReportedUsage>), GatewayError> {
    let trimmed = body.trim_ascii();
    if !(trimmed.starts_with(b"{") && trimmed.ends_with(b"}")) {
        return Err(GatewayError::upstream(
            "The provider answered with a body that is not a JSON object.",
        ));
    }
    let usage = usage_in(&body).or_else(|| {
        let parsed = JsonObject::parse(body.clone()).ok()?;
        let output = match prepared.endpoint {
            Endpoint::Embeddings => String::new(),
            _ => parsed
                .get::<serde_json::Value>("choices")
                .ok()
                .flatten()
                .map(|c| answer_text(&c))
                .unwrap_or_default(),
        };
        Some(estimate::estimate(
            &dep.model_id,
            prepared.endpoint,
            &prepared.client_body,
            &output,
            None,
        ))
    });
    Ok((body, usage))
}

/// `"usage"` is looked for in every answer and stream chunk: its searchers are built once
/// (building one costs more than most searches).
static USAGE: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"usage\""));
static USAGE_REV: LazyLock<memmem::FinderRev<'static>> =
    LazyLock::new(|| memmem::FinderRev::new(b"\"usage\""));
static CHOICES_REV: LazyLock<memmem::FinderRev<'static>> =
    LazyLock::new(|| memmem::FinderRev::new(b"\"choices\""));

/// The value (and whatever follows it) of the last member called `name` (quotes included) in
/// a JSON object, found by a byte scan. Inside a JSON string every quote is escaped, so a
/// match preceded by `{` or `,` and followed by `:` is a real member name, never text.
fn last_member<'a>(json: &'a [u8], name: &memmem::FinderRev<'static>) -> Option<&'a [u8]> {
    let len = name.needle().len();
    name.rfind_iter(json).find_map(|at| {
        if !matches!(json[..at].trim_ascii_end().last(), Some(b',' | b'{')) {
            return None;
        }
        let value = json[at + len..].trim_ascii_start().strip_prefix(b":")?;
        Some(value.trim_ascii_start())
    })
}

/// The last `"usage": {...}` member of a JSON object.
pub(crate) fn usage_in(json: &[u8]) -> Option<ReportedUsage> {
    let value = last_member(json, &USAGE_REV)?;
    if !value.starts_with(b"{") {
        return None; // "usage": null
    }
    let mut de = serde_json::Deserializer::from_slice(value);
    let raw = <&serde_json::value::RawValue as serde::Deserialize>::deserialize(&mut de).ok()?;
    Some(ReportedUsage {
        tokens: TokenUsage::from_openai(raw.get())?,
        raw: raw.get().to_owned(),
        estimated: false,
    })
}

/// The generated text of OpenAI choices (whole messages or stream deltas): content, legacy
/// completion text, tool names and arguments.
fn answer_text(choices: &serde_json::Value) -> String {
    let mut out = String::new();
    for c in choices.as_array().into_iter().flatten() {
        let m = c.get("message").or_else(|| c.get("delta")).unwrap_or(c);
        for key in ["content", "text", "reasoning_content"] {
            if let Some(t) = m.get(key).and_then(|t| t.as_str()) {
                out.push_str(t);
            }
        }
        for tc in m
            .get("tool_calls")
            .and_then(|t| t.as_array())
            .into_iter()
            .flatten()
        {
            for key in ["name", "arguments"] {
                if let Some(t) = tc
                    .pointer(&format!("/function/{key}"))
                    .and_then(|t| t.as_str())
                {
                    out.push_str(t);
                }
            }
        }
    }
    out
}

/// Forwards an OpenAI-format SSE stream. Complete events pass through untouched; an event is
/// parsed only when the byte scan finds a `"usage"` member in it that is not `null`. When the
/// client did not ask for the usage chunk, that chunk (the one with `"choices":[]`) is cut out
/// again. Only a trailing partial event is held back, until the rest of it arrives; one
/// larger than `MAX_EVENT_BYTES` ends the stream with an error event.
pub struct PassThrough {
    strip_usage_chunk: bool,
    partial: BytesMut,
    usage: Option<ReportedUsage>,
    /// The start of what was forwarded while no usage has been seen, at most
    /// `SAMPLE_BYTES`: read again only if the stream ends without usage, to count its tokens.
    /// What came after it is only measured. A copy: a slice of the chunk would keep the whole
    /// read buffer it came from alive for as long as the stream is open.
    sample: BytesMut,
    more_bytes: u64,
    /// Set when the stream was ended by the gateway (an event over the size limit).
    failed: Option<&'static str>,
    model_id: String,
    endpoint: Endpoint,
    request: Bytes,
}

/// How much of a passed-through stream is kept to count its tokens by, should the provider
/// report none (it is asked to, so rarely). Raw SSE, a few times the text it carries: a score
/// of events for a close count (scaled to the whole by bytes), little enough that thousands of
/// open streams hold little. Taken at the sample's first use, once, so it never grows by
/// doubling past what it may hold.
const SAMPLE_BYTES: usize = 4 * 1024;

// An SSE event ends at a blank line: "\n\n" or "\n\r\n". Found from each '\n' with memchr,
// because a substring searcher is built per call and that cost more than the scan itself.

/// Index just past the last event boundary in `buf` (0 when there is none).
fn last_event_end(buf: &[u8]) -> usize {
    let mut end = buf.len();
    while let Some(p) = memchr::memrchr(b'\n', &buf[..end]) {
        let before = &buf[..p];
        if before.ends_with(b"\n") || before.ends_with(b"\n\r") {
            return p + 1;
        }
        end = p;
    }
    0
}

/// Index just past the first event boundary at or after `from` (the end of `buf` when none).
fn next_event_end(buf: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(n) = memchr::memchr(b'\n', &buf[i..]) {
        let at = i + n;
        match buf.get(at + 1) {
            Some(b'\n') => return at + 2,
            Some(b'\r') if buf.get(at + 2) == Some(&b'\n') => return at + 3,
            _ => i = at + 1,
        }
    }
    buf.len()
}

/// Index just past the first complete event at or after `from`, if one has fully arrived.
pub(crate) fn complete_event_end(buf: &[u8], from: usize) -> Option<usize> {
    let end = next_event_end(buf, from);
    let blank_line = |b: &[u8]| b.ends_with(b"\n\n") || b.ends_with(b"\n\r\n");
    (end > from && (end < buf.len() || blank_line(&buf[..end]))).then_some(end)
}

/// The `data` of one complete SSE event (sse-parse does the field parsing).
pub(crate) fn event_data(event: &[u8]) -> String {
    let mut parser = sse_parse::SseParser::new();
    parser.feed(event);
    parser.finish();
    parser.next_event().map(|e| e.data).unwrap_or_default()
}

/// Whether a `"usage"` the byte scan found can be passed over without parsing its event: it
/// was a string value, not a member name (`,` `}` `]` follow), or the member is `null` on the
/// same line, as on every chunk once usage is asked for. Anything else (an object, a value
/// on the next `data:` line) is parsed.
fn usage_is_absent(after_name: &[u8]) -> bool {
    let rest = after_name.trim_ascii_start();
    match rest.first() {
        Some(b',' | b'}' | b']') => true,
        Some(b':') => rest[1..].trim_ascii_start().starts_with(b"null"),
        _ => false,
    }
}

/// The usage chunk is the one whose `choices` is empty. Found by the same member scan as
/// the usage: parsing the whole event again cost more than everything else a stream does.
fn has_no_choices(event_data: &[u8]) -> bool {
    last_member(event_data, &CHOICES_REV)
        .and_then(|v| v.strip_prefix(b"["))
        .is_some_and(|rest| rest.trim_ascii_start().starts_with(b"]"))
}

impl PassThrough {
    pub fn new(dep: &Deployment, prepared: &Prepared) -> PassThrough {
        PassThrough {
            strip_usage_chunk: !prepared.client_wants_usage,
            partial: BytesMut::new(),
            usage: None,
            sample: BytesMut::new(),
            more_bytes: 0,
            failed: None,
            model_id: dep.model_id.clone(),
            endpoint: prepared.endpoint,
            request: prepared.client_body.clone(),
        }
    }

    /// The provider's usage; when the stream brought none, an estimate from the request and
    /// the forwarded chunks (counted on the kept sample, scaled to the bytes forwarded).
    pub fn usage(&self) -> Option<ReportedUsage> {
        if let Some(u) = &self.usage {
            return Some(u.clone());
        }
        if self.sample.is_empty() && self.more_bytes == 0 {
            return None;
        }
        let mut parser = sse_parse::SseParser::new();
        let mut output = String::new();
        parser.feed(&self.sample);
        while let Some(ev) = parser.next_event() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&ev.data) {
                output.push_str(&answer_text(&v["choices"]));
            }
        }
        let counted = estimate::count_text(&self.model_id, &output);
        let output_tokens = estimate::scale_to_whole(counted, self.sample.len(), self.more_bytes);
        Some(estimate::estimate_counted(
            &self.model_id,
            self.endpoint,
            &self.request,
            output_tokens,
            None,
        ))
    }

    /// Set when the gateway ended the stream with an error event.
    pub fn error_type(&self) -> Option<&'static str> {
        self.failed
    }

    /// Bytes this stream holds: the partial event and the sample kept for counting.
    pub fn retained_bytes(&self) -> usize {
        self.partial.capacity() + self.sample.capacity()
    }

    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        let out = self.forward(chunk);
        self.keep_for_count(&out);
        out
    }

    /// Keeps the start of the answer for counting while no usage has been seen.
    fn keep_for_count(&mut self, out: &Bytes) {
        if self.usage.is_some() {
            if self.sample.capacity() > 0 {
                self.sample = BytesMut::new();
            }
            return;
        }
        let room = SAMPLE_BYTES.saturating_sub(self.sample.len());
        let kept = if out.len() <= room {
            out.len()
        } else if self.sample.is_empty() {
            // At least one whole event, however large, so there is something to count by.
            last_event_end(&out[..room]).max(next_event_end(out, 0))
        } else {
            last_event_end(&out[..room])
        };
        if kept > 0 {
            if self.sample.capacity() == 0 {
                self.sample.reserve(kept.max(SAMPLE_BYTES));
            }
            self.sample.extend_from_slice(&out[..kept]);
        }
        self.more_bytes += (out.len() - kept) as u64;
    }

    fn forward(&mut self, chunk: Bytes) -> Bytes {
        if self.failed.is_some() {
            return Bytes::new();
        }
        let data = if self.partial.is_empty() {
            chunk
        } else {
            // A boundary that ends in the new bytes starts at most two bytes before them:
            // the bytes held already were searched.
            let searched = self.partial.len().saturating_sub(2);
            self.partial.extend_from_slice(&chunk);
            if last_event_end(&self.partial[searched..]) == 0 {
                return self.check_partial();
            }
            self.partial.split().freeze()
        };
        let end = last_event_end(&data);
        if end < data.len() {
            self.partial.extend_from_slice(&data[end..]);
        }
        let out = self.scan(data.slice(..end));
        if self.partial.len() > MAX_EVENT_BYTES {
            let mut out = BytesMut::from(&out[..]);
            out.extend_from_slice(&self.check_partial());
            return out.freeze();
        }
        out
    }

    /// An event still incomplete past `MAX_EVENT_BYTES` ends the stream: it is dropped and the
    /// client is told with an error event.
    fn check_partial(&mut self) -> Bytes {
        if self.partial.len() <= MAX_EVENT_BYTES {
            return Bytes::new();
        }
        self.partial = BytesMut::new();
        self.failed = Some("upstream_event_too_large");
        let mut out = Vec::new();
        chat::event_too_large(&mut out);
        Bytes::from(out)
    }

    /// Reads the usage from the events that carry one and cuts the usage chunk when asked to.
    /// Most chunks mention no usage at all and come back as they are.
    fn scan(&mut self, complete: Bytes) -> Bytes {
        let mut next = USAGE.find(&complete);
        if next.is_none() {
            return complete;
        }
        let mut keep: Vec<std::ops::Range<usize>> = Vec::new();
        let mut kept_from = 0;
        while let Some(at) = next {
            let end = next_event_end(&complete, at);
            if !usage_is_absent(&complete[at + USAGE.needle().len()..end]) {
                let start = last_event_end(&complete[..at]);
                let data = event_data(&complete[start..end]);
                if let Some(u) = usage_in(data.as_bytes()) {
                    self.usage = Some(u);
                    if self.strip_usage_chunk && has_no_choices(data.as_bytes()) {
                        keep.push(kept_from..start);
                        kept_from = end;
                    }
                }
            }
            next = USAGE.find(&complete[end..]).map(|i| end + i);
        }
        if keep.is_empty() {
            return complete;
        }
        keep.push(kept_from..complete.len());
        let mut out = BytesMut::with_capacity(complete.len());
        for r in keep {
            out.extend_from_slice(&complete[r]);
        }
        out.freeze()
    }

    /// A stream that ended inside an event: send what arrived, as the provider sent it.
    pub fn finish(&mut self) -> Bytes {
        let rest = self.partial.split().freeze();
        if rest.is_empty() {
            return rest;
        }
        let mut rest = BytesMut::from(&rest[..]);
        rest.extend_from_slice(b"\n\n");
        let out = self.scan(rest.freeze());
        self.keep_for_count(&out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::deployment;

    #[test]
    fn event_boundaries_are_blank_lines_of_either_kind() {
        let buf = b"data: a\n\ndata: b\r\n\r\ndata: c\n";
        assert_eq!(last_event_end(buf), 20, "just past the CRLF blank line");
        assert_eq!(next_event_end(buf, 0), 9);
        assert_eq!(next_event_end(buf, 9), 20);
        assert_eq!(next_event_end(buf, 20), buf.len(), "no boundary: the end");
        assert_eq!(last_event_end(b"data: partial\n"), 0);
        assert_eq!(last_event_end(b"\n\n"), 2);
        assert_eq!(last_event_end(b""), 0);
        // "\r\n\r\n" ends with "\n\r\n"; a lone "\r\n" is no boundary.
        assert_eq!(next_event_end(b"x\r\ny\r\n\r\nz", 0), 8);
    }

    fn pass(strip_usage_chunk: bool) -> PassThrough {
        let dep = deployment(Api::Openai, "gpt-4o-mini");
        let body =
            r#"{"model":"m","messages":[{"role":"user","content":"hello world"}],"stream":true}"#;
        let mut p = crate::providers::testing::prepared_for(&dep, body, false);
        p.client_wants_usage = !strip_usage_chunk;
        PassThrough::new(&dep, &p)
    }

    const STREAM: &str = concat!(
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1,\"total_tokens\":10}}\n\n",
        "data: [DONE]\n\n"
    );

    fn run(t: &mut PassThrough, pieces: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in pieces {
            out.extend_from_slice(&t.push(Bytes::copy_from_slice(p)));
        }
        out.extend_from_slice(&t.finish());
        out
    }

    #[test]
    fn usage_is_read_and_kept_when_the_client_asked() {
        let mut t = pass(false);
        let out = run(&mut t, &[STREAM.as_bytes()]);
        assert_eq!(out, STREAM.as_bytes());
        let u = t.usage().unwrap();
        assert_eq!((u.tokens.input, u.tokens.output), (9, 1));
    }

    #[test]
    fn usage_chunk_is_cut_when_the_client_did_not_ask() {
        let mut t = pass(true);
        let out = String::from_utf8(run(&mut t, &[STREAM.as_bytes()])).unwrap();
        assert!(!out.contains("\"choices\":[]"), "{out}");
        assert!(out.ends_with("data: [DONE]\n\n"));
        assert_eq!(out.matches("data: ").count(), 4);
        assert_eq!(t.usage().unwrap().tokens.output, 1);
    }

    #[test]
    fn events_split_anywhere_give_the_same_bytes_and_usage() {
        let bytes = STREAM.as_bytes();
        for cut in 1..bytes.len() {
            let mut t = pass(true);
            let out = run(&mut t, &[&bytes[..cut], &bytes[cut..]]);
            let mut whole = pass(true);
            assert_eq!(out, run(&mut whole, &[bytes]), "cut at {cut}");
            assert_eq!(t.usage().unwrap().tokens.input, 9, "cut at {cut}");
        }
    }

    #[test]
    fn crlf_events_and_usage_on_a_content_chunk() {
        let s = "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\r\n\r\ndata: [DONE]\r\n\r\n";
        let mut t = pass(true);
        let out = run(&mut t, &[s.as_bytes()]);
        // a chunk with content is never cut, even when it carries the usage
        assert_eq!(out, s.as_bytes());
        assert_eq!(t.usage().unwrap().tokens.output, 2);
    }

    #[test]
    fn usage_is_found_by_its_member_name_not_by_text() {
        let body = br#"{"choices":[{"message":{"content":"my \"usage\": {\"prompt_tokens\": 99}"}}],"usage":{"prompt_tokens":7,"completion_tokens":2}}"#;
        let u = usage_in(body).unwrap();
        assert_eq!((u.tokens.input, u.tokens.output), (7, 2));
        assert!(usage_in(br#"{"text":"\"usage\":{\"prompt_tokens\":1}"}"#).is_none());
        assert!(usage_in(br#"{"usage":null}"#).is_none());
        let dep = deployment(Api::Openai, "gpt-4o-mini");
        let p =
            crate::providers::testing::prepared_for(&dep, r#"{"model":"m","messages":[]}"#, false);
        let spaced = Bytes::from_static(br#"{"id":"x", "usage" : {"prompt_tokens": 3}}"#);
        let (_, u) = read_response(&dep, &p, spaced).unwrap();
        assert_eq!(u.unwrap().tokens.input, 3);
        assert!(read_response(&dep, &p, Bytes::from_static(b"<html>")).is_err());
    }

    #[test]
    fn the_usage_chunk_is_told_by_its_empty_choices_member() {
        assert!(has_no_choices(br#"{"id":"c","choices":[],"usage":{}}"#));
        assert!(has_no_choices(br#"{"id":"c", "choices" : [ ] }"#));
        assert!(!has_no_choices(
            br#"{"choices":[{"delta":{"content":"x"}}]}"#
        ));
        assert!(
            !has_no_choices(br#"{"text":"\"choices\":[]"}"#),
            "text, not a member"
        );
        assert!(!has_no_choices(br#"{"usage":{}}"#));
    }

    #[test]
    fn a_stream_cut_mid_event_still_delivers_what_came() {
        let mut t = pass(true);
        let out = run(&mut t, &[b"data: {\"choices\":[]"]);
        assert!(out.starts_with(b"data: {\"choices\":[]"));
        let u = t.usage().unwrap();
        assert!(u.estimated, "no usage arrived: the prompt is counted");
        assert!(u.tokens.input > 0);
    }

    #[test]
    fn a_stream_without_usage_is_counted_with_the_tokenizer() {
        let s = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello\"}}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" world\"}}]}\n\ndata: [DONE]\n\n";
        let mut t = pass(true);
        let out = run(&mut t, &[s.as_bytes()]);
        assert_eq!(out, s.as_bytes());
        let u = t.usage().unwrap();
        assert!(u.estimated);
        assert_eq!(u.tokens.output, 2);
        // and a stream with usage is not counted again
        let mut t = pass(true);
        run(&mut t, &[STREAM.as_bytes()]);
        assert!(!t.usage().unwrap().estimated);
        assert!(t.sample.is_empty());
    }

    #[test]
    fn usage_is_read_however_its_event_is_written() {
        let role =
            "data: {\"choices\": [{\"delta\": {\"role\": \"assistant\"}}], \"usage\": null}\n\n";
        for usage_event in [
            // spaced, the member before `choices`
            "data: {\"usage\": {\"prompt_tokens\": 9, \"completion_tokens\": 1}, \"choices\": []}\n\n",
            // the value on the next data line
            "data: {\"choices\": [],\ndata:  \"usage\":\ndata:   {\"prompt_tokens\": 9, \"completion_tokens\": 1}}\n\n",
            // the name and the colon on different lines, CRLF
            "data: {\"choices\":[],\"usage\"\r\ndata: :{\"prompt_tokens\":9,\"completion_tokens\":1}}\r\n\r\n",
        ] {
            let stream = format!("{role}{usage_event}data: [DONE]\n\n");
            let mut t = pass(true);
            let out = String::from_utf8(run(&mut t, &[stream.as_bytes()])).unwrap();
            let u = t.usage().expect(usage_event);
            assert_eq!((u.tokens.input, u.tokens.output, u.estimated), (9, 1, false));
            assert_eq!(out, format!("{role}data: [DONE]\n\n"), "usage chunk cut");
        }
        // the word "usage" as a value is no usage
        let text = "data: {\"choices\":[{\"delta\":{\"content\":\"usage\"}}],\"usage\":null}\n\n";
        let mut t = pass(true);
        assert_eq!(run(&mut t, &[text.as_bytes()]), text.as_bytes());
        assert!(t.usage().unwrap().estimated);
    }

    /// What the translator keeps of a chunk is a copy: a slice would keep the read buffer the
    /// chunk came from (8 KiB or more for a few bytes of event) alive while the stream is open.
    #[test]
    fn the_kept_sample_does_not_hold_the_read_buffer() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        struct ReadBuffer(Vec<u8>, Arc<AtomicBool>);
        impl AsRef<[u8]> for ReadBuffer {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }
        impl Drop for ReadBuffer {
            fn drop(&mut self) {
                self.1.store(true, Ordering::SeqCst);
            }
        }
        let event = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";
        let freed = Arc::new(AtomicBool::new(false));
        let mut t = pass(true);
        let out = t.push(Bytes::from_owner(ReadBuffer(event.to_vec(), freed.clone())));
        assert_eq!(out, &event[..]);
        drop(out);
        assert!(
            freed.load(Ordering::SeqCst),
            "the read buffer is still held"
        );
        assert_eq!(
            t.usage().unwrap().tokens.output,
            1,
            "the copy is still counted"
        );
    }

    /// ~50 MB of answer with no usage: what the translator holds stays bounded, and the
    /// estimate still counts the whole answer.
    #[test]
    fn a_huge_stream_without_usage_is_held_in_bounded_memory() {
        let event = format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n",
            "hello world ".repeat(1000)
        );
        let mut t = pass(true);
        let mut sent = 0usize;
        let mut most_held = 0;
        while sent < 50_000_000 {
            // events split across reads, as a network splits them
            let (a, b) = event.as_bytes().split_at(event.len() / 3);
            assert_eq!(t.push(Bytes::copy_from_slice(a)).len(), 0);
            assert_eq!(t.push(Bytes::copy_from_slice(b)).len(), event.len());
            most_held = most_held.max(t.retained_bytes());
            sent += event.len();
        }
        assert!(t.finish().is_empty());
        assert!(
            most_held <= SAMPLE_BYTES + 2 * event.len(),
            "held {most_held} bytes"
        );
        let u = t.usage().unwrap();
        assert!(u.estimated);
        let words = 2 * 1000 * (sent / event.len()) as u64;
        assert!(
            u.tokens.output.abs_diff(words) < words / 50,
            "{} vs {words}",
            u.tokens.output
        );
    }

    #[test]
    fn an_event_that_never_ends_is_cut_with_an_error_event() {
        let mut t = pass(true);
        let first = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
        assert_eq!(t.push(Bytes::from(first)), first.as_bytes());
        let mut out = Vec::new();
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        out.extend_from_slice(&t.push(Bytes::from_static(b"data: {\"choices\":")));
        for _ in 0..(MAX_EVENT_BYTES / chunk.len() + 2) {
            out.extend_from_slice(&t.push(chunk.clone()));
            assert!(t.retained_bytes() <= MAX_EVENT_BYTES + 2 * chunk.len());
        }
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("data: {\"error\""), "{out}");
        assert!(out.contains("upstream_event_too_large"));
        assert_eq!(t.error_type(), Some("upstream_event_too_large"));
        assert!(t.push(chunk).is_empty(), "nothing after the error");
        assert!(t.finish().is_empty());
    }

    #[test]
    fn whole_answer_without_usage_is_estimated() {
        let dep = deployment(Api::Openai, "gpt-4o-mini");
        let p = crate::providers::testing::prepared_for(
            &dep,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            false,
        );
        let body = Bytes::from_static(br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"hello world","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}}]}"#);
        let (out, u) = read_response(&dep, &p, body.clone()).unwrap();
        assert_eq!(out, body);
        let u = u.unwrap();
        assert!(u.estimated);
        assert!(u.tokens.output >= 3);
        let with = Bytes::from_static(
            br#"{"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":1}}"#,
        );
        let (_, u) = read_response(&dep, &p, with).unwrap();
        assert!(!u.unwrap().estimated);
    }

    #[test]
    fn azure_uses_the_deployment_url_api_version_and_api_key() {
        let dep = deployment(Api::Azure, "my-gpt4o");
        for (endpoint, body, path) in [
            (
                Endpoint::ChatCompletions,
                r#"{"model":"gpt","messages":[{"role":"user","content":"x"}],"stream":true}"#,
                "chat/completions",
            ),
            (
                Endpoint::Embeddings,
                r#"{"model":"gpt","input":"x"}"#,
                "embeddings",
            ),
        ] {
            let obj = JsonObject::parse(Bytes::copy_from_slice(body.as_bytes())).unwrap();
            let p = prepare(&dep, endpoint, &obj).unwrap();
            assert_eq!(
                p.request.uri.to_string(),
                format!("https://res.openai.azure.com/openai/deployments/my-gpt4o/{path}?api-version=2024-10-21")
            );
            assert_eq!(p.request.headers["api-key"], "sk-test");
            assert!(p.request.headers.get("authorization").is_none());
            let sent: serde_json::Value = serde_json::from_slice(&p.request.body).unwrap();
            assert_eq!(sent["model"], "my-gpt4o");
            if endpoint == Endpoint::ChatCompletions {
                assert_eq!(sent["stream_options"]["include_usage"], true);
                assert!(!p.client_wants_usage);
            }
        }
    }
}
