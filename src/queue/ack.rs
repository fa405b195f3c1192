//! Acknowledgement: every message a queue hands out comes with an [`Ack`]. Completing it
//! ([`Ack::done`]) says the message's outcome is durable, so its offset may be committed;
//! dropping it unfinished holds the offset back, so the message is redelivered. Workers
//! know nothing about offsets.
//!
//! [`InFlight`] is the shared side: the [`OffsetTracker`] behind a mutex, with a condition
//! variable the Kafka client's thread waits on while a revoke drains.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::offsets::{OffsetTracker, Ticket};

#[derive(Debug, Default)]
pub(crate) struct InFlight {
    tracker: Mutex<OffsetTracker>,
    /// Signalled whenever a message stops running.
    changed: Condvar,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, OffsetTracker> {
        // The tracker is plain bookkeeping; a panic elsewhere cannot leave it half-updated.
        self.tracker.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a fetched message and returns its acknowledgement.
    pub fn fetched(self: &Arc<Self>, partition: i32, offset: i64) -> Ack {
        let ticket = self.lock().fetched(partition, offset);
        Ack { inner: Some((self.clone(), ticket)) }
    }

    /// Stops new work on `partitions` and blocks until none of theirs runs, `timeout`
    /// passes, or the tracker is closed (shutdown gave the work up). Returns how many still run.
    pub fn drain(&self, partitions: &[i32], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut tracker = self.lock();
        tracker.drain(partitions);
        loop {
            let running = tracker.running(partitions);
            let left = deadline.saturating_duration_since(Instant::now());
            if running == 0 || left.is_zero() || tracker.is_closed() {
                return running;
            }
            tracker = self.changed.wait_timeout(tracker, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Positions that moved since the last call (of `only`, if given).
    pub fn take_positions(&self, only: Option<&[i32]>) -> Vec<(i32, i64)> {
        self.lock().take_positions(only)
    }

    pub fn forget(&self, partitions: &[i32]) {
        let mut tracker = self.lock();
        partitions.iter().for_each(|&p| tracker.forget(p));
    }

    /// From now on no acknowledgement moves a position (shutdown gave the work up), and a
    /// drain waiting for that work stops waiting.
    pub fn close(&self) {
        self.lock().close();
        self.changed.notify_all();
    }
}

/// The acknowledgement of one message. See the module doc.
#[must_use = "complete it with done() once the outcome is durable; dropping it means unfinished"]
#[derive(Debug)]
pub struct Ack {
    inner: Option<(Arc<InFlight>, Ticket)>,
}

impl Ack {
    /// For queues with nothing to commit (the in-memory one).
    pub(crate) fn none() -> Self {
        Self { inner: None }
    }

    /// A worker takes the message. False if it must be skipped: its partition was revoked
    /// meanwhile (the next owner gets it) or the queue is closing.
    pub(crate) fn begin(&self) -> bool {
        self.inner.as_ref().is_none_or(|(in_flight, ticket)| in_flight.lock().begin(*ticket))
    }

    /// The outcome is durable: the offset may move past this message.
    pub fn done(mut self) {
        if let Some((in_flight, ticket)) = self.inner.take() {
            in_flight.lock().finish(ticket);
            in_flight.changed.notify_all();
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some((in_flight, ticket)) = self.inner.take() {
            in_flight.lock().abandon(ticket);
            in_flight.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_moves_the_position_and_drop_holds_it_back() {
        let in_flight = Arc::new(InFlight::default());
        let (first, second) = (in_flight.fetched(0, 7), in_flight.fetched(0, 8));
        assert!(first.begin() && second.begin());
        second.done();
        drop(first);
        assert_eq!(in_flight.take_positions(None), [], "7 was dropped unfinished");
        let again = in_flight.fetched(0, 9);
        assert!(again.begin());
        again.done();
        assert_eq!(in_flight.take_positions(None), [], "still held back by 7");
    }

    #[test]
    fn drain_waits_for_running_work_and_wakes_when_it_finishes() {
        let in_flight = Arc::new(InFlight::default());
        let running = in_flight.fetched(3, 1);
        assert!(running.begin());
        let queued = in_flight.fetched(3, 2);
        let finisher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            running.done();
        });
        assert_eq!(in_flight.drain(&[3], Duration::from_secs(60)), 0);
        assert!(!queued.begin(), "nothing new begins on a draining partition");
        finisher.join().unwrap();
        assert_eq!(in_flight.take_positions(Some(&[3])), [(3, 2)]);
    }

    #[test]
    fn closing_ends_a_drain_at_once() {
        let in_flight = Arc::new(InFlight::default());
        let stuck = in_flight.fetched(0, 1);
        assert!(stuck.begin());
        let closer = {
            let in_flight = in_flight.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                in_flight.close();
            })
        };
        assert_eq!(in_flight.drain(&[0], Duration::from_secs(600)), 1, "returned when closed, not after 600 s");
        closer.join().unwrap();
    }

    #[test]
    fn drain_gives_up_at_its_timeout() {
        let in_flight = Arc::new(InFlight::default());
        let stuck = in_flight.fetched(0, 1);
        assert!(stuck.begin());
        assert_eq!(in_flight.drain(&[0], Duration::from_millis(10)), 1);
    }
}
