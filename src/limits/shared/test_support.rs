//! Test helpers: the real Redis the tests run against, and key prefixes that keep each test's
//! keys apart from every other test's (and from other engineers' runs on the same Redis).

use tokio::task::JoinSet;

use super::SharedLimiter;

pub(crate) fn redis_url() -> String {
    std::env::var("TOLLGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix used by one test only; its keys are deleted when it is dropped, also when the
/// test panics (the scripts' own TTLs are the backstop).
pub(crate) struct TestPrefix(pub String);

impl TestPrefix {
    pub(crate) fn new() -> TestPrefix {
        TestPrefix(format!("tollgate:test:{}:", uuid::Uuid::now_v7()))
    }

    pub(crate) async fn limiter(&self) -> SharedLimiter {
        SharedLimiter::connect(&redis_url(), &self.0)
            .await
            .expect("the test Redis is reachable")
    }

    /// How many keys exist under this prefix.
    pub(crate) fn keys(&self) -> Vec<String> {
        let client = redis::Client::open(redis_url()).expect("valid test Redis URL");
        let mut conn = client
            .get_connection()
            .expect("the test Redis is reachable");
        redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(format!("{}*", self.0))
            .arg("COUNT")
            .arg(1000)
            .clone()
            .iter::<String>(&mut conn)
            .expect("SCAN works")
            .collect::<Result<_, _>>()
            .expect("SCAN answers")
    }
}

impl Drop for TestPrefix {
    fn drop(&mut self) {
        let keys = self.keys();
        if keys.is_empty() {
            return;
        }
        if let Ok(mut conn) = redis::Client::open(redis_url()).and_then(|c| c.get_connection()) {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&keys).query(&mut conn);
        }
    }
}

/// A TCP forwarder to the test Redis that can be pulled like a cable: aborting the set
/// closes the listener and every forwarded connection.
pub(crate) async fn proxy_to_test_redis() -> (String, JoinSet<()>) {
    let client = redis::Client::open(redis_url()).unwrap();
    let target = match client.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
        other => panic!("the forwarder needs a TCP Redis, not {other:?}"),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let mut proxy = JoinSet::new();
    proxy.spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            connections.spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (url, proxy)
}
