//! `tollgate mock-upstream`: the mock model behind a real HTTP server, for tests, demos and
//! the benchmark. It remembers what it received so tests can check what the gateway sent.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket};

use super::{respond, MockBody, MockOptions};
use crate::error::BoxError;

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
    /// How many requests arrived, and how many are being answered now and at most so far
    /// (an answer counts until its last byte is sent or the client goes away).
    pub counters: Arc<Counters>,
    /// While set, every request is answered with a 500 (outage drills).
    pub failing: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted: how a test sees whether the gateway reused its pooled ones.
    pub connections: AtomicUsize,
    pub requests: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

/// Counts one answer in flight while it lives.
struct Answering(Arc<Counters>);

impl Answering {
    fn new(c: &Arc<Counters>) -> Answering {
        c.requests.fetch_add(1, Ordering::SeqCst);
        let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        c.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Answering(c.clone())
    }
}

/// A body that keeps its answer counted until it is dropped.
struct Counted {
    inner: MockBody,
    _answering: Answering,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
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
        // A backlog as large as the gateway's: a benchmark opens thousands of streams at once.
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(4096)?;
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
            this.counters.connections.fetch_add(1, Ordering::SeqCst);
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
                        let answering = Answering::new(&this.counters);
                        let resp = if this.failing.load(Ordering::SeqCst) {
                            respond(
                                "/v1/chat/completions",
                                br#"{"model":"mock-status-500"}"#.as_slice().into(),
                                &this.options,
                            )
                            .await
                        } else {
                            respond(parts.uri.path(), body, &this.options).await
                        };
                        // The count ends when the body is done with, however that happens.
                        let resp = resp.map(|inner| Counted {
                            inner,
                            _answering: answering,
                        });
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }
}
