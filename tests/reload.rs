//! Reloading config.toml while serving (SIGHUP, `POST /admin/reload` and a change to the file
//! on disk call `App::reload`): what applies at run time applies, what needs a restart is
//! named, and a file that would leave nothing serving, or is wrong anywhere, is refused whole
//! while the running configuration keeps serving. The file's providers, models and routes are
//! synced into the database on every load, on SQLite and on PostgreSQL.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use serde_json::json;

on_both_databases!(
    config_sync_and_reload_follow_the_file,
    routes_are_rows_the_file_writes_and_removes,
    models_follow_the_file_on_disk_under_streaming_load,
);

fn chat(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

const MODEL: &str = "[[providers]]\nname = \"m\"\napi = \"mock\"\n\
    [[models]]\nname = \"chat\"\nprovider = \"m\"\nmodel_id = \"mock-chat\"\n";

/// Rewrites the gateway's config file with `edit` applied to its current text.
fn rewrite(gw: &TestGateway, edit: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    std::fs::write(&gw.config_path, edit(text)).unwrap();
}

fn reloads(text: &str, result: &str) -> Option<f64> {
    metric(text, "tollgate_config_reloads_total", &[("result", result)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_keys_on_and_limits_down_applies_at_once() {
    let db = TestDb::new(Backend::Sqlite).await;
    let gw = start_gateway(&db, MODEL).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    assert_eq!(post(&url, &chat("chat"), &[]).await.status, StatusCode::OK);

    let store = db.connect().await;
    let (key, prefix, hash) = tollgate::auth::generate_key();
    let new = tollgate::store::NewApiKey {
        name: "app".into(),
        role: "user".into(),
        ..Default::default()
    };
    store.insert_api_key(&new, &hash, &prefix).await.unwrap();
    rewrite(&gw, |t| {
        t.replace("require_api_key = false", "require_api_key = true")
            .replace("max_body_bytes = 65536", "max_body_bytes = 300")
    });
    let report = gw.running.app.reload().await.unwrap();
    assert_eq!(
        report.applied,
        ["auth.require_api_key", "server.max_body_bytes"]
    );
    assert!(report.restart_required.is_empty(), "{report:?}");

    let r = post(&url, &chat("chat"), &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    let auth = format!("Bearer {key}");
    let with_key = [("authorization", auth.as_str())];
    assert_eq!(
        post(&url, &chat("chat"), &with_key).await.status,
        StatusCode::OK
    );
    let big = json!({"model": "chat", "messages": [{"role": "user", "content": "x".repeat(400)}]});
    assert_eq!(
        post(&url, &big, &with_key).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    gw.running.stop().await;
}

/// Turning keys off opens the gateway: from then on it answers only local pages, as one that
/// started open does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_keys_off_brings_the_open_gateways_host_checks() {
    let db = TestDb::new(Backend::Sqlite).await;
    let gw = start_gateway_with(&db, MODEL, |t| {
        t.replace("require_api_key = false", "require_api_key = true")
    })
    .await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let foreign = [("origin", "https://evil.example")];
    let r = post(&url, &chat("chat"), &foreign).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());

    rewrite(&gw, |t| {
        t.replace("require_api_key = true", "require_api_key = false")
    });
    let report = gw.running.app.reload().await.unwrap();
    assert_eq!(report.applied, ["auth.require_api_key"]);
    let r = post(&url, &chat("chat"), &foreign).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "forbidden_origin");
    assert_eq!(post(&url, &chat("chat"), &[]).await.status, StatusCode::OK);
    gw.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_need_a_restart_are_named_until_it_happens() {
    let db = TestDb::new(Backend::Sqlite).await;
    let gw = start_gateway(&db, MODEL).await;
    rewrite(&gw, |t| {
        t.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"")
            .replace("shutdown_grace_secs = 2", "shutdown_grace_secs = 3")
            .replace("request_timeout_secs = 5", "request_timeout_secs = 7")
    });
    let report = gw.running.app.reload().await.unwrap();
    assert_eq!(report.applied, ["server.request_timeout_secs"]);
    assert_eq!(
        report.restart_required,
        ["server.listen", "server.shutdown_grace_secs"]
    );
    assert_eq!(report.deployments, 1);
    // still pending at the next reload; nothing new to apply
    let again = gw.running.app.reload().await.unwrap();
    assert!(again.applied.is_empty(), "{again:?}");
    assert_eq!(again.restart_required, report.restart_required);

    // still serving where it started
    let url = format!("{}/v1/chat/completions", gw.base);
    assert_eq!(post(&url, &chat("chat"), &[]).await.status, StatusCode::OK);
    let metrics = get(&format!("{}/metrics", gw.base), &[]).await.text();
    assert_eq!(reloads(&metrics, "success"), Some(2.0));
    gw.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_would_leave_nothing_serving_is_refused() {
    let db = TestDb::new(Backend::Sqlite).await;
    let gw = start_gateway(&db, MODEL).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let head = std::fs::read_to_string(&gw.config_path)
        .unwrap()
        .replace(MODEL, "");
    let inactive = MODEL.to_owned() + "status = \"inactive\"\n";
    let disabled = MODEL.replace("api = \"mock\"", "api = \"mock\"\nenabled = false");
    for (what, text) in [
        ("empty", String::new()),
        ("model-less", head.clone()),
        ("every model inactive", head.clone() + &inactive),
        ("every provider disabled", head.clone() + &disabled),
    ] {
        std::fs::write(&gw.config_path, text).unwrap();
        let err = gw.running.app.reload().await.unwrap_err();
        assert!(
            err.to_string().contains("no [[models]] entry would serve"),
            "{what}: {err:#}"
        );
        let r = post(&url, &chat("chat"), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.text());
    }
    let metrics = get(&format!("{}/metrics", gw.base), &[]).await.text();
    assert_eq!(reloads(&metrics, "error"), Some(4.0));
    gw.running.stop().await;

    // nothing was written: the model is still active in the database
    let rows = db
        .connect()
        .await
        .fetch_all("SELECT status FROM llm_models", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].text("status").unwrap(), "active");
}

async fn config_sync_and_reload_follow_the_file(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (_mock, addr) = mock_upstream().await;
    let two_models = format!(
        "{}\n[[models]]\nname = \"a\"\nprovider = \"up\"\nmodel_id = \"a1\"\nis_default = true\n[[models]]\nname = \"b\"\nprovider = \"up\"\nmodel_id = \"b1\"\n",
        upstream_provider(addr, "up", "k")
    );
    let gw = start_gateway(&db, &two_models).await;
    let store = db.connect().await;
    // a row the admin API made: the file never touches it
    store
        .execute(
            "INSERT INTO llm_providers (id, name, display_name, api, base_url, managed_by) VALUES ($1::uuid, 'manual', 'Manual', 'openai', 'http://127.0.0.1:1/v1', 'api')",
            &[tollgate::ids::new_id().into()],
        )
        .await
        .unwrap();
    let chat = |m: &str| json!({"model": m, "messages": [{"role": "user", "content": "x"}]});
    let url = format!("{}/v1/chat/completions", gw.base);
    assert_eq!(post(&url, &chat("b"), &[]).await.status, StatusCode::OK);

    // b leaves the file, a gets new prices and stops being the default, c appears
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    let new_models = "[[models]]\nname = \"a\"\nprovider = \"up\"\nmodel_id = \"a1\"\ncost_input_per_million = \"5\"\n[[models]]\nname = \"c\"\nprovider = \"up\"\nmodel_id = \"c1\"\nis_default = true\n";
    let head = &text[..text.find("[[models]]").unwrap()];
    std::fs::write(&gw.config_path, format!("{head}{new_models}")).unwrap();
    gw.running.app.reload().await.unwrap();
    assert_eq!(
        post(&url, &chat("b"), &[]).await.status,
        StatusCode::NOT_FOUND,
        "removed from the file: inactive"
    );
    assert_eq!(post(&url, &chat("c"), &[]).await.status, StatusCode::OK);
    // a system setting naming a deployment can be asked for by its key (seed 001's infra models)
    store
        .put_setting(
            "infra_model_summarization",
            &json!({"providerId": "up", "modelId": "c1"}),
        )
        .await
        .unwrap();
    gw.running.app.reload().await.unwrap();
    let r = post(&url, &chat("infra_model_summarization"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // a broken file is refused and the registry keeps serving
    std::fs::write(&gw.config_path, "[[models]]\nname = \n").unwrap();
    assert!(gw.running.app.reload().await.is_err());
    assert_eq!(post(&url, &chat("c"), &[]).await.status, StatusCode::OK);
    let metrics = get(&format!("{}/metrics", gw.base), &[]).await.text();
    assert_eq!(
        metric(
            &metrics,
            "tollgate_config_reloads_total",
            &[("result", "error")]
        ),
        Some(1.0)
    );
    gw.running.stop().await;

    let rows = store
        .fetch_all(
            "SELECT m.model_id, m.status, m.is_default, m.cost_input_per_million::text AS price FROM llm_models m ORDER BY m.model_id",
            &[],
        )
        .await
        .unwrap();
    let state: Vec<(String, String, bool, rust_decimal::Decimal)> = rows
        .iter()
        .map(|r| {
            (
                r.text("model_id").unwrap(),
                r.text("status").unwrap(),
                r.bool("is_default").unwrap(),
                dec(&r.text("price").unwrap()),
            )
        })
        .collect();
    assert_eq!(
        state,
        [
            ("a1".into(), "active".into(), false, dec("5")),
            ("b1".into(), "inactive".into(), false, dec("0")),
            ("c1".into(), "active".into(), true, dec("0")),
        ]
    );
    let manual = store
        .fetch_all(
            "SELECT managed_by, is_enabled FROM llm_providers WHERE name = 'manual'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(manual[0].text("managed_by").unwrap(), "api");
    assert!(manual[0].bool("is_enabled").unwrap());
}

/// `[[routes]]` are synced into `system_settings` as `route:<name>`, marked as the file's: a
/// route that leaves the file leaves the database, and a route the admin API wrote is served
/// and never touched by the file, even one with the same name.
async fn routes_are_rows_the_file_writes_and_removes(backend: Backend) {
    let db = TestDb::new(backend).await;
    let routes =
        "[[routes]]\nname = \"smart\"\ntargets = [\"m/mock-chat\"]\nstrategy = \"cheapest\"\n\
        [[routes]]\nname = \"manual\"\ntargets = [\"m/mock-chat\"]\n";
    let gw = start_gateway(&db, &format!("{MODEL}{routes}")).await;
    let store = db.connect().await;
    let url = format!("{}/v1/chat/completions", gw.base);
    assert_eq!(post(&url, &chat("smart"), &[]).await.status, StatusCode::OK);
    let stored = |key: &'static str| {
        let store = store.clone();
        async move {
            let rows = store
                .fetch_all(
                    "SELECT CAST(value AS TEXT) AS value, managed_by FROM system_settings WHERE key = $1",
                    &[key.into()],
                )
                .await
                .unwrap();
            rows.first().map(|r| {
                let value: serde_json::Value =
                    serde_json::from_str(&r.text("value").unwrap()).unwrap();
                (value, r.text("managed_by").unwrap())
            })
        }
    };
    let (value, by) = stored("route:smart").await.unwrap();
    assert_eq!(
        value,
        json!({"targets": ["m/mock-chat"], "strategy": "cheapest"})
    );
    assert_eq!(by, "config");

    // An admin route, and one the file also names: the admin's stays as it is.
    store
        .execute(
            "DELETE FROM system_settings WHERE key = 'route:manual'",
            &[],
        )
        .await
        .unwrap();
    store
        .put_setting(
            "route:manual",
            &json!({"targets": ["chat"], "strategy": "least_busy"}),
        )
        .await
        .unwrap();
    store
        .put_setting("route:admin", &json!({"targets": ["chat"]}))
        .await
        .unwrap();
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    std::fs::write(
        &gw.config_path,
        text.replace("name = \"smart\"", "name = \"smarter\""),
    )
    .unwrap();
    let report = gw.running.app.reload().await.unwrap();
    assert_eq!(report.sync.skipped, ["route manual"]);
    assert_eq!(report.sync.removed_routes, 1);
    assert_eq!(
        post(&url, &chat("smart"), &[]).await.status,
        StatusCode::NOT_FOUND
    );
    for served in ["smarter", "manual", "admin"] {
        assert_eq!(
            post(&url, &chat(served), &[]).await.status,
            StatusCode::OK,
            "{served}"
        );
    }
    assert!(stored("route:smart").await.is_none());
    let (value, by) = stored("route:manual").await.unwrap();
    assert_eq!(
        (value["strategy"].as_str(), by.as_str()),
        (Some("least_busy"), "api")
    );
    gw.running.stop().await;
}

// ---------------------------------------------------------------------------------------
// config.toml watched on disk: every change below is a write to the file, with no signal and
// no API call.

/// A change must be served this soon after the write.
const WITHIN: Duration = Duration::from_secs(2);

/// Writes the file in place (truncate and write, as `echo > file` or most editors' default).
fn write_in_place(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Writes a new file beside it and renames it over the old one (an editor's atomic save).
fn write_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Asks for `model` until the answer has status `want`; returns how long it took, and fails
/// the test if it takes longer than `WITHIN`.
async fn answered_within(gw: &TestGateway, model: &str, want: StatusCode) -> Duration {
    let url = format!("{}/v1/chat/completions", gw.base);
    let start = Instant::now();
    loop {
        let r = post(&url, &chat(model), &[]).await;
        if r.status == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < WITHIN,
            "{model}: still {} after {:?}, expected {want}: {}",
            r.status,
            start.elapsed(),
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn reload_count(gw: &TestGateway, result: &str) -> f64 {
    let metrics = get(&format!("{}/metrics", gw.base), &[]).await.text();
    reloads(&metrics, result).unwrap_or_else(|| panic!("no {result} series in {metrics}"))
}

/// Clients that ask for streamed chats in a loop, each reading every answer to its end.
struct StreamLoad {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<(usize, Vec<String>)>>,
}

impl StreamLoad {
    fn start(gw: &TestGateway, model: &str, clients: usize) -> StreamLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let url = format!("{}/v1/chat/completions", gw.base);
        let body = json!({"model": model, "stream": true,
            "messages": [{"role": "user", "content": "hello there"}]});
        let clients = (0..clients)
            .map(|_| {
                let (stop, url, body) = (stop.clone(), url.clone(), body.clone());
                tokio::spawn(async move {
                    let (mut ok, mut failed) = (0, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        let r = post(&url, &body, &[]).await;
                        if r.status == StatusCode::OK && r.text().ends_with("data: [DONE]\n\n") {
                            ok += 1;
                        } else {
                            failed.push(format!("{}: {}", r.status, r.text()));
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        StreamLoad { stop, clients }
    }

    /// Stops the clients; returns the answers that were whole and the ones that failed.
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut ok, mut failed) = (0, Vec::new());
        for c in self.clients {
            let (o, f) = c.await.unwrap();
            ok += o;
            failed.extend(f);
        }
        (ok, failed)
    }
}

const STEADY: &str = "[[providers]]\nname = \"m\"\napi = \"mock\"\nmax_parallel_requests = 100\nrequests_per_minute = 0\n\
    [[models]]\nname = \"steady\"\nprovider = \"m\"\nmodel_id = \"mock-steady\"\n\
    [[models]]\nname = \"changing\"\nprovider = \"m\"\nmodel_id = \"mock-changing\"\n";

/// The completion tokens of a chat with `model` that does not set `max_tokens`.
async fn completion_tokens(gw: &TestGateway, model: &str) -> u64 {
    let r = post(
        &format!("{}/v1/chat/completions", gw.base),
        &chat(model),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()["usage"]["completion_tokens"].as_u64().unwrap()
}

/// Add, change and remove models by rewriting the file while four clients stream chats from
/// another model in a loop: each change is served within 2 s, and no request fails.
async fn models_follow_the_file_on_disk_under_streaming_load(backend: Backend) {
    let db = TestDb::new(backend).await;
    let gw = start_gateway(&db, STEADY).await;
    let path = gw.config_path.clone();
    let text = std::fs::read_to_string(&path).unwrap();
    let load = StreamLoad::start(&gw, "steady", 4);

    let added = format!(
        "{text}[[models]]\nname = \"added\"\nprovider = \"m\"\nmodel_id = \"mock-added\"\n"
    );
    write_in_place(&path, &added);
    let took = answered_within(&gw, "added", StatusCode::OK).await;
    eprintln!("added: served after {took:?}");

    assert_eq!(completion_tokens(&gw, "changing").await, 16);
    let changed = added.replace(
        "model_id = \"mock-changing\"\n",
        "model_id = \"mock-changing\"\nparameters = { max_tokens = 3 }\n",
    );
    write_by_rename(&path, &changed);
    let start = Instant::now();
    while completion_tokens(&gw, "changing").await != 3 {
        assert!(
            start.elapsed() < WITHIN,
            "the new parameters were not applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("changed: served after {:?}", start.elapsed());

    write_in_place(
        &path,
        &changed
            .replace("name = \"added\"", "name = \"gone\"")
            .replace(
                "[[models]]\nname = \"gone\"\nprovider = \"m\"\nmodel_id = \"mock-added\"\n",
                "",
            ),
    );
    let took = answered_within(&gw, "added", StatusCode::NOT_FOUND).await;
    eprintln!("removed: gone after {took:?}");

    let (ok, failed) = load.finish().await;
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(ok > 20, "only {ok} streams were answered");
    eprintln!("{ok} streams answered whole, none failed");
    assert_eq!(reload_count(&gw, "error").await, 0.0);
    assert!(reload_count(&gw, "success").await >= 3.0);
    gw.running.stop().await;
}

/// A file that is wrong anywhere is refused as a whole: the valid model it adds is not
/// served either, the running registry keeps serving, and the error counter (at 0 from the
/// start) moves. Correcting the file applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_on_disk_is_refused_whole_while_the_old_one_serves() {
    let db = TestDb::new(Backend::Sqlite).await;
    let gw = start_gateway(&db, STEADY).await;
    assert_eq!(reload_count(&gw, "error").await, 0.0);
    let path = gw.config_path.clone();
    let text = std::fs::read_to_string(&path).unwrap();
    let new_model = "[[models]]\nname = \"new\"\nprovider = \"m\"\nmodel_id = \"mock-new\"\n";
    let bad_reference = "[[models]]\nname = \"bad\"\nprovider = \"nobody\"\nmodel_id = \"x\"\n";
    for (round, bad) in [
        format!("{text}{new_model}[[models]]\nname = \n"),
        format!("{text}{new_model}{bad_reference}"),
    ]
    .iter()
    .enumerate()
    {
        write_in_place(&path, bad);
        let start = Instant::now();
        while reload_count(&gw, "error").await < (round + 1) as f64 {
            assert!(start.elapsed() < WITHIN, "round {round}: not refused");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        answered_within(&gw, "steady", StatusCode::OK).await;
        answered_within(&gw, "new", StatusCode::NOT_FOUND).await;
    }
    assert_eq!(reload_count(&gw, "success").await, 0.0);
    write_in_place(&path, &format!("{text}{new_model}"));
    answered_within(&gw, "new", StatusCode::OK).await;
    assert_eq!(reload_count(&gw, "error").await, 2.0);
    gw.running.stop().await;
}

/// Ten writes in quick succession (a script, an editor's several steps) apply once, or a few
/// times at most, and the last one is what serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_writes_is_applied_once() {
    let db = TestDb::new(Backend::Sqlite).await;
    let gw = start_gateway(&db, STEADY).await;
    let path = gw.config_path.clone();
    let text = std::fs::read_to_string(&path).unwrap();
    for i in 0..10 {
        let last = format!(
            "[[models]]\nname = \"burst-{i}\"\nprovider = \"m\"\nmodel_id = \"mock-{i}\"\n"
        );
        let write = if i % 2 == 0 {
            write_in_place
        } else {
            write_by_rename
        };
        write(&path, &format!("{text}{last}"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    answered_within(&gw, "burst-9", StatusCode::OK).await;
    // Time for any late reload to show in the counter.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let applied = reload_count(&gw, "success").await;
    assert!(
        (1.0..=2.0).contains(&applied),
        "{applied} reloads for one burst"
    );
    assert_eq!(
        post(
            &format!("{}/v1/chat/completions", gw.base),
            &chat("burst-8"),
            &[]
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    gw.running.stop().await;
}

/// A stream in flight when its model leaves the registry finishes on the snapshot it started
/// with: every chunk and the end, from the provider that has meanwhile been removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_in_flight_finishes_on_the_snapshot_it_started_with() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (_mock, addr) = start_mock(tollgate::mock::MockUpstream {
        options: tollgate::mock::MockOptions {
            chunk_ms: 50,
            chunks: 40,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let slow = format!(
        "{}[[models]]\nname = \"slow\"\nprovider = \"slow\"\nmodel_id = \"slow-1\"\n",
        upstream_provider(addr, "slow", "k")
    );
    let gw = start_gateway(&db, &format!("{STEADY}{slow}")).await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let body =
        json!({"model": "slow", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let stream = tokio::spawn(async move {
        let r = post(&url, &body, &[]).await;
        (r, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    write_by_rename(&gw.config_path, &text.replace(&slow, ""));
    answered_within(&gw, "slow", StatusCode::NOT_FOUND).await;
    let removed_at = Instant::now();

    let (r, finished_at) = stream.await.unwrap();
    assert!(
        finished_at > removed_at,
        "the stream ended before the reload"
    );
    assert_eq!(r.status, StatusCode::OK);
    let text = r.text();
    let content_chunks = text.matches("\"content\":\"").count();
    assert!(content_chunks >= 40, "{content_chunks} chunks: {text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    gw.running.stop().await;
}
