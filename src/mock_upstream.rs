//! `tollgate mock-upstream`: the mock model behind a real HTTP server, for tests, demos and
//! the benchmark. It remembers what it received so tests can check what the gateway sent.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::providers::mock::{self, MockOptions};

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

#[derive(Clone, Default)]
pub struct MockUpstream {
    pub options: MockOptions,
    /// Requests received, kept only when `record` is on (the benchmark leaves it off).
    pub received: Arc<Mutex<Vec<Received>>>,
    pub record: bool,
}

impl MockUpstream {
    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Binds `addr` (port 0 for any) and serves in the background; returns the bound address.
    pub async fn start(self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        tokio::spawn(self.serve(listener));
        Ok(bound)
    }

    pub async fn serve(self, listener: TcpListener) {
        let this = Arc::new(self);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let this = this.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let this = this.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        if this.record {
                            this.received
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(Received {
                                    path: parts.uri.path().to_owned(),
                                    headers: parts.headers.clone(),
                                    body: body.clone(),
                                });
                        }
                        Ok::<_, std::convert::Infallible>(
                            mock::respond(parts.uri.path(), body, &this.options).await,
                        )
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }
}
