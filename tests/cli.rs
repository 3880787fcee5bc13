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

    let running = tollgate::proxy::start(tollgate::config::Config::load(&path).unwrap())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_and_keys_carry_budgets_allowed_models_and_expiry() {
    let db = TestDb::new(Backend::Sqlite).await;
    let extra = "[[providers]]\nname = \"mock\"\napi = \"mock\"\n[[models]]\nname = \"m\"\nprovider = \"mock\"\nmodel_id = \"m\"\n[[models]]\nname = \"n\"\nprovider = \"mock\"\nmodel_id = \"n\"\n";
    let path = db.dir().join("cli.toml");
    std::fs::write(
        &path,
        config_text(&db.url, db.dir(), extra)
            .replace("require_api_key = false", "require_api_key = true"),
    )
    .unwrap();
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    let create = ["projects", "create", "--name", "team", "--budget-usd", "25"];
    ok(tollgate(
        &path,
        &[&create[..], &["--budget-period", "monthly"]].concat(),
    ));
    let again = tollgate(&path, &create);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let weekly = tollgate(
        &path,
        &[
            "projects",
            "create",
            "--name",
            "w",
            "--budget-period",
            "weekly",
        ],
    );
    assert!(!weekly.status.success(), "only total or monthly");
    let projects = ok(tollgate(&path, &["projects", "list"]));
    let team = projects
        .lines()
        .find(|l| l.contains("team"))
        .expect("listed");
    assert!(
        team.contains("25") && team.contains("monthly"),
        "{projects}"
    );

    let stdout = ok(tollgate(
        &path,
        &[
            "keys",
            "create",
            "--name",
            "svc",
            "--project",
            "team",
            "--allowed-models",
            "m,mock/n",
            "--budget-usd",
            "1.5",
            "--expires-in-days",
            "30",
            "--rpm",
            "100",
        ],
    ));
    let key = stdout.lines().last().unwrap().trim().to_owned();
    let both = tollgate(
        &path,
        &[
            "keys",
            "create",
            "--name",
            "x",
            "--expires-in-days",
            "1",
            "--expires-at",
            "2030-01-01T00:00:00Z",
        ],
    );
    assert!(!both.status.success(), "one expiry or the other");
    let listed = ok(tollgate(&path, &["keys", "list"]));
    let svc = listed.lines().find(|l| l.contains("svc")).expect("listed");
    assert!(
        svc.contains("1.5") && svc.contains("m,mock/n") && svc.contains("active"),
        "{listed}"
    );

    let running = tollgate::proxy::start(tollgate::config::Config::load(&path).unwrap())
        .await
        .unwrap();
    let url = format!("http://{}/v1/chat/completions", running.addr);
    let auth = format!("Bearer {key}");
    for (model, status) in [
        ("m", StatusCode::OK),
        ("mock/n", StatusCode::OK),
        ("n", StatusCode::FORBIDDEN),
    ] {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        let r = post(&url, &body, &[("authorization", &auth)]).await;
        assert_eq!(r.status, status, "{model}: {}", r.text());
    }
    running.stop().await;
}
