//! Gateway keys: required when the config says so, refused when unknown or revoked, and
//! every answered request attributed to its key and project; on SQLite and on PostgreSQL.

mod common;

use common::*;
use http::StatusCode;
use serde_json::json;

on_both_databases!(gateway_keys_are_required_and_attributed);

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
    let chat = &format!("http://{}/v1/chat/completions", running.addr);
    let models = &format!("http://{}/v1/models", running.addr);
    let never_issued = Some("Bearer tg-not-a-real-key");
    let (bearer_revoked, bearer_key) = (format!("Bearer {revoked}"), format!("Bearer {key}"));
    let (revoked_key, valid_key) = (Some(bearer_revoked.as_str()), Some(bearer_key.as_str()));
    let (unauthorized, invalid_key) = (StatusCode::UNAUTHORIZED, Some("invalid_api_key"));
    let missing = "You didn't provide an API key";
    let incorrect = "Incorrect API key provided";
    // (what, url, authorization, status, error.code, a fragment of error.message)
    #[rustfmt::skip]
    let cases = [
        ("no key: code null, as OpenAI's", chat, None, unauthorized, None, missing),
        ("a key never issued", chat, never_issued, unauthorized, invalid_key, incorrect),
        ("a revoked key", chat, revoked_key, unauthorized, invalid_key, incorrect),
        ("a valid key", chat, valid_key, StatusCode::OK, None, ""),
        ("the model list without a key", models, None, unauthorized, None, missing),
    ];
    let body = json!({"model": "fast", "messages": [{"role": "user", "content": "x y"}]});
    for (what, url, authorization, status, code, says) in cases {
        let headers: Vec<(&str, &str)> = authorization
            .map(|a| ("authorization", a))
            .into_iter()
            .collect();
        let r = if url == models {
            get(url, &headers).await
        } else {
            post(url, &body, &headers).await
        };
        assert_eq!(r.status, status, "{what}: {}", r.text());
        if status != StatusCode::OK {
            let e = &r.json()["error"];
            assert_eq!(e["type"], "invalid_request_error", "{what}: {e}");
            assert_eq!(e["code"].as_str(), code, "{what}: {e}");
            assert!(e["message"].as_str().unwrap().contains(says), "{what}: {e}");
        }
    }

    running.stop().await;
    let rows = usage_rows(&store).await;
    let ok = rows.iter().find(|r| r.status_code == 200).unwrap();
    assert_eq!(ok.api_key_id.as_deref(), Some(key_id.as_str()));
    let alpha = store
        .fetch_all(
            "SELECT id::text AS id FROM projects WHERE name = 'alpha'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        ok.project_id,
        alpha[0].opt_text("id").unwrap(),
        "the key's project"
    );
    assert_eq!(rows.len(), 1, "refusals without a caller have no row");
    let keys = store.list_api_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert!(
        keys.iter().all(|k| !format!("{k:?}").contains(&key[3..])),
        "only the hash is stored"
    );
}
