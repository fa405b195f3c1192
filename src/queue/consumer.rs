//! The Kafka consumer-group member, on a thread of its own.
//!
//! Every call into rdkafka's consumer runs on one dedicated OS thread: polling, the
//! rebalance callbacks (which drain and commit synchronously), the final commit and the
//! group leave. So no runtime thread ever blocks on the broker, whatever the runtime's
//! flavour. Messages reach workers through a bounded channel as [`Incoming`]s, each with its
//! [`Ack`](super::Ack).
//!
//! At least once: offsets are stored by hand (`enable.auto.offset.store=false`), only for
//! positions the tracker releases (every message below them acknowledged done), and
//! librdkafka auto-commits what is stored every second. On revoke nothing new begins on the
//! revoked partitions, running work is drained (bounded by `consumer.drain_timeout_ms`), and
//! its positions are stored and committed before the partitions move; the rest is left for
//! the next owner. While workers take nothing (all busy, or Redis failing) the channel fills
//! (it holds [`HAND_OFF_PER_IN_FLIGHT`] messages per message in flight) and the assigned
//! partitions are paused until it is half empty, but polling goes on, so the group session
//! and rebalances are still served.
//!
//! Closing is bounded ([`KafkaInbox::close`]): the thread stores what finished, commits and
//! leaves the group; if the broker does not answer in time the process goes on without it
//! (the group expires the member later). Acknowledgements after the close move nothing, so
//! work given up at shutdown is redelivered.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Headers as _};
use rdkafka::{ClientContext, Message as _, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use super::ack::InFlight;
use super::config::{client_config, creation_error};
use super::message::{Headers, Incoming, Message, Origin};
use super::{Error, Inbox};
use crate::settings::KafkaRole;
use crate::settings::KafkaSettings;

/// Fetched messages that may wait for a worker, per message the worker runs at once
/// (`consumer.max_in_flight`). When they fill the hand-off, the partitions are paused; they are
/// resumed once it is half empty. Pausing makes librdkafka drop what it had fetched ahead, and
/// a resumed partition fetches again only after a pause of its own (about a second, measured
/// against tansu): the half left must last longer than that, or the workers starve. At 64
/// per message in flight and 50-ms sources, it lasts 1.6 s at the in-flight bound.
const HAND_OFF_PER_IN_FLIGHT: usize = 64;
/// Longest a poll waits for a message; also how soon the thread notices a close.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// Poll wait while messages wait for room in the channel: how soon room is noticed.
const BACKLOG_POLL_WAIT: Duration = Duration::from_millis(5);

/// The partitions this member holds now, kept by the rebalance callbacks: the consumer's
/// readiness (`/readyz`). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Assigned(Arc<std::sync::Mutex<std::collections::BTreeSet<i32>>>);

impl Assigned {
    /// The partitions held, in order.
    pub fn partitions(&self) -> Vec<i32> {
        self.lock().iter().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<i32>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// State shared by the inbox, its thread and the rebalance callbacks.
struct Shared {
    in_flight: Arc<InFlight>,
    assigned: Assigned,
    closing: AtomicBool,
    /// Set by each assignment, so the poll loop re-applies a pause to the new partitions.
    reassigned: AtomicBool,
    topic: String,
    kind: Subscription,
    drain_timeout: Duration,
}

/// What a group member reads: the requests, or the refreshes (served first; see
/// [`super::Prioritized`]). Each has gauges of its own, so the request topic's keep their
/// meaning (readiness, the dashboards).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscription {
    Requests,
    Refreshes,
}

impl Subscription {
    fn assigned_gauge(self) -> &'static str {
        match self {
            Subscription::Requests => "pricefront_partition_assigned",
            Subscription::Refreshes => "pricefront_refresh_partition_assigned",
        }
    }

    fn lag_gauge(self) -> &'static str {
        match self {
            Subscription::Requests => "pricefront_consumer_lag",
            Subscription::Refreshes => "pricefront_refresh_consumer_lag",
        }
    }
}

struct GroupContext {
    shared: Arc<Shared>,
}

impl ClientContext for GroupContext {
    /// Publishes per-partition lag from librdkafka's statistics. The figure is the partition's
    /// high watermark minus our position, so it is only as right as the broker's watermarks.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.shared.topic) else { return };
        for (partition, stats) in &topic.partitions {
            if *partition >= 0 && stats.consumer_lag >= 0 {
                metrics::gauge!(self.shared.kind.lag_gauge(), "partition" => partition.to_string())
                    .set(stats.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let shared = &self.shared;
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let partitions = partitions_of(tpl, &shared.topic);
                // At close (the consumer's drop) the worker has drained and the final commit is
                // done: only the leave is left.
                let closing = shared.closing.load(Ordering::Acquire);
                let unfinished = if closing { 0 } else { shared.in_flight.drain(&partitions, shared.drain_timeout) };
                store_positions(consumer, &shared.topic, &shared.in_flight.take_positions(Some(&partitions)));
                if !closing && let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                    tracing::debug!(error = %e, "nothing committed on revoke");
                }
                shared.in_flight.forget(&partitions);
                let mut assigned = shared.assigned.lock();
                partitions.iter().for_each(|p| {
                    assigned.remove(p);
                });
                drop(assigned);
                // librdkafka keeps a partition paused across unassign and assign: resume it now,
                // so that whoever gets it next (this member again, maybe) fetches it.
                if let Err(e) = consumer.resume(tpl) {
                    tracing::warn!(error = %e, "cannot resume revoked partitions");
                }
                for p in &partitions {
                    metrics::gauge!(shared.kind.assigned_gauge(), "partition" => p.to_string()).set(0.0);
                    metrics::gauge!(shared.kind.lag_gauge(), "partition" => p.to_string()).set(0.0);
                }
                tracing::info!(partitions = ?partitions, unfinished, "partitions revoked");
            }
            // Whatever was known of these partitions is from an earlier assignment.
            Rebalance::Assign(tpl) => shared.in_flight.forget(&partitions_of(tpl, &shared.topic)),
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let partitions = partitions_of(tpl, &self.shared.topic);
            for p in &partitions {
                metrics::gauge!(self.shared.kind.assigned_gauge(), "partition" => p.to_string()).set(1.0);
            }
            self.shared.assigned.lock().extend(&partitions);
            self.shared.reassigned.store(true, Ordering::Release);
            tracing::info!(partitions = ?partitions, assigned = partitions.len(), "partitions assigned");
        }
    }
}

fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    tpl.elements().iter().filter(|e| e.topic() == topic).map(|e| e.partition()).collect()
}

/// Stores positions (next offsets to consume) for auto-commit.
fn store_positions(consumer: &BaseConsumer<GroupContext>, topic: &str, positions: &[(i32, i64)]) {
    if positions.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for &(partition, position) in positions {
        if let Err(e) = tpl.add_partition_offset(topic, partition, Offset::Offset(position)) {
            tracing::warn!(error = %e, partition, position, "cannot build offset list");
        }
    }
    // Positions are taken and stored on the consumer's thread, before any revoke of theirs
    // completes, so this is not expected to fail; if it does, the work is redone, not lost.
    if let Err(e) = consumer.store_offsets(&tpl) {
        tracing::debug!(error = %e, ?positions, "offsets not stored");
    }
}

/// The group member's end of the channel. See the module doc.
pub struct KafkaInbox {
    messages: mpsc::Receiver<Incoming>,
    shared: Arc<Shared>,
    stopped: Option<oneshot::Receiver<()>>,
}

/// Joins `kafka.group_id` subscribed to `kafka.topic`, or for the refreshes the refresh group
/// subscribed to the refresh topic (the join completes on the thread's first polls).
pub fn subscribe(
    settings: &KafkaSettings,
    kind: Subscription,
    drain_timeout: Duration,
    max_in_flight: usize,
) -> Result<KafkaInbox, Error> {
    let (topic, group) = match kind {
        Subscription::Requests => (settings.topic.clone(), settings.group_id.clone()),
        Subscription::Refreshes => (settings.refresh_topic(), settings.refresh_group()),
    };
    let shared = Arc::new(Shared {
        in_flight: Arc::default(),
        assigned: Assigned::default(),
        closing: AtomicBool::new(false),
        reassigned: AtomicBool::new(false),
        topic: topic.clone(),
        kind,
        drain_timeout,
    });
    let ours = [
        ("group.id", group),
        ("enable.auto.commit", "true".into()),
        ("auto.commit.interval.ms", "1000".into()),
        ("enable.auto.offset.store", "false".into()),
        // A new group must not skip requests published before it first joined.
        ("auto.offset.reset", "earliest".into()),
        ("session.timeout.ms", settings.session_timeout.as_millis().to_string()),
        ("heartbeat.interval.ms", (settings.session_timeout.as_millis() / 4).max(100).to_string()),
        ("statistics.interval.ms", "5000".into()),
        // A fetch returns after this even with nothing new: the broker's share of a miss's time
        // to result (tansu holds every fetch this long; 500 ms by default added p99 260 ms).
        // Costs more fetch requests to the broker. Overridable in [kafka.consumer_options].
        ("fetch.wait.max.ms", "10".into()),
    ];
    let consumer: BaseConsumer<GroupContext> = client_config(settings, KafkaRole::Consumer, &ours)?
        .create_with_context(GroupContext { shared: shared.clone() })
        .map_err(|e| creation_error(e, KafkaRole::Consumer))?;
    consumer.subscribe(&[&topic])?;
    let (sender, messages) = mpsc::channel(max_in_flight.max(1) * HAND_OFF_PER_IN_FLIGHT);
    let (stopped_tx, stopped) = oneshot::channel();
    std::thread::Builder::new()
        .name("kafka-consumer".into())
        .spawn(move || {
            poll_loop(&consumer, &sender);
            finish(consumer);
            let _ = stopped_tx.send(());
        })
        .map_err(Error::Thread)?;
    Ok(KafkaInbox { messages, shared, stopped: Some(stopped) })
}

/// Polls until the inbox closes, handing messages to the channel. The assigned partitions are
/// paused once the channel is full, and resumed once it is half empty (see
/// [`HAND_OFF_PER_IN_FLIGHT`]): a pause costs a refetch, so they are kept rare.
fn poll_loop(consumer: &BaseConsumer<GroupContext>, sender: &mpsc::Sender<Incoming>) {
    let shared = &consumer.context().shared;
    let mut waiting: VecDeque<Incoming> = VecDeque::new();
    let mut paused = false;
    while !shared.closing.load(Ordering::Acquire) {
        while let Some(incoming) = waiting.pop_front() {
            match sender.try_send(incoming) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(incoming)) => {
                    waiting.push_front(incoming);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
        let backlog = !waiting.is_empty();
        let pause = backlog || (paused && sender.capacity() < sender.max_capacity() / 2);
        // A new assignment comes unpaused (revoked partitions are resumed): apply the pause
        // state to it whatever it is.
        let reassigned = shared.reassigned.swap(false, Ordering::AcqRel);
        if (pause != paused || reassigned) && set_paused(consumer, pause) {
            paused = pause;
        }
        store_positions(consumer, &shared.topic, &shared.in_flight.take_positions(None));
        match consumer.poll(if backlog { BACKLOG_POLL_WAIT } else { POLL_WAIT }) {
            Some(Ok(message)) => {
                let ack = shared.in_flight.fetched(message.partition(), message.offset());
                waiting.push_back(Incoming { message: convert(&message), ack });
            }
            Some(Err(e)) => tracing::warn!(error = %e, "consume error"),
            None => {}
        }
    }
}

/// Pauses or resumes the whole assignment; false if that failed (it is tried again).
fn set_paused(consumer: &BaseConsumer<GroupContext>, pause: bool) -> bool {
    let outcome = consumer
        .assignment()
        .and_then(|assignment| if pause { consumer.pause(&assignment) } else { consumer.resume(&assignment) });
    match outcome {
        Ok(()) => {
            tracing::debug!(paused = pause, "partitions paused or resumed");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, pause, "cannot pause or resume partitions");
            false
        }
    }
}

/// The final commit of what finished, then the group leave (in the consumer's drop).
fn finish(consumer: BaseConsumer<GroupContext>) {
    let shared = consumer.context().shared.clone();
    store_positions(&consumer, &shared.topic, &shared.in_flight.take_positions(None));
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::info!("offsets committed"),
        Err(e) => tracing::info!(error = %e, "nothing committed"),
    }
    drop(consumer);
    tracing::info!("left the consumer group");
}

fn convert(m: &BorrowedMessage<'_>) -> Message {
    let mut headers = Headers::new();
    if let Some(hs) = m.headers() {
        for h in hs.iter() {
            headers = headers.with(h.key, h.value.unwrap_or_default());
        }
    }
    Message {
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        headers,
        origin: Origin { topic: m.topic().to_owned(), partition: m.partition(), offset: m.offset() },
    }
}

impl KafkaInbox {
    /// The partitions this member holds, as the rebalances go.
    pub fn assigned(&self) -> Assigned {
        self.shared.assigned.clone()
    }
}

impl Inbox for KafkaInbox {
    fn next(&mut self) -> BoxFuture<'_, Option<Incoming>> {
        Box::pin(async move {
            loop {
                let incoming = self.messages.recv().await?;
                // Skipped if its partition was revoked while it waited: the next owner has it.
                if incoming.ack.begin() {
                    return Some(incoming);
                }
            }
        })
    }

    fn close(&mut self, within: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Stopping: no longer ready, though the partitions are held until the leave.
            self.shared.assigned.lock().clear();
            self.shared.in_flight.close();
            self.shared.closing.store(true, Ordering::Release);
            self.messages.close();
            let Some(stopped) = self.stopped.take() else { return };
            if tokio::time::timeout(within, stopped).await.is_err() {
                tracing::warn!(
                    "the broker did not take the final commit and group leave in time; stopping without them \
                     (the group expires this member; unfinished work is redelivered)"
                );
            }
        })
    }
}

impl Drop for KafkaInbox {
    fn drop(&mut self) {
        self.shared.in_flight.close();
        self.shared.closing.store(true, Ordering::Release);
    }
}
