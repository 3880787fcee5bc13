//! Shared test harness: a real gateway started in-process against a real database (a SQLite
//! temp file, or a fresh PostgreSQL database per test) and a mock upstream on loopback.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tollgate::config::Config;
use tollgate::mock::MockUpstream;
use tollgate::server::Running;
use tollgate::store::Db;

/// Where the tests find PostgreSQL (a server reachable as a superuser, trust auth).
pub fn pg_admin_url() -> String {
    std::env::var("TOLLGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database of its own for one test; a PostgreSQL one is dropped when the test ends.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => TestDb {
                url: format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()),
                pg_name: None,
                _dir: dir,
            },
            Backend::Postgres => {
                let name = format!("tollgate_t_{}", uuid::Uuid::now_v7().simple());
                let admin = Db::connect(&pg_admin_url(), 1)
                    .await
                    .expect("PostgreSQL is reachable (scripts/test.sh starts it)");
                admin
                    .execute(&format!("CREATE DATABASE {name}"), &[])
                    .await
                    .unwrap();
                admin.close().await;
                let base = pg_admin_url();
                let url = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);
                TestDb {
                    url,
                    pg_name: Some(name),
                    _dir: dir,
                }
            }
        }
    }

    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    pub async fn connect(&self) -> Db {
        Db::connect(&self.url, 2).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(admin) = Db::connect(&pg_admin_url(), 1).await {
                        let _ = admin
                            .execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), &[])
                            .await;
                        admin.close().await;
                    }
                })
            })
            .join();
        }
    }
}

/// A mock upstream that records what it receives.
pub async fn mock_upstream() -> (MockUpstream, SocketAddr) {
    start_mock(MockUpstream {
        record: true,
        ..Default::default()
    })
    .await
}

/// Starts `mock` on a free loopback port.
pub async fn start_mock(mock: MockUpstream) -> (MockUpstream, SocketAddr) {
    let addr = mock
        .clone()
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (mock, addr)
}

/// Config text for a gateway on a free port with the given database and extra TOML.
pub fn config_text(db_url: &str, dir: &Path, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
request_timeout_secs = 5
max_body_bytes = 65536
shutdown_grace_secs = 2

[database]
url = "{db_url}"

[auth]
require_api_key = false

[usage]
spool_path = "{spool}"

{extra}
"#,
        spool = dir.join("usage.spool").display()
    )
}

pub struct TestGateway {
    pub running: Running,
    pub base: String,
    pub config_path: PathBuf,
}

pub async fn start_gateway(db: &TestDb, extra: &str) -> TestGateway {
    start_gateway_with(db, extra, |t| t).await
}

/// Starts a gateway whose config text was changed by `edit` first.
pub async fn start_gateway_with(
    db: &TestDb,
    extra: &str,
    edit: impl FnOnce(String) -> String,
) -> TestGateway {
    let text = edit(config_text(&db.url, db.dir(), extra));
    let path = db.dir().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let loaded = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let running = tollgate::server::start(loaded).await.unwrap();
    let base = format!("http://{}", running.addr);
    TestGateway {
        running,
        base,
        config_path: path,
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn request(
    method: Method,
    url: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn post(url: &str, body: &serde_json::Value, headers: &[(&str, &str)]) -> Reply {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    request(Method::POST, url, body.to_string(), &all).await
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    request(Method::GET, url, Bytes::new(), headers).await
}

/// One usage row, the columns the tests look at.
#[derive(Debug, Clone)]
pub struct UsageRow {
    pub model_name: String,
    pub endpoint: String,
    pub stream: bool,
    pub status_code: i64,
    pub error_type: Option<String>,
    pub input_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_usd: String,
    pub usage_source: String,
    pub attempts: i64,
    pub api_key_id: Option<String>,
    pub project_id: Option<String>,
    pub provider: Option<String>,
    pub ttft_ms: Option<i64>,
}

pub async fn usage_rows(db: &Db) -> Vec<UsageRow> {
    let rows = db
        .fetch_all(
            "SELECT u.model_name, u.endpoint, u.stream, u.status_code, u.error_type, u.input_tokens,
                u.cache_read_tokens, u.cache_write_tokens, u.output_tokens, u.reasoning_tokens,
                u.cost_usd::text AS cost_usd, u.usage_source,
                u.attempts, u.api_key_id::text AS api_key_id, u.project_id::text AS project_id,
                p.name AS provider, u.ttft_ms
             FROM llm_usage_logs u LEFT JOIN llm_providers p ON p.id = u.provider_id
             ORDER BY u.created_at, u.id",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| UsageRow {
            model_name: r.text("model_name").unwrap(),
            endpoint: r.text("endpoint").unwrap(),
            stream: r.bool("stream").unwrap(),
            status_code: r.int("status_code").unwrap(),
            error_type: r.opt_text("error_type").unwrap(),
            input_tokens: r.int("input_tokens").unwrap(),
            cache_read_tokens: r.int("cache_read_tokens").unwrap(),
            cache_write_tokens: r.int("cache_write_tokens").unwrap(),
            output_tokens: r.int("output_tokens").unwrap(),
            reasoning_tokens: r.int("reasoning_tokens").unwrap(),
            cost_usd: r.text("cost_usd").unwrap(),
            usage_source: r.text("usage_source").unwrap(),
            attempts: r.int("attempts").unwrap(),
            api_key_id: r.opt_text("api_key_id").unwrap(),
            project_id: r.opt_text("project_id").unwrap(),
            provider: r.opt_text("provider").unwrap(),
            ttft_ms: r.opt_int("ttft_ms").unwrap(),
        })
        .collect()
}

/// Decimal strings compared as numbers (PostgreSQL pads NUMERIC with zeros, SQLite does not).
pub fn dec(s: &str) -> rust_decimal::Decimal {
    s.parse::<rust_decimal::Decimal>().unwrap().normalize()
}

/// The value of one Prometheus sample, found by its name and label fragment.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        if n != name {
            return None;
        }
        labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            .then(|| value.parse().ok())?
    })
}

/// Runs each named `async fn(Backend)` as two tests, one on each database.
#[allow(unused_macros)]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_both_databases;

/// An OpenAI-compatible provider named `name` at `addr`.
pub fn upstream_provider(addr: SocketAddr, name: &str, key: &str) -> String {
    format!(
        r#"
[[providers]]
name = "{name}"
api = "openai"
base_url = "http://{addr}/v1"
api_key = "{key}"
"#
    )
}

/// The model `echo` of the in-process mock provider `local`: answers without any upstream.
pub const MOCK_ECHO: &str = r#"
[[providers]]
name = "local"
api = "mock"

[[models]]
name = "echo"
provider = "local"
model_id = "echo-1"
"#;

/// A chat model `fast` on the provider `up`, with prices and default parameters.
pub const CHAT_MODEL: &str = r#"
[[models]]
name = "fast"
provider = "up"
model_id = "upstream-model-v1"
cost_input_per_million = "0.15"
cost_output_per_million = "0.60"
parameters = { temperature = 0.25, top_p = 0.5 }
"#;

/// One request as a loopback upstream written in a test reads it.
pub struct UpstreamRequest {
    pub path: String,
    /// The JSON body; Null when there is none or it is not JSON.
    pub body: serde_json::Value,
}

impl UpstreamRequest {
    /// The model asked for: from the body, or from Gemini's path
    /// (`/v1beta/models/{model}:streamGenerateContent?alt=sse`).
    pub fn model(&self) -> String {
        match self.body["model"].as_str() {
            Some(m) => m.to_owned(),
            None => self
                .path
                .split("/models/")
                .nth(1)
                .and_then(|p| p.split(':').next())
                .unwrap_or_default()
                .to_owned(),
        }
    }
}

/// Reads one HTTP/1.1 request (headers, then `content-length` bytes of body) from `socket`.
pub async fn read_upstream_request(socket: &mut tokio::net::TcpStream) -> Option<UpstreamRequest> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        let n = socket.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = socket.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(UpstreamRequest {
        path: head.split(' ').nth(1)?.to_owned(),
        body: serde_json::from_slice(&buf[head_end..]).unwrap_or_default(),
    })
}
