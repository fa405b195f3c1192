//! Processing one message: decode, skip duplicates, fan out, aggregate, store; or send an
//! undecodable message to the DLQ.
//!
//! A message counts as done only when its outcome is durable (result in Redis, or message
//! in the DLQ). Transient Redis or broker errors are retried with back-off until they pass
//! or shutdown begins; an unfinished message is then redelivered, never skipped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::cache::ResultStore;
use crate::domain::{Comparison, TtlPolicy};
use crate::providers::PriceSources;
use crate::queue::envelope::TRACEPARENT_HEADER;
use crate::queue::{PriceRequest, RequestQueue};
use crate::settings::Settings;

/// Counters since start, logged at shutdown.
#[derive(Debug, Default)]
pub struct Counters {
    pub computed: AtomicU64,
    pub duplicates: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Messages neither processed nor accepted by the DLQ (logged whole at error level).
    pub dropped: AtomicU64,
    pub retries: AtomicU64,
}

/// Whether Redis is failing; while it is, the consume loop pauses its partitions instead of
/// piling up work that cannot be stored.
#[derive(Debug, Default)]
pub struct RedisHealth {
    degraded: AtomicBool,
    recovered: Notify,
}

impl RedisHealth {
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::SeqCst)
    }

    pub fn report(&self, ok: bool) {
        let was_degraded = self.degraded.swap(!ok, Ordering::SeqCst);
        match (was_degraded, ok) {
            (false, false) => tracing::warn!("Redis is failing; pausing consumption until it recovers"),
            (true, true) => {
                tracing::info!("Redis recovered; resuming consumption");
                self.recovered.notify_waiters();
            }
            _ => {}
        }
    }

    pub async fn recovered(&self) {
        self.recovered.notified().await
    }
}

/// Why processing a message stopped without an outcome.
enum Stop {
    /// Shutdown began; the message is left for redelivery.
    Shutdown,
    /// It kept failing; the message goes to the DLQ with this error.
    GaveUp(String),
}

pub struct Processor {
    pub store: Arc<dyn ResultStore>,
    pub sources: PriceSources,
    pub publisher: Arc<dyn RequestQueue>,
    pub dlq_topic: String,
    pub ttl: TtlPolicy,
    pub counters: Counters,
    pub redis_health: RedisHealth,
    /// Attempts before a message whose processing keeps failing goes to the DLQ.
    pub max_attempts: u32,
}

impl Processor {
    pub fn new(
        settings: &Settings,
        store: Arc<dyn ResultStore>,
        publisher: Arc<dyn RequestQueue>,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            store,
            sources: PriceSources::new(&settings.providers, settings.consumer.provider_timeout)?,
            publisher,
            dlq_topic: settings.kafka.dlq_topic.clone(),
            ttl: settings.cache.ttl_policy(),
            counters: Counters::default(),
            redis_health: RedisHealth::default(),
            max_attempts: settings.consumer.max_attempts,
        })
    }

    /// Handles one message; true when its outcome is durable and its offset may be stored.
    pub async fn handle(&self, message: &OwnedMessage, shutdown: &CancellationToken) -> bool {
        let (kind, error) = match PriceRequest::decode(message.payload()) {
            Ok(request) => match self.compute(&request, message, shutdown).await {
                Ok(()) => return true,
                Err(Stop::Shutdown) => {
                    metrics::counter!("pricefront_messages_total", "outcome" => "unfinished").increment(1);
                    return false;
                }
                Err(Stop::GaveUp(error)) => ("processing_failed", error),
            },
            Err(error) => (error.kind(), error.to_string()),
        };
        tracing::warn!(%error, reason = kind, "sending the message to the DLQ");
        match self.send_to_dlq(message, kind, &error, shutdown).await {
            Ok(()) => {
                self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("pricefront_messages_total", "outcome" => "dead_lettered").increment(1);
                true
            }
            Err(Stop::Shutdown) => {
                metrics::counter!("pricefront_messages_total", "outcome" => "unfinished").increment(1);
                false
            }
            Err(Stop::GaveUp(dlq_error)) => {
                // The broker refuses this message for good (too large, say). Blocking the
                // partition forever would stall every request behind it; log it whole instead.
                tracing::error!(
                    %dlq_error,
                    key = %String::from_utf8_lossy(message.key().unwrap_or_default()),
                    payload = %String::from_utf8_lossy(message.payload().unwrap_or_default()),
                    "cannot dead-letter the message; dropping it"
                );
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("pricefront_messages_total", "outcome" => "dropped").increment(1);
                true
            }
        }
    }

    async fn compute(
        &self,
        request: &PriceRequest,
        message: &OwnedMessage,
        shutdown: &CancellationToken,
    ) -> Result<(), Stop> {
        let span = tracing::Span::current();
        span.record("product_id", request.product_id.as_str());
        span.record("request_id", tracing::field::display(request.request_id));
        if let Some(tp) = header(message, TRACEPARENT_HEADER) {
            span.record("traceparent", tp);
        }
        let id = &request.product_id;
        if self.retry_redis("check for a result", shutdown, || self.store.has_result(id)).await? {
            tracing::info!("fresh result exists; skipping duplicate");
            // A marker this request claimed would otherwise hold off new requests until it expires.
            if let Err(e) = self.store.release_pending(id, &request.request_id.to_string()).await {
                tracing::debug!(error = %e, "cannot release the pending marker");
            }
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("pricefront_messages_total", "outcome" => "duplicate").increment(1);
            return Ok(());
        }
        let outcomes = self.sources.fan_out(id).await;
        let comparison = Comparison::aggregate(id.clone(), outcomes, OffsetDateTime::now_utc(), &self.ttl);
        self.retry_redis("store the result", shutdown, || self.store.store(&comparison)).await?;
        let waited_ms = (OffsetDateTime::now_utc() - request.requested_at).whole_milliseconds();
        tracing::info!(
            status = comparison.status.as_str(),
            quotes = comparison.quotes.len(),
            failures = comparison.failures.len(),
            since_request_ms = waited_ms as i64,
            "result stored"
        );
        self.counters.computed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("pricefront_messages_total", "outcome" => "computed", "status" => comparison.status.as_str())
            .increment(1);
        Ok(())
    }

    async fn dead_letter(&self, message: &OwnedMessage, kind: &str, error: &str) -> Result<(), crate::queue::Error> {
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let failed_at = OffsetDateTime::now_utc().format(&Rfc3339).expect("format now");
        let headers = OwnedHeaders::new()
            .insert(Header { key: "dlq.reason", value: Some(kind) })
            .insert(Header { key: "dlq.error", value: Some(error) })
            .insert(Header { key: "dlq.source.topic", value: Some(message.topic()) })
            .insert(Header { key: "dlq.source.partition", value: Some(partition.as_str()) })
            .insert(Header { key: "dlq.source.offset", value: Some(offset.as_str()) })
            .insert(Header { key: "dlq.failed_at", value: Some(failed_at.as_str()) });
        let key = message.key().unwrap_or_default();
        let payload = message.payload().unwrap_or_default();
        self.publisher.send(&self.dlq_topic, key, payload, headers).await.map(drop)
    }

    /// Runs a Redis operation until it succeeds. While Redis is unreachable it waits it out
    /// (reporting the consumer degraded); an error answer is retried `max_attempts` times.
    async fn retry_redis<T, F, Fut>(&self, what: &str, shutdown: &CancellationToken, mut op: F) -> Result<T, Stop>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::cache::Error>>,
    {
        let mut backoff = Duration::from_millis(100);
        let mut answered_errors = 0;
        loop {
            match op().await {
                Ok(value) => {
                    self.redis_health.report(true);
                    return Ok(value);
                }
                Err(e) if e.is_unreachable() => self.redis_health.report(false),
                Err(e) => {
                    answered_errors += 1;
                    if answered_errors >= self.max_attempts {
                        return Err(Stop::GaveUp(format!("cannot {what} after {answered_errors} attempts: {e}")));
                    }
                }
            }
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(retry_in_ms = backoff.as_millis() as u64, "cannot {what}; retrying");
            tokio::select! {
                _ = shutdown.cancelled() => return Err(Stop::Shutdown),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Sends to the DLQ until it works. A broker that does not confirm is waited out; a
    /// refusal is retried `max_attempts` times.
    async fn send_to_dlq(
        &self,
        message: &OwnedMessage,
        kind: &str,
        error: &str,
        shutdown: &CancellationToken,
    ) -> Result<(), Stop> {
        let mut backoff = Duration::from_millis(100);
        let mut refusals = 0;
        loop {
            match self.dead_letter(message, kind, error).await {
                Ok(()) => return Ok(()),
                Err(e @ crate::queue::Error::Timeout(_)) => tracing::warn!(error = %e, "cannot dead-letter; retrying"),
                Err(e) => {
                    refusals += 1;
                    if refusals >= self.max_attempts {
                        return Err(Stop::GaveUp(e.to_string()));
                    }
                    tracing::warn!(error = %e, "dead-letter refused; retrying");
                }
            }
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = shutdown.cancelled() => return Err(Stop::Shutdown),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

fn header<'a>(message: &'a OwnedMessage, key: &str) -> Option<&'a str> {
    let headers = message.headers()?;
    headers.iter().find(|h| h.key == key).and_then(|h| h.value).and_then(|v| std::str::from_utf8(v).ok())
}
