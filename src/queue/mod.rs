//! Kafka plumbing: the message [envelope], the request [publisher] (also used for the DLQ),
//! topic creation ([admin]), the group [consumer] and [offsets] tracking for at-least-once.
//! [`RequestQueue`] is what the API and the worker need of a queue; [memory] is the
//! in-process, partitioned stand-in used by the standalone demo.

pub mod admin;
pub mod consumer;
pub mod envelope;
pub mod memory;
pub mod offsets;
pub mod publisher;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

use crate::settings::KafkaSettings;

pub use envelope::{DecodeError, PriceRequest};
pub use memory::MemoryQueue;
pub use publisher::{Delivery, Publisher};

use futures::future::BoxFuture;
use rdkafka::message::OwnedHeaders;

/// Publishing requests (and dead letters), acknowledged: Kafka, or the in-process queue.
pub trait RequestQueue: Send + Sync + 'static {
    /// Publishes a request keyed by its product id; Ok once the queue has it durably.
    fn publish<'a>(
        &'a self,
        request: &'a PriceRequest,
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Delivery, Error>>;
    /// Sends raw bytes to `topic` (the DLQ path).
    fn send<'a>(
        &'a self,
        topic: &'a str,
        key: &'a [u8],
        payload: &'a [u8],
        headers: OwnedHeaders,
    ) -> BoxFuture<'a, Result<Delivery, Error>>;
    /// Readiness: the queue can take requests now.
    fn check(&self, timeout: Duration) -> BoxFuture<'_, Result<(), Error>>;
    /// Waits for queued messages to be delivered (shutdown).
    fn flush(&self, timeout: Duration) -> BoxFuture<'_, ()>;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the broker did not confirm within {0:?}")]
    Timeout(Duration),
    #[error("topic {0:?} does not exist on the broker")]
    TopicMissing(String),
}

/// The options every client of ours shares.
fn base_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.brokers).set("client.id", "pricefront");
    config
}
