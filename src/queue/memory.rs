//! The in-process queue of the standalone demo: a bounded channel for requests and one for
//! refreshes (taken first, as the consumer takes the refresh topic first), and a bounded
//! in-memory DLQ. A full channel refuses at once, as a full Kafka producer queue does.
//!
//! Unlike Kafka nothing survives the process, and a message being processed at shutdown is
//! gone: the demo's trade-off, stated in the README. Its acknowledgements commit nothing.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::ack::Ack;
use super::message::{Headers, Incoming, Message, Origin};
use super::{Caller, Delivery, Error, Inbox, PriceRequest, RequestQueue};

/// Dead letters kept for inspection; older ones are dropped.
const DLQ_KEEP: usize = 1000;

pub struct MemoryQueue {
    topic: String,
    sender: mpsc::Sender<Message>,
    refreshes: mpsc::Sender<Message>,
    next_offset: AtomicI64,
    capacity: usize,
    dead_letters: Mutex<VecDeque<Message>>,
}

/// The consuming end of a [`MemoryQueue`].
pub struct MemoryInbox {
    receiver: mpsc::Receiver<Message>,
    refreshes: mpsc::Receiver<Message>,
}

impl MemoryQueue {
    /// A queue holding up to `capacity` unconsumed messages, and its consuming end.
    pub fn new(topic: &str, capacity: usize) -> (Self, MemoryInbox) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let (refreshes, refresh_receiver) = mpsc::channel(capacity.max(1));
        let queue = Self {
            topic: topic.to_owned(),
            sender,
            refreshes,
            next_offset: AtomicI64::new(0),
            capacity: capacity.max(1),
            dead_letters: Mutex::default(),
        };
        (queue, MemoryInbox { receiver, refreshes: refresh_receiver })
    }

    /// The dead letters kept so far (newest last).
    pub fn dead_letters(&self) -> Vec<Message> {
        self.dead_letters.lock().expect("dlq lock").iter().cloned().collect()
    }
}

impl RequestQueue for MemoryQueue {
    fn publish<'a>(&'a self, request: &'a PriceRequest, caller: Caller<'a>) -> BoxFuture<'a, Result<Delivery, Error>> {
        let headers = caller.headers();
        let offset = self.next_offset.fetch_add(1, Ordering::Relaxed);
        let message = Message {
            key: Some(request.product_id.as_str().as_bytes().to_vec()),
            payload: Some(request.encode()),
            headers,
            origin: Origin { topic: self.topic.clone(), partition: 0, offset },
        };
        // Full or closed: the caller answers 503 rather than queue without bound.
        let sender = if request.refresh { &self.refreshes } else { &self.sender };
        let outcome = match sender.try_send(message) {
            Ok(()) => Ok(Delivery { partition: 0, offset }),
            Err(mpsc::error::TrySendError::Full(_)) => Err(Error::QueueFull(self.capacity)),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::Closed),
        };
        Box::pin(async move { outcome })
    }

    fn send<'a>(
        &'a self,
        topic: &'a str,
        key: &'a [u8],
        payload: &'a [u8],
        headers: &'a Headers,
    ) -> BoxFuture<'a, Result<Delivery, Error>> {
        let mut dead = self.dead_letters.lock().expect("dlq lock");
        if dead.len() == DLQ_KEEP {
            dead.pop_front();
        }
        let offset = dead.back().map_or(0, |m| m.origin.offset + 1);
        dead.push_back(Message {
            key: Some(key.to_vec()),
            payload: Some(payload.to_vec()),
            headers: headers.clone(),
            origin: Origin { topic: topic.to_owned(), partition: 0, offset },
        });
        Box::pin(async move { Ok(Delivery { partition: 0, offset }) })
    }

    fn check(&self, _: Duration) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }

    fn flush(&self, _: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

impl Inbox for MemoryInbox {
    fn next(&mut self) -> BoxFuture<'_, Option<Incoming>> {
        Box::pin(async move {
            let message = tokio::select! {
                biased;
                Some(refresh) = self.refreshes.recv() => refresh,
                request = self.receiver.recv() => request?,
            };
            Some(Incoming { message, ack: Ack::none() })
        })
    }

    fn close(&mut self, _: Duration) -> BoxFuture<'_, ()> {
        self.receiver.close();
        self.refreshes.close();
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ProductId;

    #[tokio::test]
    async fn published_requests_arrive_in_order_with_their_headers() {
        let (queue, mut inbox) = MemoryQueue::new("t", 16);
        let request = PriceRequest::new(ProductId::parse("sku-1").unwrap());
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let caller = Caller { traceparent: Some(tp), request_id: Some("req-1") };
        assert_eq!(queue.publish(&request, caller).await.unwrap().offset, 0);
        assert_eq!(queue.publish(&request, Caller::default()).await.unwrap().offset, 1);
        let first = inbox.next().await.unwrap();
        assert_eq!(PriceRequest::decode(first.message.payload.as_deref()).unwrap(), request);
        assert_eq!(first.message.headers.get_str(super::super::envelope::TRACEPARENT_HEADER), Some(tp));
        assert_eq!(first.message.headers.get_str(super::super::envelope::REQUEST_ID_HEADER), Some("req-1"));
        first.ack.done();
        assert_eq!(inbox.next().await.unwrap().message.origin.offset, 1);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_instead_of_growing() {
        let (queue, _inbox) = MemoryQueue::new("t", 1);
        let request = PriceRequest::new(ProductId::parse("sku-1").unwrap());
        queue.publish(&request, Caller::default()).await.unwrap();
        assert!(matches!(queue.publish(&request, Caller::default()).await, Err(Error::QueueFull(1))));
    }

    #[tokio::test]
    async fn dead_letters_are_bounded() {
        let (queue, _inbox) = MemoryQueue::new("t", 1);
        for i in 0..DLQ_KEEP + 5 {
            queue.send("t.dlq", b"k", i.to_string().as_bytes(), &Headers::new()).await.unwrap();
        }
        let dead = queue.dead_letters();
        assert_eq!(dead.len(), DLQ_KEEP);
        assert_eq!(dead[0].payload.as_deref(), Some(&b"5"[..]));
    }
}
