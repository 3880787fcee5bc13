//! Gateway keys: required when the config says so, refused when unknown or revoked, and
//! every answered request attributed to its key and project; on SQLite and on PostgreSQL.

mod common;

use common::*;
use http::StatusCode;
use serde_json::json;

on_both_databases!(gateway_keys_are_required_and_attributed,);

async fn gateway_keys_are_required_and_attributed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (_mock, addr) = mock_upstream().await;
    let store = db.connect().await;
    store.migrate().await.unwrap();
    let (key, prefix, hash) = tollgate::auth::generate_key();
    let new = tollgate::store::NewApiKey {
        name: "ci".into(),
        project: Some("alpha".into()),
        role: "user".into(),
        ..Default::default()
    };
    let key_id = store.insert_api_key(&new, &hash, &prefix).await.unwrap();
    let (revoked, rprefix, rhash) = tollgate::auth::generate_key();
    store
        .insert_api_key(
            &tollgate::store::NewApiKey {
                name: "old".into(),
                role: "user".into(),
                ..Default::default()
            },
            &rhash,
            &rprefix,
        )
        .await
        .unwrap();
    assert!(store.revoke_api_key(&rprefix).await.unwrap());

    let extra = format!("{}{CHAT_MODEL}", upstream_provider(addr, "up", "k"));
    let gw = start_gateway_with(&db, &extra, |t| {
        t.replace("require_api_key = false", "require_api_key = true")
    })
    .await;
    let running = gw.running;
    let url = format!("http://{}/v1/chat/completions", running.addr);
    let body = json!({"model": "fast", "messages": [{"role": "user", "content": "x y"}]});

    let r = post(&url, &body, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json()["error"]["code"],
        serde_json::Value::Null,
        "as OpenAI's"
    );
    let r = post(
        &url,
        &body,
        &[("authorization", "Bearer tg-not-a-real-key")],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    let r = post(
        &url,
        &body,
        &[("authorization", &format!("Bearer {revoked}"))],
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "revoked keys are refused"
    );
    let r = post(&url, &body, &[("authorization", &format!("Bearer {key}"))]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = get(&format!("http://{}/v1/models", running.addr), &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    running.stop().await;
    let rows = usage_rows(&store).await;
    let ok = rows.iter().find(|r| r.status_code == 200).unwrap();
    assert_eq!(ok.api_key_id.as_deref(), Some(key_id.as_str()));
    assert!(ok.project_id.is_some());
    assert_eq!(rows.len(), 1, "refusals without a caller have no row");
    let keys = store.list_api_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert!(
        keys.iter().all(|k| !format!("{k:?}").contains(&key[3..])),
        "only the hash is stored"
    );
}
