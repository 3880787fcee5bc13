//! Errors as a client meets them: OpenAI-shaped, naming what was refused, never leaking a
//! secret, and still metered; each case on SQLite and on PostgreSQL.

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::json;

on_both_databases!(errors_are_openai_shaped_and_still_metered);

async fn errors_are_openai_shaped_and_still_metered(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (_mock, addr) = mock_upstream().await;
    let extra = format!(
        r#"{}
[[models]]
name = "ok"
provider = "up"
model_id = "fine"
[[models]]
name = "broken"
provider = "up"
model_id = "mock-status-500"
[[models]]
name = "locked"
provider = "up"
model_id = "mock-status-401"
[[models]]
name = "hangs"
provider = "up"
model_id = "mock-hang"
[[models]]
name = "garbage"
provider = "up"
model_id = "mock-garbage"
[[providers]]
name = "nowhere"
api = "openai"
base_url = "http://127.0.0.1:9/v1"
[[models]]
name = "unreachable"
provider = "nowhere"
model_id = "x"
"#,
        upstream_provider(addr, "up", "sk-secret-provider-key")
    );
    let gw = start_gateway(&db, &extra).await;
    let chat = format!("{}/v1/chat/completions", gw.base);

    for case in refusals() {
        let started = std::time::Instant::now();
        let r = match &case.ask {
            Ask::Raw(body) => {
                let json = [("content-type", "application/json")];
                request(Method::POST, &chat, *body, &json).await
            }
            Ask::Chat(body) => post(&chat, body, &[]).await,
            Ask::Get(path) => get(&format!("{}{path}", gw.base), &[]).await,
        };
        let what = case.what;
        assert!(
            started.elapsed() < std::time::Duration::from_secs(8),
            "{what}: request_timeout_secs = 5 holds"
        );
        assert_eq!(r.status, case.status, "{what}: {}", r.text());
        assert!(
            !r.text().contains("sk-secret"),
            "{what} leaked: {}",
            r.text()
        );
        let e = &r.json()["error"];
        assert_eq!(e["type"], case.kind, "{what}: {e}");
        assert_eq!(e["code"].as_str(), case.code, "{what}: {e}");
        assert_eq!(e["param"].as_str(), case.param, "{what}: {e}");
        let message = e["message"].as_str().unwrap_or_default();
        assert!(message.contains(case.says), "{what}: {e}");
    }

    // the gateway still serves after all of that
    let ok = json!({"model": "ok", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(post(&chat, &ok, &[]).await.status, StatusCode::OK);

    gw.running.stop().await;
    let rows = usage_rows(&db.connect().await).await;
    let metered: Vec<Refusal> = refusals().into_iter().filter(|c| c.row.is_some()).collect();
    assert_eq!(rows.len(), metered.len() + 1, "{rows:?}");
    for (case, row) in metered.iter().zip(&rows) {
        let (model, error_type) = case.row.unwrap();
        let what = case.what;
        assert_eq!(row.status_code, i64::from(case.status.as_u16()), "{what}");
        assert_eq!(row.model_name, model, "{what}");
        assert_eq!(row.error_type.as_deref(), Some(error_type), "{what}");
        assert_eq!(row.output_tokens, 0, "{what}");
        assert!(dec(&row.cost_usd).is_zero(), "{what}");
    }
    let last = rows.last().unwrap();
    assert_eq!((last.model_name.as_str(), last.status_code), ("ok", 200));
    assert_eq!(last.error_type, None);
}

/// What a case sends.
enum Ask {
    /// A POST to /v1/chat/completions with this body, as it is.
    Raw(&'static str),
    /// A POST to /v1/chat/completions with this JSON.
    Chat(serde_json::Value),
    /// A GET of this path.
    Get(&'static str),
}

/// A request the gateway must refuse, and exactly how.
struct Refusal {
    what: &'static str,
    ask: Ask,
    status: StatusCode,
    /// `error.type`, `error.code` and `error.param` as the client gets them.
    kind: &'static str,
    code: Option<&'static str>,
    param: Option<&'static str>,
    /// A fragment of `error.message` that names the cause.
    says: &'static str,
    /// The usage row's model name and error type; None when no row is written.
    row: Option<(&'static str, &'static str)>,
}

/// Every refusal, in the order the test sends them (the usage rows keep that order).
fn refusals() -> Vec<Refusal> {
    let hi = json!([{"role": "user", "content": "hi"}]);
    let chat = |model: &str| json!({"model": model, "messages": hi});
    let big = json!({"model": "ok", "messages": [{"role": "user", "content": "x".repeat(70_000)}]});
    let invalid = "invalid_request_error";
    let upstream = Some("upstream_error");
    #[rustfmt::skip]
    let cases = vec![
        Refusal { what: "a body that is not JSON", ask: Ask::Raw("{not json"),
            status: StatusCode::BAD_REQUEST, kind: invalid, code: None, param: None,
            says: "could not parse the JSON body", row: Some(("", invalid)) },
        Refusal { what: "no model", ask: Ask::Chat(json!({"messages": hi})),
            status: StatusCode::BAD_REQUEST, kind: invalid, code: None, param: Some("model"),
            says: "You must provide a model parameter", row: Some(("", invalid)) },
        Refusal { what: "no messages", ask: Ask::Chat(json!({"model": "ok"})),
            status: StatusCode::BAD_REQUEST, kind: invalid, code: None, param: Some("messages"),
            says: "Missing required parameter: 'messages'", row: Some(("", invalid)) },
        Refusal { what: "a stream flag that is not a boolean",
            ask: Ask::Chat(json!({"model": "ok", "messages": hi, "stream": "yes"})),
            status: StatusCode::BAD_REQUEST, kind: invalid, code: None, param: Some("stream"),
            says: "`stream` must be a boolean", row: Some(("", invalid)) },
        Refusal { what: "a model that does not exist", ask: Ask::Chat(chat("missing-model")),
            status: StatusCode::NOT_FOUND, kind: invalid, code: Some("model_not_found"),
            param: Some("model"), says: "The model `missing-model` does not exist",
            row: Some(("missing-model", "model_not_found")) },
        Refusal { what: "a body over max_body_bytes", ask: Ask::Chat(big),
            status: StatusCode::PAYLOAD_TOO_LARGE, kind: invalid, code: Some("request_too_large"),
            param: None, says: "larger than the gateway's limit of 65536 bytes",
            row: Some(("", "request_too_large")) },
        Refusal { what: "a provider answering 500", ask: Ask::Chat(chat("broken")),
            status: StatusCode::BAD_GATEWAY, kind: "server_error", code: upstream, param: None,
            says: "Provider up answered with HTTP 500", row: Some(("broken", "upstream_error")) },
        Refusal { what: "a provider refusing the gateway's key", ask: Ask::Chat(chat("locked")),
            status: StatusCode::BAD_GATEWAY, kind: "server_error", code: upstream, param: None,
            says: "rejected the gateway's credentials", row: Some(("locked", "upstream_error")) },
        Refusal { what: "a provider answering garbage", ask: Ask::Chat(chat("garbage")),
            status: StatusCode::BAD_GATEWAY, kind: "server_error", code: upstream, param: None,
            says: "not a JSON object", row: Some(("garbage", "upstream_error")) },
        Refusal { what: "a provider that cannot be reached", ask: Ask::Chat(chat("unreachable")),
            status: StatusCode::BAD_GATEWAY, kind: "server_error", code: upstream, param: None,
            says: "Could not connect to provider nowhere",
            row: Some(("unreachable", "upstream_error")) },
        Refusal { what: "a provider that never answers", ask: Ask::Chat(chat("hangs")),
            status: StatusCode::GATEWAY_TIMEOUT, kind: "server_error", code: Some("timeout"),
            param: None, says: "No provider answered `hangs` within the request timeout",
            row: Some(("hangs", "timeout")) },
        Refusal { what: "an unknown URL", ask: Ask::Get("/v1/nothing-here"),
            status: StatusCode::NOT_FOUND, kind: invalid, code: Some("not_found"), param: None,
            says: "Unknown request URL: GET /v1/nothing-here", row: None },
    ];
    cases
}
