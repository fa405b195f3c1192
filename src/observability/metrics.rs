//! Prometheus metrics: the `metrics` facade over one process-wide Prometheus recorder, which
//! a main installs ([`install`]) and `GET /metrics` renders (the producer's API; the
//! consumer's own small listener, [`serve`]).
//!
//! Bounded memory: histogram samples are kept until the recorder's upkeep folds them into
//! buckets, so upkeep runs on its own thread every [`UPKEEP_INTERVAL`], whether anybody
//! scrapes or not.
//!
//! Names are `pricefront_*`; every label value is bounded (routes, provider names, outcomes,
//! partitions), never an id from a request.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// A counter whose handle is registered on first use, then reused, so an increment looks
/// nothing up (the hit path's counters). First used after a main installs the recorder; a
/// process without one counts into nothing, as with the macros.
pub struct LazyCounter {
    handle: OnceLock<metrics::Counter>,
    register: fn() -> metrics::Counter,
}

impl LazyCounter {
    pub const fn new(register: fn() -> metrics::Counter) -> Self {
        Self { handle: OnceLock::new(), register }
    }

    pub fn increment(&self, n: u64) {
        self.handle.get_or_init(self.register).increment(n);
    }
}

/// Latency buckets in seconds: 1 ms to 5 s.
const BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// Miss-to-result buckets in seconds: a fan-out takes up to `consumer.provider_timeout_ms`,
/// and a backlog longer.
const MISS_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0];
/// How often histogram samples are folded into buckets.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the process's recorder and starts its upkeep. Call once, in a main; metrics
/// emitted before are not kept, and without it they cost nothing and are not kept at all.
pub fn install() -> Result<(), metrics_exporter_prometheus::BuildError> {
    let recorder = PrometheusBuilder::new()
        .set_buckets(BUCKETS)?
        .set_buckets_for_metric(Matcher::Full("pricefront_miss_to_result_seconds".into()), MISS_BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            }
        })
        .expect("spawn the metrics upkeep thread");
    let _ = HANDLE.set(handle);
    describe();
    Ok(())
}

/// The current metrics in Prometheus text format.
pub fn render() -> String {
    match HANDLE.get() {
        Some(handle) => handle.render(),
        None => "# no metrics recorder is installed in this process\n".to_owned(),
    }
}

/// `GET /metrics`.
pub async fn endpoint() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], render())
}

/// Whether a process is ready, with details for the operator: `Ok` answers 200, `Err` 503.
pub type Readiness = Arc<dyn Fn() -> Result<serde_json::Value, serde_json::Value> + Send + Sync>;

/// The consumer's metrics listener: `GET /metrics`, `GET /healthz` (the process runs) and
/// `GET /readyz` (as `ready` says).
pub async fn serve(listener: TcpListener, shutdown: CancellationToken, ready: Readiness) -> std::io::Result<()> {
    let readyz = move || {
        let ready = ready.clone();
        async move {
            match ready() {
                Ok(details) => (StatusCode::OK, axum::Json(details)),
                Err(details) => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(details)),
            }
        }
    };
    let app = Router::new()
        .route("/metrics", get(endpoint))
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }))
        .route("/readyz", get(readyz));
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("pricefront_http_requests_total", "HTTP requests by route, method and status");
    describe_histogram!("pricefront_http_request_duration_seconds", "HTTP request latency by route");
    describe_counter!("pricefront_cache_lookups_total", "Price lookups by the tier that answered: l1, l2 or miss");
    describe_counter!(
        "pricefront_publish_total",
        "Kafka publishes by topic and outcome (ok, timeout, queue_full, error)"
    );
    describe_counter!("pricefront_messages_total", "Consumed messages by outcome");
    describe_histogram!(
        "pricefront_miss_to_result_seconds",
        "From a request's publish to its result stored, by result status (consumer side)"
    );
    describe_gauge!("pricefront_messages_in_flight", "Messages being processed by this consumer");
    describe_gauge!("pricefront_waiting_requests", "Requests held by Prefer: wait now");
    describe_gauge!("pricefront_open_streams", "Event streams (GET /v1/prices/{id}/events) open now");
    describe_counter!(
        "pricefront_streams_total",
        "Event streams by how they ended: result, timeout (max_stream_secs), closed (by the client), refused (max_streams), refused_client (max_streams_per_client)"
    );
    describe_counter!(
        "pricefront_progress_events_total",
        "Sources' outcomes the consumer logged as progress (logged) or could not (failed)"
    );
    describe_counter!(
        "pricefront_refreshes_total",
        "Refreshes ahead of expiry by stage: published or refused (the asking client's miss budget, or the producer's publishes; producer), done or discarded (consumer)"
    );
    describe_counter!(
        "pricefront_waits_total",
        "Prefer: wait requests by outcome (result, timeout, refused: no place in all, refused_client: none for this client)"
    );
    describe_gauge!("pricefront_partition_assigned", "1 while this consumer owns the partition, else 0");
    describe_gauge!(
        "pricefront_dlq_blocked",
        "1 while this consumer cannot write the DLQ (it then takes no new messages), else 0"
    );
    describe_counter!(
        "pricefront_provider_calls_total",
        "Price API calls by provider and outcome: ok, or the failure reason (timeout, connect, http_status, invalid_response, not_found, circuit_open, rate_limited, auth_failed)"
    );
    describe_histogram!(
        "pricefront_provider_quota_wait_seconds",
        "How long a call to a source with a quota (or paused by its Retry-After) waited for its turn, by provider"
    );
    describe_counter!(
        "pricefront_provider_pauses_total",
        "Times a source's 429 or Retry-After paused calls to it, by provider"
    );
    describe_counter!(
        "pricefront_provider_token_renewals_total",
        "Requests to a source's token endpoint by provider and outcome (ok, failed)"
    );
    describe_counter!(
        "pricefront_quotes_reused_total",
        "Answers taken from an earlier computation instead of asking their source: guaranteed (a quote or a not_found still good long enough) or source_failed (the source failed; its earlier quote stood)"
    );
    describe_histogram!("pricefront_provider_call_duration_seconds", "Price API call latency by provider");
    describe_gauge!("pricefront_circuit_open", "1 while a provider's circuit breaker is open");
    describe_counter!(
        "pricefront_limited_total",
        "Misses (and refreshes) a limit refused, by limit: client_misses (producer.miss_rate_per_client), publishes (producer.max_publish_rate) or backlog (admission control: new products shed while the backlog would not be computed within cache.pending_ttl_secs)"
    );
    describe_gauge!(
        "pricefront_backlog_requests",
        "Requests published and not yet finished, fleet-wide, as this producer last read it"
    );
    describe_gauge!("pricefront_backlog_oldest_seconds", "How long the oldest outstanding request has waited");
    describe_gauge!(
        "pricefront_backlog_capacity_per_second",
        "The fleet's throughput while busy, requests per second, as this producer estimates it (0: not known yet)"
    );
    describe_gauge!(
        "pricefront_backlog_wait_seconds",
        "How long a request admitted now would wait for a consumer (backlog / capacity, or the oldest request's age while no capacity is known)"
    );
    describe_gauge!(
        "pricefront_backlog_finished_per_second",
        "Requests the fleet finished per second lately, as this producer measured it"
    );
    describe_gauge!(
        "pricefront_consumer_capacity_per_second",
        "What this consumer can finish, requests per second: consumer.max_in_flight over its mean time per request (reported for admission control)"
    );
    describe_gauge!(
        "pricefront_admission_open",
        "1 while this producer admits new products, 0 while it sheds them (503)"
    );
    describe_histogram!(
        "pricefront_refresh_seconds",
        "From a refresh's publish to its result stored: how far ahead of expiry a refresh must start (consumer)"
    );
    describe_gauge!(
        "pricefront_fx_rates_age_seconds",
        "Seconds since the consumer's exchange rates were last loaded from fx.url"
    );
    describe_counter!("pricefront_fx_refreshes_total", "Loads of the live exchange rates (fx.url) by outcome");
    describe_gauge!(
        "pricefront_ready",
        "1 while the producer's last look found Redis, the broker and its announcement subscription ready"
    );
    describe_gauge!(
        "pricefront_clock_skew_seconds",
        "Redis's clock minus this process's, as last compared (every minute)"
    );
    describe_gauge!("pricefront_open_connections", "Connections open on the producer, by listener (public, ops)");
    describe_counter!(
        "pricefront_connections_refused_total",
        "Connections answered 503 and closed because the listener's cap was reached (producer.max_connections on public), by listener"
    );
    describe_counter!(
        "pricefront_connections_idle_closed_total",
        "Connections closed because no byte moved for producer.idle_timeout_secs, by listener"
    );
    describe_counter!(
        "pricefront_claims_released_late_total",
        "Claims released once Redis answered again, after their claim's reply was lost"
    );
    describe_gauge!(
        "pricefront_consumer_lag",
        "Messages behind the partition's high watermark, from librdkafka statistics (watermark-based: wrong against tansu)"
    );
}
