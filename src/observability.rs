//! Prometheus metrics: the `metrics` facade with one process-wide Prometheus recorder,
//! rendered at `GET /metrics` (the producer's API; the consumer's own small listener).
//!
//! Names are `pricefront_*`; every label value is bounded (routes, provider names, outcomes,
//! partitions), never an id from a request.

use std::sync::OnceLock;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets in seconds: 1 ms to 5 s.
const BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Installs the recorder on first use and returns its handle; later calls (several services
/// in one test process) share it. Metrics emitted before the first call are not kept.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .expect("buckets are not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe();
            handle
        })
        .clone()
}

/// The current metrics in Prometheus text format.
pub fn render() -> String {
    let handle = handle();
    handle.run_upkeep();
    handle.render()
}

pub async fn metrics_endpoint() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], render())
}

/// The consumer's metrics listener: `GET /metrics` and `GET /healthz`.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_endpoint))
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }));
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("pricefront_http_requests_total", "HTTP requests by route, method and status");
    describe_histogram!("pricefront_http_request_duration_seconds", "HTTP request latency by route");
    describe_counter!("pricefront_cache_lookups_total", "Price lookups by the tier that answered: l1, l2 or miss");
    describe_counter!("pricefront_publish_total", "Kafka publishes by topic and outcome (ok, timeout, error)");
    describe_counter!("pricefront_messages_total", "Consumed messages by outcome");
    describe_gauge!("pricefront_messages_in_flight", "Messages being processed by this consumer");
    describe_counter!("pricefront_provider_calls_total", "Price API calls by provider and outcome");
    describe_histogram!("pricefront_provider_call_duration_seconds", "Price API call latency by provider");
    describe_gauge!("pricefront_circuit_open", "1 while a provider's circuit breaker is open");
    describe_gauge!(
        "pricefront_consumer_lag",
        "Messages behind the partition's high watermark, from librdkafka statistics (watermark-based: wrong against tansu)"
    );
}
