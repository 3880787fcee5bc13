//! The start of a stream, held back until its first content: a provider that fails before it
//! (an error event, data that is not an event stream, a stream that ends) can still fall back
//! or become a proper HTTP error. The held events are the translator's OpenAI-format output,
//! parsed here as JSON, so content is found however the provider spaced, ordered, escaped or
//! split its JSON. This runs once per stream, only until content begins; after that the
//! stream is forwarded without a parse.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::providers::openai::complete_event_end;

/// The most a stream's start is held back. A provider that sends this much without content
/// (role chunks, empty deltas, comments) has its stream committed and sent as it is.
pub const MAX_HELD_BYTES: usize = 1024 * 1024;

/// What the events so far say about the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No content yet: keep holding.
    Waiting,
    /// Content arrived (or the held bytes reached their bound): send what is held.
    Begun,
    /// The provider failed before any content; says how.
    Failed(&'static str),
}

pub struct Opening {
    parser: sse_parse::SseParser,
    held: BytesMut,
    /// How far `held` has been fed to the parser: up to the end of its last complete event.
    read: usize,
}

impl Opening {
    pub fn new() -> Opening {
        Opening {
            parser: sse_parse::SseParser::new(),
            held: BytesMut::new(),
            read: 0,
        }
    }

    /// Holds `out` (translated bytes) and reads the events it completes, one at a time and
    /// only until content: a provider that sends its whole answer in one read is not parsed
    /// past its first content.
    pub fn push(&mut self, out: &[u8]) -> Verdict {
        if out.is_empty() {
            return Verdict::Waiting;
        }
        self.held.extend_from_slice(out);
        while let Some(end) = complete_event_end(&self.held, self.read) {
            self.parser.feed(&self.held[self.read..end]);
            self.read = end;
            while let Some(event) = self.parser.next_event() {
                match classify(&event.data) {
                    Event::Content => return Verdict::Begun,
                    Event::Error => return Verdict::Failed("an error event"),
                    Event::Unreadable => return Verdict::Failed("data that is not a JSON event"),
                    Event::Preamble => {}
                }
            }
        }
        if self.held.len() > MAX_HELD_BYTES {
            return Verdict::Begun;
        }
        Verdict::Waiting
    }

    pub fn into_held(self) -> Bytes {
        self.held.freeze()
    }
}

enum Event {
    Content,
    Error,
    Unreadable,
    /// Nothing a client would show: a role-only chunk, an empty delta, `usage: null`.
    Preamble,
}

/// The members of a stream chunk that tell content from a preamble, borrowed as raw JSON:
/// nothing is allocated for what is only looked at.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow)]
    error: Option<&'a RawValue>,
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
    #[serde(borrow)]
    choices: Option<Vec<Choice<'a>>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    finish_reason: Option<&'a RawValue>,
    /// Legacy completions carry their text on the choice itself.
    #[serde(borrow)]
    text: Option<&'a RawValue>,
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
    #[serde(borrow)]
    message: Option<Delta<'a>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    refusal: Option<&'a RawValue>,
    #[serde(borrow)]
    reasoning: Option<&'a RawValue>,
    #[serde(borrow)]
    reasoning_content: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_calls: Option<&'a RawValue>,
    #[serde(borrow)]
    function_call: Option<&'a RawValue>,
}

/// What one event of an OpenAI-format stream is. Content is any generated text, refusal or
/// reasoning, a tool or function call, a finish reason, the usage, or the end (`[DONE]`).
fn classify(data: &str) -> Event {
    let data = data.trim();
    if data == "[DONE]" {
        return Event::Content;
    }
    // A struct would also take a JSON array, field by field: a chunk is an object.
    if !data.starts_with('{') {
        return Event::Unreadable;
    }
    let Ok(chunk) = serde_json::from_str::<Chunk>(data) else {
        return Event::Unreadable;
    };
    if chunk.error.is_some() {
        return Event::Error;
    }
    let has_usage = chunk.usage.is_some_and(|u| u.get().starts_with('{'));
    let choices = chunk.choices.unwrap_or_default();
    if has_usage || choices.iter().any(choice_has_content) {
        Event::Content
    } else {
        Event::Preamble
    }
}

fn choice_has_content(choice: &Choice) -> bool {
    if given(choice.finish_reason) || given(choice.text) {
        return true;
    }
    let Some(d) = choice.delta.as_ref().or(choice.message.as_ref()) else {
        return false;
    };
    [
        d.content,
        d.refusal,
        d.reasoning,
        d.reasoning_content,
        d.tool_calls,
        d.function_call,
    ]
    .into_iter()
    .any(given)
}

/// Whether a member holds something: not null (serde gives None for it), not an empty
/// string, not an empty array.
fn given(value: Option<&RawValue>) -> bool {
    let Some(raw) = value.map(RawValue::get) else {
        return false;
    };
    match raw.as_bytes()[0] {
        b'"' => raw != "\"\"",
        b'[' => !raw[1..].trim_start().starts_with(']'),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(events: &[&str]) -> Verdict {
        let mut opening = Opening::new();
        let mut last = Verdict::Waiting;
        for e in events {
            last = opening.push(e.as_bytes());
            if last != Verdict::Waiting {
                break;
            }
        }
        last
    }

    #[test]
    fn content_is_found_however_the_json_is_written() {
        let role = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n";
        assert_eq!(verdict(&[role]), Verdict::Waiting);
        for content in [
            "data: {\"choices\":[{\"delta\":{\"content\":\"one \"}}]}\n\n",
            "data: {\"choices\": [{\"delta\": {\"content\": \"one \"}}]}\n\n",
            "data: {\ndata:   \"choices\": [\ndata:     {\ndata:       \"delta\": {\ndata:   \"content\": \"one \"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"\\u006fne\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\"}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"hm\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"refusal\":\"no\"}}]}\n\n",
            "data: {\"choices\":[{\"text\":\"legacy\",\"index\":0}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n",
            "data: [DONE]\n\n",
        ] {
            assert_eq!(verdict(&[role, content]), Verdict::Begun, "{content}");
        }
        // an event split across reads is read once it is whole
        assert_eq!(
            verdict(&[
                "data: {\"choices\": [{\"delta\": {\"con",
                "tent\": \"x\"}}]}\n",
                "\n"
            ]),
            Verdict::Begun
        );
    }

    #[test]
    fn errors_and_garbage_before_content_fail() {
        let error = "data: {\"error\": {\"message\": \"overloaded\"}}\n\n";
        assert_eq!(verdict(&[error]), Verdict::Failed("an error event"));
        for garbage in ["data: <html>\n\n", "data: [1,2]\n\n", "data: hello\n\n"] {
            assert_eq!(
                verdict(&[garbage]),
                Verdict::Failed("data that is not a JSON event"),
                "{garbage}"
            );
        }
        // comments and lines that are no fields make no event at all
        assert_eq!(verdict(&[": keep-alive\n\n<html>\n"]), Verdict::Waiting);
    }

    #[test]
    fn the_held_start_is_bounded() {
        let role =
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
        let mut opening = Opening::new();
        let mut pushed = 0;
        while opening.push(role.as_bytes()) == Verdict::Waiting {
            pushed += role.len();
            assert!(pushed <= MAX_HELD_BYTES, "still holding past the bound");
        }
        assert!(opening.into_held().len() <= MAX_HELD_BYTES + role.len());
    }
}
