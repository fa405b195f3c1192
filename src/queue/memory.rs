//! The in-process, partitioned queue of the standalone demo: one bounded channel per
//! partition, requests partitioned by key like Kafka does, and a bounded in-memory DLQ.
//!
//! Unlike Kafka nothing survives the process, and a message being processed at shutdown is
//! gone: the demo's trade-off, stated in the README.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::Timestamp;
use rdkafka::message::{OwnedHeaders, OwnedMessage};
use tokio::sync::mpsc;

use super::envelope::TRACEPARENT_HEADER;
use super::{Delivery, Error, PriceRequest, RequestQueue};

/// Dead letters kept for inspection; older ones are dropped.
const DLQ_KEEP: usize = 1000;

pub struct MemoryQueue {
    topic: String,
    partitions: Vec<mpsc::Sender<OwnedMessage>>,
    next_offsets: Vec<AtomicI64>,
    dead_letters: Mutex<VecDeque<OwnedMessage>>,
}

impl MemoryQueue {
    /// A queue with `partitions` partitions of `capacity` messages each, and their receivers.
    pub fn new(topic: &str, partitions: usize, capacity: usize) -> (Self, Vec<mpsc::Receiver<OwnedMessage>>) {
        let (senders, receivers) = (0..partitions.max(1)).map(|_| mpsc::channel(capacity)).unzip();
        let next_offsets = (0..partitions.max(1)).map(|_| AtomicI64::new(0)).collect();
        let queue = Self { topic: topic.to_owned(), partitions: senders, next_offsets, dead_letters: Mutex::default() };
        (queue, receivers)
    }

    /// The dead letters kept so far (newest last).
    pub fn dead_letters(&self) -> Vec<OwnedMessage> {
        self.dead_letters.lock().expect("dlq lock").iter().cloned().collect()
    }

    fn enqueue(&self, key: &[u8], payload: &[u8], headers: OwnedHeaders) -> Result<Delivery, Error> {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        let partition = (hasher.finish() % self.partitions.len() as u64) as usize;
        let offset = self.next_offsets[partition].fetch_add(1, Ordering::Relaxed);
        let message = OwnedMessage::new(
            Some(payload.to_vec()),
            Some(key.to_vec()),
            self.topic.clone(),
            Timestamp::now(),
            partition as i32,
            offset,
            Some(headers),
        );
        // Full or closed: the caller answers 503 rather than queue without bound.
        self.partitions[partition].try_send(message).map_err(|_| Error::Timeout(Duration::ZERO))?;
        Ok(Delivery { partition: partition as i32, offset })
    }
}

impl RequestQueue for MemoryQueue {
    fn publish<'a>(
        &'a self,
        request: &'a PriceRequest,
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Delivery, Error>> {
        let mut headers = OwnedHeaders::new();
        if let Some(value) = traceparent {
            headers = headers.insert(rdkafka::message::Header { key: TRACEPARENT_HEADER, value: Some(value) });
        }
        let outcome = self.enqueue(request.product_id.as_str().as_bytes(), &request.encode(), headers);
        Box::pin(async move { outcome })
    }

    fn send<'a>(
        &'a self,
        topic: &'a str,
        key: &'a [u8],
        payload: &'a [u8],
        headers: OwnedHeaders,
    ) -> BoxFuture<'a, Result<Delivery, Error>> {
        let message = OwnedMessage::new(
            Some(payload.to_vec()),
            Some(key.to_vec()),
            topic.to_owned(),
            Timestamp::now(),
            0,
            0,
            Some(headers),
        );
        let mut dead = self.dead_letters.lock().expect("dlq lock");
        if dead.len() == DLQ_KEEP {
            dead.pop_front();
        }
        dead.push_back(message);
        Box::pin(async { Ok(Delivery { partition: 0, offset: 0 }) })
    }

    fn check(&self, _: Duration) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }

    fn flush(&self, _: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ProductId;
    use rdkafka::Message;

    #[tokio::test]
    async fn one_key_always_lands_on_one_partition_in_order() {
        let (queue, mut receivers) = MemoryQueue::new("t", 3, 16);
        let request = PriceRequest::new(ProductId::parse("sku-1").unwrap());
        let first = queue.publish(&request, None).await.unwrap();
        let second = queue.publish(&request, None).await.unwrap();
        assert_eq!(first.partition, second.partition);
        assert_eq!((first.offset, second.offset), (0, 1));
        let rx = &mut receivers[first.partition as usize];
        assert_eq!(PriceRequest::decode(rx.recv().await.unwrap().payload()).unwrap(), request);
    }

    #[tokio::test]
    async fn a_full_partition_refuses_instead_of_growing() {
        let (queue, _receivers) = MemoryQueue::new("t", 1, 1);
        let request = PriceRequest::new(ProductId::parse("sku-1").unwrap());
        queue.publish(&request, None).await.unwrap();
        assert!(matches!(queue.publish(&request, None).await, Err(Error::Timeout(_))));
    }
}
