//! Which messages of each partition are still owed work, and so how far the consumer may
//! safely commit. Pure bookkeeping, no I/O: [`super::ack`] wraps it for threads.
//!
//! A message is `Queued` from the moment it is fetched until a worker begins it, `Running`
//! while processed, and removed when finished. `Abandoned` ones (a worker gave up at
//! shutdown) no longer run but still hold the position back, so the partition's next owner
//! gets them again.
//!
//! Invariants:
//! - the position of a partition (the next offset to consume, as Kafka commits it) never
//!   passes an offset that was fetched and not finished;
//! - each assignment of a partition has its own generation; acknowledgements from an earlier
//!   one (a message that outlived a revoke) change nothing;
//! - once [`OffsetTracker::close`]d, nothing changes any more: work given up at shutdown never
//!   moves a position.

use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Queued,
    Running,
    Abandoned,
}

#[derive(Debug)]
struct Partition {
    generation: u64,
    messages: BTreeMap<i64, State>,
    /// One past the highest offset fetched.
    next: i64,
    /// The last position handed out for storing.
    stored: i64,
    /// A position that moved past `stored` and is not handed out yet.
    unstored: Option<i64>,
    /// Being revoked: nothing new may begin.
    draining: bool,
}

impl Partition {
    fn position(&self) -> i64 {
        self.messages.keys().next().copied().unwrap_or(self.next)
    }
}

/// Names one fetched message of one assignment of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub partition: i32,
    pub offset: i64,
    generation: u64,
}

/// Per-partition offset bookkeeping for one consumer.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<i32, Partition>,
    generations: u64,
    closed: bool,
}

impl OffsetTracker {
    /// Records a fetched message; it waits for a worker.
    pub fn fetched(&mut self, partition: i32, offset: i64) -> Ticket {
        let generations = &mut self.generations;
        let p = self.partitions.entry(partition).or_insert_with(|| {
            *generations += 1;
            // The first offset fetched is where consumption resumed: already the committed position.
            Partition {
                generation: *generations,
                messages: BTreeMap::new(),
                next: offset,
                stored: offset,
                unstored: None,
                draining: false,
            }
        });
        p.messages.insert(offset, State::Queued);
        p.next = p.next.max(offset + 1);
        Ticket { partition, offset, generation: p.generation }
    }

    fn current(&mut self, ticket: Ticket) -> Option<&mut Partition> {
        if self.closed {
            return None;
        }
        self.partitions.get_mut(&ticket.partition).filter(|p| p.generation == ticket.generation)
    }

    /// A worker begins the message. False if it must not: its partition was revoked or is
    /// being revoked, or the tracker is closed.
    pub fn begin(&mut self, ticket: Ticket) -> bool {
        match self.current(ticket) {
            Some(p) if !p.draining => match p.messages.get_mut(&ticket.offset) {
                Some(state @ State::Queued) => {
                    *state = State::Running;
                    true
                }
                _ => false,
            },
            _ => false,
        }
    }

    /// The message is fully processed. Returns the partition's new position if it moved.
    pub fn finish(&mut self, ticket: Ticket) -> Option<i64> {
        let p = self.current(ticket)?;
        p.messages.remove(&ticket.offset)?;
        let position = p.position();
        if position <= p.unstored.unwrap_or(p.stored) {
            return None;
        }
        p.unstored = Some(position);
        Some(position)
    }

    /// The message stopped without finishing: it no longer runs, and the position never
    /// passes it (it is redelivered).
    pub fn abandon(&mut self, ticket: Ticket) {
        if let Some(state) = self.current(ticket).and_then(|p| p.messages.get_mut(&ticket.offset)) {
            *state = State::Abandoned;
        }
    }

    /// Positions that moved since the last call, to store with the broker's client.
    pub fn take_positions(&mut self, only: Option<&[i32]>) -> Vec<(i32, i64)> {
        let mut positions = Vec::new();
        for (&partition, p) in &mut self.partitions {
            if only.is_some_and(|only| !only.contains(&partition)) {
                continue;
            }
            if let Some(position) = p.unstored.take() {
                p.stored = position;
                positions.push((partition, position));
            }
        }
        positions
    }

    /// Stops new work on `partitions` (they are being revoked); running work may finish.
    pub fn drain(&mut self, partitions: &[i32]) {
        for (_, p) in self.partitions.iter_mut().filter(|(id, _)| partitions.contains(id)) {
            p.draining = true;
        }
    }

    /// Messages of `partitions` being processed now.
    pub fn running(&self, partitions: &[i32]) -> usize {
        partitions
            .iter()
            .filter_map(|p| self.partitions.get(p))
            .map(|p| p.messages.values().filter(|&&s| s == State::Running).count())
            .sum()
    }

    /// Forgets a partition (revoked, or assigned afresh); its outstanding tickets go stale.
    pub fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// Nothing changes from now on (shutdown).
    pub fn close(&mut self) {
        self.closed = true;
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Messages fetched and not finished, over all partitions.
    #[cfg(test)]
    pub fn outstanding(&self) -> usize {
        self.partitions.values().map(|p| p.messages.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(t: &mut OffsetTracker, partition: i32, offset: i64) -> Ticket {
        let ticket = t.fetched(partition, offset);
        assert!(t.begin(ticket));
        ticket
    }

    #[test]
    fn in_order_completion_advances_one_by_one() {
        let mut t = OffsetTracker::default();
        let (a, b) = (started(&mut t, 0, 10), started(&mut t, 0, 11));
        assert_eq!(t.finish(a), Some(11));
        assert_eq!(t.finish(b), Some(12));
        assert_eq!(t.take_positions(None), [(0, 12)]);
        assert_eq!(t.take_positions(None), [], "handed out once");
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn out_of_order_completion_waits_for_the_lowest() {
        let mut t = OffsetTracker::default();
        let tickets: Vec<Ticket> = (5..=8).map(|o| started(&mut t, 0, o)).collect();
        assert_eq!(t.finish(tickets[2]), None, "5 is still running");
        assert_eq!(t.finish(tickets[1]), None);
        assert_eq!(t.finish(tickets[0]), Some(8), "8 is still running");
        assert_eq!(t.finish(tickets[3]), Some(9));
    }

    #[test]
    fn queued_messages_hold_the_position_and_do_not_count_as_running() {
        let mut t = OffsetTracker::default();
        let queued = t.fetched(0, 1);
        let running = started(&mut t, 0, 2);
        assert_eq!(t.running(&[0]), 1);
        assert_eq!(t.finish(running), None, "1 was fetched and never finished");
        assert!(t.begin(queued));
        assert_eq!(t.finish(queued), Some(3));
    }

    #[test]
    fn abandoned_offsets_stop_running_but_block_the_position() {
        let mut t = OffsetTracker::default();
        let (a, b) = (started(&mut t, 0, 1), started(&mut t, 0, 2));
        t.abandon(a);
        assert_eq!(t.running(&[0]), 1);
        assert_eq!(t.finish(b), None, "1 was never finished");
        assert_eq!(t.running(&[0]), 0);
        assert_eq!(t.outstanding(), 1);
    }

    #[test]
    fn partitions_are_independent_and_positions_can_be_taken_per_partition() {
        let mut t = OffsetTracker::default();
        let (a, b) = (started(&mut t, 0, 1), started(&mut t, 1, 100));
        assert_eq!(t.finish(b), Some(101));
        assert_eq!(t.finish(a), Some(2));
        assert_eq!(t.take_positions(Some(&[1])), [(1, 101)]);
        assert_eq!(t.take_positions(None), [(0, 2)]);
    }

    #[test]
    fn a_draining_partition_begins_nothing_new() {
        let mut t = OffsetTracker::default();
        let running = started(&mut t, 0, 1);
        let queued = t.fetched(0, 2);
        t.drain(&[0]);
        assert!(!t.begin(queued));
        assert_eq!(t.running(&[0]), 1);
        assert_eq!(t.finish(running), Some(2), "running work still finishes and stores");
    }

    #[test]
    fn tickets_of_a_forgotten_assignment_change_nothing() {
        let mut t = OffsetTracker::default();
        let old = started(&mut t, 2, 40);
        t.forget(2);
        let new = t.fetched(2, 40);
        assert_eq!(t.finish(old), None, "the old assignment's ticket");
        assert!(t.begin(new));
        assert_eq!(t.finish(new), Some(41));
    }

    #[test]
    fn a_closed_tracker_moves_nothing() {
        let mut t = OffsetTracker::default();
        let (a, b) = (started(&mut t, 0, 1), started(&mut t, 0, 2));
        assert_eq!(t.finish(a), Some(2));
        t.close();
        assert_eq!(t.finish(b), None, "work given up at shutdown stores nothing");
        assert_eq!(t.take_positions(None), [(0, 2)], "what finished before still does");
    }

    #[test]
    fn unfinished_offset_is_never_passed_whatever_the_order() {
        // Every permutation of 6 completions: the position is always the lowest unfinished.
        let offsets: Vec<i64> = (0..6).collect();
        let mut perm = offsets.clone();
        let mut count = 0;
        permute(&mut perm, 0, &mut |order| {
            count += 1;
            let mut t = OffsetTracker::default();
            let tickets: Vec<Ticket> = offsets.iter().map(|&o| started(&mut t, 0, o)).collect();
            let mut done = std::collections::BTreeSet::new();
            for &o in order {
                done.insert(o);
                if let Some(pos) = t.finish(tickets[o as usize]) {
                    assert!((0..pos).all(|x| done.contains(&x)), "{order:?}: stored {pos} with {done:?}");
                }
            }
            assert_eq!(t.take_positions(None), [(0, 6)]);
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
