//! The consumer: consume → process → store, with up to `consumer.max_in_flight` messages
//! in flight and offsets stored only behind finished work.
//!
//! Shutdown: stop fetching, let in-flight work finish within `consumer.drain_timeout_ms`,
//! store what finished, commit synchronously, leave the group. Work that did not finish is
//! redelivered to whoever owns the partition next.

mod process;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::cache::RedisStore;
use crate::providers::PriceSources;
use crate::queue::consumer::{self, GroupConsumer, SharedTracker};
use crate::queue::{Publisher, offsets::OffsetTracker};
use crate::settings::Settings;

pub use process::{Counters, Processor};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Cache(#[from] crate::cache::Error),
    #[error(transparent)]
    Queue(#[from] crate::queue::Error),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

pub struct Worker {
    consumer: Arc<GroupConsumer>,
    tracker: SharedTracker,
    processor: Arc<Processor>,
    topic: String,
    max_in_flight: usize,
    drain_timeout: Duration,
}

impl Worker {
    /// Builds the clients and joins the group (the join completes on the first poll).
    pub fn build(settings: &Settings) -> Result<Self, BuildError> {
        let tracker: SharedTracker = Arc::new(std::sync::Mutex::new(OffsetTracker::default()));
        let processor = Processor {
            store: RedisStore::connect_lazy(&settings.redis)?,
            sources: PriceSources::new(&settings.providers, settings.consumer.provider_timeout)?,
            publisher: Publisher::new(&settings.kafka)?,
            dlq_topic: settings.kafka.dlq_topic.clone(),
            ttl: settings.cache.ttl_policy(),
            counters: Counters::default(),
        };
        Ok(Self {
            consumer: Arc::new(consumer::subscribe(&settings.kafka, tracker.clone())?),
            tracker,
            processor: Arc::new(processor),
            topic: settings.kafka.topic.clone(),
            max_in_flight: settings.consumer.max_in_flight,
            drain_timeout: settings.consumer.drain_timeout,
        })
    }

    pub fn counters(&self) -> &Counters {
        &self.processor.counters
    }

    /// Consumes until `shutdown` fires, then drains and commits.
    pub async fn run(self, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.max_in_flight));
        let tasks = TaskTracker::new();
        tracing::info!(topic = %self.topic, max_in_flight = self.max_in_flight, sources = self.processor.sources.len(), "consumer started");
        loop {
            // Take a permit before fetching, so at most max_in_flight messages are held.
            let permit = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned() => permit.expect("semaphore is never closed"),
            };
            let message = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                message = self.consumer.recv() => message,
            };
            let message = match message {
                Ok(message) => message.detach(),
                Err(e) => {
                    tracing::warn!(error = %e, "consume error");
                    continue;
                }
            };
            let (partition, offset) = (message.partition(), message.offset());
            self.tracker.lock().expect("tracker lock").start(partition, offset);
            let span = tracing::info_span!(
                "message",
                topic = %self.topic,
                partition,
                offset,
                product_id = tracing::field::Empty,
                request_id = tracing::field::Empty,
                traceparent = tracing::field::Empty,
            );
            let (consumer, tracker, processor, topic, shutdown) = (
                self.consumer.clone(),
                self.tracker.clone(),
                self.processor.clone(),
                self.topic.clone(),
                shutdown.clone(),
            );
            tasks.spawn(
                async move {
                    let done = processor.handle(&message, &shutdown).await;
                    drop(permit);
                    if !done {
                        tracing::warn!("message left unfinished; it will be redelivered");
                        return;
                    }
                    let position = tracker.lock().expect("tracker lock").finish(partition, offset);
                    if let Some(position) = position {
                        consumer::store_position(&consumer, &topic, partition, position);
                    }
                }
                .instrument(span),
            );
        }

        let processor = self.processor;
        tracing::info!(in_flight = tasks.len(), "draining");
        tasks.close();
        if tokio::time::timeout(self.drain_timeout, tasks.wait()).await.is_err() {
            tracing::warn!(unfinished = tasks.len(), "drain timed out; unfinished messages will be redelivered");
        }
        // The final commit and the group leave talk to the broker; bound them so a broker
        // that is gone cannot hold the process forever (the group then expires us instead).
        let consumer = self.consumer;
        let leave = tokio::task::spawn_blocking(move || {
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => tracing::info!("offsets committed"),
                Err(e) => tracing::info!(error = %e, "nothing committed"),
            }
            consumer.unsubscribe();
            drop(consumer);
        });
        if tokio::time::timeout(self.drain_timeout, leave).await.is_err() {
            tracing::warn!("broker unreachable; stopped without a final commit (unfinished work will be redelivered)");
        }
        let c = &processor.counters;
        tracing::info!(
            computed = c.computed.load(Ordering::Relaxed),
            duplicates = c.duplicates.load(Ordering::Relaxed),
            dead_lettered = c.dead_lettered.load(Ordering::Relaxed),
            retries = c.retries.load(Ordering::Relaxed),
            "consumer stopped"
        );
    }
}
