//! Roles, checked by the router: the master key, admin keys and admin JWTs reach the admin
//! API; user keys and user JWTs get 403 there and may use the API; nobody reaches the admin
//! API anonymously, not even on an open gateway. JWTs that are expired, wrongly signed or
//! unsigned are refused. On SQLite and on PostgreSQL.

mod common;

use common::*;
use http::StatusCode;
use tollgate::auth::{sign_jwt, Claims};

const MASTER: &str = "master-key-for-tests-0123456789";

fn jwt(role: &str, project: Option<&str>, exp_from_now: i64, secret: &str) -> String {
    let claims = Claims {
        sub: "alice@example.com".into(),
        role: role.into(),
        project: project.map(str::to_owned),
        exp: (chrono::Utc::now().timestamp() + exp_from_now) as u64,
    };
    sign_jwt(&claims, secret)
}

/// The token's claims under an `alg: none` header and no signature, as a forger sends them.
fn alg_none(token: &str) -> String {
    use base64::Engine;
    let header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = token.split('.').nth(1).unwrap();
    format!("{header}.{claims}.")
}

async fn key(store: &tollgate::store::Db, role: &str) -> String {
    let (key, prefix, hash) = tollgate::auth::generate_key();
    let new = tollgate::store::NewApiKey {
        name: format!("{role}-key"),
        project: Some("alpha".into()),
        role: role.into(),
        ..Default::default()
    };
    store.insert_api_key(&new, &hash, &prefix).await.unwrap();
    key
}

on_both_databases!(
    each_role_reaches_what_it_may_and_no_more,
    an_open_gateway_still_closes_the_admin_api,
    tokens_signed_by_the_cli_carry_their_role
);

async fn each_role_reaches_what_it_may_and_no_more(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let (admin_key, user_key) = (key(&store, "admin").await, key(&store, "user").await);
    let gw = start_gateway_with(&db, MOCK_ECHO, |t| {
        t.replace(
            "require_api_key = false",
            &format!("require_api_key = true\nmaster_key = \"{MASTER}\""),
        )
    })
    .await;
    let admin = format!("{}/admin/config", gw.base);
    let chat = format!("{}/v1/chat/completions", gw.base);
    let models = format!("{}/v1/models", gw.base);
    let b = |k: &str| format!("Bearer {k}");
    let admin_jwt = jwt("admin", None, 300, MASTER);
    let user_jwt = jwt("user", Some("alpha"), 300, MASTER);
    let expired = jwt("admin", None, -300, MASTER);
    let forged = jwt("admin", None, 300, "not-the-secret");
    let unknown_project = jwt("user", Some("nope"), 300, MASTER);
    let unsigned = alg_none(&admin_jwt);
    use StatusCode as S;
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, Option<String>, S, &str)> = vec![
        ("master key, admin API", &admin, Some(b(MASTER)), S::OK, ""),
        ("admin key, admin API", &admin, Some(b(&admin_key)), S::OK, ""),
        ("admin JWT, admin API", &admin, Some(b(&admin_jwt)), S::OK, ""),
        ("user key, admin API", &admin, Some(b(&user_key)), S::FORBIDDEN, "role is `user`"),
        ("user JWT, admin API", &admin, Some(b(&user_jwt)), S::FORBIDDEN, "role is `user`"),
        ("no key, admin API", &admin, None, S::UNAUTHORIZED, "admin API needs"),
        ("expired JWT", &admin, Some(b(&expired)), S::UNAUTHORIZED, "expired"),
        ("JWT signed with another secret", &admin, Some(b(&forged)), S::UNAUTHORIZED, "signature"),
        ("JWT with alg none", &admin, Some(b(&unsigned)), S::UNAUTHORIZED, "HS256"),
        ("JWT of a project that does not exist", &models, Some(b(&unknown_project)), S::UNAUTHORIZED, "`nope` does not exist"),
        ("user JWT lists models", &models, Some(b(&user_jwt)), S::OK, ""),
        ("user key lists models", &models, Some(b(&user_key)), S::OK, ""),
    ];
    for (what, url, auth, status, fragment) in cases {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let reply = get(url, &headers).await;
        assert_eq!(reply.status, status, "{what}: {}", reply.text());
        assert!(reply.text().contains(fragment), "{what}: {}", reply.text());
        assert!(
            !reply.text().contains(MASTER),
            "{what}: the master key leaked"
        );
    }

    // A user JWT's requests are the project's.
    let body =
        serde_json::json!({"model": "echo", "messages": [{"role": "user", "content": "hi"}]});
    let reply = post(&chat, &body, &[("authorization", &b(&user_jwt))]).await;
    assert_eq!(reply.status, S::OK, "{}", reply.text());
    gw.running.stop().await;
    let rows = usage_rows(&store).await;
    assert_eq!(rows.len(), 1);
    let project: Option<String> = rows[0].project_id.clone();
    assert_eq!(project, store.project_id("alpha").await.unwrap());
}

async fn an_open_gateway_still_closes_the_admin_api(backend: Backend) {
    let db = TestDb::new(backend).await;
    let gw = start_gateway(&db, MOCK_ECHO).await;
    let reply = get(&format!("{}/admin/config", gw.base), &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    let reply = get(
        &format!("{}/admin/config", gw.base),
        &[("authorization", "Bearer sk-placeholder")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    // The API itself stays open, as configured.
    let reply = get(&format!("{}/v1/models", gw.base), &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    gw.running.stop().await;
}

/// `tollgate token` signs with the config's secret: its admin token reaches the admin API,
/// its user token does not.
async fn tokens_signed_by_the_cli_carry_their_role(backend: Backend) {
    let db = TestDb::new(backend).await;
    let gw = start_gateway_with(&db, MOCK_ECHO, |t| {
        t.replace(
            "require_api_key = false",
            &format!("require_api_key = true\nmaster_key = \"{MASTER}\""),
        )
    })
    .await;
    let token = |role: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("--config")
            .arg(&gw.config_path)
            .args(["token", "--sub", "ops@example.com", "--role", role])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        stdout.lines().last().unwrap().to_owned()
    };
    let admin = format!("{}/admin/config", gw.base);
    for (role, status) in [("admin", StatusCode::OK), ("user", StatusCode::FORBIDDEN)] {
        let bearer = format!("Bearer {}", token(role));
        let reply = get(&admin, &[("authorization", &bearer)]).await;
        assert_eq!(reply.status, status, "{role}: {}", reply.text());
    }
    gw.running.stop().await;
}
