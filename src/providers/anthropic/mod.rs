//! Anthropic's Messages API (`POST {base_url}/v1/messages`), translated to and from the
//! OpenAI chat format: the request in `request.rs`, a whole answer in `response.rs`, a
//! stream in `stream.rs`, Anthropic's own types in `schema.rs`.

mod request;
mod response;
mod schema;
mod stream;

use bytes::Bytes;

use super::{Adapter, Endpoint, JsonObject, Prepared, ReportedUsage, StreamTranslator};
use crate::error::GatewayError;
use crate::registry::Deployment;

pub const API_VERSION: &str = "2023-06-01";

/// Anthropic's Messages API.
pub struct Anthropic;

impl Adapter for Anthropic {
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
        response::read_response(dep, prepared, &body)
    }

    fn stream_translator(
        &self,
        dep: &Deployment,
        prepared: &Prepared,
    ) -> Box<dyn StreamTranslator> {
        Box::new(stream::Translator::new(dep, prepared))
    }
}

fn prepare(
    dep: &Deployment,
    endpoint: Endpoint,
    body: &JsonObject,
) -> Result<Prepared, GatewayError> {
    match endpoint {
        Endpoint::ChatCompletions => {}
        Endpoint::Embeddings => {
            return Err(GatewayError::invalid_param(
                "model",
                format!(
                    "`{}` is served by Anthropic, which has no embeddings API.",
                    dep.name
                ),
            ))
        }
        Endpoint::Completions => {
            return Err(GatewayError::invalid_param(
                "model",
                format!(
                    "`{}` is served by Anthropic, which has no legacy completions API; use /v1/chat/completions.",
                    dep.name
                ),
            ))
        }
    }
    let stream = body.bool("stream") == Some(true);
    let request = request::request_body(dep, body, stream)?;
    let uri: http::Uri = format!("{}/v1/messages", dep.provider.base_url)
        .parse()
        .map_err(|_| {
            GatewayError::internal(format!(
                "provider {} has a base_url that does not form a valid URL",
                dep.provider.name
            ))
        })?;
    Ok(Prepared::translated(
        dep,
        endpoint,
        body,
        uri,
        request.to_string(),
        stream,
        &[("anthropic-version", API_VERSION)],
    ))
}

#[cfg(test)]
mod tests {
    use super::response::tests::{read, MESSAGE};
    use super::stream::tests::{run, STREAM};
    use crate::providers::chat::testing::{assert_same_choices, choices_of, collect};
    use crate::providers::StreamTranslator;

    #[test]
    fn streamed_and_whole_answers_agree() {
        let (out, t) = run(STREAM.as_bytes(), false, &[]);
        let c = collect(&out);
        assert!(c.usage.is_none(), "no usage chunk unless the client asked");
        let (whole, usage) = read(MESSAGE);
        assert_same_choices(&c.choices, &choices_of(&whole));
        assert_eq!(t.usage().unwrap().tokens, usage.unwrap().tokens);
    }
}
