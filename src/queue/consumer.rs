//! The consumer-group client: at-least-once settings and rebalance handling.
//!
//! Offsets are stored by hand (`enable.auto.offset.store=false`) only when the
//! [`OffsetTracker`] says every message at or below them is done; librdkafka auto-commits
//! what is stored every second, and we commit synchronously on revoke and at shutdown.

use std::sync::{Arc, Mutex};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::offsets::OffsetTracker;
use super::{Error, base_config};
use crate::settings::KafkaSettings;

pub type GroupConsumer = StreamConsumer<GroupContext>;

/// Shared between the consume loop, the workers and the rebalance callbacks.
pub type SharedTracker = Arc<Mutex<OffsetTracker>>;

pub struct GroupContext {
    tracker: SharedTracker,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                // Commit what is safe before the partitions move. Work still in flight for
                // them finishes and writes its result; the new owner may see those
                // messages again and skips them as duplicates.
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) => {}
                    Err(e) => tracing::debug!(error = %e, "nothing committed on revoke"),
                }
                let mut tracker = self.tracker.lock().expect("tracker lock");
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                partitions.iter().for_each(|&p| tracker.forget(p));
                tracing::info!(partitions = ?partitions, in_flight = tracker.in_flight(), "partitions revoked");
            }
            Rebalance::Assign(tpl) => {
                let mut tracker = self.tracker.lock().expect("tracker lock");
                tpl.elements().iter().for_each(|e| tracker.forget(e.partition()));
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(partitions = ?partitions, assigned = partitions.len(), "partitions assigned");
        }
    }
}

/// Builds a group member subscribed to `kafka.topic`.
pub fn subscribe(settings: &KafkaSettings, tracker: SharedTracker) -> Result<GroupConsumer, Error> {
    let consumer: GroupConsumer = base_config(settings)
        .set("group.id", &settings.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        // A new group must not skip requests published before it first joined.
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", settings.session_timeout.as_millis().to_string())
        .set("heartbeat.interval.ms", (settings.session_timeout.as_millis() / 4).max(100).to_string())
        .create_with_context(GroupContext { tracker })?;
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
