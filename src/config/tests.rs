//! Loading whole files: every problem with its place, and what a valid file holds.

use super::*;

fn load(text: &str) -> Result<LoadedConfig, ConfigError> {
    Config::from_str_at(text, Path::new("test.toml"))
}

#[test]
fn shipped_config_is_valid() {
    let text = include_str!("../../config.toml");
    let loaded = load(text).unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.config.providers.len() >= 7);
    assert!(loaded
        .config
        .providers
        .iter()
        .any(|p| p.get_ref().api == Api::Mock));
    // every chat model says whether it takes images
    for m in &loaded.config.models {
        let m = m.get_ref();
        if m.normalized_model_type() == "chat" {
            assert!(m.supports_vision.is_some(), "{}", m.name);
        }
    }
}

#[test]
fn the_seeds_model_type_llm_is_chat() {
    let text = "[[providers]]\nname='m'\napi='mock'\n[[models]]\nname='x'\nprovider='m'\nmodel_id='x'\nmodel_type='llm'\n";
    let loaded = load(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        loaded.config.models[0].get_ref().normalized_model_type(),
        "chat"
    );
    let err = load(&text.replace("'llm'", "'llama'")).unwrap_err();
    assert!(
        err.to_string()
            .contains("must be chat (or llm), vlm or embedding"),
        "{err}"
    );
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let text = r#"
[server]
listen = "nowhere"

[[providers]]
name = "a"
api = "openai"
base_url = "ftp://x"

[[models]]
name = "m"
provider = "nope"
model_id = "m1"
cost_input_per_million = "-1"
cost_output_per_million = "abc"
"#;
    let err = load(text).unwrap_err();
    let all = err.to_string();
    assert!(all.contains("server.listen"), "{all}");
    assert!(all.contains("line 5: providers[0] (a).base_url"), "{all}");
    assert!(all.contains("line 10: models[0] (m).provider"), "{all}");
    assert!(
        all.contains("cost_input_per_million: \"-1\" is negative"),
        "{all}"
    );
    assert!(
        all.contains("cost_output_per_million: \"abc\" is not a decimal"),
        "{all}"
    );
    assert_eq!(err.issues.len(), 5, "{all}");
}

#[test]
fn syntax_errors_and_unknown_fields_name_the_line() {
    let err = load("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
    assert_eq!(err.issues[0].line, Some(3), "{err}");
    assert!(err.to_string().contains("lisen"), "{err}");
    let err = load("[server\n").unwrap_err();
    assert_eq!(err.issues[0].place, "syntax");
}

#[test]
fn float_prices_are_refused() {
    let text = "[[providers]]\nname='m'\napi='mock'\n[[models]]\nname='x'\nprovider='m'\nmodel_id='x'\ncost_input_per_million=0.15\n";
    let err = load(text).unwrap_err();
    assert!(err.to_string().contains("expected a string"), "{err}");
}

#[test]
fn duplicate_defaults_and_model_ids_are_refused() {
    let text = "[[providers]]\nname='m'\napi='mock'\n\
            [[models]]\nname='x'\nprovider='m'\nmodel_id='x'\nis_default=true\n\
            [[models]]\nname='y'\nprovider='m'\nmodel_id='x'\nis_default=true\n";
    let err = load(text).unwrap_err();
    let all = err.to_string();
    assert!(all.contains("already has a default model"), "{all}");
    assert!(all.contains("defined twice for provider"), "{all}");
}

#[test]
fn unset_env_reference_is_an_error_except_for_optional_secrets() {
    let text = "[database]\nurl='env:TOLLGATE_TEST_SURELY_UNSET'\n[auth]\nmaster_key='env:TOLLGATE_TEST_SURELY_UNSET'\n";
    let err = load(text).unwrap_err();
    assert_eq!(err.issues.len(), 1, "{err}");
    assert_eq!(err.issues[0].place, "database.url");
}

#[test]
fn a_master_key_no_client_could_send_is_refused() {
    let key = "m".repeat(MAX_KEY_BYTES + 1);
    let err = load(&format!("[auth]\nmaster_key = '{key}'\n")).unwrap_err();
    assert_eq!(err.issues.len(), 1, "{err}");
    assert_eq!(err.issues[0].place, "auth.master_key");
    assert!(err.to_string().contains("longer than 4096 bytes"), "{err}");
    let key = "m".repeat(MAX_KEY_BYTES);
    assert!(load(&format!("[auth]\nmaster_key = '{key}'\n")).is_ok());
}

#[test]
fn connection_limits_must_be_usable() {
    let err = load("[server]\nidle_timeout_secs = 0\nmax_connections = 0\n").unwrap_err();
    let places: Vec<&str> = err.issues.iter().map(|i| i.place.as_str()).collect();
    assert_eq!(
        places,
        ["server.idle_timeout_secs", "server.max_connections"],
        "{err}"
    );
    let ok = load("[server]\nidle_timeout_secs = 5\nmax_connections = 2\n").unwrap();
    assert_eq!(ok.config.server.idle_timeout_secs, 5);
    assert_eq!(ok.config.server.max_connections, 2);
}

#[test]
fn metrics_access_settings_are_checked() {
    let err = load(
            "[server]\nlisten = '127.0.0.1:8080'\nmetrics_listen = '127.0.0.1:8080'\nmetrics_token = 'short'\n",
        )
        .unwrap_err();
    let all = err.to_string();
    assert!(
        all.contains("server.metrics_listen: must differ from server.listen"),
        "{all}"
    );
    assert!(
        all.contains("server.metrics_token: must be 16 to 4096 bytes long"),
        "{all}"
    );
    let err = load("[server]\nmetrics_listen = 'nowhere'\n").unwrap_err();
    assert_eq!(err.issues[0].place, "server.metrics_listen", "{err}");
    // An unset variable must not leave /metrics open.
    let err = load("[server]\nmetrics_token = 'env:TOLLGATE_TEST_SURELY_UNSET'\n").unwrap_err();
    assert_eq!(err.issues[0].place, "server.metrics_token", "{err}");
    let ok = load("[server]\nmetrics_listen = '127.0.0.1:9091'\n").unwrap();
    assert_eq!(
        ok.config.metrics_addr(),
        Some("127.0.0.1:9091".parse().unwrap())
    );
}
