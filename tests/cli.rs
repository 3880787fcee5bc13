//! The `tollgate` binary as an admin uses it.

mod common;

use std::process::Command;

use common::*;
use http::StatusCode;
use serde_json::json;

fn tollgate(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap()
}

#[test]
fn check_config_explains_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:8080\"\n\n[[providers]]\nname = \"p\"\napi = \"openai\"\nbase_url = \"not a url\"\n\n[[models]]\nname = \"m\"\nprovider = \"q\"\nmodel_id = \"m\"\ncost_input_per_million = \"cheap\"\n",
    )
    .unwrap();
    let out = tollgate(&path, &["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 problem(s)"), "{err}");
    assert!(err.contains("line 4: providers[0] (p).base_url"), "{err}");
    assert!(
        err.contains("line 9: models[0] (m).provider: no provider named \"q\""),
        "{err}"
    );
    assert!(
        err.contains("cost_input_per_million: \"cheap\" is not a decimal"),
        "{err}"
    );
}

#[test]
fn shipped_config_checks_out() {
    let out = tollgate(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")),
        &["check-config"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("OK") && text.contains("mock") && text.contains("anthropic"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_key_is_printed_once_and_works() {
    let db = TestDb::new(Backend::Sqlite).await;
    let extra = "[[providers]]\nname = \"mock\"\napi = \"mock\"\n[[models]]\nname = \"m\"\nprovider = \"mock\"\nmodel_id = \"m\"\n";
    let path = db.dir().join("cli.toml");
    std::fs::write(
        &path,
        config_text(&db.url, db.dir(), extra)
            .replace("require_api_key = false", "require_api_key = true"),
    )
    .unwrap();

    let out = tollgate(
        &path,
        &["keys", "create", "--name", "ci", "--project", "alpha"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.lines().last().unwrap().trim().to_owned();
    assert!(key.starts_with("tg-") && key.len() == 67, "{stdout}");
    let listed = String::from_utf8(tollgate(&path, &["keys", "list"]).stdout).unwrap();
    assert!(
        listed.contains("ci") && listed.contains("alpha") && !listed.contains(&key),
        "{listed}"
    );

    let running = tollgate::server::start(tollgate::config::Config::load(&path).unwrap())
        .await
        .unwrap();
    let url = format!("http://{}/v1/chat/completions", running.addr);
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let r = post(&url, &body, &[("authorization", &format!("Bearer {key}"))]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    running.stop().await;

    let report = String::from_utf8(tollgate(&path, &["usage", "--by", "project"]).stdout).unwrap();
    assert!(report.lines().any(|l| l.starts_with("alpha")), "{report}");
    let prefix = &key[..11];
    assert!(tollgate(&path, &["keys", "revoke", prefix])
        .status
        .success());
    assert!(
        !tollgate(&path, &["keys", "revoke", prefix])
            .status
            .success(),
        "already revoked"
    );
}

on_both_databases!(check_config_shows_what_a_reload_would_change);

/// `check-config` compares the file with the database's registry and writes nothing: what
/// is added, removed (deactivated), changed (which fields), and what the admin API owns.
async fn check_config_shows_what_a_reload_would_change(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (_mock, addr) = mock_upstream().await;
    let registry = format!(
        "{}[[models]]\nname = \"a\"\nprovider = \"up\"\nmodel_id = \"a1\"\ncost_input_per_million = \"0.15\"\n\
         [[models]]\nname = \"b\"\nprovider = \"up\"\nmodel_id = \"b1\"\n\
         [[routes]]\nname = \"smart\"\ntargets = [\"up/a1\", \"up/b1\"]\n",
        upstream_provider(addr, "up", "sk-first")
    );
    let with_master_key = |t: String| {
        t.replace(
            "require_api_key = false",
            "require_api_key = false\nmaster_key = \"mk-test-0123456789\"",
        )
    };
    let gw = start_gateway_with(&db, &registry, with_master_key).await;
    gw.running.stop().await;
    let store = db.connect().await;
    store
        .put_setting("route:cheap", &json!({"targets": ["up/a1"]}))
        .await
        .unwrap();
    let path = gw.config_path.clone();
    let out = tollgate(&path, &["check-config"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("registry    the database already holds what the file describes"),
        "{text}"
    );
    assert!(
        text.contains("admin API   reachable with the master key"),
        "{text}"
    );

    let file = std::fs::read_to_string(&path).unwrap();
    let edited = file
        .replace("sk-first", "sk-second")
        .replace("\"0.15\"", "\"0.20\"\nparameters = { temperature = 0.5 }")
        .replace(
            "name = \"b\"\nprovider = \"up\"\nmodel_id = \"b1\"",
            "name = \"c\"\nprovider = \"up\"\nmodel_id = \"c1\"",
        )
        .replace(
            "[\"up/a1\", \"up/b1\"]",
            "[\"up/a1\"]\n[[routes]]\nname = \"cheap\"\ntargets = [\"up/c1\"]",
        );
    std::fs::write(&path, edited).unwrap();
    let version = store.registry_version().await.unwrap();
    let out = tollgate(&path, &["check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    for line in [
        "registry    a reload would change in the database:",
        "~ provider  up changed: api_key",
        "~ model     up/a1 changed: cost_input_per_million, parameters",
        "+ model     up/c1 added",
        "- model     up/b1 removed: deactivated",
        "~ route     smart changed: targets",
        "= route     cheap managed through the admin API: left as it is",
    ] {
        assert!(text.contains(line), "{line:?} missing in\n{text}");
    }
    assert!(!text.contains("sk-"), "a key in the output:\n{text}");
    assert_eq!(
        store.registry_version().await.unwrap(),
        version,
        "nothing written"
    );
    let c1 = store
        .fetch_all("SELECT id FROM llm_models WHERE model_id = 'c1'", &[])
        .await
        .unwrap();
    assert!(c1.is_empty());
}

/// Without a master key or a JWT secret only admin keys reach the admin API, and check-config
/// says so; a database that does not exist yet is not created by it.
#[test]
fn check_config_says_who_reaches_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let db_file = dir.path().join("none.db");
    std::fs::write(
        &path,
        format!(
            "[database]\nurl = \"sqlite://{}?mode=rwc\"\n",
            db_file.display()
        ),
    )
    .unwrap();
    let out = tollgate(&path, &["check-config"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("admin API   reachable only with admin keys (`tollgate keys create --role admin`): no master key or JWT secret is set"),
        "{text}"
    );
    assert!(text.contains("does not exist yet"), "{text}");
    assert!(!db_file.exists());
}
