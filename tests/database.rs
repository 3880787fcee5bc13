//! What the database itself guarantees: the registry's rules hold whoever writes the rows,
//! and migrations keep every row they rebuild.

mod common;

use common::*;

on_both_databases!(the_database_enforces_the_registry_rules);

async fn the_database_enforces_the_registry_rules(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let pid = tollgate::ids::new_id();
    store
        .execute(
            "INSERT INTO llm_providers (id, name, display_name) VALUES ($1::uuid, 'p', 'P')",
            &[pid.as_str().into()],
        )
        .await
        .unwrap();
    let insert = |model_id: &str, default: bool, price: &str| {
        let store = store.clone();
        let (pid, model_id, price) = (pid.clone(), model_id.to_owned(), price.to_owned());
        async move {
            store
                .execute(
                    "INSERT INTO llm_models (id, provider_id, model_id, name, display_name, is_default, cost_input_per_million)
                     VALUES ($1::uuid, $2::uuid, $3, $3, $3, $4, $5::numeric)",
                    &[tollgate::ids::new_id().into(), pid.into(), model_id.into(), default.into(), price.into()],
                )
                .await
        }
    };
    insert("m1", true, "1.5").await.unwrap();
    // (what, model_id, is_default, price, the rule that refuses it on SQLite / PostgreSQL)
    #[rustfmt::skip]
    let refusals = [
        ("one default model per provider", "m2", true, "1",
            ("UNIQUE constraint failed: llm_models.provider_id",
             "unique constraint \"llm_models_one_default_per_provider\"")),
        ("unique (provider, model_id)", "m1", false, "1",
            ("UNIQUE constraint failed: llm_models.provider_id, llm_models.model_id",
             "unique constraint \"llm_models_provider_id_model_id_key\"")),
        ("costs >= 0", "m3", false, "-0.01",
            ("CHECK constraint failed: CAST(cost_input_per_million AS REAL) >= 0",
             "check constraint \"llm_models_cost_input_per_million_check\"")),
    ];
    for (what, model_id, default, price, rule) in refusals {
        let refused = insert(model_id, default, price).await;
        assert_refused_by(backend, refused, rule, what);
    }
    insert("m4", false, "0").await.unwrap();
    let rename = store
        .execute(
            "UPDATE llm_models SET model_id = 'renamed' WHERE model_id = 'm1'",
            &[],
        )
        .await;
    let immutable = (
        "llm_models.model_id is immutable",
        "llm_models.model_id is immutable (m1 -> renamed)",
    );
    assert_refused_by(backend, rename, immutable, "model_id is immutable");
}

/// `result` failed, refused by `rule.0` on SQLite (the columns or CHECK it names) or by
/// `rule.1` on PostgreSQL (the constraint's name).
fn assert_refused_by(
    backend: Backend,
    result: anyhow::Result<u64>,
    rule: (&str, &str),
    what: &str,
) {
    let rule = match backend {
        Backend::Sqlite => rule.0,
        Backend::Postgres => rule.1,
    };
    assert_refused(result, rule, what);
}

/// `result` failed, and its error ends with the rule that refused it.
fn assert_refused(result: anyhow::Result<u64>, rule: &str, what: &str) {
    match result {
        Ok(_) => panic!("{what}: accepted"),
        Err(e) => assert!(
            e.to_string().ends_with(rule),
            "{what}: refused by {e}, not {rule}"
        ),
    }
}

/// An SQLite database made before the usage table's key changed keeps its rows through the
/// rebuilds, time-range queries then use the new key, and the usage_source rule still holds
/// without a temporary B-tree per inserted row.
#[tokio::test]
async fn sqlite_usage_rows_survive_the_key_migration() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.connect().await;
    let tollgate::store::Db::Sqlite(pool) = &store else {
        unreachable!("an SQLite test database")
    };
    let first = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/migrations/sqlite/0001_init.sql"
        ),
        first.path().join("0001_init.sql"),
    )
    .unwrap();
    sqlx::migrate::Migrator::new(first.path())
        .await
        .unwrap()
        .run(pool)
        .await
        .unwrap();
    store
        .execute(
            "INSERT INTO llm_usage_logs (id, request_id, created_at, endpoint, status_code, output_tokens)
             VALUES ('a', 'r1', '2026-11-01T00:00:00.000Z', 'chat.completions', 200, 7),
                    ('b', 'r2', '2026-11-02T00:00:00.000Z', 'chat.completions', 200, 5)",
            &[],
        )
        .await
        .unwrap();

    store.migrate().await.unwrap();
    let rows = store
        .fetch_all(
            "SELECT COUNT(*) AS n, SUM(output_tokens) AS t FROM llm_usage_logs
             WHERE created_at >= '2026-11-02'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (rows[0].int("n").unwrap(), rows[0].int("t").unwrap()),
        (1, 5)
    );
    let plan = store
        .fetch_all(
            "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM llm_usage_logs WHERE created_at >= '2026-11-02'",
            &[],
        )
        .await
        .unwrap();
    let detail = plan[0].text("detail").unwrap();
    assert!(detail.contains("autoindex_llm_usage_logs"), "{detail}");

    let insert = |source: &str| {
        format!(
            "INSERT INTO llm_usage_logs (id, request_id, created_at, endpoint, status_code, usage_source)
             VALUES ('{source}', 'r', '2026-11-03T00:00:00.000Z', 'chat.completions', 200, '{source}')"
        )
    };
    assert!(store.execute(&insert("estimated"), &[]).await.is_ok());
    let usage_source = "CHECK constraint failed: usage_source = 'provider' OR \
                        usage_source = 'estimated' OR usage_source = 'none'";
    let bogus = store.execute(&insert("bogus"), &[]).await;
    assert_refused(bogus, usage_source, "an unknown usage_source");
    let program = store
        .fetch_all(&format!("EXPLAIN {}", insert("none")), &[])
        .await
        .unwrap();
    assert!(
        program
            .iter()
            .all(|op| op.text("opcode").unwrap() != "OpenEphemeral"),
        "the CHECK is evaluated without a temporary table"
    );
}

/// The SQLite rebuild that lets capability flags be unknown keeps every model row and every
/// usage row's reference to it, and foreign keys are enforced again afterwards.
#[tokio::test]
async fn sqlite_models_and_their_usage_survive_the_capability_migration() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.connect().await;
    let tollgate::store::Db::Sqlite(pool) = &store else {
        unreachable!("an SQLite test database")
    };
    let before = tempfile::tempdir().unwrap();
    for file in [
        "0001_init.sql",
        "0002_usage_key_leads_with_time.sql",
        "0003_usage_source_check_without_in_list.sql",
    ] {
        let from = format!("{}/migrations/sqlite/{file}", env!("CARGO_MANIFEST_DIR"));
        std::fs::copy(from, before.path().join(file)).unwrap();
    }
    sqlx::migrate::Migrator::new(before.path())
        .await
        .unwrap()
        .run(pool)
        .await
        .unwrap();
    for insert in [
        "INSERT INTO llm_providers (id, name, display_name) VALUES ('p', 'p', 'P')",
        "INSERT INTO llm_models (id, provider_id, model_id, name, display_name)
         VALUES ('m', 'p', 'm1', 'm', 'M')",
    ] {
        store.execute(insert, &[]).await.unwrap();
    }
    store
        .execute(
            "INSERT INTO llm_usage_logs (id, request_id, created_at, llm_model_id, provider_id, endpoint, status_code)
             VALUES ('u', 'r', '2026-11-01T00:00:00.000Z', 'm', 'p', 'chat.completions', 200)",
            &[],
        )
        .await
        .unwrap();

    store.migrate().await.unwrap();
    let rows = store
        .fetch_all(
            "SELECT u.llm_model_id, m.model_id, m.supports_vision, m.supports_json
             FROM llm_usage_logs u JOIN llm_models m ON m.id = u.llm_model_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "the usage row still refers to its model");
    assert_eq!(rows[0].text("model_id").unwrap(), "m1");
    // the old defaults stay until the config sync rewrites the row
    assert_eq!(rows[0].opt_bool("supports_vision").unwrap(), Some(false));
    assert_eq!(rows[0].opt_bool("supports_json").unwrap(), Some(true));
    store
        .execute(
            "INSERT INTO llm_models (id, provider_id, model_id, name, display_name, model_type)
             VALUES ('n', 'p', 'n1', 'n', 'N', 'llm')",
            &[],
        )
        .await
        .unwrap();
    let orphan = "INSERT INTO llm_models (id, provider_id, model_id, name, display_name)
                  VALUES ('o', 'no-such-provider', 'o1', 'o', 'O')";
    for _ in 0..4 {
        // every pooled connection, the migrating one included
        let refused = store.execute(orphan, &[]).await;
        assert_refused(refused, "FOREIGN KEY constraint failed", "foreign keys on");
    }
    let rename = store
        .execute("UPDATE llm_models SET model_id = 'x' WHERE id = 'm'", &[])
        .await;
    let immutable = "llm_models.model_id is immutable";
    assert_refused(rename, immutable, "model_id is still immutable");
}
