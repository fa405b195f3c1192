//! Publishing with broker confirmation: an idempotent producer with `acks=all`, where every
//! send is bounded by `kafka.publish_timeout_ms`. Enqueueing never waits: while the broker is
//! slow or away, unsent messages pile up to `kafka.producer_queue_max_messages`, and past
//! that a send fails at once with [`Error::QueueFull`].
//!
//! Self-healing: an idempotent producer whose broker came back without its state (a restart
//! with in-memory storage, a rebuilt cluster) can stay stuck timing out every send, with no
//! error that says so. When sends keep timing out while the broker answers metadata
//! requests, the producer is replaced with a fresh one.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use super::config::{client_config, creation_error};
use super::{Caller, Error, Headers, PriceRequest};
use crate::settings::{KafkaRole, KafkaSettings};

/// Where a message landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub partition: i32,
    pub offset: i64,
}

/// Consecutive timed-out sends after which a reachable broker means a stuck producer.
const STUCK_AFTER_TIMEOUTS: u32 = 3;
/// Least time between two replacements.
const REBUILD_INTERVAL: Duration = Duration::from_secs(10);

/// A producer that is never dropped on a runtime thread: dropping one purges and flushes,
/// which blocks for up to 500 ms. Sends hold an `Arc` of it; whichever drops the last one
/// hands the producer to a blocking thread.
struct Client(Option<FutureProducer>);

impl std::ops::Deref for Client {
    type Target = FutureProducer;

    fn deref(&self) -> &FutureProducer {
        self.0.as_ref().expect("taken only on drop")
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let producer = self.0.take();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn_blocking(move || drop(producer));
        }
    }
}

#[derive(Clone)]
pub struct Publisher {
    producer: Arc<RwLock<Arc<Client>>>,
    config: ClientConfig,
    topic: String,
    /// Where refreshes go (`kafka.refresh_topic`).
    refresh_topic: String,
    timeout: Duration,
    queue_max: usize,
    consecutive_timeouts: Arc<AtomicU32>,
    last_rebuild: Arc<Mutex<Option<Instant>>>,
}

impl Publisher {
    pub fn new(settings: &KafkaSettings) -> Result<Self, Error> {
        let ours = [
            ("acks", "all".to_owned()),
            ("enable.idempotence", "true".into()),
            // librdkafka stops retrying a message after this, so a publish we answered 503 for
            // is not retried behind our back. (One already in flight may still have landed;
            // the consumer then computes it, which is harmless.)
            ("message.timeout.ms", settings.publish_timeout.as_millis().max(1).to_string()),
            ("linger.ms", "2".into()),
            // Bounded: while the broker is away, unsent messages cannot pile up without
            // limit; a send to a full queue fails at once (`send_result`) and the caller gets 503.
            ("queue.buffering.max.messages", settings.producer_queue_max_messages.to_string()),
            ("queue.buffering.max.kbytes", "65536".into()),
        ];
        let config = client_config(settings, KafkaRole::Producer, &ours)?;
        let producer = config.create().map_err(|e| creation_error(e, KafkaRole::Producer))?;
        Ok(Self {
            producer: Arc::new(RwLock::new(Arc::new(Client(Some(producer))))),
            config,
            topic: settings.topic.clone(),
            refresh_topic: settings.refresh_topic(),
            timeout: settings.publish_timeout,
            queue_max: settings.producer_queue_max_messages as usize,
            consecutive_timeouts: Arc::default(),
            last_rebuild: Arc::default(),
        })
    }

    fn producer(&self) -> Arc<Client> {
        self.producer.read().expect("producer lock").clone()
    }

    /// Publishes a request keyed by its product id and waits for the broker's ack: to the
    /// request topic, or a refresh to the refresh topic.
    pub async fn publish(&self, request: &PriceRequest, caller: Caller<'_>) -> Result<Delivery, Error> {
        let headers = caller.headers();
        let topic = if request.refresh { &self.refresh_topic } else { &self.topic };
        self.send(topic, request.product_id.as_str().as_bytes(), &request.encode(), &headers).await
    }

    /// Sends raw bytes to `topic` (the DLQ path) and waits for the broker's ack.
    pub async fn send(&self, topic: &str, key: &[u8], payload: &[u8], headers: &Headers) -> Result<Delivery, Error> {
        let headers = headers
            .iter()
            .fold(OwnedHeaders::new(), |all, (key, value)| all.insert(Header { key, value: Some(value) }));
        let record = FutureRecord::to(topic).key(key).payload(payload).headers(headers);
        let producer = self.producer();
        let outcome = match producer.send_result(record) {
            // librdkafka gives up on the message after `message.timeout.ms` (the publish
            // timeout); the margin covers its timer granularity.
            Ok(delivery) => match tokio::time::timeout(self.timeout + Duration::from_millis(100), delivery).await {
                Ok(Ok(Ok(delivery))) => Ok(Delivery { partition: delivery.partition, offset: delivery.offset }),
                Ok(Ok(Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut), _)))) | Err(_) => {
                    Err(Error::Timeout(self.timeout))
                }
                Ok(Ok(Err((err, _)))) => Err(Error::Kafka(err)),
                Ok(Err(_canceled)) => Err(Error::Closed),
            },
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(Error::QueueFull(self.queue_max))
            }
            Err((err, _)) => Err(Error::Kafka(err)),
        };
        let result = match &outcome {
            Ok(_) => "ok",
            Err(Error::Timeout(_)) => "timeout",
            Err(Error::QueueFull(_)) => "queue_full",
            Err(_) => "error",
        };
        metrics::counter!("pricefront_publish_total", "topic" => topic.to_owned(), "outcome" => result).increment(1);
        match &outcome {
            Ok(_) => self.consecutive_timeouts.store(0, Ordering::Relaxed),
            Err(Error::Timeout(_)) => {
                if self.consecutive_timeouts.fetch_add(1, Ordering::Relaxed) + 1 >= STUCK_AFTER_TIMEOUTS {
                    self.spawn_rebuild_check();
                }
            }
            Err(_) if producer.client().fatal_error().is_some() => self.spawn_rebuild_check(),
            Err(_) => {}
        }
        outcome
    }

    /// In the background, so the caller's answer is not delayed by the check.
    fn spawn_rebuild_check(&self) {
        let this = self.clone();
        tokio::spawn(async move { this.rebuild_if_stuck().await });
    }

    /// Replaces the producer if sends keep timing out although the broker answers.
    async fn rebuild_if_stuck(&self) {
        {
            let mut last = self.last_rebuild.lock().expect("rebuild lock");
            if last.is_some_and(|at| at.elapsed() < REBUILD_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let fatal = self.producer().client().fatal_error().is_some();
        if !fatal && self.topic_metadata(Duration::from_secs(1)).await.is_err() {
            // The broker is away: timeouts are expected, and a new producer would not help.
            *self.last_rebuild.lock().expect("rebuild lock") = None;
            return;
        }
        match self.config.create::<FutureProducer>() {
            Ok(fresh) => {
                tracing::warn!(
                    timeouts = self.consecutive_timeouts.load(Ordering::Relaxed),
                    fatal,
                    "the Kafka producer is stuck (failed fatally, or sends time out while the broker answers); replacing it"
                );
                *self.producer.write().expect("producer lock") = Arc::new(Client(Some(fresh)));
                self.consecutive_timeouts.store(0, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(error = %e, "cannot create a new Kafka producer"),
        }
    }

    /// Asks the broker for the topic's metadata: the readiness probe. It also fills the
    /// client's metadata cache, so the first publish after start-up does not pay for it.
    pub async fn check_broker(&self, timeout: Duration) -> Result<(), Error> {
        if let Some((code, reason)) = self.producer().client().fatal_error() {
            tracing::error!(%code, %reason, "the Kafka producer failed fatally");
            return Err(Error::Kafka(KafkaError::MessageProduction(code)));
        }
        self.topic_metadata(timeout).await
    }

    /// Fetches the request topic's metadata; Ok if the topic exists with partitions.
    async fn topic_metadata(&self, timeout: Duration) -> Result<(), Error> {
        let producer = self.producer();
        let topic = self.topic.clone();
        let metadata = tokio::task::spawn_blocking(move || producer.client().fetch_metadata(Some(&topic), timeout))
            .await
            .expect("metadata probe does not panic")?;
        let known = metadata
            .topics()
            .iter()
            .any(|t| t.name() == self.topic && t.error().is_none() && !t.partitions().is_empty());
        if known { Ok(()) } else { Err(Error::TopicMissing(self.topic.clone())) }
    }

    /// Waits for queued messages to be delivered (shutdown).
    pub async fn flush(&self, timeout: Duration) {
        let producer = self.producer();
        let _ = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
    }
}

impl super::RequestQueue for Publisher {
    fn publish<'a>(&'a self, request: &'a PriceRequest, caller: Caller<'a>) -> BoxFuture<'a, Result<Delivery, Error>> {
        Box::pin(Publisher::publish(self, request, caller))
    }

    fn send<'a>(
        &'a self,
        topic: &'a str,
        key: &'a [u8],
        payload: &'a [u8],
        headers: &'a Headers,
    ) -> BoxFuture<'a, Result<Delivery, Error>> {
        Box::pin(Publisher::send(self, topic, key, payload, headers))
    }

    fn check(&self, timeout: Duration) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.check_broker(timeout))
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, ()> {
        Box::pin(Publisher::flush(self, timeout))
    }
}
