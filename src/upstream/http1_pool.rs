//! Kept-alive HTTP/1.1 connections to one plain-http provider (a local vLLM, Ollama or TGI,
//! the mock). Over plain http hyper-util's pooled client speaks HTTP/1.1 too, but its generic
//! pool cost ~9k instructions a request: the pool key hashed twice, a race between checkout
//! and a new connection, and a task per request that hands the connection back. Here a
//! provider's idle connections are a stack behind a mutex, and a connection goes back on it
//! when its response body has been read to the end. TLS providers keep hyper-util's client
//! (ALPN, HTTP/2).

use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{error_chain, SendError, UpstreamBody};
use crate::error::BoxError;

/// Idle connections kept per provider, and for how long. A connection the provider closed
/// while idle ends its task at once; its handle is dropped at the next checkout.
const MAX_IDLE: usize = 512;
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, Default)]
pub struct Http1Pool {
    idle: Mutex<Vec<Idle>>,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

impl Http1Pool {
    /// Sends the request `make` builds (its URI absolute, with host and port) on an idle
    /// connection, or a new one, and returns once the response headers arrived. `make` is
    /// called again only to send the request a second time (see below).
    pub async fn send(
        self: &Arc<Self>,
        make: impl Fn() -> Request<Full<Bytes>>,
        connect_timeout: Duration,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let mut req = make();
        let Some(authority) = req.uri().authority().cloned() else {
            return Err(SendError::Other("the provider URL has no host".into()));
        };
        // On the wire an HTTP/1.1 request names only its path (the Host header has the rest).
        let on_the_wire = |mut req: Request<Full<Bytes>>| {
            let origin = req
                .uri()
                .path_and_query()
                .cloned()
                .map_or_else(|| Uri::from_static("/"), Uri::from);
            *req.uri_mut() = origin;
            req
        };
        req = on_the_wire(req);
        let mut resent = false;
        loop {
            let idle = if resent { None } else { self.checkout().await };
            let (mut sender, reused) = match idle {
                Some(sender) => (sender, true),
                None => (connect(&authority, connect_timeout).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let pool = Arc::downgrade(self);
                    return Ok(resp.map(|body| {
                        ReturnsConnection {
                            body,
                            sender: Some(sender),
                            pool,
                        }
                        .boxed_unsync()
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // A kept-alive connection the provider had closed: the request never left,
                    // so it goes again on a new connection.
                    Some(unsent) if reused => req = unsent,
                    // The provider closed a kept-alive connection as the request went out and
                    // answered nothing: it closed an idle connection, it did not take the
                    // request (Go's HTTP client resends in this case too). Once, on a new
                    // connection.
                    None if reused && !resent && e.error().is_incomplete_message() => {
                        req = on_the_wire(make());
                        resent = true;
                    }
                    _ => return Err(SendError::Other(error_chain(e.error()))),
                },
            }
        }
    }

    /// The most recently used idle connection that is still open and ready.
    async fn checkout(&self) -> Option<SendRequest<Full<Bytes>>> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            if idle.sender.is_closed() || idle.since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            let mut sender = idle.sender;
            // Ready at once, unless the connection is still finishing its last answer.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn put_back(&self, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

async fn connect(
    authority: &Authority,
    timeout: Duration,
) -> Result<SendRequest<Full<Bytes>>, SendError> {
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']'); // IPv6 literal
    let port = authority.port_u16().unwrap_or(80);
    let stream = match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Err(_) => return Err(SendError::Connect("connect timed out".into())),
        Ok(Err(e)) => return Err(SendError::Connect(e.to_string())),
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    // Head and body in one buffer, one write: cheaper than a vectored write for the small
    // requests a gateway sends (measured with the server side, see proxy::serve).
    let (sender, connection) = Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| SendError::Connect(error_chain(&e)))?;
    tokio::spawn(async move {
        // Ends when the provider closes the connection or the pool drops its sender.
        let _ = connection.await;
    });
    Ok(sender)
}

/// A provider's response body; its connection goes back to the pool once the body has been
/// read to the end (dropped before that, the connection is closed).
struct ReturnsConnection {
    body: Incoming,
    sender: Option<SendRequest<Full<Bytes>>>,
    pool: Weak<Http1Pool>,
}

impl Body for ReturnsConnection {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
            Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
            Some(Err(e)) => {
                this.sender = None;
                Poll::Ready(Some(Err(e.into())))
            }
            None => {
                if let (Some(sender), Some(pool)) = (this.sender.take(), this.pool.upgrade()) {
                    pool.put_back(sender);
                }
                Poll::Ready(None)
            }
        }
    }

    /// Not before the connection went back: whoever reads this polls once more for the end.
    fn is_end_stream(&self) -> bool {
        self.sender.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
