//! Per-route request metrics: `pricefront_http_requests_total{route, method, status}` and
//! `pricefront_http_request_duration_seconds{route}`, as a layer on each route ([`Track`]),
//! or recorded by the handler itself on the hot route ([`RouteMetrics::record`]).
//!
//! Cheap on the hit path: each route's handles are registered once, on first use, for the
//! methods and statuses it answers (GET and HEAD; the statuses in [`STATUSES`]); a request
//! then costs two clock reads and two atomic updates, with no label allocated or looked up.
//! Any other status is counted through the registry, and any other method as `other`. Labels
//! are route templates, never raw paths, and methods are GET, HEAD or `other`, so no client can
//! grow the label set: a status is one the server chose.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http::{Method, Request, Response};
use metrics::{Counter, Histogram};
use tower::{Layer, Service};

/// Statuses with a handle of their own; others are counted through the registry.
const STATUSES: [u16; 11] = [200, 202, 304, 400, 404, 405, 429, 500, 502, 503, 504];
const METHODS: [Method; 2] = [Method::GET, Method::HEAD];

/// One route's handles.
pub struct RouteMetrics {
    route: &'static str,
    duration: OnceLock<Histogram>,
    requests: [[OnceLock<Counter>; STATUSES.len()]; METHODS.len()],
}

impl RouteMetrics {
    /// One route's handles (a `static` for a route that records its own, see [`Self::record`]).
    pub const fn new(route: &'static str) -> Self {
        Self {
            route,
            duration: OnceLock::new(),
            requests: [const { [const { OnceLock::new() }; STATUSES.len()] }; METHODS.len()],
        }
    }

    /// One route's handles for the life of the process, for a [`Track`] layer: a request
    /// then holds a plain reference (no reference count to update). A process builds its
    /// router once; each router a test builds keeps a few kilobytes.
    pub fn leaked(route: &'static str) -> &'static Self {
        Box::leak(Box::new(Self::new(route)))
    }

    /// Counts and times one request. The hot route calls this from its handler: recording
    /// there costs about 740 instructions per request, a layer on the route about 1,450
    /// (callgrind; the difference is axum's boxing of a layered route).
    pub fn record(&self, method: &Method, status: u16, started: Instant) {
        let elapsed = started.elapsed().as_secs_f64();
        // Registered on first use, after a main has installed the recorder.
        let route = self.route;
        self.duration
            .get_or_init(|| metrics::histogram!("pricefront_http_request_duration_seconds", "route" => route))
            .record(elapsed);
        let m = METHODS.iter().position(|m| m == method);
        let s = STATUSES.iter().position(|&s| s == status);
        match (m, s) {
            (Some(m), Some(s)) => self.requests[m][s]
                .get_or_init(|| {
                    let (method, status) = (METHODS[m].as_str(), STATUSES[s].to_string());
                    metrics::counter!("pricefront_http_requests_total", "route" => route, "method" => method, "status" => status)
                })
                .increment(1),
            // A client chooses the method: anything but GET and HEAD is `other`.
            (m, _) => metrics::counter!(
                "pricefront_http_requests_total",
                "route" => route,
                "method" => m.map_or("other", |m| METHODS[m].as_str()),
                "status" => status.to_string()
            )
            .increment(1),
        }
    }
}

/// Counts and times every request of one route.
#[derive(Clone)]
pub struct Track(pub &'static RouteMetrics);

impl<S> Layer<S> for Track {
    type Service = TrackService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TrackService { inner, metrics: self.0 }
    }
}

#[derive(Clone)]
pub struct TrackService<S> {
    inner: S,
    metrics: &'static RouteMetrics,
}

impl<S, B, R> Service<Request<B>> for TrackService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = request.method().clone();
        TrackFuture { inner: self.inner.call(request), metrics: self.metrics, method, started: Instant::now() }
    }
}

pin_project_lite::pin_project! {
    pub struct TrackFuture<F> {
        #[pin]
        inner: F,
        metrics: &'static RouteMetrics,
        method: Method,
        started: Instant,
    }
}

impl<F, R, E> Future for TrackFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &output {
            this.metrics.record(this.method, response.status().as_u16(), *this.started);
        }
        Poll::Ready(output)
    }
}
