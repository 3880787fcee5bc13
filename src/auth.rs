//! Who is calling: a gateway key (`tg-...`, stored as its SHA-256), the master key, a JWT
//! (`jwt`), or nobody (allowed only when `auth.require_api_key = false`, and never for the
//! admin API). What each caller may do is the router's to check, by the caller's `Role`.
//!
//! Keys are looked up once and then served from a moka cache for `key_cache_ttl_secs`, so the
//! request path does not touch the database; a revoked key stops working within that time.
//! Anyone can present a key, so what a presented key can make the gateway hold is bounded: a
//! key longer than `MAX_KEY_BYTES` is refused unread, and the cache holds SHA-256 digests (not
//! the keys) within `KEY_CACHE_BYTES`.

mod jwt;

pub use jwt::{looks_like_jwt, sign as sign_jwt, Claims};

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use moka::future::Cache;
use rand::Rng;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AuthConfig, MAX_KEY_BYTES};
use crate::error::GatewayError;
use crate::limits::budget::{nanos_floor, Budget, Budgets, Period, Scope};
use crate::store::{ApiKeyRow, Db, ProjectRow};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    User,
}

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who it is, for the audit log: a key's name and prefix, `master key`, or a JWT's
    /// `sub`. Empty for an anonymous caller.
    pub principal: String,
    pub key_id: Option<Arc<str>>,
    pub project_id: Option<Arc<str>>,
    pub project_name: Arc<str>,
    pub role: Role,
    /// The key's own `rpm` / `tpm` (0 = none).
    pub limits: crate::limits::LimitSpec,
    /// The models the key may ask for; None: all of them.
    pub allowed_models: Option<Box<[String]>>,
    /// The key's and its project's budgets.
    pub budgets: Budgets,
}

impl Caller {
    /// Whether the key may ask for `model` (the name the client sends).
    pub fn may_use(&self, model: &str) -> bool {
        self.allowed_models
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|m| m == model))
    }
}

impl Caller {
    fn anonymous() -> Caller {
        Caller {
            principal: String::new(),
            key_id: None,
            project_id: None,
            project_name: Arc::from(""),
            role: Role::User,
            limits: Default::default(),
            allowed_models: None,
            budgets: Budgets::default(),
        }
    }
}

/// What the key cache may hold, in (estimated) bytes: about 100k looked-up keys.
const KEY_CACHE_BYTES: u64 = 32 * 1024 * 1024;
/// A cache entry's own size beside its strings: the digest, the caller, moka's bookkeeping.
const KEY_ENTRY_BYTES: u32 = 256;

type KeyDigest = [u8; 32];

pub struct Authenticator {
    db: Db,
    require_api_key: bool,
    master_key_digest: Option<KeyDigest>,
    /// SHA-256 of the presented key -> its caller, or None for "no such key" (cached too, so
    /// a client retrying with a wrong key does not reach the database each time).
    cache: Cache<KeyDigest, Option<Arc<Caller>>>,
    jwt: Option<jwt::JwtVerifier>,
    /// A JWT's `project` name -> the project, with its budget (None: no such project). Only names signed
    /// with the secret get here, so the cache is small; bounded anyway.
    projects: Cache<String, Option<Arc<ProjectRow>>>,
}

/// What a presented credential turned out to be.
enum Identified {
    Caller(Arc<Caller>),
    NoKey,
    TooLong,
    UnknownKey,
    /// A JWT that was refused, and why.
    BadJwt(String),
}

fn digest(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

pub fn hash_key(key: &str) -> String {
    hex::encode(digest(key))
}

/// How much of the key cache's byte budget an entry takes.
fn entry_weight(_: &KeyDigest, caller: &Option<Arc<Caller>>) -> u32 {
    let strings = caller.as_deref().map_or(0, |c| {
        c.key_id.as_deref().map_or(0, str::len)
            + c.project_id.as_deref().map_or(0, str::len)
            + c.project_name.len()
            + c.allowed_models
                .iter()
                .flatten()
                .map(String::len)
                .sum::<usize>()
    });
    KEY_ENTRY_BYTES.saturating_add(u32::try_from(strings).unwrap_or(u32::MAX))
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
    if row.expires_at.is_some_and(|t| t < chrono::Utc::now()) {
        return None;
    }
    Some(Caller {
        principal: format!("key {} ({}...)", row.name, row.key_prefix),
        key_id: Some(row.id.as_str().into()),
        project_id: row.project_id.as_deref().map(Arc::from),
        project_name: row.project_name.as_deref().unwrap_or_default().into(),
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
        allowed_models: row
            .allowed_models
            .clone()
            .filter(|m| !m.is_empty())
            .map(Vec::into_boxed_slice),
        budgets: budgets_of(row),
    })
}

/// The budgets a key's requests are checked against: its own, and its project's.
fn budgets_of(row: &ApiKeyRow) -> Budgets {
    let key = row.budget_usd.map(|usd| Budget {
        scope: Scope::Key,
        id: row.id.as_str().into(),
        label: format!("key `{}` ({})", row.name, row.key_prefix).into(),
        limit: nanos_floor(usd),
        period: Default::default(),
    });
    let project = row.project_id.as_deref().and_then(|id| {
        let name = row.project_name.as_deref().unwrap_or(id);
        project_budget(id, name, row.project_budget_usd, row.project_budget_period)
    });
    Budgets { key, project }
}

/// A project's budget, when it has one: shared by its keys and the JWTs that name it.
fn project_budget(id: &str, name: &str, usd: Option<Decimal>, period: Period) -> Option<Budget> {
    usd.map(|usd| Budget {
        scope: Scope::Project,
        id: id.into(),
        label: format!("project `{name}`").into(),
        limit: nanos_floor(usd),
        period,
    })
}

impl Authenticator {
    pub fn new(db: Db, config: &AuthConfig) -> Self {
        let ttl = Duration::from_secs(config.key_cache_ttl_secs);
        let jwt_secret = config.jwt_secret.as_ref().or(config.master_key.as_ref());
        Authenticator {
            db,
            require_api_key: config.require_api_key,
            master_key_digest: config.master_key.as_deref().map(digest),
            cache: Cache::builder()
                .max_capacity(KEY_CACHE_BYTES)
                .weigher(entry_weight)
                .time_to_live(ttl)
                .build(),
            jwt: jwt_secret.map(|s| jwt::JwtVerifier::new(s)),
            projects: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The caller of an API request: anyone with a valid credential, and on an open gateway
    /// anyone at all.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Caller>, GatewayError> {
        let refused = match self.identify(headers).await? {
            Identified::Caller(caller) => return Ok(caller),
            // An open gateway accepts whatever placeholder key an SDK insists on sending.
            _ if !self.require_api_key => return Ok(Arc::new(Caller::anonymous())),
            refused => refused,
        };
        Err(match refused {
            // No `code`, as OpenAI answers a request without a key.
            Identified::NoKey => GatewayError::new(
                http::StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "You didn't provide an API key. Send it as `Authorization: Bearer tg-...`.",
            ),
            other => refusal(other),
        })
    }

    /// The caller of an admin request: a valid credential always, whatever
    /// `require_api_key` says. Its role is the router's to check.
    pub async fn authenticate_admin(
        &self,
        headers: &HeaderMap,
    ) -> Result<Arc<Caller>, GatewayError> {
        match self.identify(headers).await? {
            Identified::Caller(caller) => Ok(caller),
            Identified::NoKey => Err(GatewayError::unauthorized(
                "The admin API needs `Authorization: Bearer <key>` with the master key, an admin key or an admin JWT.",
            )),
            other => Err(refusal(other)),
        }
    }

    async fn identify(&self, headers: &HeaderMap) -> Result<Identified, GatewayError> {
        let Some(key) = presented_key(headers) else {
            return Ok(Identified::NoKey);
        };
        if key.len() > MAX_KEY_BYTES {
            // No key is this long: refused like a wrong key, without hashing it.
            return Ok(Identified::TooLong);
        }
        if let (Some(verifier), true) = (&self.jwt, looks_like_jwt(key)) {
            return match verifier.verify(key) {
                Ok(claims) => self.jwt_caller(claims).await,
                Err(why) => Ok(Identified::BadJwt(why)),
            };
        }
        let found = self.lookup_key(digest(key)).await?;
        Ok(found.map_or(Identified::UnknownKey, Identified::Caller))
    }

    /// The caller of a key (or the master key), from the cache or the database.
    async fn lookup_key(&self, digest: KeyDigest) -> Result<Option<Arc<Caller>>, GatewayError> {
        let db = self.db.clone();
        let master = self.master_key_digest;
        self.cache
            .try_get_with(digest, async move {
                if master.is_some_and(|m| bool::from(m.ct_eq(&digest))) {
                    return Ok(Some(Arc::new(Caller {
                        principal: "master key".into(),
                        role: Role::Admin,
                        ..Caller::anonymous()
                    })));
                }
                let row = db.find_api_key(&hex::encode(digest)).await?;
                Ok::<_, anyhow::Error>(row.as_ref().and_then(caller_from_row).map(Arc::new))
            })
            .await
            .map_err(unavailable)
    }

    /// A JWT's caller; its project, when it names one, must exist.
    async fn jwt_caller(&self, claims: Claims) -> Result<Identified, GatewayError> {
        let role = claims.role().unwrap_or(Role::User);
        let mut caller = Caller {
            principal: format!("jwt {}", claims.sub),
            role,
            ..Caller::anonymous()
        };
        if let Some(project) = claims.project {
            let db = self.db.clone();
            let name = project.clone();
            let found = self
                .projects
                .try_get_with(project.clone(), async move {
                    Ok::<_, anyhow::Error>(db.get_project(&name).await?.map(Arc::new))
                })
                .await
                .map_err(unavailable)?;
            let Some(found) = found else {
                return Ok(Identified::BadJwt(format!(
                    "the JWT's project `{}` does not exist",
                    project.chars().take(64).collect::<String>()
                )));
            };
            // The project's budget applies to the JWT's requests as to its keys'.
            caller.budgets.project = project_budget(
                &found.id,
                &found.name,
                found.budget_usd,
                found.budget_period,
            );
            caller.project_id = Some(found.id.as_str().into());
            caller.project_name = project.into();
        }
        Ok(Identified::Caller(Arc::new(caller)))
    }
}

/// Who created something that runs later (a background task), as stored with it.
#[derive(Debug, Clone)]
pub struct StoredCaller {
    pub principal: String,
    pub key_id: Option<String>,
    pub project_id: Option<String>,
    pub role: Role,
}

impl Caller {
    /// What is stored of a caller to act as it later.
    pub fn stored(&self) -> StoredCaller {
        StoredCaller {
            principal: self.principal.clone(),
            key_id: self.key_id.as_deref().map(str::to_owned),
            project_id: self.project_id.as_deref().map(str::to_owned),
            role: self.role,
        }
    }

    /// The caller again, as it is now: a key's current limits, allowed models and budgets,
    /// a project's current budget. Err says why it can no longer act (a key revoked or
    /// expired since, a project deleted).
    pub async fn restore(db: &Db, stored: &StoredCaller) -> anyhow::Result<Result<Caller, String>> {
        if let Some(id) = &stored.key_id {
            let row = db.get_api_key(id).await?;
            return Ok(row
                .as_ref()
                .and_then(caller_from_row)
                .ok_or_else(|| "the API key that created it was revoked or has expired".into()));
        }
        let mut caller = Caller {
            principal: stored.principal.clone(),
            role: stored.role,
            ..Caller::anonymous()
        };
        if let Some(id) = &stored.project_id {
            let Some(project) = db.get_project(id).await? else {
                return Ok(Err("its project no longer exists".into()));
            };
            caller.budgets.project = project_budget(
                &project.id,
                &project.name,
                project.budget_usd,
                project.budget_period,
            );
            caller.project_id = Some(project.id.into());
            caller.project_name = project.name.into();
        }
        Ok(Ok(caller))
    }
}

/// The 401 of a credential that was presented but is not good.
fn refusal(identified: Identified) -> GatewayError {
    match identified {
        Identified::TooLong => GatewayError::unauthorized(format!(
            "The API key provided is longer than {MAX_KEY_BYTES} bytes; no key is that long. Gateway keys look like `tg-` and 64 hex digits."
        )),
        Identified::BadJwt(why) => GatewayError::unauthorized(format!("Invalid token: {why}.")),
        _ => GatewayError::unauthorized(
            "Incorrect API key provided. Keys are created with `tollgate keys create`.",
        ),
    }
}

fn unavailable(e: Arc<anyhow::Error>) -> GatewayError {
    tracing::error!(error = %e, "gateway key lookup failed");
    GatewayError::unavailable("The gateway cannot check API keys right now; try again shortly.")
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

    async fn authenticator(dir: &tempfile::TempDir, require_api_key: bool) -> Authenticator {
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
        let db = Db::connect(&url, 1).await.unwrap();
        db.migrate().await.unwrap();
        let config = AuthConfig {
            require_api_key,
            key_cache_ttl_secs: 60,
            ..AuthConfig::default()
        };
        Authenticator::new(db, &config)
    }

    fn bearer(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", format!("Bearer {key}").parse().unwrap());
        h
    }

    /// A key past the bound is refused with a message saying so, and is neither looked up
    /// nor cached; one at the bound is an ordinary wrong key.
    #[tokio::test]
    async fn keys_longer_than_the_bound_are_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator(&dir, true).await;
        let e = auth
            .authenticate(&bearer(&"k".repeat(MAX_KEY_BYTES + 1)))
            .await
            .unwrap_err();
        assert_eq!(e.status, http::StatusCode::UNAUTHORIZED);
        assert_eq!(e.code, Some("invalid_api_key"));
        assert!(
            e.message.contains("longer than 4096 bytes"),
            "{}",
            e.message
        );
        auth.cache.run_pending_tasks().await;
        assert_eq!(auth.cache.entry_count(), 0);

        let e = auth
            .authenticate(&bearer(&"k".repeat(MAX_KEY_BYTES)))
            .await
            .unwrap_err();
        assert!(e.message.starts_with("Incorrect API key"), "{}", e.message);
        auth.cache.run_pending_tasks().await;
        assert_eq!(auth.cache.entry_count(), 1);
    }

    /// An open gateway treats an over-long key like any unknown placeholder key.
    #[tokio::test]
    async fn an_open_gateway_ignores_an_over_long_key() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator(&dir, false).await;
        let caller = auth
            .authenticate(&bearer(&"k".repeat(MAX_KEY_BYTES + 1)))
            .await
            .unwrap();
        assert_eq!(caller.key_id, None);
    }

    /// The cache holds digests: what a wrong key costs it does not grow with the key's
    /// length, and the budget is counted in bytes.
    #[tokio::test]
    async fn cached_wrong_keys_weigh_the_same_whatever_their_length() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator(&dir, true).await;
        for i in 0..20 {
            let key = format!("{i:04}{}", "x".repeat(i * 200));
            assert!(auth.authenticate(&bearer(&key)).await.is_err());
        }
        auth.cache.run_pending_tasks().await;
        assert_eq!(auth.cache.entry_count(), 20);
        assert_eq!(auth.cache.weighted_size(), 20 * u64::from(KEY_ENTRY_BYTES));
        assert_eq!(auth.cache.policy().max_capacity(), Some(KEY_CACHE_BYTES));
    }
}
