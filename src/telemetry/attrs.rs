//! The spans' attributes: their names (the OpenTelemetry GenAI semantic conventions', and
//! Tollgate's own under `tollgate.`), the provider kinds in the conventions' words, and the
//! attribute lists each moment of a request adds. Pure: unit tested without an exporter.
//!
//! Never a prompt, an answer or a key: only names, counts, statuses and times. A string the
//! client chose (the model it asked for) is cut to `MAX_CLIENT_TEXT` bytes.

use opentelemetry::KeyValue;

use crate::config::Api;

pub const OPERATION: &str = "gen_ai.operation.name";
/// The conventions' older name for the provider (kept: most GenAI views still read it).
pub const SYSTEM: &str = "gen_ai.system";
/// Its newer name.
pub const PROVIDER_NAME: &str = "gen_ai.provider.name";
pub const REQUEST_MODEL: &str = "gen_ai.request.model";
pub const REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
pub const REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
pub const REQUEST_TOP_P: &str = "gen_ai.request.top_p";
pub const REQUEST_STREAM: &str = "gen_ai.request.stream";
pub const RESPONSE_MODEL: &str = "gen_ai.response.model";
pub const INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
pub const OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
pub const CACHE_READ_TOKENS: &str = "gen_ai.usage.cache_read.input_tokens";
pub const CACHE_WRITE_TOKENS: &str = "gen_ai.usage.cache_creation.input_tokens";
pub const REASONING_TOKENS: &str = "gen_ai.usage.reasoning.output_tokens";
pub const TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";
pub const HTTP_STATUS: &str = "http.response.status_code";
pub const ERROR_TYPE: &str = "error.type";
pub const SERVER_ADDRESS: &str = "server.address";
pub const SERVER_PORT: &str = "server.port";

pub const REQUEST_ID: &str = "tollgate.request_id";
pub const SURFACE: &str = "tollgate.surface";
pub const PROVIDER: &str = "tollgate.provider";
pub const DEPLOYMENT: &str = "tollgate.deployment";
pub const COST_USD: &str = "tollgate.cost_usd";
pub const CACHE_HIT: &str = "tollgate.cache_hit";
pub const ATTEMPTS: &str = "tollgate.attempts";
pub const FALLBACKS: &str = "tollgate.fallbacks";
pub const ATTEMPT: &str = "tollgate.attempt";
pub const OUTCOME: &str = "tollgate.attempt.outcome";
pub const REASON: &str = "tollgate.reason";

/// The most bytes of client-chosen text an attribute carries.
pub const MAX_CLIENT_TEXT: usize = 256;

/// `gen_ai.system` for a provider kind. The `openai` kind covers every OpenAI-compatible
/// server, whose own name `tollgate.provider` and `server.address` tell.
pub fn system(api: Api) -> &'static str {
    match api {
        Api::Openai => "openai",
        Api::Azure => "az.ai.openai",
        Api::Anthropic => "anthropic",
        Api::Gemini => "gcp.gemini",
        Api::Mock => "tollgate.mock",
    }
}

/// `gen_ai.provider.name` for a provider kind (the conventions renamed Azure's value).
pub fn provider_name(api: Api) -> &'static str {
    match api {
        Api::Azure => "azure.ai.openai",
        other => system(other),
    }
}

/// At most `MAX_CLIENT_TEXT` bytes of `text`, cut at a character boundary.
pub fn bounded(text: &str) -> &str {
    if text.len() <= MAX_CLIENT_TEXT {
        return text;
    }
    let mut end = MAX_CLIENT_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A count as the attribute's integer (counts are clamped far below `i64::MAX`).
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// What the client asked for, once its body is read.
#[derive(Debug, Clone, Default)]
pub struct Requested<'a> {
    pub model: &'a str,
    pub stream: bool,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
}

pub fn requested(r: &Requested<'_>) -> Vec<KeyValue> {
    let mut kv = vec![
        KeyValue::new(REQUEST_MODEL, bounded(r.model).to_owned()),
        KeyValue::new(REQUEST_STREAM, r.stream),
    ];
    if let Some(n) = r.max_tokens {
        kv.push(KeyValue::new(REQUEST_MAX_TOKENS, int(n)));
    }
    if let Some(t) = r.temperature {
        kv.push(KeyValue::new(REQUEST_TEMPERATURE, t));
    }
    if let Some(p) = r.top_p {
        kv.push(KeyValue::new(REQUEST_TOP_P, p));
    }
    kv
}

/// A deployment an attempt goes to: its provider, of what kind, and the model there.
#[derive(Debug, Clone, Copy)]
pub struct Upstream<'a> {
    pub provider: &'a str,
    pub api: Api,
    /// The provider's own model id, sent upstream.
    pub model_id: &'a str,
    /// The public name of the deployment (a registry name, not the client's text).
    pub deployment: &'a str,
}

/// An attempt's attributes as it is sent: where to, and which of the request's attempts.
pub fn attempt(
    operation: &'static str,
    u: &Upstream<'_>,
    number: u32,
    uri: &http::Uri,
) -> Vec<KeyValue> {
    let mut kv = vec![
        KeyValue::new(OPERATION, operation),
        KeyValue::new(SYSTEM, system(u.api)),
        KeyValue::new(PROVIDER_NAME, provider_name(u.api)),
        KeyValue::new(REQUEST_MODEL, u.model_id.to_owned()),
        KeyValue::new(PROVIDER, u.provider.to_owned()),
        KeyValue::new(DEPLOYMENT, u.deployment.to_owned()),
        KeyValue::new(ATTEMPT, i64::from(number)),
    ];
    if let Some(host) = uri.host() {
        kv.push(KeyValue::new(SERVER_ADDRESS, host.to_owned()));
        let port = uri.port_u16().or(match uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        });
        if let Some(port) = port {
            kv.push(KeyValue::new(SERVER_PORT, i64::from(port)));
        }
    }
    kv
}

/// How an attempt came out, in `tollgate.attempt.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It answered: its answer went to the client.
    Answered,
    /// It failed (no answer in time, a connect error, a 5xx, a broken answer): the next
    /// deployment was tried.
    Failed,
    /// The provider answered 429: the next deployment was tried.
    RateLimited,
    /// The provider refused the request itself (a 4xx): that is the client's answer.
    Refused,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Answered => "answered",
            Verdict::Failed => "failed",
            Verdict::RateLimited => "rate_limited",
            Verdict::Refused => "refused",
        }
    }
}

/// Tokens as the usage row counts them: `input` is the uncached part of the prompt, `output`
/// every completion token (reasoning included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub output: u64,
    pub reasoning: u64,
}

/// How the request ended: what its usage row records.
#[derive(Debug, Clone, Default)]
pub struct Finished<'a> {
    pub status: u16,
    pub error_type: Option<&'a str>,
    pub tokens: Option<Tokens>,
    /// The exact cost, as the usage row's decimal (a float would round it).
    pub cost_usd: Option<rust_decimal::Decimal>,
    pub cache_hit: bool,
    pub attempts: u32,
    /// The deployment whose answer (or last failure) it was.
    pub upstream: Option<Upstream<'a>>,
    /// A stream's time to its first byte.
    pub first_chunk: Option<std::time::Duration>,
}

pub fn finished(f: &Finished<'_>) -> Vec<KeyValue> {
    let mut kv = vec![
        KeyValue::new(HTTP_STATUS, i64::from(f.status)),
        KeyValue::new(CACHE_HIT, f.cache_hit),
        KeyValue::new(ATTEMPTS, i64::from(f.attempts)),
        KeyValue::new(FALLBACKS, i64::from(f.attempts.saturating_sub(1))),
    ];
    if let Some(e) = f.error_type {
        kv.push(KeyValue::new(ERROR_TYPE, e.to_owned()));
    }
    if let Some(u) = &f.upstream {
        kv.push(KeyValue::new(SYSTEM, system(u.api)));
        kv.push(KeyValue::new(PROVIDER_NAME, provider_name(u.api)));
        kv.push(KeyValue::new(PROVIDER, u.provider.to_owned()));
        kv.push(KeyValue::new(RESPONSE_MODEL, u.model_id.to_owned()));
    }
    if let Some(t) = &f.tokens {
        tokens(t, &mut kv);
    }
    if let Some(cost) = f.cost_usd {
        kv.push(KeyValue::new(COST_USD, cost.normalize().to_string()));
    }
    if let Some(d) = f.first_chunk {
        kv.push(KeyValue::new(TIME_TO_FIRST_CHUNK, d.as_secs_f64()));
    }
    kv
}

/// The conventions count the whole prompt, cached parts included, as input tokens.
fn tokens(t: &Tokens, kv: &mut Vec<KeyValue>) {
    let prompt = t.input + t.cache_read + t.cache_write;
    kv.push(KeyValue::new(INPUT_TOKENS, int(prompt)));
    kv.push(KeyValue::new(OUTPUT_TOKENS, int(t.output)));
    for (name, n) in [
        (CACHE_READ_TOKENS, t.cache_read),
        (CACHE_WRITE_TOKENS, t.cache_write),
        (REASONING_TOKENS, t.reasoning),
    ] {
        if n > 0 {
            kv.push(KeyValue::new(name, int(n)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::Value;

    fn get<'a>(kv: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        kv.iter().find(|k| k.key.as_str() == key).map(|k| &k.value)
    }

    #[test]
    fn provider_kinds_are_named_as_the_conventions_name_them() {
        let cases = [
            (Api::Openai, "openai", "openai"),
            (Api::Azure, "az.ai.openai", "azure.ai.openai"),
            (Api::Anthropic, "anthropic", "anthropic"),
            (Api::Gemini, "gcp.gemini", "gcp.gemini"),
            (Api::Mock, "tollgate.mock", "tollgate.mock"),
        ];
        for (api, sys, name) in cases {
            assert_eq!((system(api), provider_name(api)), (sys, name), "{api:?}");
        }
    }

    #[test]
    fn client_text_is_cut_at_a_character_boundary() {
        assert_eq!(bounded("gpt-4o"), "gpt-4o");
        let long = "é".repeat(MAX_CLIENT_TEXT);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_CLIENT_TEXT && cut.len() >= MAX_CLIENT_TEXT - 1);
        assert!(cut.chars().all(|c| c == 'é'));
        let kv = requested(&Requested {
            model: &"m".repeat(10_000),
            ..Default::default()
        });
        assert_eq!(
            get(&kv, REQUEST_MODEL).unwrap().as_str().len(),
            MAX_CLIENT_TEXT
        );
    }

    #[test]
    fn requested_attributes_are_only_the_ones_given() {
        let kv = requested(&Requested {
            model: "gpt-4o",
            stream: true,
            max_tokens: Some(100),
            temperature: Some(0.5),
            top_p: None,
        });
        assert_eq!(get(&kv, REQUEST_MODEL), Some(&Value::from("gpt-4o")));
        assert_eq!(get(&kv, REQUEST_STREAM), Some(&Value::from(true)));
        assert_eq!(get(&kv, REQUEST_MAX_TOKENS), Some(&Value::from(100i64)));
        assert_eq!(get(&kv, REQUEST_TEMPERATURE), Some(&Value::from(0.5)));
        assert_eq!(get(&kv, REQUEST_TOP_P), None);
    }

    #[test]
    fn a_finished_request_counts_the_whole_prompt_and_keeps_the_exact_cost() {
        let upstream = Upstream {
            provider: "azure-east",
            api: Api::Azure,
            model_id: "gpt4o-deploy",
            deployment: "gpt-4o",
        };
        let kv = finished(&Finished {
            status: 200,
            tokens: Some(Tokens {
                input: 10,
                cache_read: 5,
                cache_write: 0,
                output: 7,
                reasoning: 2,
            }),
            cost_usd: Some("0.000012300".parse().unwrap()),
            attempts: 2,
            upstream: Some(upstream),
            ..Default::default()
        });
        assert_eq!(get(&kv, INPUT_TOKENS), Some(&Value::from(15i64)));
        assert_eq!(get(&kv, OUTPUT_TOKENS), Some(&Value::from(7i64)));
        assert_eq!(get(&kv, CACHE_READ_TOKENS), Some(&Value::from(5i64)));
        assert_eq!(get(&kv, CACHE_WRITE_TOKENS), None);
        assert_eq!(get(&kv, REASONING_TOKENS), Some(&Value::from(2i64)));
        assert_eq!(get(&kv, COST_USD), Some(&Value::from("0.0000123")));
        assert_eq!(get(&kv, SYSTEM), Some(&Value::from("az.ai.openai")));
        assert_eq!(get(&kv, RESPONSE_MODEL), Some(&Value::from("gpt4o-deploy")));
        assert_eq!(get(&kv, FALLBACKS), Some(&Value::from(1i64)));
        assert_eq!(get(&kv, ERROR_TYPE), None);
    }

    #[test]
    fn a_failed_request_names_its_error_and_nothing_it_did_not_get() {
        let kv = finished(&Finished {
            status: 502,
            error_type: Some("upstream_error"),
            ..Default::default()
        });
        assert_eq!(get(&kv, ERROR_TYPE), Some(&Value::from("upstream_error")));
        assert_eq!(get(&kv, HTTP_STATUS), Some(&Value::from(502i64)));
        for absent in [INPUT_TOKENS, COST_USD, SYSTEM, RESPONSE_MODEL] {
            assert_eq!(get(&kv, absent), None, "{absent}");
        }
    }

    #[test]
    fn an_attempt_says_where_it_went() {
        let u = Upstream {
            provider: "oa",
            api: Api::Openai,
            model_id: "gpt-4o-mini",
            deployment: "fast",
        };
        let uri: http::Uri = "https://api.openai.com/v1/chat/completions"
            .parse()
            .unwrap();
        let kv = attempt("chat", &u, 2, &uri);
        assert_eq!(
            get(&kv, SERVER_ADDRESS),
            Some(&Value::from("api.openai.com"))
        );
        assert_eq!(get(&kv, SERVER_PORT), Some(&Value::from(443i64)));
        assert_eq!(get(&kv, ATTEMPT), Some(&Value::from(2i64)));
        assert_eq!(get(&kv, REQUEST_MODEL), Some(&Value::from("gpt-4o-mini")));
        let local: http::Uri = "/v1/chat/completions".parse().unwrap();
        assert_eq!(get(&attempt("chat", &u, 1, &local), SERVER_ADDRESS), None);
    }
}
