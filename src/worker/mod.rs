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
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::cache::RedisStore;
use crate::queue::Publisher;
use crate::queue::consumer::{self, GroupConsumer, InFlight};
use crate::settings::Settings;

pub use process::{Counters, Processor, RedisHealth};

/// Time left for the final commit and group leave even when draining used up the deadline.
const MIN_LEAVE_TIME: Duration = Duration::from_secs(1);
/// How often a paused consumer checks whether Redis is back.
const REDIS_PROBE_INTERVAL: Duration = Duration::from_secs(1);

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
    in_flight: Arc<InFlight>,
    processor: Arc<Processor>,
    topic: String,
    max_in_flight: usize,
    drain_timeout: Duration,
}

impl Worker {
    /// Builds the clients and joins the group (the join completes on the first poll).
    pub fn build(settings: &Settings) -> Result<Self, BuildError> {
        crate::observability::handle();
        let in_flight = Arc::new(InFlight::default());
        let store = Arc::new(RedisStore::connect_lazy(&settings.redis)?);
        let processor = Processor::new(settings, store, Arc::new(Publisher::new(&settings.kafka)?))?;
        Ok(Self {
            consumer: Arc::new(consumer::subscribe(
                &settings.kafka,
                in_flight.clone(),
                settings.consumer.drain_timeout,
            )?),
            in_flight,
            processor: Arc::new(processor),
            topic: settings.kafka.topic.clone(),
            max_in_flight: settings.consumer.max_in_flight,
            drain_timeout: settings.consumer.drain_timeout,
        })
    }

    pub fn counters(&self) -> &Counters {
        &self.processor.counters
    }

    /// The next message; while Redis is failing, the assigned partitions are paused (polling
    /// goes on, so rebalances and the group session are still served) and Redis is probed.
    async fn next_message(&self, paused: &mut bool) -> KafkaResult<BorrowedMessage<'_>> {
        let health = &self.processor.redis_health;
        loop {
            let degraded = health.is_degraded();
            // Re-applied while degraded: a rebalance hands out partitions unpaused.
            if degraded || *paused {
                match self.consumer.assignment() {
                    Ok(assignment) if degraded => {
                        if let Err(e) = self.consumer.pause(&assignment) {
                            tracing::warn!(error = %e, "cannot pause partitions");
                        }
                    }
                    Ok(assignment) => {
                        if let Err(e) = self.consumer.resume(&assignment) {
                            tracing::warn!(error = %e, "cannot resume partitions");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read the assignment"),
                }
                *paused = degraded;
            }
            if !degraded {
                return self.consumer.recv().await;
            }
            tokio::select! {
                // Anything fetched before the pause is still processed; it retries until Redis is back.
                message = self.consumer.recv() => return message,
                _ = health.recovered() => {}
                _ = tokio::time::sleep(REDIS_PROBE_INTERVAL) => {
                    if self.processor.store.ping().await.is_ok() {
                        health.report(true);
                    }
                }
            }
        }
    }

    /// Consumes until `shutdown` fires, then drains and commits.
    pub async fn run(self, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.max_in_flight));
        let tasks = TaskTracker::new();
        let mut paused = false;
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
                message = self.next_message(&mut paused) => message,
            };
            let message = match message {
                Ok(message) => message.detach(),
                Err(e) => {
                    tracing::warn!(error = %e, "consume error");
                    drop(permit);
                    // Errors come in bursts while the broker is away; don't spin on them.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (partition, offset) = (message.partition(), message.offset());
            self.in_flight.lock().start(partition, offset);
            metrics::gauge!("pricefront_messages_in_flight").increment(1.0);
            let span = tracing::info_span!(
                "message",
                topic = %self.topic,
                partition,
                offset,
                product_id = tracing::field::Empty,
                request_id = tracing::field::Empty,
                traceparent = tracing::field::Empty,
            );
            let (consumer, in_flight, processor, topic, shutdown) = (
                self.consumer.clone(),
                self.in_flight.clone(),
                self.processor.clone(),
                self.topic.clone(),
                shutdown.clone(),
            );
            tasks.spawn(
                async move {
                    let done = processor.handle(&message, &shutdown).await;
                    drop(permit);
                    metrics::gauge!("pricefront_messages_in_flight").decrement(1.0);
                    let position = {
                        let mut tracker = in_flight.lock();
                        if done {
                            tracker.finish(partition, offset)
                        } else {
                            tracing::warn!("message left unfinished; it will be redelivered");
                            tracker.abandon(partition, offset);
                            None
                        }
                    };
                    // Stored before waking a revoke that waits for this partition to drain.
                    if let Some(position) = position {
                        consumer::store_position(&consumer, &topic, partition, position);
                    }
                    in_flight.notify();
                }
                .instrument(span),
            );
        }

        let processor = self.processor;
        tracing::info!(in_flight = tasks.len(), "draining");
        tasks.close();
        // One deadline for draining and leaving, so shutdown stays within the drain timeout
        // (validated below the session timeout), plus a short floor for the leave itself.
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        if tokio::time::timeout_at(deadline, tasks.wait()).await.is_err() {
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
        let leave_by = deadline.max(tokio::time::Instant::now() + MIN_LEAVE_TIME);
        if tokio::time::timeout_at(leave_by, leave).await.is_err() {
            tracing::warn!("broker unreachable; stopped without a final commit (unfinished work will be redelivered)");
        }
        let c = &processor.counters;
        tracing::info!(
            computed = c.computed.load(Ordering::Relaxed),
            duplicates = c.duplicates.load(Ordering::Relaxed),
            dead_lettered = c.dead_lettered.load(Ordering::Relaxed),
            dropped = c.dropped.load(Ordering::Relaxed),
            retries = c.retries.load(Ordering::Relaxed),
            "consumer stopped"
        );
    }
}
