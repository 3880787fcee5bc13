//! Client connections: how many may be open at once, how long one may sit without a request,
//! and what the accept loop does when the system refuses a new one. Whoever can reach the
//! port can open connections, so each of these is bounded.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::App;
use crate::error::BoxError;
use crate::proxy::ClientBody;

/// How many connections one listener takes, and how long one may stay without a request.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub idle: Duration,
}

/// Accepts connections until `stop` turns true, then lets the open ones finish for up to
/// `grace`. Beyond `max_connections`, new connections wait in the kernel's backlog until one
/// closes, rather than being accepted and refused: a burst is served late, not failed.
pub async fn serve<H, F>(
    listener: TcpListener,
    app: Arc<App>,
    handler: H,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) where
    H: Fn(Arc<App>, Request<Incoming>) -> F + Copy + Send + Sync + 'static,
    F: Future<Output = Response<ClientBody>> + Send + 'static,
{
    let builder = Arc::new(builder(limits.idle));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut backoff = AcceptBackoff::default();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = stopped(&mut stop) => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    backoff.wait(&e).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        backoff.reset();
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            stream,
            idle: limits.idle,
            stop: stop.clone(),
            _slot: slot,
        };
        tokio::spawn(conn.serve(builder.clone(), app.clone(), handler));
    }
    drop(listener);
    // Every connection gives its slot back when it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("grace period over: closing the connections still open");
    }
}

/// Resolves once the server is stopping (or whoever could stop it is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

fn builder(idle: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Answers are small (a completion, an SSE chunk): copying the body behind the head and
        // writing once measured 1.5k instructions and ~1 µs of CPU a request less than a
        // vectored write of the two.
        .writev(false)
        // From the connection's start or its previous answer, a client has the idle time to
        // send a request's headers (hyper counts this only once it knows the connection is
        // HTTP/1; `Connection::serve` covers the bytes before that).
        .header_read_timeout(idle);
    builder
        .http2()
        .timer(TokioTimer::new())
        // Pings find a peer that vanished while a long answer was streaming to it.
        .keep_alive_interval(idle)
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// One accepted connection and the slot it holds.
struct Connection {
    stream: TcpStream,
    idle: Duration,
    stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    /// Serves the connection until the client closes it, the server stops, or it has had no
    /// request in progress for `idle`, as seen by looks four times per idle period (so it
    /// closes between 0.75 and 1.25 times that after its last request). A connection that never sends a byte counts as idle from its
    /// start, HTTP/1 and HTTP/2 alike.
    async fn serve<H, F>(
        mut self,
        builder: Arc<auto::Builder<TokioExecutor>>,
        app: Arc<App>,
        handler: H,
    ) where
        H: Fn(Arc<App>, Request<Incoming>) -> F + Copy + Send + Sync + 'static,
        F: Future<Output = Response<ClientBody>> + Send + 'static,
    {
        let activity = Arc::new(Activity::default());
        let requests = activity.clone();
        let service = service_fn(move |req| {
            let busy = requests.begin();
            // Boxed: hyper keeps a slot as large as this future for the connection's whole
            // life, streams included; the request's own future is freed once it has answered.
            let answer = Box::pin(handler(app.clone(), req));
            async move {
                let body = |body| Tracked { body, _busy: busy };
                Ok::<_, Infallible>(answer.await.map(body))
            }
        });
        let conn = builder.serve_connection(TokioIo::new(self.stream), service);
        let mut conn = pin!(conn);
        let period = self.idle / 4;
        let mut check = tokio::time::interval_at(Instant::now() + period, period);
        let mut watch = IdleWatch::new(Instant::now());
        loop {
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stopped(&mut self.stop) => break,
                now = check.tick() => {
                    if watch.idle_for(&activity, now) >= self.idle {
                        break;
                    }
                }
            }
        }
        // Ends an idle connection at once (HTTP/2 says GOAWAY first); a request that began
        // meanwhile is answered.
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

/// The requests of one connection: how many began, and how many are not yet fully answered.
#[derive(Default)]
struct Activity {
    begun: AtomicU64,
    open: AtomicU64,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.begun.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }
}

/// A request in progress, until its answer's last byte is sent (or the answer is dropped).
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the connection's watchdog has seen at its last look.
struct IdleWatch {
    begun: u64,
    active_at: Instant,
}

impl IdleWatch {
    fn new(now: Instant) -> IdleWatch {
        IdleWatch {
            begun: 0,
            active_at: now,
        }
    }

    /// How long the connection has had no request in progress, as far as the looks tell.
    fn idle_for(&mut self, activity: &Activity, now: Instant) -> Duration {
        let begun = activity.begun.load(Ordering::Relaxed);
        if begun != self.begun || activity.open.load(Ordering::Relaxed) > 0 {
            self.begun = begun;
            self.active_at = now;
        }
        now - self.active_at
    }
}

/// An answer's body, keeping its request counted as in progress while it is being sent.
struct Tracked {
    body: ClientBody,
    _busy: Busy,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What the accept loop does after an error. One that belongs to a single connection (reset
/// or aborted before it was accepted) is skipped. Anything else (out of file descriptors or
/// memory) is waited out, 10 ms doubling up to 1 s, so the loop neither spins nor floods the
/// log while the process is short of resources.
struct AcceptBackoff {
    next: Duration,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// How long to wait after `e`, and what to wait next time.
    fn delay(&mut self, e: &io::Error) -> Option<Duration> {
        use io::ErrorKind::*;
        if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
            return None;
        }
        let delay = self.next;
        self.next = (delay * 2).min(Self::MAX);
        Some(delay)
    }

    async fn wait(&mut self, e: &io::Error) {
        if let Some(delay) = self.delay(e) {
            tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "accept failed");
            tokio::time::sleep(delay).await;
        }
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff { next: Self::FIRST }
    }
}

/// Raises this process's open-file limit to the most it may have: every connection takes a
/// descriptor, and one spent mid-burst makes `accept` fail. Returns the limit now in force.
#[cfg(unix)]
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write only the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                ..limit
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(io::Error::last_os_error());
            }
            limit = raised;
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on 64-bit Linux, not everywhere
    Ok(limit.rlim_cur as u64)
}

#[cfg(not(unix))]
pub fn raise_fd_limit() -> io::Result<u64> {
    Ok(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_back_off_exponentially_up_to_a_second() {
        let mut b = AcceptBackoff::default();
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        let waits: Vec<u64> = (0..9)
            .map(|_| b.delay(&emfile).unwrap().as_millis() as u64)
            .collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        // A connection that went away before it was accepted is no reason to wait.
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(b.delay(&aborted), None);
        b.reset();
        assert_eq!(b.delay(&emfile), Some(Duration::from_millis(10)));
    }

    #[test]
    fn a_connection_is_idle_only_while_no_request_is_in_progress() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let activity = Arc::new(Activity::default());
        let mut watch = IdleWatch::new(start);
        assert_eq!(watch.idle_for(&activity, at(10)), Duration::from_secs(10));
        // A request that began and ended between two looks still counts.
        drop(activity.begin());
        assert_eq!(watch.idle_for(&activity, at(11)), Duration::ZERO);
        assert_eq!(watch.idle_for(&activity, at(15)), Duration::from_secs(4));
        // One whose answer is still being sent keeps it busy however long it takes.
        let busy = activity.begin();
        assert_eq!(watch.idle_for(&activity, at(100)), Duration::ZERO);
        assert_eq!(watch.idle_for(&activity, at(200)), Duration::ZERO);
        drop(busy);
        assert_eq!(watch.idle_for(&activity, at(230)), Duration::from_secs(30));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_fd_limit_is_raised_to_the_hard_limit() {
        let read = || {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes only the struct passed to it.
            assert_eq!(
                unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
                0
            );
            limit
        };
        let hard = read().rlim_max;
        let lowered = libc::rlimit {
            rlim_cur: hard.min(1 << 20) / 2,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads only the struct passed to it.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
        assert_eq!(raise_fd_limit().unwrap(), hard);
        assert_eq!(read().rlim_cur, hard);
    }
}
