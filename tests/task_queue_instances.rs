//! The task queue shared by instances: two `tollgate serve` processes (the binary) on one
//! PostgreSQL database run 100 queued tasks, each exactly once (one result and one usage row
//! per model); then one of them is killed with SIGKILL in the middle of its tasks, and the
//! other finishes them once their leases have expired.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use serde_json::json;
use tollgate::mock::{MockOptions, MockUpstream};
use tollgate::store::Db;

/// A `tollgate serve` process, killed when the test ends however it ends.
struct Instance(Child);

impl Instance {
    fn start(config: &std::path::Path) -> Instance {
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the tollgate binary starts");
        Instance(child)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The registry every instance syncs (the same, so no sync retires another's models): `a` and
/// `b` answer at once, `slow` after 1.5 s.
fn registry(fast: std::net::SocketAddr, slow: std::net::SocketAddr) -> String {
    format!(
        r#"{fast_provider}
max_parallel_requests = 64
requests_per_minute = 1000000
{slow_provider}
max_parallel_requests = 64
requests_per_minute = 1000000

[[models]]
name = "a"
provider = "fast"
model_id = "fast-a"
cost_input_per_million = "1"
cost_output_per_million = "2"

[[models]]
name = "b"
provider = "fast"
model_id = "fast-b"
cost_input_per_million = "1"
cost_output_per_million = "2"

[[models]]
name = "slow"
provider = "slow"
model_id = "slow-1"
"#,
        fast_provider = upstream_provider(fast, "fast", "sk-fast"),
        slow_provider = upstream_provider(slow, "slow", "sk-slow"),
    )
}

fn tasks_section(workers: usize) -> String {
    format!("[tasks]\nworkers = {workers}\nmax_parallel = 4\nlease_secs = 2\npoll_interval_ms = 100\nmax_queued_per_project = 1000\n")
}

async fn count(db: &Db, sql: &str) -> i64 {
    db.fetch_all(sql, &[]).await.unwrap()[0].int("n").unwrap()
}

/// Waits until `sql` counts `n`, within `secs`.
async fn until_count(db: &Db, sql: &str, n: i64, secs: u64) {
    let end = Instant::now() + Duration::from_secs(secs);
    while count(db, sql).await != n {
        assert!(Instant::now() < end, "never reached {n}: {sql}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn queue(base: &str, models: serde_json::Value, n: usize) {
    for i in 0..n {
        let body = json!({"name": format!("t{i}"), "prompt": "one two three", "models": models});
        let r = post(&format!("{base}/api/v1/tasks"), &body, &[]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_run_each_task_once_and_take_over_a_dead_ones() {
    let db = TestDb::new(Backend::Postgres).await;
    let (fast, fast_addr) = start_mock(MockUpstream::default()).await;
    let slow_mock = MockUpstream {
        options: MockOptions {
            ttft_ms: 1500,
            ..Default::default()
        },
        ..Default::default()
    };
    let (_slow, slow_addr) = start_mock(slow_mock).await;
    let models = registry(fast_addr, slow_addr);
    // This one only queues (no workers); the two processes run the tasks.
    let front = start_gateway(&db, &format!("{models}\n{}", tasks_section(0))).await;
    let store = db.connect().await;
    queue(&front.base, json!(["a", "b"]), 100).await;

    let configs: Vec<_> = ["one", "two"]
        .iter()
        .map(|name| {
            let text = config_text(
                &db.url,
                db.dir(),
                &format!("{models}\n{}", tasks_section(4)),
            )
            .replace("usage.spool", &format!("{name}.spool"));
            let path = db.dir().join(format!("{name}.toml"));
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect();
    let mut one = Some(Instance::start(&configs[0]));
    let _two = Instance::start(&configs[1]);

    let succeeded = "SELECT COUNT(*) AS n FROM tasks WHERE status = 'succeeded'";
    until_count(&store, succeeded, 100, 30).await;
    assert_eq!(
        count(&store, "SELECT COUNT(*) AS n FROM task_results").await,
        200
    );
    let retried = "SELECT COUNT(*) AS n FROM tasks WHERE attempts <> 1";
    assert_eq!(count(&store, retried).await, 0);
    let usage = "SELECT COUNT(*) AS n FROM llm_usage_logs WHERE endpoint = 'api.tasks'";
    until_count(&store, usage, 200, 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count(&store, usage).await,
        200,
        "one usage row per model call"
    );
    let calls = fast
        .counters
        .requests
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(calls, 200, "each model of each task called once");

    // Slow tasks spread over both instances; then one instance dies mid-run.
    queue(&front.base, json!(["slow"]), 16).await;
    let owners = "SELECT COUNT(DISTINCT lease_owner) AS n FROM tasks WHERE status = 'running'";
    until_count(&store, owners, 2, 10).await;
    let running = store
        .fetch_all(
            "SELECT id::text AS id, lease_owner FROM tasks WHERE status = 'running'",
            &[],
        )
        .await
        .unwrap();
    drop(one.take()); // SIGKILL
    let mut by_owner: HashMap<String, BTreeSet<String>> = HashMap::new();
    for r in &running {
        let owner = r.text("lease_owner").unwrap();
        by_owner
            .entry(owner)
            .or_default()
            .insert(r.text("id").unwrap());
    }

    until_count(&store, succeeded, 116, 30).await;
    assert_eq!(
        count(&store, "SELECT COUNT(*) AS n FROM task_results").await,
        216
    );
    let taken_over: BTreeSet<String> = store
        .fetch_all("SELECT id::text AS id FROM tasks WHERE attempts = 2", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.text("id").unwrap())
        .collect();
    assert!(
        !taken_over.is_empty(),
        "the dead instance's tasks were run again"
    );
    // One instance's tasks (the dead one's) were all run again, the other's none.
    let held: Vec<&BTreeSet<String>> = by_owner.values().collect();
    let dead_and_alive = |dead: &BTreeSet<String>, alive: &BTreeSet<String>| {
        dead.is_subset(&taken_over) && alive.is_disjoint(&taken_over)
    };
    assert!(
        dead_and_alive(held[0], held[1]) || dead_and_alive(held[1], held[0]),
        "the dead instance's tasks were taken over: {taken_over:?} vs {by_owner:?}"
    );
    front.running.stop().await;
}
