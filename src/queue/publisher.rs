//! Publishing with broker confirmation: an idempotent producer with `acks=all`, where every
//! send is bounded by `kafka.publish_timeout_ms`.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use super::{Error, PriceRequest, base_config, envelope::TRACEPARENT_HEADER};
use crate::settings::KafkaSettings;

/// Where a message landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub partition: i32,
    pub offset: i64,
}

#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
}

impl Publisher {
    pub fn new(settings: &KafkaSettings) -> Result<Self, Error> {
        let timeout_ms = settings.publish_timeout.as_millis().max(1).to_string();
        let producer = base_config(settings)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            // librdkafka stops retrying a message after this, so a publish we answered 503 for
            // is not retried behind our back. (One already in flight may still have landed;
            // the consumer then computes it, which is harmless.)
            .set("message.timeout.ms", &timeout_ms)
            .set("linger.ms", "2")
            // Bounded: while the broker is away, unsent messages cannot pile up without
            // limit; a full queue answers at once and the caller gets 503.
            .set("queue.buffering.max.messages", settings.producer_queue_max_messages.to_string())
            .set("queue.buffering.max.kbytes", "65536")
            .create()?;
        Ok(Self { producer, topic: settings.topic.clone(), timeout: settings.publish_timeout })
    }

    /// Publishes a request keyed by its product id and waits for the broker's ack.
    pub async fn publish(&self, request: &PriceRequest, traceparent: Option<&str>) -> Result<Delivery, Error> {
        let key = request.product_id.as_str();
        let mut headers = OwnedHeaders::new();
        if let Some(value) = traceparent {
            headers = headers.insert(Header { key: TRACEPARENT_HEADER, value: Some(value) });
        }
        self.send(&self.topic, key.as_bytes(), &request.encode(), headers).await
    }

    /// Sends raw bytes to `topic` (the DLQ path) and waits for the broker's ack.
    pub async fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<Delivery, Error> {
        let record = FutureRecord::to(topic).key(key).payload(payload).headers(headers);
        let send = self.producer.send(record, Timeout::After(self.timeout));
        match tokio::time::timeout(self.timeout + Duration::from_millis(100), send).await {
            Ok(Ok(delivery)) => Ok(Delivery { partition: delivery.partition, offset: delivery.offset }),
            Ok(Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::MessageTimedOut), _))) => {
                Err(Error::Timeout(self.timeout))
            }
            Ok(Err((err, _))) => Err(Error::Kafka(err)),
            Err(_) => Err(Error::Timeout(self.timeout)),
        }
    }

    /// Asks the broker for the topic's metadata: the readiness probe. It also fills the
    /// client's metadata cache, so the first publish after start-up does not pay for it.
    pub async fn check_broker(&self, timeout: Duration) -> Result<(), Error> {
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            return Err(Error::Kafka(rdkafka::error::KafkaError::MessageProduction(code)))
                .inspect_err(|_| tracing::error!(%code, %reason, "the Kafka producer failed fatally"));
        }
        let producer = self.producer.clone();
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
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
    }
}
