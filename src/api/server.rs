//! Serving HTTP on a socket that faces the public: hyper's connection handling with the limits
//! a plain `axum::serve` leaves out (it gives hyper no timer, so no header-read timeout).
//!
//! - **Header-read timeout** (`producer.header_read_timeout_ms`): a request's head must arrive
//!   within it, and a kept-alive connection waiting for its next request is closed after it
//!   too (hyper times every head it waits for), so a slow-loris client cannot hold a
//!   connection by sending a header a byte at a time, or by sending nothing.
//! - **Idle timeout** (`producer.idle_timeout_secs`): a connection that moves no byte either
//!   way for this long (up to a quarter more: it is checked four times per timeout, so a
//!   request pays a counter's increment, not a clock read) is closed (a client that stops
//!   reading its answer, a body that never comes). It must outlast the longest quiet a request may have on purpose: a `Prefer: wait`
//!   (`producer.max_wait_secs`) and the 15 s between an event stream's keep-alive comments.
//! - **At most `producer.max_connections`** connections at once. Past it a new connection gets
//!   `503` with `Retry-After` and is closed at once: it never hangs in a queue.
//! - Each connection's task knows its peer's address ([`peer`], a task-local), for the few
//!   answers that need it (a miss's per-client limits): not `ConnectInfo` in every request's
//!   extensions, as `axum::serve` does, which costs every hit an allocation and a hash-map insert.
//! - **HTTP/1.1 only.** hyper's HTTP/2 server has no header-read timeout and multiplexes
//!   streams past the connection cap, so this port does not speak it (a client asking for h2
//!   with prior knowledge gets a parse error). A load balancer in front may speak HTTP/2 to
//!   browsers; it speaks HTTP/1.1 to us.
//! - **Shutdown** stops accepting, lets open connections finish their requests (bounded by
//!   [`DRAIN`]), then closes whatever is left and returns.
//!
//! Written here rather than taken from a crate: axum's own `serve` sets none of these, and the
//! limits need the accept loop (the connection cap) and the socket (the idle timer).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::Service;

/// The longest open connections get to finish at shutdown.
pub const DRAIN: Duration = Duration::from_secs(10);
/// What a connection past the cap is told before it is closed.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
retry-after: 1\r\ncache-control: no-store\r\nconnection: close\r\ncontent-length: 130\r\n\r\n\
{\"type\":\"/problems/too-many-connections\",\"title\":\"Service Unavailable\",\"status\":503,\"detail\":\"too many connections; retry in 1 s\"}";

/// The limits one listener serves with.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The `listener` label on this listener's connection metrics (`public`, `ops`).
    pub listener: &'static str,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `app` (a router, maybe wrapped) on `listener` within `limits` until `shutdown`, then
/// drains.
pub async fn serve<S>(listener: TcpListener, app: S, limits: Limits, shutdown: CancellationToken) -> std::io::Result<()>
where
    S: Service<axum::extract::Request, Response = axum::response::Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        // Finished connections' tasks are reaped as we go, so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: a breath, not a busy loop.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("pricefront_connections_refused_total", "listener" => limits.listener).increment(1);
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Idle from its accept on (not from the listener's start).
        let activity = Arc::new(AtomicU64::new(0));
        let io = TokioIo::new(Watched { inner: stream, activity: activity.clone() });
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            tower::ServiceExt::oneshot(app.clone(), request.map(axum::body::Body::new))
        });
        let connection = graceful.watch(builder.serve_connection(io, service));
        // HTTP/1.1 serves a connection's requests inside its task: they all see its peer.
        connections.spawn(PEER.scope(peer, async move {
            // Held for the connection's life, and dropped when its task is aborted too.
            let _open = Open::new(limits.listener, slot);
            tokio::select! {
                served = connection => if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                _ = idle(&activity, limits.idle_timeout) => {
                    metrics::counter!("pricefront_connections_idle_closed_total", "listener" => limits.listener)
                        .increment(1);
                    tracing::debug!(%peer, "connection idle too long; closed");
                }
            }
        }));
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!(open = connections.len(), "connections still open after {DRAIN:?}; closing them");
    }
    // An event stream or a wait does not end by itself: what is left is closed here.
    connections.shutdown().await;
    Ok(())
}

/// An open connection: its slot under the cap and its count in the gauge.
struct Open {
    listener: &'static str,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Open {
    fn new(listener: &'static str, slot: tokio::sync::OwnedSemaphorePermit) -> Self {
        metrics::gauge!("pricefront_open_connections", "listener" => listener).increment(1.0);
        Self { listener, _slot: slot }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics::gauge!("pricefront_open_connections", "listener" => self.listener).decrement(1.0);
    }
}

/// Tells a connection past the cap to come back, and closes it; never waits long on it.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(TOO_MANY).await?;
        stream.shutdown().await?;
        // Read what the client sent until it closes: closing a socket with unread bytes sends
        // a reset, which may destroy the answer before the client reads it.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// How many times per idle timeout a connection's activity is looked at.
const IDLE_CHECKS: u32 = 4;

/// Ends once no byte has moved for `timeout`, give or take a quarter of it: after
/// [`IDLE_CHECKS`] looks in a row, a quarter of it apart, that saw no move.
async fn idle(activity: &AtomicU64, timeout: Duration) {
    let step = timeout / IDLE_CHECKS;
    let (mut seen, mut quiet) = (activity.load(Ordering::Relaxed), 0);
    loop {
        tokio::time::sleep(step).await;
        let now = activity.load(Ordering::Relaxed);
        if now != seen {
            (seen, quiet) = (now, 0);
        } else {
            quiet += 1;
            if quiet >= IDLE_CHECKS {
                return;
            }
        }
    }
}

/// A socket that counts its moves (reads or writes of at least a byte). Only its connection's
/// task touches it and reads it, so the count is a plain load and store.
struct Watched {
    inner: TcpStream,
    activity: Arc<AtomicU64>,
}

impl Watched {
    fn touch(&self) {
        self.activity.store(self.activity.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// File descriptors a producer needs besides its public connections: the ops port's (at most
/// 256), Redis, the broker, the sources' clients, logs.
const OTHER_FILES: u64 = 512;

/// Raises this process's open-file limit to its hard limit (many systems start a service
/// with a soft limit of 1024, which `producer.max_connections` would run into: `accept` then
/// fails instead of the cap's 503), and warns if even that is too low. The limit it ended at.
pub fn raise_file_limit(max_connections: usize) -> Option<u64> {
    let needed = max_connections as u64 + OTHER_FILES;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < needed => {
            tracing::warn!(
                limit,
                needed,
                "the open-file limit is below producer.max_connections plus {OTHER_FILES}: past it, new \
                 connections fail to be accepted instead of being answered 503; raise the hard limit \
                 (ulimit -Hn, LimitNOFILE=) or lower producer.max_connections"
            );
            Some(limit)
        }
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit");
            None
        }
    }
}

tokio::task_local! {
    /// The peer of the connection this task serves.
    static PEER: SocketAddr;
}

/// The peer of a request: its connection's, when [`serve`] serves it; else what `ConnectInfo`
/// says (a router served by `axum::serve` with connect info); `None` when the router is driven
/// in process.
pub fn peer(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    PEER.try_with(|peer| *peer)
        .ok()
        .or_else(|| extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| *addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One request over a fresh connection to `address`: what came back.
    async fn ask(address: SocketAddr) -> Vec<u8> {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        answer
    }

    #[tokio::test]
    async fn a_connection_is_idle_from_its_own_start_not_the_listeners() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let limits = Limits {
            listener: "test",
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(1),
            max_connections: 4,
        };
        let shutdown = CancellationToken::new();
        let served = tokio::spawn(serve(listener, app, limits, shutdown.clone()));
        // Longer than the idle timeout since the listener started: a new connection is served.
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let answer = ask(address).await;
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
        shutdown.cancel();
        served.await.unwrap().unwrap();
    }

    #[test]
    fn the_refusal_is_a_whole_http_answer() {
        let text = std::str::from_utf8(TOO_MANY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap().parse().unwrap();
        assert_eq!(body.len(), length);
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }
}
