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
