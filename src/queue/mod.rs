//! Requests in flight between producer and consumer: the message [envelope], each Kafka
//! client's librdkafka configuration ([config]: ours, then `[kafka.*options]`), the request
//! [publisher] (also used for the DLQ), topic creation ([admin]), reading and replaying dead
//! letters ([dlq]), the Kafka group member
//! ([consumer]) and the acknowledgement that alone moves its offsets ([`Ack`], over the
//! [offsets] tracker).
//!
//! Two traits hide Kafka behind our own types ([`Message`], [`Headers`], [`Incoming`]):
//! [`RequestQueue`], what the API and the worker need to publish, and [`Inbox`], what the
//! worker consumes. [memory] implements both in process for the standalone demo; [`Prioritized`]
//! serves one inbox (the refresh topic's) before another.

mod ack;
pub mod admin;
mod config;
pub mod consumer;
pub mod dlq;
pub mod envelope;
mod memory;
mod message;
mod offsets;
mod priority;
mod publisher;

use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::error::KafkaError;

pub use ack::Ack;
pub use consumer::{Assigned, KafkaInbox};
pub use envelope::{Caller, DecodeError, PriceRequest};
pub use memory::{MemoryInbox, MemoryQueue};
pub use message::{Headers, Incoming, Message, Origin};
pub use priority::Prioritized;
pub use publisher::{Delivery, Publisher};

/// Publishing requests (and dead letters), acknowledged: Kafka, or the in-process queue.
pub trait RequestQueue: Send + Sync + 'static {
    /// Publishes a request keyed by its product id; Ok once the queue has it durably.
    fn publish<'a>(&'a self, request: &'a PriceRequest, caller: Caller<'a>) -> BoxFuture<'a, Result<Delivery, Error>>;
    /// Publishes many requests as one batch: each is handed to the client before any is
    /// waited on, so they travel together (librdkafka gathers what comes within `linger.ms`
    /// into one produce request per partition) and no message waits for another's ack. Each
    /// has its own outcome, in `requests`' order.
    fn publish_many<'a>(
        &'a self,
        requests: &'a [PriceRequest],
        caller: Caller<'a>,
    ) -> BoxFuture<'a, Vec<Result<Delivery, Error>>> {
        Box::pin(futures::future::join_all(requests.iter().map(|request| self.publish(request, caller))))
    }
    /// Sends raw bytes to `topic` (the DLQ path).
    fn send<'a>(
        &'a self,
        topic: &'a str,
        key: &'a [u8],
        payload: &'a [u8],
        headers: &'a Headers,
    ) -> BoxFuture<'a, Result<Delivery, Error>>;
    /// Readiness: the queue can take requests now.
    fn check(&self, timeout: Duration) -> BoxFuture<'_, Result<(), Error>>;
    /// Waits for queued messages to be delivered (shutdown).
    fn flush(&self, timeout: Duration) -> BoxFuture<'_, ()>;
}

/// The consuming end of a queue: messages to process, each with its [`Ack`].
pub trait Inbox: Send + Sync {
    /// The next message, or `None` once the inbox is closed for good.
    fn next(&mut self) -> BoxFuture<'_, Option<Incoming>>;
    /// Stops consuming: what was acknowledged done is committed, and nothing acknowledged from
    /// now on moves an offset. Returns within `within`, whether the broker answered or not.
    fn close(&mut self, within: Duration) -> BoxFuture<'_, ()>;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("the broker did not confirm within {0:?}")]
    Timeout(Duration),
    /// The producer already holds as many unsent messages as it may (the broker is slow or away).
    #[error("the producer queue is full ({0} unsent messages)")]
    QueueFull(usize),
    #[error("the queue is closed")]
    Closed,
    #[error("topic {0:?} does not exist on the broker")]
    TopicMissing(String),
    #[error("cannot start the consumer thread")]
    Thread(#[source] std::io::Error),
    /// The Kafka settings cannot work: a variable an option needs is unset, or librdkafka
    /// refused a property. The message names the property, never a secret's value.
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// Whether the configuration is at fault (exit status 2 at start-up).
    pub fn is_configuration(&self) -> bool {
        matches!(self, Error::Config(_))
    }
}
