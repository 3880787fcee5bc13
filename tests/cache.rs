//! The response cache, against a real gateway, a mock upstream that counts what reaches it,
//! real databases and a real Redis (`TOLLGATE_TEST_REDIS`, each test with a key prefix of its
//! own): hits, misses on any answer-changing change, key order and spacing, a stored answer
//! replayed as a stream and a stream stored as a whole answer, expiry, the memory bound,
//! Redis shared by two instances, Redis down, tenants kept apart, the hits' usage rows, and
//! the `x-tollgate-cache` header.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use tollgate::mock::MockUpstream;
use tollgate::store::{Db, NewApiKey, NewProject};

on_both_databases!(a_hit_has_its_own_usage_row_with_the_stored_tokens_and_no_cost);

fn redis_url() -> String {
    std::env::var("TOLLGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The provider `up` at `addr` with two chat models, `fast` and `other`.
fn models(addr: std::net::SocketAddr) -> String {
    format!(
        r#"{}
[[models]]
name = "fast"
provider = "up"
model_id = "upstream-model-v1"
cost_input_per_million = "0.15"
cost_output_per_million = "0.60"

[[models]]
name = "other"
provider = "up"
model_id = "upstream-model-v2"
"#,
        upstream_provider(addr, "up", "k")
    )
}

const MEMORY: &str = "[cache]\nenabled = true\nttl_secs = 60\n";

/// The `[redis]` and `[cache]` sections of a Redis-backed cache with keys under `prefix`.
fn redis_cache(url: &str, prefix: &str) -> String {
    format!(
        "[redis]\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n[cache]\nenabled = true\nbackend = \"redis\"\nttl_secs = 60\n"
    )
}

fn unique_prefix() -> String {
    format!("tg-cache-test-{}:", uuid::Uuid::now_v7().simple())
}

fn chat(content: &str) -> Value {
    json!({"model": "fast", "temperature": 0, "max_tokens": 8,
           "messages": [{"role": "user", "content": content}]})
}

async fn ask(base: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
    let r = post(&format!("{base}/v1/chat/completions"), body, headers).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r
}

fn cache_header(r: &Reply) -> Option<&str> {
    r.headers
        .get("x-tollgate-cache")
        .map(|v| v.to_str().unwrap())
}

fn upstream_requests(mock: &MockUpstream) -> usize {
    mock.counters.requests.load(Ordering::SeqCst)
}

async fn metrics(base: &str) -> String {
    get(&format!("{base}/metrics"), &[]).await.text()
}

/// The message text of a whole chat answer.
fn content(answer: &Value) -> String {
    answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// What a client's SSE parser makes of a streamed chat answer.
#[derive(Debug, Default)]
struct Streamed {
    content: String,
    finish_reason: Option<String>,
    usage: Option<Value>,
    done_last: bool,
}

fn parse_sse(text: &str) -> Streamed {
    let mut s = Streamed::default();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data:"))
        .map(str::trim)
        .collect();
    for (i, data) in events.iter().enumerate() {
        if *data == "[DONE]" {
            s.done_last = i == events.len() - 1;
            continue;
        }
        let chunk: Value = serde_json::from_str(data).expect("every event is JSON");
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        if chunk["usage"].is_object() {
            s.usage = Some(chunk["usage"].clone());
        }
        for choice in chunk["choices"].as_array().unwrap() {
            if let Some(t) = choice["delta"]["content"].as_str() {
                s.content.push_str(t);
            }
            if let Some(r) = choice["finish_reason"].as_str() {
                s.finish_reason = Some(r.to_owned());
            }
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_request_is_answered_from_the_cache() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (mock, addr) = mock_upstream().await;
    let gw = start_gateway(&db, &format!("{}{MEMORY}", models(addr))).await;
    let first = ask(&gw.base, &chat("hello"), &[]).await;
    assert_eq!(cache_header(&first), Some("miss"));
    let second = ask(&gw.base, &chat("hello"), &[]).await;
    assert_eq!(cache_header(&second), Some("hit"));
    assert_eq!(upstream_requests(&mock), 1, "the hit reached no provider");
    assert_eq!(second.json(), first.json(), "the stored answer, as it was");
    let m = metrics(&gw.base).await;
    let hits = metric(&m, "tollgate_cache_hits_total", &[("model", "fast")]);
    let misses = metric(&m, "tollgate_cache_misses_total", &[("model", "fast")]);
    assert_eq!((hits, misses), (Some(1.0), Some(1.0)), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_answer_changing_parameter_misses() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (mock, addr) = mock_upstream().await;
    let gw = start_gateway(&db, &format!("{}{MEMORY}", models(addr))).await;
    ask(&gw.base, &chat("hello"), &[]).await;
    let mut variants = Vec::new();
    for (field, value) in [
        ("max_tokens", json!(9)),
        ("seed", json!(7)),
        ("top_p", json!(0.5)),
        ("stop", json!(["x"])),
        ("model", json!("other")),
        ("response_format", json!({"type": "json_object"})),
        (
            "tools",
            json!([{"type": "function", "function": {"name": "f"}}]),
        ),
        ("messages", json!([{"role": "user", "content": "hello!"}])),
    ] {
        let mut body = chat("hello");
        body[field] = value;
        variants.push(body);
    }
    for (i, body) in variants.iter().enumerate() {
        let r = ask(&gw.base, body, &[]).await;
        assert_eq!(cache_header(&r), Some("miss"), "{body}");
        assert_eq!(upstream_requests(&mock), i + 2, "{body}");
    }
    // What does not change the answer still hits: how it is delivered, and `user`.
    let mut same = chat("hello");
    same["user"] = json!("someone");
    same["stream"] = json!(false);
    let r = ask(&gw.base, &same, &[]).await;
    assert_eq!(cache_header(&r), Some("hit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_order_spacing_and_number_spelling_still_hit() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (mock, addr) = mock_upstream().await;
    let gw = start_gateway(&db, &format!("{}{MEMORY}", models(addr))).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let json_type = [("content-type", "application/json")];
    let first = r#"{"model":"fast","temperature":0,"max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#;
    let again = r#"{
        "messages" : [ { "content" : "hi" , "role" : "user" } ],
        "max_tokens" : 8.0,
        "temperature" : 0.0,
        "model" : "fast"
    }"#;
    let a = request(Method::POST, &url, first, &json_type).await;
    let b = request(Method::POST, &url, again, &json_type).await;
    assert_eq!(
        (cache_header(&a), cache_header(&b)),
        (Some("miss"), Some("hit"))
    );
    assert_eq!(upstream_requests(&mock), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_answer_is_replayed_as_a_stream_and_a_stream_is_kept_whole() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (mock, addr) = mock_upstream().await;
    let gw = start_gateway(&db, &format!("{}{MEMORY}", models(addr))).await;

    // Stored whole, replayed as a stream (with the usage chunk asked for).
    let whole = ask(&gw.base, &chat("first"), &[]).await.json();
    let mut streamed = chat("first");
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let r = ask(&gw.base, &streamed, &[]).await;
    assert_eq!(cache_header(&r), Some("hit"));
    let ct = r.headers["content-type"].to_str().unwrap();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let s = parse_sse(&r.text());
    assert_eq!(s.content, content(&whole));
    assert_eq!(
        s.finish_reason.as_deref(),
        whole["choices"][0]["finish_reason"].as_str()
    );
    assert_eq!(s.usage.as_ref(), Some(&whole["usage"]));
    assert!(s.done_last, "{}", r.text());
    // Without include_usage, no usage chunk.
    streamed["stream_options"] = json!({"include_usage": false});
    let s = parse_sse(&ask(&gw.base, &streamed, &[]).await.text());
    assert!(s.usage.is_none() && s.done_last);

    // Stored from a stream, replayed whole and as a stream.
    let mut second = chat("second");
    second["stream"] = json!(true);
    let miss = ask(&gw.base, &second, &[]).await;
    assert_eq!(cache_header(&miss), Some("miss"));
    let original = parse_sse(&miss.text());
    second["stream"] = json!(false);
    let r = ask(&gw.base, &second, &[]).await;
    assert_eq!(cache_header(&r), Some("hit"));
    let answer = r.json();
    assert_eq!(content(&answer), original.content);
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(
        answer["choices"][0]["finish_reason"].as_str(),
        original.finish_reason.as_deref()
    );
    assert!(
        answer["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{answer}"
    );
    second["stream"] = json!(true);
    let again = parse_sse(&ask(&gw.base, &second, &[]).await.text());
    assert_eq!(again.content, original.content);
    assert_eq!(upstream_requests(&mock), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_are_cached_too() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (mock, addr) = mock_upstream().await;
    let gw = start_gateway(&db, &format!("{}{MEMORY}", models(addr))).await;
    let url = format!("{}/v1/completions", gw.base);
    let body = json!({"model": "fast", "prompt": "Say hi", "temperature": 0, "max_tokens": 5});
    let a = post(&url, &body, &[]).await;
    let b = post(&url, &body, &[]).await;
    assert_eq!(
        (a.status, b.status),
        (StatusCode::OK, StatusCode::OK),
        "{}",
        a.text()
    );
    assert_eq!(
        (cache_header(&a), cache_header(&b)),
        (Some("miss"), Some("hit"))
    );
    assert_eq!(a.json()["choices"], b.json()["choices"]);
    assert_eq!(upstream_requests(&mock), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_after_their_ttl() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (mock, addr) = mock_upstream().await;
    let config = format!("{}[cache]\nenabled = true\nttl_secs = 1\n", models(addr));
    let gw = start_gateway(&db, &config).await;
    ask(&gw.base, &chat("hello"), &[]).await;
    assert_eq!(
        cache_header(&ask(&gw.base, &chat("hello"), &[]).await),
        Some("hit")
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        cache_header(&ask(&gw.base, &chat("hello"), &[]).await),
        Some("miss")
    );
    assert_eq!(upstream_requests(&mock), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_backend_holds_no_more_than_its_bound() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (mock, addr) = mock_upstream().await;
    let bound = 2000;
    let config = format!(
        "{}[cache]\nenabled = true\nmax_bytes = {bound}\n",
        models(addr)
    );
    let gw = start_gateway(&db, &config).await;
    let asks: Vec<Value> = (0..12).map(|i| chat(&format!("question {i}"))).collect();
    let mut smallest = usize::MAX;
    for body in &asks {
        smallest = smallest.min(ask(&gw.base, body, &[]).await.body.len());
    }
    let mut hits = 0;
    for body in &asks {
        if cache_header(&ask(&gw.base, body, &[]).await) == Some("hit") {
            hits += 1;
        }
    }
    let room = bound / smallest;
    assert!(room < 12, "answers of {smallest} bytes");
    assert!(
        hits <= room,
        "{hits} of 12 answers were still held in {bound} bytes"
    );
    assert!(upstream_requests(&mock) >= 20);

    // An answer over max_entry_bytes is not stored at all.
    let db = TestDb::new(Backend::Sqlite).await;
    let config = format!(
        "{}[cache]\nenabled = true\nmax_entry_bytes = 100\n",
        models(addr)
    );
    let small = start_gateway(&db, &config).await;
    ask(&small.base, &chat("hello"), &[]).await;
    assert_eq!(
        cache_header(&ask(&small.base, &chat("hello"), &[]).await),
        Some("miss")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_turns_the_cache_off_or_on_for_one_request() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (mock, addr) = mock_upstream().await;
    let gw = start_gateway(&db, &format!("{}{MEMORY}", models(addr))).await;
    let off = [("x-tollgate-cache", "off")];
    ask(&gw.base, &chat("hello"), &[]).await;
    let r = ask(&gw.base, &chat("hello"), &off).await;
    assert_eq!(cache_header(&r), None, "off: neither looked up nor stored");
    assert_eq!(upstream_requests(&mock), 2);

    // Not at temperature 0: not cached, unless asked for.
    let mut warm = chat("warm");
    warm["temperature"] = json!(0.7);
    for _ in 0..2 {
        assert_eq!(cache_header(&ask(&gw.base, &warm, &[]).await), None);
    }
    assert_eq!(upstream_requests(&mock), 4);
    let on = [("x-tollgate-cache", "on")];
    assert_eq!(cache_header(&ask(&gw.base, &warm, &on).await), Some("miss"));
    assert_eq!(cache_header(&ask(&gw.base, &warm, &on).await), Some("hit"));
    assert_eq!(upstream_requests(&mock), 5);
}

/// Waits until Redis holds a key under `prefix` (a Redis store goes on in the background).
async fn stored_in_redis(prefix: &str) -> Vec<String> {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}v1:cache:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() || Instant::now() > until {
            return keys;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_is_shared_by_two_instances() {
    let prefix = unique_prefix();
    let (mock, addr) = mock_upstream().await;
    let config = format!("{}{}", models(addr), redis_cache(&redis_url(), &prefix));
    let (db_a, db_b) = (
        TestDb::new(Backend::Sqlite).await,
        TestDb::new(Backend::Sqlite).await,
    );
    let a = start_gateway(&db_a, &config).await;
    let b = start_gateway(&db_b, &config).await;
    let mut body = chat("shared");
    body["stream"] = json!(true);
    let miss = ask(&a.base, &body, &[]).await;
    assert_eq!(cache_header(&miss), Some("miss"));
    let keys = stored_in_redis(&prefix).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let hit = ask(&b.base, &chat("shared"), &[]).await;
    assert_eq!(
        cache_header(&hit),
        Some("hit"),
        "the other instance's answer"
    );
    assert_eq!(content(&hit.json()), parse_sse(&miss.text()).content);
    assert_eq!(upstream_requests(&mock), 1);

    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=60).contains(&ttl), "stored with SET EX: {ttl}");
    let _: () = redis::cmd("DEL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_requests_go_on_without_the_cache() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", closed.local_addr().unwrap());
    drop(closed);
    let db = TestDb::new(Backend::Sqlite).await;
    let (mock, addr) = mock_upstream().await;
    let config = format!("{}{}", models(addr), redis_cache(&url, &unique_prefix()));
    let gw = start_gateway(&db, &config).await;
    for _ in 0..3 {
        let started = Instant::now();
        let r = ask(&gw.base, &chat("hello"), &[]).await;
        assert_eq!(
            cache_header(&r),
            None,
            "neither hit nor miss: not looked up"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    assert_eq!(upstream_requests(&mock), 3);
    let m = metrics(&gw.base).await;
    let errors = metric(&m, "tollgate_cache_errors_total", &[("backend", "redis")]).unwrap();
    assert!(errors >= 1.0, "{m}");
}

/// A user key of a project of its own.
async fn key_of_new_project(store: &Db, name: &str) -> String {
    store
        .create_project(&NewProject {
            name: name.into(),
            budget_usd: None,
            budget_period: Default::default(),
        })
        .await
        .unwrap();
    let (key, prefix, hash) = tollgate::auth::generate_key();
    let new = NewApiKey {
        name: format!("{name}-key"),
        project: Some(name.into()),
        role: "user".into(),
        ..Default::default()
    };
    store.insert_api_key(&new, &hash, &prefix).await.unwrap();
    key
}

async fn tenants(share: bool) -> (usize, Vec<Option<String>>) {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let a = format!("Bearer {}", key_of_new_project(&store, "team-a").await);
    let b = format!("Bearer {}", key_of_new_project(&store, "team-b").await);
    let (mock, addr) = mock_upstream().await;
    let config = format!("{}{MEMORY}share_across_projects = {share}\n", models(addr));
    let gw = start_gateway_with(&db, &config, |t| {
        t.replace("require_api_key = false", "require_api_key = true")
    })
    .await;
    let mut seen = Vec::new();
    for key in [&a, &b, &a, &b] {
        let r = ask(&gw.base, &chat("secret plans"), &[("authorization", key)]).await;
        seen.push(cache_header(&r).map(str::to_owned));
    }
    (upstream_requests(&mock), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_project_never_reads_another_projects_answers() {
    let (upstream, seen) = tenants(false).await;
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(seen, [s("miss"), s("miss"), s("hit"), s("hit")]);
    assert_eq!(upstream, 2);
    // Shared on purpose: the second project reads the first one's answer.
    let (upstream, seen) = tenants(true).await;
    assert_eq!(seen, [s("miss"), s("hit"), s("hit"), s("hit")]);
    assert_eq!(upstream, 1);
}

/// `(cache_hit, input, output, cost, provider_id)` of every row, oldest first, once `n` are
/// written.
async fn cache_rows(store: &Db, n: usize) -> Vec<(bool, i64, i64, String, Option<String>)> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = store
            .fetch_all(
                "SELECT cache_hit, input_tokens, output_tokens, cost_usd::text AS cost_usd,
                        provider_id::text AS provider_id
                 FROM llm_usage_logs ORDER BY created_at, id",
                &[],
            )
            .await
            .unwrap();
        if rows.len() >= n || Instant::now() > until {
            return rows
                .iter()
                .map(|r| {
                    (
                        r.bool("cache_hit").unwrap(),
                        r.int("input_tokens").unwrap(),
                        r.int("output_tokens").unwrap(),
                        r.text("cost_usd").unwrap(),
                        r.opt_text("provider_id").unwrap(),
                    )
                })
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_hit_has_its_own_usage_row_with_the_stored_tokens_and_no_cost(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (_mock, addr) = mock_upstream().await;
    let gw = start_gateway(&db, &format!("{}{MEMORY}", models(addr))).await;
    ask(&gw.base, &chat("hello"), &[]).await;
    let mut streamed = chat("hello");
    streamed["stream"] = json!(true);
    ask(&gw.base, &streamed, &[]).await;
    let rows = cache_rows(&db.connect().await, 2).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (miss, hit) = (&rows[0], &rows[1]);
    assert!(!miss.0 && hit.0, "{rows:?}");
    assert!(miss.1 > 0 && miss.2 > 0, "{rows:?}");
    assert_eq!((hit.1, hit.2), (miss.1, miss.2), "the stored token counts");
    assert!(dec(&miss.3) > dec("0"), "{rows:?}");
    assert_eq!(dec(&hit.3), dec("0"));
    assert!(
        miss.4.is_some() && hit.4.is_none(),
        "no provider served the hit"
    );
    // Tokens providers processed count once; the hit counts as a request.
    let m = metrics(&gw.base).await;
    let output = metric(
        &m,
        "tollgate_tokens_total",
        &[("model", "fast"), ("kind", "output")],
    );
    assert_eq!(output, Some(miss.2 as f64), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_the_cache_on() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (mock, addr) = mock_upstream().await;
    let gw = start_gateway(&db, &models(addr)).await;
    assert_eq!(
        cache_header(&ask(&gw.base, &chat("hello"), &[]).await),
        None
    );
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    std::fs::write(&gw.config_path, format!("{text}\n{MEMORY}")).unwrap();
    let report = gw.running.app.reload().await.unwrap();
    assert!(
        report.applied.contains(&"cache.enabled".to_owned()),
        "{report:?}"
    );
    assert_eq!(
        cache_header(&ask(&gw.base, &chat("hello"), &[]).await),
        Some("miss")
    );
    assert_eq!(
        cache_header(&ask(&gw.base, &chat("hello"), &[]).await),
        Some("hit")
    );
    assert_eq!(upstream_requests(&mock), 2);
}
