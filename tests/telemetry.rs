//! OpenTelemetry traces end to end: a gateway with `[telemetry] otlp_endpoint` pointing at an
//! OTLP/HTTP receiver written here (a hyper server on loopback that decodes the protobuf
//! export requests), and a mock provider on loopback that shows what reached it. Checked: the
//! request's SERVER span and its GenAI attributes against the answer's usage and the usage
//! row, a CLIENT span per attempt with the right parent (two after a fallback), a client's
//! `traceparent` continued (and a malformed one ignored), a stream's final counts, a cache
//! hit, the sampler, `traceparent` passed on to the provider (or not), traces off, and a
//! collector that is down or hangs never slowing a request or the shutdown.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode as Code, Span};
use prost::Message;
use serde_json::{json, Value};
use tollgate::mock::MockUpstream;

// ---------------------------------------------------------------------------------------
// The OTLP/HTTP receiver

/// A span as received, with the `service.name` of the resource it came under.
#[derive(Debug, Clone)]
struct Got {
    span: Span,
    service: String,
}

impl Got {
    fn attr(&self, key: &str) -> Option<Any> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone()?.value)
    }

    fn str(&self, key: &str) -> String {
        match self.attr(key) {
            Some(Any::StringValue(s)) => s,
            other => panic!("{key} is not a string on {}: {other:?}", self.span.name),
        }
    }

    fn int(&self, key: &str) -> i64 {
        match self.attr(key) {
            Some(Any::IntValue(n)) => n,
            other => panic!("{key} is not an integer on {}: {other:?}", self.span.name),
        }
    }

    fn float(&self, key: &str) -> f64 {
        match self.attr(key) {
            Some(Any::DoubleValue(n)) => n,
            other => panic!("{key} is not a float on {}: {other:?}", self.span.name),
        }
    }

    fn bool(&self, key: &str) -> bool {
        match self.attr(key) {
            Some(Any::BoolValue(b)) => b,
            other => panic!("{key} is not a bool on {}: {other:?}", self.span.name),
        }
    }

    fn kind(&self) -> SpanKind {
        SpanKind::try_from(self.span.kind).unwrap()
    }

    fn trace_id(&self) -> String {
        hex::encode(&self.span.trace_id)
    }

    fn span_id(&self) -> String {
        hex::encode(&self.span.span_id)
    }

    fn parent_id(&self) -> String {
        hex::encode(&self.span.parent_span_id)
    }

    fn status(&self) -> Code {
        let code = self.span.status.as_ref().map_or(0, |s| s.code);
        Code::try_from(code).unwrap()
    }
}

#[derive(Clone, Default)]
struct Receiver {
    addr: Option<SocketAddr>,
    spans: Arc<Mutex<Vec<Got>>>,
    /// Export requests received (each a POST to /v1/traces).
    posts: Arc<Mutex<usize>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver {
            addr: Some(listener.local_addr().unwrap()),
            ..Default::default()
        };
        let r = receiver.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let r = r.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| r.clone().export(req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        receiver
    }

    /// One OTLP/HTTP export: protobuf in, an empty protobuf answer out.
    async fn export(
        self,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
        let wrong = req.uri().path() != "/v1/traces"
            || req.headers()["content-type"] != "application/x-protobuf";
        let body = req.into_body().collect().await.unwrap().to_bytes();
        if wrong {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::NOT_FOUND;
            return Ok(resp);
        }
        let export = ExportTraceServiceRequest::decode(body).expect("a valid OTLP protobuf body");
        *self.posts.lock().unwrap() += 1;
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in export.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.clone()?.value? {
                    Any::StringValue(s) => Some(s),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Got {
                        span,
                        service: service.clone(),
                    });
                }
            }
        }
        let mut resp = Response::new(Full::new(Bytes::new()));
        resp.headers_mut()
            .insert("content-type", "application/x-protobuf".parse().unwrap());
        Ok(resp)
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr.unwrap())
    }

    /// Waits until `n` spans arrived (at most 10 s), and returns all of them.
    async fn wait_for(&self, n: usize) -> Vec<Got> {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let spans = self.spans.lock().unwrap().clone();
            if spans.len() >= n || Instant::now() > until {
                assert_eq!(spans.len(), n, "spans received: {spans:#?}");
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn received(&self) -> usize {
        self.spans.lock().unwrap().len()
    }
}

/// The one span of `kind` among `spans`.
fn one(spans: &[Got], kind: SpanKind) -> Got {
    let of_kind: Vec<&Got> = spans.iter().filter(|s| s.kind() == kind).collect();
    assert_eq!(of_kind.len(), 1, "{kind:?} spans: {spans:#?}");
    of_kind[0].clone()
}

/// The CLIENT spans, in the order of their attempts.
fn attempts(spans: &[Got]) -> Vec<Got> {
    let mut a: Vec<Got> = spans
        .iter()
        .filter(|s| s.kind() == SpanKind::Client)
        .cloned()
        .collect();
    a.sort_by_key(|s| s.int("tollgate.attempt"));
    a
}

// ---------------------------------------------------------------------------------------
// The gateway

/// Providers `up` and `backup` at the mock `addr`: `chat` (priced) on `up`, and `flaky`,
/// whose first deployment answers 500 and whose second answers.
fn models(addr: SocketAddr) -> String {
    format!(
        r#"{}{}
[[models]]
name = "chat"
provider = "up"
model_id = "mock-chat"
cost_input_per_million = "1.5"
cost_output_per_million = "2"

[[models]]
name = "flaky"
provider = "up"
model_id = "mock-status-500"
priority = 1

[[models]]
name = "flaky"
provider = "backup"
model_id = "mock-chat-2"
priority = 2
"#,
        upstream_provider(addr, "up", "k"),
        upstream_provider(addr, "backup", "k")
    )
}

/// `limited`: first at the provider `tight`, which takes one request a minute, then at
/// `backup`.
fn limited(addr: SocketAddr) -> String {
    format!(
        r#"
[[providers]]
name = "tight"
api = "openai"
base_url = "http://{addr}/v1"
api_key = "k"
requests_per_minute = 1

[[models]]
name = "limited"
provider = "tight"
model_id = "mock-tight"
priority = 1

[[models]]
name = "limited"
provider = "backup"
model_id = "mock-chat-3"
priority = 2
"#
    )
}

/// `[telemetry]` sending to `endpoint` quickly, with `extra` lines.
fn telemetry(endpoint: &str, extra: &str) -> String {
    format!("[telemetry]\notlp_endpoint = \"{endpoint}\"\nbatch_delay_ms = 50\n{extra}\n")
}

struct Setup {
    db: TestDb,
    gw: TestGateway,
    mock: MockUpstream,
    mock_addr: SocketAddr,
}

async fn setup(extra: &str) -> Setup {
    let db = TestDb::new(Backend::Sqlite).await;
    let (mock, mock_addr) = mock_upstream().await;
    let registry = format!("{}{}", models(mock_addr), limited(mock_addr));
    let gw = start_gateway(&db, &format!("{extra}\n{registry}")).await;
    Setup {
        db,
        gw,
        mock,
        mock_addr,
    }
}

const PROMPT_WORD: &str = "zanzibarquokka";

fn chat(model: &str) -> Value {
    json!({"model": model, "max_tokens": 5, "temperature": 0.3,
           "messages": [{"role": "user", "content": format!("say {PROMPT_WORD} please")}]})
}

async fn completions(s: &Setup, body: &Value, headers: &[(&str, &str)]) -> Reply {
    let reply = post(&format!("{}/v1/chat/completions", s.gw.base), body, headers).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply
}

/// The `traceparent` each request reaching the mock provider carried.
fn upstream_traceparents(mock: &MockUpstream) -> Vec<Option<String>> {
    mock.received
        .lock()
        .unwrap()
        .iter()
        .map(|r| {
            r.headers
                .get("traceparent")
                .map(|v| v.to_str().unwrap().to_owned())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_has_a_server_span_with_genai_attributes_and_a_client_span_for_its_attempt() {
    let receiver = Receiver::start().await;
    let s = setup(&telemetry(&receiver.endpoint(), "")).await;
    let reply = completions(&s, &chat("chat"), &[]).await;
    let usage = &reply.json()["usage"];
    let spans = receiver.wait_for(2).await;

    let server = one(&spans, SpanKind::Server);
    assert_eq!(server.span.name, "chat chat");
    assert_eq!(server.service, "tollgate");
    assert_eq!(server.str("gen_ai.operation.name"), "chat");
    assert_eq!(server.str("gen_ai.system"), "openai");
    assert_eq!(server.str("gen_ai.provider.name"), "openai");
    assert_eq!(server.str("gen_ai.request.model"), "chat");
    assert_eq!(server.str("gen_ai.response.model"), "mock-chat");
    assert_eq!(server.int("gen_ai.request.max_tokens"), 5);
    assert_eq!(server.float("gen_ai.request.temperature"), 0.3);
    assert!(!server.bool("gen_ai.request.stream"));
    let input = usage["prompt_tokens"].as_i64().unwrap();
    let output = usage["completion_tokens"].as_i64().unwrap();
    assert!(input > 0 && output > 0, "{usage}");
    assert_eq!(server.int("gen_ai.usage.input_tokens"), input);
    assert_eq!(server.int("gen_ai.usage.output_tokens"), output);
    assert_eq!(server.int("http.response.status_code"), 200);
    assert_eq!(server.attr("error.type"), None);
    assert_eq!(server.status(), Code::Unset);
    assert_eq!(server.str("tollgate.provider"), "up");
    assert_eq!(server.int("tollgate.attempts"), 1);
    assert_eq!(server.int("tollgate.fallbacks"), 0);
    assert!(!server.bool("tollgate.cache_hit"));
    let request_id = reply.headers["x-request-id"].to_str().unwrap();
    assert_eq!(server.str("tollgate.request_id"), request_id);
    assert!(server.span.parent_span_id.is_empty(), "a new trace");

    // The cost is the usage row's, exactly.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let rows = usage_rows(&s.db.connect().await).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].input_tokens, input);
    assert_eq!(
        dec(&server.str("tollgate.cost_usd")),
        dec(&rows[0].cost_usd)
    );
    assert!(dec(&rows[0].cost_usd) > dec("0"));

    let attempt = one(&spans, SpanKind::Client);
    assert_eq!(attempt.span.name, "chat mock-chat");
    assert_eq!(attempt.trace_id(), server.trace_id());
    assert_eq!(attempt.parent_id(), server.span_id());
    assert_eq!(attempt.str("server.address"), "127.0.0.1");
    assert_eq!(attempt.int("server.port"), i64::from(s.mock_addr.port()));
    assert_eq!(attempt.int("http.response.status_code"), 200);
    assert_eq!(attempt.str("tollgate.attempt.outcome"), "answered");
    assert_eq!(attempt.str("tollgate.provider"), "up");
    assert_eq!(attempt.str("gen_ai.request.model"), "mock-chat");
    assert!(attempt.span.start_time_unix_nano >= server.span.start_time_unix_nano);
    assert!(attempt.span.end_time_unix_nano <= server.span.end_time_unix_nano);

    // The provider was told the attempt's span as its parent.
    let expected = format!("00-{}-{}-01", server.trace_id(), attempt.span_id());
    assert_eq!(upstream_traceparents(&s.mock), [Some(expected)]);

    // Never a prompt or an answer.
    let shown = format!("{spans:?}");
    assert!(!shown.contains(PROMPT_WORD), "{shown}");
    s.gw.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_has_two_attempt_spans_under_the_request_span() {
    let receiver = Receiver::start().await;
    let s = setup(&telemetry(&receiver.endpoint(), "")).await;
    completions(&s, &chat("flaky"), &[]).await;
    let spans = receiver.wait_for(3).await;
    let server = one(&spans, SpanKind::Server);
    assert_eq!(server.span.name, "chat flaky");
    assert_eq!(server.int("tollgate.attempts"), 2);
    assert_eq!(server.int("tollgate.fallbacks"), 1);
    assert_eq!(server.str("tollgate.provider"), "backup");
    assert_eq!(server.str("gen_ai.response.model"), "mock-chat-2");

    let tries = attempts(&spans);
    assert_eq!(tries.len(), 2, "{spans:#?}");
    for (i, t) in tries.iter().enumerate() {
        assert_eq!(t.parent_id(), server.span_id(), "attempt {i}");
        assert_eq!(t.trace_id(), server.trace_id(), "attempt {i}");
        assert_eq!(t.int("tollgate.attempt"), i as i64 + 1);
    }
    let (failed, answered) = (&tries[0], &tries[1]);
    assert_eq!(failed.span.name, "chat mock-status-500");
    assert_eq!(failed.str("tollgate.provider"), "up");
    assert_eq!(failed.int("http.response.status_code"), 500);
    assert_eq!(failed.str("tollgate.attempt.outcome"), "failed");
    assert_eq!(failed.str("error.type"), "upstream_error");
    assert_eq!(failed.status(), Code::Error);
    assert_eq!(answered.str("tollgate.provider"), "backup");
    assert_eq!(answered.str("tollgate.attempt.outcome"), "answered");
    assert_eq!(answered.status(), Code::Unset);
    assert!(failed.span.end_time_unix_nano <= answered.span.start_time_unix_nano);

    // Each attempt's request carried its own span as the parent.
    let sent = upstream_traceparents(&s.mock);
    let ids: Vec<Option<String>> = tries
        .iter()
        .map(|t| Some(format!("00-{}-{}-01", t.trace_id(), t.span_id())))
        .collect();
    assert_eq!(sent, ids);
    s.gw.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_traceparent_is_continued_and_a_malformed_one_ignored() {
    let receiver = Receiver::start().await;
    let s = setup(&telemetry(&receiver.endpoint(), "")).await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let parent = "b7ad6b7169203331";
    let traceparent = format!("00-{trace}-{parent}-01");
    completions(
        &s,
        &chat("chat"),
        &[("traceparent", &traceparent), ("tracestate", "vendor=x")],
    )
    .await;
    let spans = receiver.wait_for(2).await;
    let server = one(&spans, SpanKind::Server);
    assert_eq!(server.trace_id(), trace);
    assert_eq!(server.parent_id(), parent);
    assert_eq!(server.span.trace_state, "vendor=x");
    let attempt = one(&spans, SpanKind::Client);
    assert_eq!(attempt.trace_id(), trace);
    assert_eq!(attempt.parent_id(), server.span_id());
    let sent = upstream_traceparents(&s.mock);
    assert_eq!(sent, [Some(format!("00-{trace}-{}-01", attempt.span_id()))]);
    let tracestate = s.mock.received.lock().unwrap()[0].headers["tracestate"].clone();
    assert_eq!(tracestate, "vendor=x");

    // Malformed: a new trace of its own, the request answered all the same.
    receiver.spans.lock().unwrap().clear();
    completions(&s, &chat("chat"), &[("traceparent", "00-not-a-trace-01")]).await;
    let spans = receiver.wait_for(2).await;
    let server = one(&spans, SpanKind::Server);
    assert!(server.span.parent_span_id.is_empty());
    assert_ne!(server.trace_id(), trace);
    assert_eq!(server.span.trace_id.len(), 16);
    s.gw.running.stop().await;
}

/// The usage of the last chunk of an SSE body that has one.
fn stream_usage(text: &str) -> Value {
    text.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v["usage"].is_object())
        .map(|v| v["usage"].clone())
        .unwrap_or_else(|| panic!("no usage in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_requests_span_ends_with_the_streams_final_counts() {
    let receiver = Receiver::start().await;
    let s = setup(&telemetry(&receiver.endpoint(), "")).await;
    let mut body = chat("chat");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let reply = completions(&s, &body, &[]).await;
    let usage = stream_usage(&reply.text());
    let spans = receiver.wait_for(2).await;
    let server = one(&spans, SpanKind::Server);
    assert!(server.bool("gen_ai.request.stream"));
    assert_eq!(
        server.int("gen_ai.usage.input_tokens"),
        usage["prompt_tokens"].as_i64().unwrap()
    );
    assert_eq!(
        server.int("gen_ai.usage.output_tokens"),
        usage["completion_tokens"].as_i64().unwrap()
    );
    let first = server.float("gen_ai.response.time_to_first_chunk");
    let whole = (server.span.end_time_unix_nano - server.span.start_time_unix_nano) as f64 / 1e9;
    assert!(first > 0.0 && first <= whole, "{first} of {whole}");
    // The attempt ran until the stream ended.
    let attempt = one(&spans, SpanKind::Client);
    assert_eq!(attempt.str("tollgate.attempt.outcome"), "answered");
    assert_eq!(attempt.parent_id(), server.span_id());
    s.gw.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_hit_has_a_span_without_an_attempt() {
    let receiver = Receiver::start().await;
    let cache = "[cache]\nenabled = true\nttl_secs = 60\n";
    let s = setup(&format!("{cache}{}", telemetry(&receiver.endpoint(), ""))).await;
    let mut body = chat("chat");
    body["temperature"] = json!(0);
    completions(&s, &body, &[]).await;
    receiver.wait_for(2).await;
    receiver.spans.lock().unwrap().clear();
    let reply = completions(&s, &body, &[]).await;
    assert_eq!(reply.headers["x-tollgate-cache"], "hit");
    let spans = receiver.wait_for(1).await;
    let server = one(&spans, SpanKind::Server);
    assert!(server.bool("tollgate.cache_hit"));
    assert_eq!(server.int("tollgate.attempts"), 0);
    assert_eq!(
        server.int("gen_ai.usage.output_tokens"),
        reply.json()["usage"]["completion_tokens"].as_i64().unwrap()
    );
    assert_eq!(dec(&server.str("tollgate.cost_usd")), dec("0"));
    s.gw.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_request_is_a_server_error_span_and_a_client_mistake_is_not() {
    let receiver = Receiver::start().await;
    let s = setup(&telemetry(
        &receiver.endpoint(),
        "service_name = \"gw-east\"",
    ))
    .await;
    let url = format!("{}/v1/chat/completions", s.gw.base);
    let only_failing =
        json!({"model": "up/mock-status-500", "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(
        post(&url, &only_failing, &[]).await.status,
        StatusCode::BAD_GATEWAY
    );
    let spans = receiver.wait_for(2).await;
    let server = one(&spans, SpanKind::Server);
    assert_eq!(server.service, "gw-east");
    assert_eq!(server.int("http.response.status_code"), 502);
    assert_eq!(server.str("error.type"), "upstream_error");
    assert_eq!(server.status(), Code::Error);

    receiver.spans.lock().unwrap().clear();
    let unknown = json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(
        post(&url, &unknown, &[]).await.status,
        StatusCode::NOT_FOUND
    );
    let spans = receiver.wait_for(1).await;
    let server = one(&spans, SpanKind::Server);
    assert_eq!(server.int("http.response.status_code"), 404);
    assert_eq!(server.str("error.type"), "model_not_found");
    assert_eq!(server.status(), Code::Unset);
    assert_eq!(server.int("tollgate.attempts"), 0);
    s.gw.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_traces_follow_the_sample_ratio_and_a_clients_follow_the_client() {
    let receiver = Receiver::start().await;
    let s = setup(&telemetry(&receiver.endpoint(), "sample_ratio = 0.0")).await;
    completions(&s, &chat("chat"), &[]).await;
    // Not sampled: nothing is exported, but the provider still gets the trace (unsampled).
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    completions(
        &s,
        &chat("chat"),
        &[("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01"))],
    )
    .await;
    let spans = receiver.wait_for(2).await;
    assert!(spans.iter().all(|s| s.trace_id() == trace), "{spans:#?}");
    let sent = upstream_traceparents(&s.mock);
    assert!(
        sent[0].as_deref().is_some_and(|t| t.ends_with("-00")),
        "{sent:?}"
    );
    assert!(
        sent[1]
            .as_deref()
            .is_some_and(|t| t.contains(trace) && t.ends_with("-01")),
        "{sent:?}"
    );
    s.gw.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_stays_home_when_propagation_is_off_and_when_traces_are_off() {
    let receiver = Receiver::start().await;
    let s = setup(&telemetry(
        &receiver.endpoint(),
        "propagate_upstream = false",
    ))
    .await;
    completions(&s, &chat("chat"), &[]).await;
    receiver.wait_for(2).await;
    assert_eq!(upstream_traceparents(&s.mock), [None]);
    s.gw.running.stop().await;

    // Off: no exporter, no header, whatever the client sent.
    let s = setup("").await;
    let sent_by_client = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    completions(&s, &chat("chat"), &[("traceparent", sent_by_client)]).await;
    completions(&s, &chat("flaky"), &[]).await;
    assert!(s.gw.running.app.gateway.telemetry.is_none());
    assert_eq!(upstream_traceparents(&s.mock), [None, None, None]);
    s.gw.running.stop().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.received(), 2, "only the first gateway's spans");
}

/// Sends `n` requests one after another; returns the slowest one's time.
async fn slowest_of(s: &Setup, n: usize) -> Duration {
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let start = Instant::now();
        completions(s, &chat("chat"), &[]).await;
        slowest = slowest.max(start.elapsed());
    }
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_or_hangs_slows_no_request_nor_the_shutdown() {
    // Down: nothing listens on the port.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let s = setup(&telemetry(&down, "export_timeout_ms = 500")).await;
    assert!(slowest_of(&s, 20).await < Duration::from_millis(500));
    let stopping = Instant::now();
    s.gw.running.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "{:?}",
        stopping.elapsed()
    );

    // Hangs: it takes connections and never answers.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", hanging.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = hanging.accept().await {
            h.lock().unwrap().push(socket);
        }
    });
    let s = setup(&telemetry(
        &endpoint,
        "export_timeout_ms = 60000\nmax_queue_spans = 4",
    ))
    .await;
    assert!(slowest_of(&s, 20).await < Duration::from_millis(500));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !held.lock().unwrap().is_empty(),
        "the exporter tried to send"
    );
    let stopping = Instant::now();
    s.gw.running.stop().await;
    // The flush waits 5 s at most for a collector that does not answer.
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "{:?}",
        stopping.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_traces_on_in_a_reload_waits_for_a_restart() {
    let receiver = Receiver::start().await;
    let s = setup("").await;
    let text = std::fs::read_to_string(&s.gw.config_path).unwrap();
    let on = format!("{text}\n{}", telemetry(&receiver.endpoint(), ""));
    std::fs::write(&s.gw.config_path, on).unwrap();
    let report = s.gw.running.app.reload().await.unwrap();
    assert_eq!(
        report.restart_required,
        ["telemetry.batch_delay_ms", "telemetry.otlp_endpoint"]
    );
    completions(&s, &chat("chat"), &[]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received(), 0);
    assert_eq!(upstream_traceparents(&s.mock), [None]);
    s.gw.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_its_limits_pass_over_is_an_event_on_the_request_span() {
    let receiver = Receiver::start().await;
    let s = setup(&telemetry(&receiver.endpoint(), "")).await;
    completions(&s, &chat("limited"), &[]).await;
    receiver.wait_for(2).await;
    receiver.spans.lock().unwrap().clear();
    completions(&s, &chat("limited"), &[]).await;
    let spans = receiver.wait_for(2).await;
    let server = one(&spans, SpanKind::Server);
    assert_eq!(server.str("tollgate.provider"), "backup");
    assert_eq!(server.int("tollgate.attempts"), 1);
    let events: Vec<_> = server.span.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(events, ["tollgate.deployment_skipped"]);
    let event = &server.span.events[0];
    let attr = |key: &str| {
        event
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone()?.value)
    };
    assert_eq!(
        attr("tollgate.provider"),
        Some(Any::StringValue("tight".into()))
    );
    assert_eq!(
        attr("tollgate.reason"),
        Some(Any::StringValue("provider_limit".into()))
    );
    assert_eq!(
        one(&spans, SpanKind::Client).str("tollgate.provider"),
        "backup"
    );
    s.gw.running.stop().await;
}
