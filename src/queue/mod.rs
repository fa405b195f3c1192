//! Kafka plumbing: the message [envelope], the request [publisher] (also used for the DLQ),
//! topic creation ([admin]), the group [consumer] and [offsets] tracking for at-least-once.

pub mod admin;
pub mod consumer;
pub mod envelope;
pub mod offsets;
pub mod publisher;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

use crate::settings::KafkaSettings;

pub use envelope::{DecodeError, PriceRequest};
pub use publisher::Publisher;

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
