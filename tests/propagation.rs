//! A registry change reaches every instance on the database. Two gateways run in this process
//! with two config files on one fresh database: a change made through one (its config file,
//! or rows written with the `Db` API and `App::refresh_registry`) is served by the other
//! within 2 s; on PostgreSQL with its LISTEN connection killed, or with no notification at
//! all, the periodic version check still brings it there.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use serde_json::json;
use tollgate::config::Config;
use tollgate::store::{Db, LISTENER_APPLICATION_NAME};

/// A change must be served this soon after it is made.
const WITHIN: Duration = Duration::from_secs(2);

/// The registry both instances' files describe: instances on one database share it.
const REGISTRY: &str = "[[providers]]\nname = \"m\"\napi = \"mock\"\nmax_parallel_requests = 100\nrequests_per_minute = 0\n\
    [[models]]\nname = \"steady\"\nprovider = \"m\"\nmodel_id = \"mock-steady\"\n";

/// A gateway on `db` whose config file and spool are in a directory of its own.
async fn instance(db: &TestDb) -> (TestGateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config_text(&db.url, dir.path(), REGISTRY)).unwrap();
    let loaded = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let running = tollgate::server::start(loaded).await.unwrap();
    let base = format!("http://{}", running.addr);
    let gw = TestGateway {
        running,
        base,
        config_path: path,
    };
    (gw, dir)
}

fn chat(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

/// Asks `gw` for `model` until it answers `want`; fails after `WITHIN`.
async fn served_within(gw: &TestGateway, model: &str, want: StatusCode) -> Duration {
    let url = format!("{}/v1/chat/completions", gw.base);
    let start = Instant::now();
    loop {
        let r = post(&url, &chat(model), &[]).await;
        if r.status == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < WITHIN,
            "{model}: still {} after {:?}: {}",
            r.status,
            start.elapsed(),
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Adds a model through the database, as the admin API does (`managed_by = 'api'`).
fn insert_model(name: &str) -> (String, Vec<tollgate::store::Arg>) {
    (
        "INSERT INTO llm_models (id, provider_id, model_id, name, display_name)
         VALUES ($1::uuid, (SELECT id FROM llm_providers WHERE name = 'm'), $2, $2, $2)"
            .into(),
        vec![tollgate::ids::new_id().into(), name.into()],
    )
}

async fn registry_version_metric(gw: &TestGateway) -> f64 {
    let text = get(&format!("{}/metrics", gw.base), &[]).await.text();
    metric(&text, "tollgate_registry_version", &[]).unwrap()
}

/// How many instances' LISTEN connections the database has.
async fn listeners(store: &Db) -> i64 {
    let rows = store
        .fetch_all(
            "SELECT count(*) AS n FROM pg_stat_activity
             WHERE application_name = $1 AND datname = current_database()",
            &[LISTENER_APPLICATION_NAME.into()],
        )
        .await
        .unwrap();
    rows[0].int("n").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgres_serve_each_others_changes() {
    let db = TestDb::new(Backend::Postgres).await;
    let (a, _a_dir) = instance(&db).await;
    let (b, _b_dir) = instance(&db).await;
    let store = db.connect().await;

    // Through A's config file: A reloads it, B hears of it.
    let text = std::fs::read_to_string(&a.config_path).unwrap();
    let from_file =
        "[[models]]\nname = \"from-file\"\nprovider = \"m\"\nmodel_id = \"mock-file\"\n";
    std::fs::write(&a.config_path, format!("{text}{from_file}")).unwrap();
    let took = served_within(&b, "from-file", StatusCode::OK).await;
    eprintln!("a config change on A served by B after {took:?}");

    // Through rows A writes with the Db API, then `refresh_registry` (the admin API's way).
    let (sql, args) = insert_model("from-api");
    a.running.app.gateway.db.execute(&sql, &args).await.unwrap();
    a.running.app.refresh_registry().await.unwrap();
    let took = served_within(&b, "from-api", StatusCode::OK).await;
    eprintln!("an admin change on A served by B after {took:?}");
    assert_eq!(
        post(
            &format!("{}/v1/chat/completions", a.base),
            &chat("from-api"),
            &[]
        )
        .await
        .status,
        StatusCode::OK,
        "served by A as soon as refresh_registry returns"
    );

    // Both LISTEN connections killed: the change still arrives, and they come back.
    assert_eq!(listeners(&store).await, 2);
    store
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1 AND datname = current_database()",
            &[LISTENER_APPLICATION_NAME.into()],
        )
        .await
        .unwrap();
    let (sql, args) = insert_model("after-kill");
    store.execute(&sql, &args).await.unwrap();
    let took = served_within(&b, "after-kill", StatusCode::OK).await;
    eprintln!("a change made with the listeners killed served by B after {took:?}");
    let start = Instant::now();
    while listeners(&store).await < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the listeners did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // No notification at all (triggers off for this transaction, the version bumped by
    // hand): only the periodic check can see it.
    store
        .transaction(vec![
            (
                "SET LOCAL session_replication_role = replica".into(),
                vec![],
            ),
            insert_model("unannounced"),
            (
                "UPDATE registry_version SET version = version + 1".into(),
                vec![],
            ),
        ])
        .await
        .unwrap();
    let took = served_within(&b, "unannounced", StatusCode::OK).await;
    eprintln!("an unannounced change served by B after {took:?}");
    served_within(&a, "unannounced", StatusCode::OK).await;

    // Both instances end at the database's version.
    let version = store.registry_version().await.unwrap() as f64;
    assert_eq!(registry_version_metric(&a).await, version);
    assert_eq!(registry_version_metric(&b).await, version);
    a.running.stop().await;
    b.running.stop().await;
}

/// SQLite has no notifications: processes sharing a file find changes by reading the version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_sqlite_file_serve_each_others_changes() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (a, _a_dir) = instance(&db).await;
    let (b, _b_dir) = instance(&db).await;
    let (sql, args) = insert_model("shared");
    db.connect().await.execute(&sql, &args).await.unwrap();
    let took = served_within(&b, "shared", StatusCode::OK).await;
    eprintln!("a row written to the file served by B after {took:?}");
    served_within(&a, "shared", StatusCode::OK).await;

    let text = std::fs::read_to_string(&b.config_path).unwrap();
    let from_file = "[[models]]\nname = \"from-b\"\nprovider = \"m\"\nmodel_id = \"mock-b\"\n";
    std::fs::write(&b.config_path, format!("{text}{from_file}")).unwrap();
    served_within(&a, "from-b", StatusCode::OK).await;
    a.running.stop().await;
    b.running.stop().await;
}

on_both_databases!(every_registry_write_bumps_the_version);

/// Whoever writes the registry's tables (here plain SQL, as psql would), the version moves in
/// the same transaction; a write elsewhere does not move it.
async fn every_registry_write_bumps_the_version(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let mut version = store.registry_version().await.unwrap();
    let id = tollgate::ids::new_id();
    let writes: Vec<(String, Vec<tollgate::store::Arg>)> = vec![
        (
            "INSERT INTO llm_providers (id, name, display_name) VALUES ($1::uuid, 'm', 'M')".into(),
            vec![id.as_str().into()],
        ),
        insert_model("x"),
        (
            "UPDATE llm_models SET status = 'inactive' WHERE name = 'x'".into(),
            vec![],
        ),
        (
            "INSERT INTO system_settings (id, key, value) VALUES ($1::uuid, 'route:r', '{}')"
                .into(),
            vec![tollgate::ids::new_id().into()],
        ),
        ("DELETE FROM system_settings".into(), vec![]),
        ("DELETE FROM llm_providers".into(), vec![]),
    ];
    for (sql, args) in writes {
        store.execute(&sql, &args).await.unwrap();
        let now = store.registry_version().await.unwrap();
        assert!(now > version, "{sql}: still at {now}");
        version = now;
    }
    store
        .execute(
            "INSERT INTO projects (id, name) VALUES ($1::uuid, 'p')",
            &[tollgate::ids::new_id().into()],
        )
        .await
        .unwrap();
    assert_eq!(store.registry_version().await.unwrap(), version);
    assert_eq!(store.bump_registry_version().await.unwrap(), version + 1);
}
