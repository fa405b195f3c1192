//! The consumer-group client: at-least-once settings and rebalance handling.
//!
//! Offsets are stored by hand (`enable.auto.offset.store=false`) only when the
//! [`OffsetTracker`] says every message at or below them is done; librdkafka auto-commits
//! what is stored every second. On revoke, in-flight work of the revoked partitions is
//! drained (bounded by `consumer.drain_timeout_ms`), its offsets stored, and committed
//! before the partitions move; work still unfinished then is left for the next owner, and
//! nothing is ever stored for a partition we no longer own.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::runtime::{Handle, RuntimeFlavor};

use super::offsets::OffsetTracker;
use super::{Error, base_config};
use crate::settings::KafkaSettings;

pub type GroupConsumer = StreamConsumer<GroupContext>;

/// The offset tracker, shared by the consume loop, the workers and the rebalance callbacks,
/// with a condition variable signalled whenever a message stops running.
#[derive(Debug, Default)]
pub struct InFlight {
    tracker: Mutex<OffsetTracker>,
    changed: Condvar,
}

impl InFlight {
    pub fn lock(&self) -> MutexGuard<'_, OffsetTracker> {
        self.tracker.lock().expect("tracker lock")
    }

    /// Call after `finish` or `abandon`.
    pub fn notify(&self) {
        self.changed.notify_all();
    }

    /// Blocks until no message of `partitions` runs, or `timeout` passes. Returns how many still run.
    fn wait_idle(&self, partitions: &[i32], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut tracker = self.lock();
        loop {
            let running = tracker.running(partitions);
            let left = deadline.saturating_duration_since(Instant::now());
            if running == 0 || left.is_zero() {
                return running;
            }
            tracker = self.changed.wait_timeout(tracker, left).expect("tracker lock").0;
        }
    }
}

pub struct GroupContext {
    in_flight: Arc<InFlight>,
    topic: String,
    drain_timeout: Duration,
}

impl ClientContext for GroupContext {
    /// Publishes per-partition lag from librdkafka's statistics. The figure is the partition's
    /// high watermark minus our position, so it is only as right as the broker's watermarks.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else { return };
        for (partition, stats) in &topic.partitions {
            if *partition >= 0 && stats.consumer_lag >= 0 {
                metrics::gauge!("pricefront_consumer_lag", "partition" => partition.to_string())
                    .set(stats.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let partitions = partitions_of(tpl, &self.topic);
                let unfinished = self.drain(&partitions);
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                    tracing::debug!(error = %e, "nothing committed on revoke");
                }
                let mut tracker = self.in_flight.lock();
                partitions.iter().for_each(|&p| tracker.forget(p));
                tracing::info!(partitions = ?partitions, unfinished, "partitions revoked");
            }
            Rebalance::Assign(tpl) => {
                let mut tracker = self.in_flight.lock();
                partitions_of(tpl, &self.topic).iter().for_each(|&p| tracker.forget(p));
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let partitions = partitions_of(tpl, &self.topic);
            tracing::info!(partitions = ?partitions, assigned = partitions.len(), "partitions assigned");
        }
    }
}

impl GroupContext {
    /// Lets in-flight work of revoked partitions finish (and store its offsets) before they move.
    fn drain(&self, partitions: &[i32]) -> usize {
        // This callback runs on the runtime thread polling the consumer; waiting here is only
        // safe where other threads keep the workers running.
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| self.in_flight.wait_idle(partitions, self.drain_timeout))
            }
            _ => self.in_flight.lock().running(partitions),
        }
    }
}

fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    tpl.elements().iter().filter(|e| e.topic() == topic).map(|e| e.partition()).collect()
}

/// Builds a group member subscribed to `kafka.topic`.
pub fn subscribe(
    settings: &KafkaSettings,
    in_flight: Arc<InFlight>,
    drain_timeout: Duration,
) -> Result<GroupConsumer, Error> {
    let context = GroupContext { in_flight, topic: settings.topic.clone(), drain_timeout };
    let consumer: GroupConsumer = base_config(settings)
        .set("group.id", &settings.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        // A new group must not skip requests published before it first joined.
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", settings.session_timeout.as_millis().to_string())
        .set("heartbeat.interval.ms", (settings.session_timeout.as_millis() / 4).max(100).to_string())
        .set("statistics.interval.ms", "5000")
        .create_with_context(context)?;
    consumer.subscribe(&[&settings.topic])?;
    Ok(consumer)
}

/// Stores `position` (the next offset to consume) for `partition`.
pub fn store_position(consumer: &GroupConsumer, topic: &str, partition: i32, position: i64) {
    let mut tpl = TopicPartitionList::new();
    if let Err(e) = tpl.add_partition_offset(topic, partition, Offset::Offset(position)) {
        tracing::warn!(error = %e, partition, position, "cannot build offset list");
        return;
    }
    // Fails only if the partition was revoked meanwhile: its new owner resumes from the
    // last commit and skips what we finished as duplicates.
    if let Err(e) = consumer.store_offsets(&tpl) {
        tracing::debug!(error = %e, partition, position, "offset not stored");
    }
}
