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
    assert!(text.contains("traces      off"), "{text}");
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

    let running = tollgate::server::start(tollgate::config::Config::load(&path).unwrap())
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

    // An update by prefix: the listing shows it (the gateway, after its key cache's TTL).
    let prefix = key[..11].to_owned();
    let update = [
        "keys",
        "update",
        &prefix,
        "--allowed-models",
        "n",
        "--budget-usd",
        "3",
    ];
    ok(tollgate(&path, &update));
    let listed = ok(tollgate(&path, &["keys", "list"]));
    let svc = listed.lines().find(|l| l.contains("svc")).expect("listed");
    assert!(svc.contains(" 3 ") && svc.contains(" n"), "{listed}");
    let nobody = tollgate(&path, &["keys", "update", "tg-nothing", "--rpm", "1"]);
    assert!(!nobody.status.success());

    // The CLI's changes are in the audit log, as the admin API's are, without the key.
    ok(tollgate(&path, &["keys", "revoke", &prefix]));
    let store = db.connect().await;
    let audit = store
        .list_audit(&Default::default(), None, 50)
        .await
        .unwrap();
    let entries: Vec<(String, String, String)> = audit
        .iter()
        .map(|a| {
            let field = |f: &str| a[f].as_str().unwrap_or_default().to_owned();
            (field("actor"), field("action"), field("resource"))
        })
        .collect();
    #[rustfmt::skip]
    let expected = [("create", "project"), ("create", "key"), ("update", "key"), ("revoke", "key")];
    for (action, resource) in expected {
        assert!(
            entries
                .iter()
                .any(|(actor, a, r)| actor.starts_with("cli") && a == action && r == resource),
            "{action} {resource} in {entries:?}"
        );
    }
    let revoked = audit.iter().find(|a| a["action"] == "revoke").unwrap();
    assert!(revoked["before"]["revoked_at"].is_null(), "{revoked:?}");
    assert!(!revoked["after"]["revoked_at"].is_null(), "{revoked:?}");
    assert!(!serde_json::to_string(&audit).unwrap().contains(&key));
}

/// Usage made through a gateway, reported by `tollgate usage` as a table with a total line
/// and as JSON with exact decimal costs; a bad option is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_reported_as_a_table_and_as_json() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        usage_report_through_the_cli(backend).await;
    }
}

async fn usage_report_through_the_cli(backend: Backend) {
    let db = TestDb::new(backend).await;
    let extra = "[[providers]]\nname = \"mock\"\napi = \"mock\"\n[[models]]\nname = \"m\"\nprovider = \"mock\"\nmodel_id = \"m\"\ncost_input_per_million = \"0.15\"\ncost_output_per_million = \"0.60\"\n[[models]]\nname = \"broken\"\nprovider = \"mock\"\nmodel_id = \"mock-status-500\"\n";
    let path = db.dir().join("cli.toml");
    std::fs::write(&path, config_text(&db.url, db.dir(), extra)).unwrap();
    let running = tollgate::server::start(tollgate::config::Config::load(&path).unwrap())
        .await
        .unwrap();
    let url = format!("http://{}/v1/chat/completions", running.addr);
    for model in ["m", "m", "m", "broken"] {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "one two"}]});
        post(&url, &body, &[]).await;
    }
    running.stop().await;
    let rows = usage_rows(&db.connect().await).await;
    let cost: rust_decimal::Decimal = rows.iter().map(|r| dec(&r.cost_usd)).sum();
    assert!(cost > rust_decimal::Decimal::ZERO, "{rows:?}");

    let out = tollgate(&path, &["usage", "--period", "day", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let today = chrono::Utc::now().format("%Y-%m-%dT00:00:00Z").to_string();
    let m = &report["rows"][0];
    assert_eq!(
        (m["group"].as_str(), m["bucket"].as_str()),
        (Some("m"), Some(today.as_str()))
    );
    assert_eq!((&m["requests"], &m["errors"]), (&json!(3), &json!(0)));
    assert_eq!(report["rows"][1]["group"], "broken");
    assert_eq!(report["rows"][1]["errors"], 1);
    assert_eq!(report["total"]["requests"], 4);
    assert_eq!(
        report["total"]["cost_usd"],
        cost.normalize().to_string(),
        "exact, as a string"
    );

    let out = tollgate(&path, &["usage", "--by", "provider"]);
    let table = String::from_utf8(out.stdout).unwrap();
    let line = |first: &str| {
        let found = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(first));
        found
            .unwrap_or_else(|| panic!("no {first} line:\n{table}"))
            .to_owned()
    };
    let total: Vec<String> = line("total").split_whitespace().map(String::from).collect();
    assert_eq!(total[1], "4", "{table}");
    assert_eq!(total.last(), Some(&cost.normalize().to_string()), "{table}");
    assert!(line("mock").starts_with("mock "), "{table}");

    let out = tollgate(&path, &["usage", "--period", "week"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid --period: \"week\" is not hour, day or month"),
        "{err}"
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
