//! Serving HTTP on a socket that faces the public: hyper's connection handling with the limits
//! a plain `axum::serve` leaves out (it gives hyper no timer, so no header-read timeout).
//!
//! - **Header-read timeout** (`producer.header_read_timeout_ms`): a request's head must arrive
//!   within it, and a kept-alive connection waiting for its next request is closed after it
//!   too (hyper times every head it waits for), so a slow-loris client cannot hold a
//!   connection by sending a header a byte at a time, or by sending nothing.
//! - **Idle timeout** (`producer.idle_timeout_secs`): a connection that moves no byte either
//!   way for this long is closed (a client that stops reading its answer, a body that never
//!   comes). It must outlast the longest quiet a request may have on purpose: a `Prefer: wait`
//!   (`producer.max_wait_secs`) and the 15 s between an event stream's keep-alive comments.
//! - **At most `producer.max_connections`** connections at once. Past it a new connection gets
//!   `503` with `Retry-After` and is closed at once: it never hangs in a queue.
//! - Each request carries its peer's address (`ConnectInfo`), as `axum::serve` gives it.
//! - **Shutdown** stops accepting, lets open connections finish their requests (bounded by
//!   [`DRAIN`]), then returns.
//!
//! Written here rather than taken from a crate: axum's own `serve` sets none of these, and the
//! limits need the accept loop (the connection cap) and the socket (the idle timer).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::connect_info::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(limits.idle_timeout / 2));
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let epoch = Instant::now();
    loop {
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
            metrics::counter!("pricefront_connections_refused_total").increment(1);
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Active from its accept on (not from the listener's start).
        let activity = Arc::new(AtomicU64::new(epoch.elapsed().as_millis() as u64));
        let io = TokioIo::new(Watched { inner: stream, activity: activity.clone(), epoch });
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            tower::ServiceExt::oneshot(app.clone(), request.map(axum::body::Body::new))
        });
        let builder = builder.clone();
        let connection = graceful.watch(builder.serve_connection_with_upgrades(io, service).into_owned());
        tokio::spawn(async move {
            metrics::gauge!("pricefront_open_connections").increment(1.0);
            tokio::select! {
                served = connection => if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                _ = idle(&activity, epoch, limits.idle_timeout) => {
                    metrics::counter!("pricefront_connections_idle_closed_total").increment(1);
                    tracing::debug!(%peer, "connection idle too long; closed");
                }
            }
            metrics::gauge!("pricefront_open_connections").decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {DRAIN:?}; closing them");
    }
    Ok(())
}

/// Tells a connection past the cap to come back, and closes it; never waits long on it.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(TOO_MANY).await?;
        stream.shutdown().await
    })
    .await;
}

/// Ends once no byte has moved for `timeout` (checked at the moment it would have run out).
async fn idle(activity: &AtomicU64, epoch: Instant, timeout: Duration) {
    loop {
        let last = epoch + Duration::from_millis(activity.load(Ordering::Relaxed));
        let due = last + timeout;
        if Instant::now() >= due {
            return;
        }
        tokio::time::sleep_until(due.into()).await;
    }
}

/// A socket that notes when a byte last moved (ms since `epoch`).
struct Watched {
    inner: TcpStream,
    activity: Arc<AtomicU64>,
    epoch: Instant,
}

impl Watched {
    fn touch(&self) {
        self.activity.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
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

/// The peer of a request served here (`None` when the router is driven in process).
pub fn peer(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| *addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::AsyncReadExt;

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
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_millis(300),
            max_connections: 4,
        };
        let shutdown = CancellationToken::new();
        let served = tokio::spawn(serve(listener, app, limits, shutdown.clone()));
        // Longer than the idle timeout since the listener started: a new connection is served.
        tokio::time::sleep(Duration::from_millis(700)).await;
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
