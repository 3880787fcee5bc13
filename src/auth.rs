//! Who is calling: a gateway key (`tg-...`, stored as its SHA-256), the master key, or nobody
//! (allowed only when `auth.require_api_key = false`).
//!
//! Keys are looked up once and then served from a moka cache for `key_cache_ttl_secs`, so the
//! request path does not touch the database; a revoked key stops working within that time.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use moka::future::Cache;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::error::GatewayError;
use crate::store::{ApiKeyRow, Db};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    User,
}

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: Option<String>,
    pub project_id: Option<String>,
    pub project_name: String,
    pub role: Role,
    /// The key's own `rpm` / `tpm` (0 = none).
    pub limits: crate::limits::LimitSpec,
}

impl Caller {
    fn anonymous() -> Caller {
        Caller {
            key_id: None,
            project_id: None,
            project_name: String::new(),
            role: Role::User,
            limits: Default::default(),
        }
    }
}

pub struct Authenticator {
    db: Db,
    require_api_key: bool,
    master_key_hash: Option<String>,
    /// presented key -> its caller, or None for "no such key" (cached too, so a client
    /// retrying with a wrong key does not reach the database each time). Keyed by the key
    /// itself so a cached request does not hash; only digests ever reach the database.
    cache: Cache<String, Option<Arc<Caller>>>,
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new gateway key: `tg-` and 32 random bytes in hex. Returns (key, prefix, hash).
pub fn generate_key() -> (String, String, String) {
    let bytes: [u8; 32] = rand::thread_rng().gen();
    let key = format!("tg-{}", hex::encode(bytes));
    let prefix = key[..11].to_owned();
    let hash = hash_key(&key);
    (key, prefix, hash)
}

/// The key a client sent: `Authorization: Bearer`, `api-key` (Azure SDKs) or `x-api-key`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or(v)
            .trim();
        return (!token.is_empty()).then_some(token);
    }
    ["api-key", "x-api-key"]
        .iter()
        .find_map(|h| headers.get(*h)?.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

fn caller_from_row(row: &ApiKeyRow) -> Option<Caller> {
    if row.revoked_at.is_some() {
        return None;
    }
    if let Some(exp) = &row.expires_at {
        let expired = chrono::DateTime::parse_from_rfc3339(exp)
            .or_else(|_| chrono::DateTime::parse_from_str(exp, "%Y-%m-%d %H:%M:%S%.f%#z"))
            .is_ok_and(|t| t < chrono::Utc::now());
        if expired {
            return None;
        }
    }
    Some(Caller {
        key_id: Some(row.id.clone()),
        project_id: row.project_id.clone(),
        project_name: row.project_name.clone().unwrap_or_default(),
        role: if row.role == "admin" {
            Role::Admin
        } else {
            Role::User
        },
        limits: crate::limits::LimitSpec {
            requests_per_minute: row.rpm.unwrap_or(0).max(0) as u64,
            tokens_per_minute: row.tpm.unwrap_or(0).max(0) as u64,
            max_parallel: 0,
        },
    })
}

impl Authenticator {
    pub fn new(db: Db, require_api_key: bool, master_key: Option<&str>, ttl: Duration) -> Self {
        Authenticator {
            db,
            require_api_key,
            master_key_hash: master_key.map(hash_key),
            cache: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
        }
    }

    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Caller>, GatewayError> {
        let Some(key) = presented_key(headers) else {
            return if self.require_api_key {
                // No `code`, as OpenAI answers a request without a key.
                Err(GatewayError::new(
                    http::StatusCode::UNAUTHORIZED,
                    "invalid_request_error",
                    "You didn't provide an API key. Send it as `Authorization: Bearer tg-...`.",
                ))
            } else {
                Ok(Arc::new(Caller::anonymous()))
            };
        };
        let db = self.db.clone();
        let master = self.master_key_hash.clone();
        let found = self
            .cache
            .try_get_with_by_ref(key, async move {
                let hash = hash_key(key);
                if master.as_deref() == Some(hash.as_str()) {
                    return Ok(Some(Arc::new(Caller {
                        role: Role::Admin,
                        ..Caller::anonymous()
                    })));
                }
                let row = db.find_api_key(&hash).await?;
                Ok::<_, anyhow::Error>(row.as_ref().and_then(caller_from_row).map(Arc::new))
            })
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "gateway key lookup failed");
                GatewayError::unavailable(
                    "The gateway cannot check API keys right now; try again shortly.",
                )
            })?;
        match found {
            Some(caller) => Ok(caller),
            // An open gateway accepts whatever placeholder key an SDK insists on sending.
            None if !self.require_api_key => Ok(Arc::new(Caller::anonymous())),
            None => Err(GatewayError::unauthorized(
                "Incorrect API key provided. Keys are created with `tollgate keys create`.",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_distinct_and_hash_consistently() {
        let (k1, p1, h1) = generate_key();
        let (k2, _, h2) = generate_key();
        assert_ne!(k1, k2);
        assert_ne!(h1, h2);
        assert!(k1.starts_with(&p1) && k1.len() == 67);
        assert_eq!(hash_key(&k1), h1);
        assert_eq!(h1.len(), 64);
    }

    #[test]
    fn keys_are_read_from_the_usual_headers() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer tg-abc".parse().unwrap());
        assert_eq!(presented_key(&h), Some("tg-abc"));
        let mut h = HeaderMap::new();
        h.insert("api-key", "tg-def".parse().unwrap());
        assert_eq!(presented_key(&h), Some("tg-def"));
        assert_eq!(presented_key(&HeaderMap::new()), None);
    }
}
