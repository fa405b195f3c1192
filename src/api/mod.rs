//! The producer's HTTP API: [`router`] over an [`AppState`], one module per resource, and
//! errors as problem+json ([`ApiError`]).

mod health;
mod prices;
mod problem;

use std::time::Duration;

use axum::Router;
use axum::http::Request;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

pub use problem::ApiError;

use crate::cache::{L1, RedisStore};
use crate::queue::Publisher;
use crate::settings::Settings;

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub l1: L1,
    pub store: RedisStore,
    pub publisher: Publisher,
    pub pending_ttl: Duration,
    pub retry_after_secs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Cache(#[from] crate::cache::Error),
    #[error(transparent)]
    Queue(#[from] crate::queue::Error),
}

impl AppState {
    /// Builds the clients. Nothing connects yet: the process starts, and reports not-ready,
    /// while Redis or the broker is down.
    pub fn build(settings: &Settings) -> Result<Self, BuildError> {
        Ok(Self {
            l1: L1::new(settings.cache.l1_ttl, settings.cache.l1_max_entries),
            store: RedisStore::connect_lazy(&settings.redis)?,
            publisher: Publisher::new(&settings.kafka)?,
            pending_ttl: settings.cache.pending_ttl,
            retry_after_secs: settings.producer.retry_after_secs,
        })
    }
}

pub fn router(state: AppState) -> Router {
    let trace = TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
        tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), product_id = tracing::field::Empty)
    });
    Router::new()
        .route("/v1/prices/{product_id}", get(prices::get_price))
        .route("/v1/prices/", get(prices::empty_id))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
        .layer(trace)
}

/// Serves the API on `listener` until `shutdown` fires, finishes in-flight requests, then
/// flushes the Kafka producer.
pub async fn serve(listener: TcpListener, state: AppState, shutdown: CancellationToken) -> std::io::Result<()> {
    let publisher = state.publisher.clone();
    // Warm the producer's metadata in the background: the first publish to a topic would
    // otherwise spend part of its publish timeout looking the topic up.
    let warm = publisher.clone();
    tokio::spawn(async move {
        if let Err(e) = warm.check_broker(Duration::from_secs(5)).await {
            tracing::warn!(error = %e, "broker not ready at start-up; /readyz will say so");
        }
    });
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    publisher.flush(Duration::from_secs(5)).await;
    Ok(())
}
