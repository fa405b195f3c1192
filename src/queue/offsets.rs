//! Which offsets of each partition are still being processed, and so how far the consumer
//! may safely commit.
//!
//! Invariant: the position returned for a partition (the next offset to consume, as Kafka
//! commits it) never passes an offset that started and has not finished. Messages finish
//! out of order under concurrency; the position only moves when the lowest one does.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default)]
struct Partition {
    /// Offset → still running (false: abandoned unfinished, e.g. at shutdown).
    in_flight: BTreeMap<i64, bool>,
    /// One past the highest offset started.
    next: i64,
    /// The last position handed out for storing.
    stored: Option<i64>,
}

impl Partition {
    fn position(&self) -> i64 {
        self.in_flight.keys().next().copied().unwrap_or(self.next)
    }
}

/// Per-partition offset bookkeeping for one consumer.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<i32, Partition>,
}

impl OffsetTracker {
    /// Records that `offset` was handed to a worker.
    pub fn start(&mut self, partition: i32, offset: i64) {
        // The first offset seen is where consumption resumed: already the stored position.
        let p = self
            .partitions
            .entry(partition)
            .or_insert_with(|| Partition { stored: Some(offset), ..Default::default() });
        p.in_flight.insert(offset, true);
        p.next = p.next.max(offset + 1);
    }

    /// Records that `offset` is fully processed. Returns the new position to store for the
    /// partition if it moved forward. Offsets of partitions since forgotten are ignored.
    pub fn finish(&mut self, partition: i32, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(&partition)?;
        p.in_flight.remove(&offset)?;
        let position = p.position();
        if p.stored.is_some_and(|s| s >= position) {
            return None;
        }
        p.stored = Some(position);
        Some(position)
    }

    /// Records that `offset` stopped without finishing: it no longer runs, and the position
    /// never passes it (it will be redelivered).
    pub fn abandon(&mut self, partition: i32, offset: i64) {
        if let Some(running) = self.partitions.get_mut(&partition).and_then(|p| p.in_flight.get_mut(&offset)) {
            *running = false;
        }
    }

    /// Messages of `partitions` still being worked on.
    pub fn running(&self, partitions: &[i32]) -> usize {
        partitions
            .iter()
            .filter_map(|p| self.partitions.get(p))
            .map(|p| p.in_flight.values().filter(|&&running| running).count())
            .sum()
    }

    /// Forgets a partition (revoked, or assigned afresh).
    pub fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// Messages started and not finished, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|p| p.in_flight.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_completion_advances_one_by_one() {
        let mut t = OffsetTracker::default();
        t.start(0, 10);
        t.start(0, 11);
        assert_eq!(t.finish(0, 10), Some(11));
        assert_eq!(t.finish(0, 11), Some(12));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn out_of_order_completion_waits_for_the_lowest() {
        let mut t = OffsetTracker::default();
        for o in 5..=8 {
            t.start(0, o);
        }
        assert_eq!(t.finish(0, 7), None, "5 is still running");
        assert_eq!(t.finish(0, 6), None);
        assert_eq!(t.finish(0, 5), Some(8), "8 is still running");
        assert_eq!(t.finish(0, 8), Some(9));
    }

    #[test]
    fn abandoned_offsets_stop_running_but_block_the_position() {
        let mut t = OffsetTracker::default();
        t.start(0, 1);
        t.start(0, 2);
        t.abandon(0, 1);
        assert_eq!(t.running(&[0]), 1);
        assert_eq!(t.finish(0, 2), None, "1 was never finished");
        assert_eq!(t.running(&[0]), 0);
        assert_eq!(t.in_flight(), 1);
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = OffsetTracker::default();
        t.start(0, 1);
        t.start(1, 100);
        assert_eq!(t.finish(1, 100), Some(101));
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.finish(0, 1), Some(2));
    }

    #[test]
    fn forgotten_partitions_and_unknown_offsets_are_ignored() {
        let mut t = OffsetTracker::default();
        t.start(2, 1);
        t.forget(2);
        assert_eq!(t.finish(2, 1), None);
        t.start(2, 40);
        assert_eq!(t.finish(2, 39), None);
        assert_eq!(t.finish(2, 40), Some(41));
    }

    #[test]
    fn unfinished_offset_is_never_passed_whatever_the_order() {
        // Every permutation of 6 completions: the stored position is always the lowest unfinished.
        let offsets: Vec<i64> = (0..6).collect();
        let mut perm = offsets.clone();
        let mut count = 0;
        permute(&mut perm, 0, &mut |order| {
            count += 1;
            let mut t = OffsetTracker::default();
            offsets.iter().for_each(|&o| t.start(0, o));
            let mut done = std::collections::BTreeSet::new();
            for &o in order {
                done.insert(o);
                if let Some(pos) = t.finish(0, o) {
                    assert!((0..pos).all(|x| done.contains(&x)), "{order:?}: stored {pos} with {done:?}");
                }
            }
            assert_eq!(t.partitions[&0].stored, Some(6));
        });
        assert_eq!(count, 720);
    }

    fn permute(v: &mut Vec<i64>, k: usize, f: &mut impl FnMut(&[i64])) {
        if k == v.len() {
            return f(v);
        }
        for i in k..v.len() {
            v.swap(k, i);
            permute(v, k + 1, f);
            v.swap(k, i);
        }
    }
}
