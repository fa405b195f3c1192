//! The consume loop, written once for every queue: take a message from an [`Inbox`], process
//! it ([`Processor`]), then settle its acknowledgement: done when the outcome is durable,
//! dropped when not (the message is then redelivered). Up to `consumer.max_in_flight`
//! messages are processed at once. The loop never sees an offset.
//!
//! While Redis is failing the loop takes no new messages (the Kafka inbox then pauses its
//! partitions, still serving the group) and probes Redis until it answers. So it does while
//! the DLQ cannot be written: a message leaves only processed or in the DLQ, and the one
//! waiting for the DLQ keeps trying, so it sees the recovery.
//!
//! Shutdown: stop taking messages, let in-flight work finish within
//! `consumer.drain_timeout_ms`, give up what did not (nothing is stored for it, so it is
//! redelivered), then close the inbox: the final commit and the group leave, bounded by the
//! same deadline with at least [`MIN_LEAVE_TIME`] left for them.

mod health;
mod process;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cache::{RedisStore, Store};
use crate::observability::traces;
use crate::providers::Quotas;
use crate::queue::consumer::{self, Subscription};
use crate::queue::envelope::{REQUEST_ID_HEADER, TRACEPARENT_HEADER, valid_request_id, valid_traceparent};
use crate::queue::{Assigned, Inbox, Incoming, Prioritized, Publisher, RequestQueue};
use crate::settings::Settings;

pub use health::Health;
pub use process::{Counters, Processor};

/// Time left for the final commit and group leave even when draining used up the deadline.
pub const MIN_LEAVE_TIME: Duration = Duration::from_secs(1);
/// How often a loop held by a failing Redis checks whether it is back.
const REDIS_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How often a consumer reports its capacity (see `api::admission`); well within
/// `cache::CAPACITY_FRESH`.
const CAPACITY_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Cache(#[from] crate::cache::Error),
    #[error(transparent)]
    Queue(#[from] crate::queue::Error),
    #[error(transparent)]
    Sources(#[from] crate::providers::BuildError),
}

impl BuildError {
    /// The configuration cannot work (a variable a source, a Kafka option or a Redis URL
    /// needs is not set; librdkafka refused a property): exit status 2.
    pub fn is_configuration(&self) -> bool {
        match self {
            BuildError::Sources(e) => matches!(e, crate::providers::BuildError::Config(_)),
            BuildError::Queue(e) => e.is_configuration(),
            BuildError::Cache(e) => e.is_configuration(),
        }
    }
}

pub struct Worker {
    processor: Arc<Processor>,
    inbox: Box<dyn Inbox>,
    /// The partitions held (a Kafka group member's), for readiness.
    assigned: Option<Assigned>,
    max_in_flight: usize,
    drain_timeout: Duration,
}

impl Worker {
    /// The production consumer: Redis, a member of the Kafka group (joined on its first
    /// polls), and Kafka for dead letters.
    pub fn build(settings: &Settings) -> Result<Self, BuildError> {
        let store = RedisStore::connect_lazy(&settings.redis)?;
        let quotas = Arc::new(store.quotas());
        let dead_letters = Arc::new(Publisher::new(&settings.kafka)?);
        // The sources first: a configuration error must stop us before we join the group.
        let processor = Processor::new(settings, Arc::new(store), quotas, dead_letters)?;
        let (kafka, consumer) = (&settings.kafka, &settings.consumer);
        let subscribe = |kind| consumer::subscribe(kafka, kind, consumer.drain_timeout, consumer.max_in_flight);
        let requests = subscribe(Subscription::Requests)?;
        // A member of a group of its own: the requests' backlog pauses its partitions when the
        // hand-off is full, which must never hold up a refresh.
        let refreshes = subscribe(Subscription::Refreshes)?;
        let assigned = requests.assigned();
        let inbox = Prioritized::new(Box::new(refreshes), Box::new(requests));
        Ok(Self { assigned: Some(assigned), ..Self::from_parts(settings, processor, Box::new(inbox)) })
    }

    /// A consumer over any store, quotas and queue (the standalone demo's in-memory ones).
    pub fn with(
        settings: &Settings,
        store: Arc<dyn Store>,
        quotas: Arc<dyn Quotas>,
        dead_letters: Arc<dyn RequestQueue>,
        inbox: Box<dyn Inbox>,
    ) -> Result<Self, BuildError> {
        Ok(Self::from_parts(settings, Processor::new(settings, store, quotas, dead_letters)?, inbox))
    }

    fn from_parts(settings: &Settings, processor: Processor, inbox: Box<dyn Inbox>) -> Self {
        Self {
            processor: Arc::new(processor),
            inbox,
            assigned: None,
            max_in_flight: settings.consumer.max_in_flight,
            drain_timeout: settings.consumer.drain_timeout,
        }
    }

    /// The partitions this consumer holds, as the group's rebalances go (none for an
    /// in-process queue): it is ready while it holds some.
    pub fn assigned(&self) -> Option<Assigned> {
        self.assigned.clone()
    }

    pub fn counters(&self) -> &Counters {
        &self.processor.counters
    }

    /// Holds the loop while Redis is failing, probing it every [`REDIS_PROBE_INTERVAL`], and
    /// while the DLQ is (the dead letter waiting for it reports its recovery).
    async fn usable(&self) {
        let health = &self.processor.redis_health;
        while health.is_degraded() {
            tokio::select! {
                _ = health.healthy() => {}
                _ = tokio::time::sleep(REDIS_PROBE_INTERVAL) => {
                    if self.processor.store.ping().await.is_ok() {
                        health.report(true);
                    }
                }
            }
        }
        self.processor.dlq_health.healthy().await;
    }

    /// Reports this consumer's capacity every [`CAPACITY_EVERY`] for admission control: its
    /// in-flight bound over its mean time per request, once one was timed.
    /// A member holding none of the request topic's partitions reports nothing: it could not
    /// use its capacity.
    fn spawn_capacity_reports(&self, member: String, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let (processor, max_in_flight, assigned) = (self.processor.clone(), self.max_in_flight, self.assigned.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(CAPACITY_EVERY);
            while tokio::select! { _ = every.tick() => true, _ = shutdown.cancelled() => false } {
                if assigned.as_ref().is_some_and(|a| a.partitions().is_empty()) {
                    continue;
                }
                let Some(mean) = processor.service.mean() else { continue };
                let per_sec = max_in_flight as f64 / mean.as_secs_f64().max(1e-3);
                metrics::gauge!("pricefront_consumer_capacity_per_second").set(per_sec);
                if let Err(e) = processor.store.report_capacity(&member, per_sec, std::time::SystemTime::now()).await {
                    tracing::debug!(error = %e, "cannot report this consumer's capacity");
                }
            }
        })
    }

    /// Consumes until `shutdown` fires, then drains and closes. Fails if the queue stopped
    /// delivering on its own (its client thread died): the process should exit non-zero and be
    /// restarted, after the same drain.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), QueueClosed> {
        let mut outcome = Ok(());
        let permits = Arc::new(Semaphore::new(self.max_in_flight));
        let mut tasks = JoinSet::new();
        tracing::info!(max_in_flight = self.max_in_flight, sources = self.processor.sources.len(), "consumer started");
        self.processor.fx.spawn_refresh(shutdown.clone());
        let member = uuid::Uuid::new_v4().simple().to_string();
        let reporting = self.spawn_capacity_reports(member.clone(), shutdown.clone());
        crate::cache::clock::spawn_watch(self.processor.store.clone(), shutdown.clone());
        // Present from the start, so the first dead letter shows as a rate, not as a new series.
        metrics::counter!("pricefront_messages_total", "outcome" => "dead_lettered").increment(0);
        // Likewise the refreshes' latency (registered, so it renders before the first refresh).
        let _ = metrics::histogram!("pricefront_refresh_seconds");
        self.processor.dlq_health.show();
        loop {
            while let Some(joined) = tasks.try_join_next() {
                report_panic(joined);
            }
            // A permit first, so at most max_in_flight messages are taken.
            let permit = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned() => permit.expect("semaphore is never closed"),
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = self.usable() => {}
            }
            let Incoming { message, ack } = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                next = self.inbox.next() => match next {
                    Some(incoming) => incoming,
                    None => {
                        tracing::error!("the queue stopped delivering; stopping");
                        outcome = Err(QueueClosed);
                        break;
                    }
                },
            };
            // A dependency may have failed while we waited for this message: it waits too (and
            // at shutdown goes back unacknowledged, to be redelivered).
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = self.usable() => {}
            }
            // The HTTP request that published it (its `X-Request-Id`) and its trace, when the
            // headers are valid: anybody who can write to the topic writes them.
            let request_id = message.headers.get_str(REQUEST_ID_HEADER).filter(|id| valid_request_id(id));
            let traceparent = message.headers.get_str(TRACEPARENT_HEADER).filter(|tp| valid_traceparent(tp));
            let span = tracing::info_span!(
                "message",
                topic = %message.origin.topic,
                partition = message.origin.partition,
                offset = message.origin.offset,
                product_id = tracing::field::Empty,
                request_id,
                message_id = tracing::field::Empty,
                traceparent,
                otel.kind = "consumer",
            );
            traces::continue_trace(&span, message.headers.get_str(TRACEPARENT_HEADER));
            let (processor, shutdown) = (self.processor.clone(), shutdown.clone());
            tasks.spawn(
                async move {
                    let _gauge = InFlightGauge::new();
                    // A message that makes processing panic would otherwise hold its partition's
                    // offset back until the next rebalance, and panic again then.
                    let durable = match AssertUnwindSafe(processor.handle(&message, &shutdown)).catch_unwind().await {
                        Ok(durable) => durable,
                        Err(panic) => {
                            let what = panic_message(panic.as_ref());
                            tracing::error!(panic = %what, "processing the message panicked");
                            processor.give_up(&message, "panicked", &what, &shutdown).await
                        }
                    };
                    drop(permit);
                    if durable {
                        ack.done();
                    } else {
                        tracing::warn!("message left unfinished; it will be redelivered");
                    }
                }
                .instrument(span),
            );
        }

        let deadline = Instant::now() + self.drain_timeout;
        tracing::info!(in_flight = tasks.len(), "draining");
        let drained = tokio::time::timeout_at(deadline, async {
            while let Some(joined) = tasks.join_next().await {
                report_panic(joined);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                unfinished = tasks.len(),
                "drain timed out; giving up unfinished messages (they will be redelivered)"
            );
            tasks.abort_all();
        }
        let leave_by = deadline.max(Instant::now() + MIN_LEAVE_TIME);
        self.inbox.close(leave_by - Instant::now()).await;
        reporting.abort();
        if let Err(e) = self.processor.store.leave(&member).await {
            tracing::debug!(error = %e, "cannot withdraw this consumer's capacity; it lapses by itself");
        }
        let c = &self.processor.counters;
        tracing::info!(
            computed = c.computed.load(Ordering::Relaxed),
            expired = c.expired.load(Ordering::Relaxed),
            duplicates = c.duplicates.load(Ordering::Relaxed),
            dead_lettered = c.dead_lettered.load(Ordering::Relaxed),
            retries = c.retries.load(Ordering::Relaxed),
            "consumer stopped"
        );
        outcome
    }
}

/// The queue stopped delivering messages although nobody asked it to.
#[derive(Debug, thiserror::Error)]
#[error("the queue stopped delivering messages")]
pub struct QueueClosed;

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => (*text).to_owned(),
        (_, Some(text)) => text.clone(),
        _ => "a panic without a message".to_owned(),
    }
}

fn report_panic(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined
        && e.is_panic()
    {
        tracing::error!(error = %e, "processing a message panicked; it will be redelivered");
    }
}

/// `pricefront_messages_in_flight`, kept right however a task ends (finished or aborted).
struct InFlightGauge;

impl InFlightGauge {
    fn new() -> Self {
        metrics::gauge!("pricefront_messages_in_flight").increment(1.0);
        Self
    }
}

impl Drop for InFlightGauge {
    fn drop(&mut self) {
        metrics::gauge!("pricefront_messages_in_flight").decrement(1.0);
    }
}
