//! Identifiers the gateway makes up: row and request ids, and the ids of answers and tool
//! calls a provider sent none for. At the bottom of the module tree, so the store and the
//! pure translators take their ids from here and not from each other.

/// A time-ordered UUID (v7) as text. Encoded into a buffer rather than through `Display`,
/// which costs several times more; two are made per request.
pub fn new_id() -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    uuid::Uuid::now_v7()
        .hyphenated()
        .encode_lower(&mut buf)
        .to_owned()
}

/// A chat completion id for providers that give none: `chatcmpl-` and a fresh id.
pub fn new_completion_id() -> String {
    format!("chatcmpl-{}", new_id())
}

/// A tool call id for providers that give none: `call_` and 24 random alphanumerics.
pub fn new_tool_call_id() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    format!(
        "call_{}",
        Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
    )
}
