//! The producer's HTTP API: [`router`] over an [`AppState`], one module per resource, and
//! errors as problem+json ([`ApiError`]). A product's price is `prices`; its comparison as
//! it happens, `events` (Server-Sent Events); a page of products at once, `catalogue`. All
//! three find what they answer through one miss path, `miss` (look, claim within the limits,
//! publish, wait; `Prefer: wait` parsed in `wait`). For people: the widget a shop embeds, the demo page at `/`,
//! and the CORS rules for the API, `web`. Every answer names its request (`X-Request-Id`,
//! `request_id`).

mod admission;
mod catalogue;
mod dispatch;
mod docs;
mod events;
mod health;
mod limits;
mod miss;
mod prices;
mod problem;
mod refresh;
pub mod request_id;
pub mod server;
mod timed;
mod track;
mod wait;
mod web;

pub use docs::ApiDoc;

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, Request};
use axum::routing::{MethodRouter, get};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

pub use limits::Limits;
pub use problem::ApiError;

use std::sync::Arc;

use crate::cache::{Flights, L1, RedisStore, Store};
use crate::domain::ProductId;
use crate::observability::traces;
use crate::queue::{Publisher, RequestQueue};
use crate::settings::Settings;

/// Everything a request handler needs; cheap to clone (one reference count: axum clones the
/// state for every request).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What the handlers share.
pub struct Shared {
    pub l1: L1<crate::cache::Error>,
    /// Single flight for claims: concurrent claimants of one product share one claim.
    pub claims: Flights<ProductId, miss::Found>,
    pub limits: Arc<Limits>,
    pub store: Arc<dyn Store>,
    pub publisher: Arc<dyn RequestQueue>,
    pub pending_ttl: Duration,
    /// How long a won claim holds its product (marker, queued mark).
    pub hold: crate::cache::Hold,
    /// Whether new products are admitted ([`admission`]).
    pub admission: admission::Admission,
    pub retry_after_secs: u64,
    /// `Prefer: wait` is granted up to this long.
    pub max_wait: Duration,
    /// Places for waiting requests (`producer.max_waiters`, `max_waiters_per_client`).
    pub wait_places: wait::Places,
    /// An event stream without a result ends after this long.
    pub max_stream: Duration,
    /// Places for event streams (`producer.max_streams`, `max_streams_per_client`).
    pub stream_places: wait::Places,
    /// Which hits start a refresh ahead of expiry.
    pub refresh: Arc<refresh::RefreshAhead>,
    /// Most ids one multi-get may ask for (`producer.max_batch_ids`).
    pub max_batch_ids: usize,
    /// Origins whose pages may read the API (`producer.cors_allow_origins`).
    pub cors_allow_origins: Vec<String>,
    /// Serve the demo page at `/` (`producer.demo_page`).
    pub demo_page: bool,
    /// What the last look at the dependencies found (`/readyz`).
    pub health: health::Shared,
    /// The public port's connection limits.
    pub server_limits: server::Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Cache(#[from] crate::cache::Error),
    #[error(transparent)]
    Queue(#[from] crate::queue::Error),
}

impl BuildError {
    /// The configuration cannot work (a Kafka option or Redis URL variable unset, librdkafka
    /// refused a property, a certificate unreadable): exit status 2.
    pub fn is_configuration(&self) -> bool {
        match self {
            BuildError::Cache(e) => e.is_configuration(),
            BuildError::Queue(e) => e.is_configuration(),
        }
    }
}

impl AppState {
    /// Builds the clients. Nothing connects yet: the process starts, and reports not-ready,
    /// while Redis or the broker is down.
    pub fn build(settings: &Settings) -> Result<Self, BuildError> {
        let store = Arc::new(RedisStore::connect_lazy(&settings.redis)?);
        let publisher = Arc::new(Publisher::new(&settings.kafka)?);
        Ok(Self::with(settings, store, publisher))
    }

    /// The state over any store and queue (the standalone demo's in-memory ones).
    pub fn with(settings: &Settings, store: Arc<dyn Store>, publisher: Arc<dyn RequestQueue>) -> Self {
        Self(Arc::new(Shared {
            l1: L1::new(settings.cache.l1_ttl, settings.cache.l1_max_entries),
            claims: Flights::default(),
            limits: Arc::new(Limits::new(&settings.producer)),
            store,
            publisher,
            pending_ttl: settings.cache.pending_ttl,
            hold: settings.cache.hold(),
            admission: admission::Admission::new(settings.cache.pending_ttl, settings.cache.queued_ttl),
            retry_after_secs: settings.producer.retry_after_secs,
            max_wait: settings.producer.max_wait,
            wait_places: wait::Places::new(
                settings.producer.max_waiters,
                settings.producer.max_waiters_per_client,
                wait::WAITING,
            ),
            max_stream: settings.producer.max_stream,
            stream_places: wait::Places::new(
                settings.producer.max_streams,
                settings.producer.max_streams_per_client,
                events::OPEN_STREAMS,
            ),
            refresh: Arc::new(refresh::RefreshAhead::new(
                settings.cache.refresh_ahead,
                settings.cache.pending_ttl,
                settings.cache.l1_max_entries,
            )),
            max_batch_ids: settings.producer.max_batch_ids,
            cors_allow_origins: settings.producer.cors_allow_origins.clone(),
            demo_page: settings.producer.demo_page,
            health: Arc::default(),
            server_limits: server::Limits {
                listener: "public",
                header_read_timeout: settings.producer.header_read_timeout,
                idle_timeout: settings.producer.idle_timeout,
                max_connections: settings.producer.max_connections,
            },
        }))
    }
}

/// The producer's routes, wrapped so every answer carries its `X-Request-Id`, with the price
/// route's way past the router when no layer needs to see its requests ([`dispatch`]).
pub fn router(state: AppState) -> request_id::RequestIds<dispatch::Dispatch> {
    let layered = traces::exporting() || !state.cors_allow_origins.is_empty();
    let direct = (!layered).then(|| state.clone());
    tower::Layer::layer(&request_id::RequestIdLayer, dispatch::Dispatch { direct, router: routes(state) })
}

fn routes(state: AppState) -> Router {
    // Each route counts and times its own requests (labels: the route template).
    let tracked = |route: &'static str, handler: MethodRouter<AppState>| {
        (route, handler.layer(track::Track(track::RouteMetrics::leaked(route))))
    };
    let add = |router: Router<AppState>, (route, handler)| router.route(route, handler);
    let api = [
        // The hit path records its own (see `track`), its 405s included.
        (prices::ROUTE, get(prices::get_price).fallback(prices::method_not_allowed)),
        tracked(catalogue::ROUTE, get(catalogue::get_prices)),
        tracked("/v1/prices/{product_id}/events", get(events::price_events)),
        tracked("/v1/prices/", get(prices::empty_id)),
    ];
    let mut api = api
        .into_iter()
        .fold(Router::new(), add)
        // Before the CORS layer, so it wraps this fallback too: a preflight (OPTIONS) reaches
        // the layer on every route, not a bare 405.
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
    // Only the API may be read from other origins, and only when configured: by default no
    // layer, so the hit path pays nothing for it.
    if let Some(cors) = web::cors(&state.cors_allow_origins) {
        api = api.layer(cors);
    }
    // No /metrics here: it is the ops port's ([`ops_router`]).
    let mut operations = vec![
        tracked("/healthz", get(health::healthz)),
        tracked("/readyz", get(health::readyz)),
        tracked("/openapi.json", get(docs::openapi_json)),
        tracked("/static/{file}", get(web::plain)),
        tracked("/static/{version}/{file}", get(web::versioned)),
    ];
    if state.demo_page {
        operations.push(tracked("/", get(web::demo_page)));
        operations.push(tracked(web::DEMO_METRICS, get(web::demo_metrics)));
    }
    let router = operations
        .into_iter()
        .fold(api, add)
        // What matches no route is counted here.
        .fallback(|| async {
            metrics::counter!("pricefront_http_requests_total", "route" => "unmatched", "method" => "any", "status" => "404")
                .increment(1);
            ApiError::NotFound
        })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state);
    if !traces::exporting() {
        // Spans are for logs only: the handlers open one where something may be logged (a
        // miss, an error), and a hit pays for none.
        return router;
    }
    // Exported, every request is a span (sampled by the exporter), continuing the caller's trace.
    let trace = TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
        // Probes and scrapes come every few seconds: not worth a trace each.
        let span = if matches!(req.uri().path(), "/metrics" | "/healthz" | "/readyz") {
            tracing::debug_span!("http", method = %req.method(), path = %req.uri().path())
        } else {
            request_span(req.method(), req.uri().path(), req.headers())
        };
        traces::continue_trace(&span, req.headers().get("traceparent").and_then(|v| v.to_str().ok()));
        span
    });
    router.layer(trace)
}

/// The span a request's logs (and, when exported, its trace) hang from: its `request_id`
/// (the `X-Request-Id` it is answered with) and the caller's `traceparent`, when valid. A miss
/// records the `message_id` it published.
pub(crate) fn request_span(method: &axum::http::Method, path: &str, headers: &HeaderMap) -> tracing::Span {
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|tp| crate::queue::envelope::valid_traceparent(tp));
    tracing::info_span!(
        "http",
        otel.kind = "server",
        method = %method,
        path = %path,
        request_id = request_id::of(headers),
        traceparent,
        product_id = tracing::field::Empty,
        message_id = tracing::field::Empty,
    )
}

/// How often L1 drops the results whose life there has ended.
const SWEEP_L1_EVERY: Duration = Duration::from_secs(5);
/// How often clients whose miss budget is full again are forgotten.
const FORGET_CLIENTS_EVERY: Duration = Duration::from_secs(60);

/// The ops port's routes (`producer.ops_listen`): `/metrics` for scrapers, and `/healthz` and
/// `/readyz` with each dependency's state, for operators and probes inside the network.
pub fn ops_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(crate::observability::metrics::endpoint))
        .route("/healthz", get(health::healthz_ops))
        .route("/readyz", get(health::readyz_details))
        .with_state(state)
}

/// Serves the API on `listener` (within `producer.max_connections`, its header-read and idle
/// timeouts: see [`server`]) until `shutdown` fires, finishes in-flight requests, then flushes
/// the Kafka producer. Looks at the dependencies in the background for `/readyz`.
pub async fn serve(listener: TcpListener, state: AppState, shutdown: CancellationToken) -> std::io::Result<()> {
    server::raise_file_limit(state.server_limits.max_connections);
    let publisher = state.publisher.clone();
    // Warm the producer's metadata in the background: the first publish to a topic would
    // otherwise spend part of its publish timeout looking the topic up.
    let warm = publisher.clone();
    tokio::spawn(async move {
        if let Err(e) = warm.check(Duration::from_secs(5)).await {
            tracing::warn!(error = %e, "broker not ready at start-up; /readyz will say so");
        }
    });
    health::Probe::spawn(state.clone(), shutdown.clone());
    admission::Admission::spawn(state.clone(), shutdown.clone());
    crate::cache::clock::spawn_watch(state.store.clone(), shutdown.clone());
    let (limits, stop) = (state.limits.clone(), shutdown.clone());
    tokio::spawn(async move {
        let mut every = tokio::time::interval(FORGET_CLIENTS_EVERY);
        while tokio::select! { _ = every.tick() => true, _ = stop.cancelled() => false } {
            limits.forget_idle_clients();
        }
    });
    let (l1, stop) = (state.l1.clone(), shutdown.clone());
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SWEEP_L1_EVERY);
        while tokio::select! { _ = every.tick() => true, _ = stop.cancelled() => false } {
            l1.sweep();
        }
    });
    let limits = state.server_limits;
    server::serve(listener, router(state), limits, shutdown).await?;
    publisher.flush(Duration::from_secs(5)).await;
    Ok(())
}

/// Serves [`ops_router`] on `listener` until `shutdown` fires.
pub async fn serve_ops(listener: TcpListener, state: AppState, shutdown: CancellationToken) -> std::io::Result<()> {
    // Scrapers and probes are few and known: the public port's limits, looser.
    let limits = server::Limits { listener: "ops", max_connections: 256, ..state.server_limits };
    server::serve(listener, ops_router(state), limits, shutdown).await
}
