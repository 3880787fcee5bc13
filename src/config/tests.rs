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
fn task_settings_are_bounded() {
    let err = load("[tasks]\nworkers = 5000\nmax_parallel = 0\nlease_secs = 1\nmax_attempts = 0\npoll_interval_ms = 1\nmax_queued_per_project = 0\nmax_prompt_bytes = 10000000\n").unwrap_err();
    let places: Vec<&str> = err.issues.iter().map(|i| i.place.as_str()).collect();
    assert_eq!(
        places,
        [
            "tasks.workers",
            "tasks.max_parallel",
            "tasks.lease_secs",
            "tasks.max_attempts",
            "tasks.poll_interval_ms",
            "tasks.max_queued_per_project",
            "tasks.max_prompt_bytes"
        ],
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("must be between 2 and 3600, not 1"),
        "{err}"
    );
    let ok = load("[tasks]\nworkers = 0\nlease_secs = 2\n").unwrap();
    assert_eq!(
        (ok.config.tasks.workers, ok.config.tasks.lease_secs),
        (0, 2)
    );
    assert_eq!(ok.config.tasks.max_attempts, 3);
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

/// What validation alone says of a file (no `env:` resolution, no `DATABASE_URL`): its issues
/// as printed, and its warnings.
fn validated(text: &str) -> (Vec<String>, Vec<String>) {
    let config: Config = toml::from_str(text).unwrap_or_else(|e| panic!("{e}"));
    let mut found = Findings::default();
    validate::validate(&config, text, &mut found);
    let issues = found.issues.iter().map(ToString::to_string).collect();
    (issues, found.warnings)
}

/// (what the case is, the file, the issues expected in order)
type Cases<'a> = &'a [(&'a str, &'a str, &'a [&'a str])];

fn assert_issues(cases: Cases) {
    for (what, text, expected) in cases {
        assert_eq!(validated(text).0, *expected, "{what}");
    }
}

#[test]
fn server_settings_are_checked() {
    assert_issues(&[
        ("defaults", "", &[]),
        (
            "listen",
            "[server]\nlisten = 'nowhere'\n",
            &["server.listen: \"nowhere\" is not an address like 127.0.0.1:8080"],
        ),
        (
            "a reference is left to resolution",
            "[server]\nlisten = 'env:X'\n",
            &[],
        ),
        (
            "sizes",
            "[server]\nmax_body_bytes = 0\nmax_response_bytes = 0\n",
            &[
                "server.max_body_bytes: must be greater than 0",
                "server.max_response_bytes: must be greater than 0",
            ],
        ),
        (
            "upper bounds",
            "[server]\nidle_timeout_secs = 86401\nmax_connections = 1000001\n",
            &[
                "server.idle_timeout_secs: must be between 1 and 86400",
                "server.max_connections: must be between 1 and 1000000",
            ],
        ),
        (
            "the bounds themselves",
            "[server]\nidle_timeout_secs = 86400\nmax_connections = 1000000\n",
            &[],
        ),
        ("log_format json", "[server]\nlog_format = 'json'\n", &[]),
        (
            "log_format",
            "[server]\nlog_format = 'JSON'\n",
            &["server.log_format: must be \"text\" or \"json\""],
        ),
        (
            "port 0 twice is two ports",
            "[server]\nlisten = '127.0.0.1:0'\nmetrics_listen = '127.0.0.1:0'\n",
            &[],
        ),
        (
            "the shortest metrics token",
            "[server]\nmetrics_token = '0123456789abcdef'\n",
            &[],
        ),
    ]);
}

#[test]
fn database_url_must_name_a_known_database() {
    assert_issues(&[
        ("sqlite", "[database]\nurl = 'sqlite::memory:'\n", &[]),
        ("postgres", "[database]\nurl = 'postgres://u@h/db'\n", &[]),
        (
            "postgresql",
            "[database]\nurl = 'postgresql://u@h/db'\n",
            &[],
        ),
        (
            "mysql",
            "[database]\nurl = 'mysql://u@h/db'\n",
            &["database.url: must start with sqlite:, postgres:// or postgresql://"],
        ),
    ]);
}

#[test]
fn providers_are_checked_with_their_line() {
    let mock = |name: &str| format!("[[providers]]\nname = '{name}'\napi = 'mock'\n");
    let azure = "[[providers]]\nname = 'az'\napi = 'azure'\nbase_url = 'https://x.example'\n";
    assert_issues(&[
        ("a mock needs no base_url", &mock("m"), &[]),
        (
            "a slash",
            &mock("a/b"),
            &["line 1: providers[0] (a/b): name must be non-empty and must not contain '/'"],
        ),
        (
            "no name",
            &mock(""),
            &["line 1: providers[0] (): name must be non-empty and must not contain '/'"],
        ),
        (
            "twice",
            &(mock("m") + &mock("m")),
            &["line 4: providers[1] (m): a provider with this name is defined twice"],
        ),
        (
            "no base_url",
            "[[providers]]\nname = 'o'\napi = 'openai'\n",
            &["line 1: providers[0] (o).base_url: \"\" is not an http(s) URL"],
        ),
        (
            "azure without api_version",
            azure,
            &["line 1: providers[0] (az).api_version: \
                azure providers need api_version (e.g. \"2024-10-21\")"],
        ),
        (
            "azure with api_version",
            &format!("{azure}api_version = '2024-10-21'\n"),
            &[],
        ),
    ]);
}

#[test]
fn provider_keys_are_warned_about_not_refused() {
    let openai = "[[providers]]\nname = 'o'\napi = 'openai'\nbase_url = 'https://x.example'\n";
    let unset = "api_key = 'env:TOLLGATE_TEST_SURELY_UNSET'\n";
    let cases: Cases = &[
        (
            "a key in the file",
            "api_key = 'sk-1'\n",
            &["provider o: api_key is written in the file; prefer \"env:NAME\""],
        ),
        (
            "an unset variable",
            unset,
            &["provider o: TOLLGATE_TEST_SURELY_UNSET is not set, \
                the provider stays disabled until it is"],
        ),
        ("a set variable", "api_key = 'env:PATH'\n", &[]),
        (
            "no key",
            "",
            &["provider o: no api_key; requests are sent without one"],
        ),
        ("no key, disabled", "enabled = false\n", &[]),
    ];
    for (what, lines, expected) in cases {
        let (issues, warnings) = validated(&format!("{openai}{lines}"));
        assert_eq!(issues, [""; 0], "{what}");
        assert_eq!(warnings, *expected, "{what}");
    }
    let disabled = format!("{openai}{unset}enabled = false\n");
    let mock = "[[providers]]\nname = 'm'\napi = 'mock'\n";
    for quiet in [disabled.as_str(), mock] {
        assert_eq!(validated(quiet), (vec![], vec![]), "{quiet}");
    }
}

/// A mock provider (lines 1-3) and one model `x` (from line 4), with these lines added.
fn model(lines: &str) -> String {
    let provider = "[[providers]]\nname = 'm'\napi = 'mock'\n";
    format!("{provider}[[models]]\nname = 'x'\nprovider = 'm'\nmodel_id = 'x-1'\n{lines}")
}

#[test]
fn model_fields_are_checked_with_their_line() {
    let no_id = model("").replace("model_id = 'x-1'", "model_id = ''");
    let prices = model(
        "cost_cache_read_per_million = '1e'\ncost_cache_write_per_million = '-0.5'\n\
         cost_input_per_million = ' 2.5 '\n",
    );
    assert_issues(&[
        ("vlm", &model("model_type = 'vlm'\n"), &[]),
        ("embedding", &model("model_type = 'embedding'\n"), &[]),
        ("inactive", &model("status = 'inactive'\n"), &[]),
        (
            "deprecated with a date",
            &model("status = 'deprecated'\ndeprecation_date = '2026-12-31'\n"),
            &[],
        ),
        (
            "no model_id",
            &no_id,
            &["line 4: models[0] (x): name and model_id must be non-empty"],
        ),
        (
            "status",
            &model("status = 'gone'\n"),
            &["line 4: models[0] (x).status: must be active, inactive or deprecated"],
        ),
        (
            "deprecation_date",
            &model("deprecation_date = 'soon'\n"),
            &["line 4: models[0] (x).deprecation_date: must be a date like 2026-12-31"],
        ),
        (
            "cache prices",
            &prices,
            &[
                "line 4: models[0] (x).cost_cache_read_per_million: \"1e\" is not a decimal number",
                "line 4: models[0] (x).cost_cache_write_per_million: \
                    \"-0.5\" is negative; prices must be >= 0",
            ],
        ),
    ]);
}

#[test]
fn routes_are_checked_with_their_line() {
    let route = |lines: &str| model(&format!("[[routes]]\n{lines}"));
    let unknown = " is neither a model name nor a provider/model_id defined in this file";
    assert_issues(&[
        (
            "a name and a provider/model_id",
            &route("name = 'r'\ntargets = ['x', 'm/x-1']\nstrategy = 'least_busy'\n"),
            &[],
        ),
        (
            "a model's name",
            &route("name = 'x'\ntargets = ['x']\n"),
            &["line 8: routes[0] (x): a route must not share its name with a model"],
        ),
        (
            "strategy",
            &route("name = 'r'\ntargets = ['x']\nstrategy = 'random'\n"),
            &["line 8: routes[0] (r).strategy: \
                must be fallback, cheapest, lowest_latency, least_busy or weighted"],
        ),
        (
            "no targets",
            &route("name = 'r'\ntargets = []\n"),
            &["line 8: routes[0] (r).targets: is empty"],
        ),
        (
            "unknown targets",
            &route("name = 'r'\ntargets = ['m/x', 'y']\n"),
            &[
                &format!("line 8: routes[0] (r).targets: \"m/x\"{unknown}"),
                &format!("line 8: routes[0] (r).targets: \"y\"{unknown}"),
            ],
        ),
    ]);
}

#[test]
fn env_references_are_resolved_or_reported() {
    let unset = |line: &str| line.replace("UNSET", "env:TOLLGATE_TEST_SURELY_UNSET");
    let not_set = "environment variable TOLLGATE_TEST_SURELY_UNSET is not set";
    for (text, place) in [
        ("[redis]\nurl = 'UNSET'\n", "redis.url"),
        (
            "[server]\nmetrics_listen = 'UNSET'\n",
            "server.metrics_listen",
        ),
        (
            "[[providers]]\nname = 'o'\napi = 'openai'\nbase_url = 'UNSET'\n",
            "providers.o.base_url",
        ),
    ] {
        let issues = load(&unset(text)).unwrap_err().issues;
        let issues: Vec<String> = issues.iter().map(ToString::to_string).collect();
        assert_eq!(issues, [format!("{place}: {not_set}")], "{place}");
    }
    let text = unset("[auth]\nmaster_key = 'env:PATH'\njwt_secret = 'UNSET'\n");
    let loaded = load(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.config.auth.master_key, std::env::var("PATH").ok());
    assert_eq!(loaded.config.auth.jwt_secret, None);
    assert_eq!(loaded.warnings, [format!("auth.jwt_secret: {not_set}")]);
}

#[test]
fn words_are_parsed_into_their_enums() {
    let text = model(
        "model_type = 'llm'\nstatus = 'deprecated'\n\
         [[routes]]\nname = 'r'\ntargets = ['x']\nstrategy = 'lowest_latency'\n\
         [server]\nlog_format = 'json'\n[redis]\non_failure = 'fail_closed'\n",
    );
    let c = load(&text).unwrap_or_else(|e| panic!("{e}")).config;
    let (m, r) = (c.models[0].get_ref(), c.routes[0].get_ref());
    assert_eq!(c.server.log_format.get(), LogFormat::Json);
    assert_eq!(c.redis.unwrap().on_failure, OnRedisFailure::FailClosed);
    assert_eq!(m.model_type.get(), ModelType::Chat);
    assert_eq!(m.status.get(), ModelStatus::Deprecated);
    assert_eq!(r.strategy.get(), Strategy::LowestLatency);

    let c = load(&model("[[routes]]\nname = 'r'\ntargets = ['x']\n"))
        .unwrap()
        .config;
    let (m, r) = (c.models[0].get_ref(), c.routes[0].get_ref());
    assert_eq!(c.server.log_format.get(), LogFormat::Text);
    assert_eq!(c.redis.map(|r| r.on_failure), None);
    assert_eq!(m.model_type.get(), ModelType::Chat);
    assert_eq!(m.status.get(), ModelStatus::Active);
    assert_eq!(r.strategy.get(), Strategy::Fallback);
}

/// Config is the bottom layer: the runtime imports its types, never the other way round.
#[test]
fn config_imports_nothing_above_it() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    for file in std::fs::read_dir(&dir).unwrap() {
        let path = file.unwrap().path();
        if path.file_name() == Some("tests.rs".as_ref()) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let above: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("crate::") && !l.contains("crate::error"))
            .collect();
        assert_eq!(above, [""; 0], "{}", path.display());
    }
}

#[test]
fn cors_origins_must_be_exact_origins_or_a_wildcard() {
    let ok = load(
        "[server]\ncors_allowed_origins = ['https://dash.example.com', 'http://localhost:3000', '*']\n",
    )
    .unwrap();
    assert_eq!(ok.config.server.cors_allowed_origins.len(), 3);
    for bad in [
        "https://dash.example.com/",
        "https://dash.example.com/app",
        "https://Dash.example.com",
        "dash.example.com",
        "ftp://dash.example.com",
        "https://user@dash.example.com",
        "",
    ] {
        let err = load(&format!("[server]\ncors_allowed_origins = ['{bad}']\n")).unwrap_err();
        assert_eq!(
            err.issues[0].place, "server.cors_allowed_origins",
            "{bad}: {err}"
        );
    }
}

#[test]
fn the_cache_section_loads_and_its_mistakes_are_named() {
    let on = load("[cache]\nenabled = true\nttl_secs = 60\nmax_bytes = 1000\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(on.config.cache.enabled);
    assert_eq!(on.config.cache.backend.get(), CacheBackend::Memory);
    let err = load(
        "[cache]\nenabled = true\nbackend = \"disk\"\nttl_secs = 0\nmax_bytes = 1\nmax_entries = 1\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cache.backend: must be \"memory\" or \"redis\""),
        "{err}"
    );
    assert!(err.contains("cache.ttl_secs: must be between 1"), "{err}");
    assert!(err.contains("not both"), "{err}");
    let err = load("[cache]\nenabled = true\nbackend = \"redis\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs [redis] url"), "{err}");
    let redis =
        "[redis]\nurl = \"redis://127.0.0.1:6379\"\n[cache]\nenabled = true\nbackend = \"redis\"\n";
    assert!(load(redis).is_ok());
}

#[test]
fn telemetry_is_off_by_default_and_its_endpoint_gets_the_traces_path() {
    let off = load("").unwrap();
    assert_eq!(off.config.telemetry.traces_url(), None);
    for (endpoint, url) in [
        ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
        ("http://otel:4318/", "http://otel:4318/v1/traces"),
        (
            "https://otel.example.com/otlp",
            "https://otel.example.com/otlp/v1/traces",
        ),
        ("http://tempo:4318/v1/traces", "http://tempo:4318/v1/traces"),
        (
            "http://tempo:4318/v1/traces/",
            "http://tempo:4318/v1/traces",
        ),
    ] {
        let text = format!("[telemetry]\notlp_endpoint = '{endpoint}'\nsample_ratio = 1\n");
        let on = load(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(on.config.telemetry.traces_url().as_deref(), Some(url));
        assert_eq!(on.config.telemetry.service_name, "tollgate");
    }
}

#[test]
fn telemetry_mistakes_are_named_and_the_endpoint_with_its_line() {
    let text = "[server]\nlisten = '127.0.0.1:8080'\n\n[telemetry]\nservice_name = ''\n\
                otlp_endpoint = 'localhost:4318'\nsample_ratio = 1.5\nbatch_delay_ms = 0\n\
                max_queue_spans = 0\nexport_timeout_ms = 999999\n";
    let err = load(text).unwrap_err();
    let all = err.to_string();
    assert!(
        all.contains("line 6: telemetry.otlp_endpoint: \"localhost:4318\" is not an http(s) URL"),
        "{all}"
    );
    assert!(
        all.contains("telemetry.sample_ratio: must be between 0.0 and 1.0, not 1.5"),
        "{all}"
    );
    assert!(
        all.contains("telemetry.service_name: must be 1 to 255 bytes"),
        "{all}"
    );
    for key in ["batch_delay_ms", "max_queue_spans", "export_timeout_ms"] {
        assert!(
            all.contains(&format!("telemetry.{key}: must be between")),
            "{all}"
        );
    }
    assert_eq!(err.issues.len(), 6, "{all}");
    for (endpoint, why) in [
        ("ftp://otel:21", "is not an http(s) URL"),
        ("http://user:pw@otel:4318", "must not carry credentials"),
        ("http://otel:4318/?k=v", "must not have a query"),
        ("not a url", "is not a URL"),
    ] {
        let err = load(&format!("[telemetry]\notlp_endpoint = '{endpoint}'\n")).unwrap_err();
        assert!(err.to_string().contains(why), "{endpoint}: {err}");
        assert!(!err.to_string().contains("pw"), "{err}");
    }
    let err = load("[telemetry]\nsample_ratio = nan\n").unwrap_err();
    assert_eq!(err.issues[0].place, "telemetry.sample_ratio", "{err}");
}

#[test]
fn an_unset_telemetry_endpoint_variable_turns_traces_off_with_a_warning() {
    let unset = load("[telemetry]\notlp_endpoint = 'env:TOLLGATE_TEST_SURELY_UNSET'\n").unwrap();
    assert_eq!(unset.config.telemetry.endpoint(), None);
    assert!(
        unset
            .warnings
            .iter()
            .any(|w| w.contains("telemetry.otlp_endpoint")),
        "{:?}",
        unset.warnings
    );
}
