//! A per-provider circuit breaker (after resilience4j's count-based breaker).
//!
//! Closed: calls flow; `failure_threshold` consecutive failed attempts open it. Open: calls
//! are refused without touching the provider until `cooldown` has passed. Half-open: one
//! probe call is let through; its success closes the breaker, its failure opens it again.
//!
//! Written here rather than taken from a crate: the state machine is ~60 lines, needs to be
//! shared across concurrent fan-outs, and must report "refused" as a `circuit_open` failure
//! in our own result; the breaker crates on crates.io wrap futures in ways that hide that.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is out since `since`; a probe lost without an outcome is replaced after a cooldown.
    HalfOpen {
        since: Instant,
    },
}

/// What the breaker says about one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Go ahead; report the outcome with [`Breaker::record`].
    Allowed,
    /// Refused: the circuit is open (or its one probe is already out).
    Refused,
}

#[derive(Debug)]
pub struct Breaker {
    failure_threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(failure_threshold: u32, cooldown: Duration) -> Self {
        Self { failure_threshold: failure_threshold.max(1), cooldown, state: Mutex::new(State::Closed { failures: 0 }) }
    }

    pub fn try_acquire(&self, now: Instant) -> Permit {
        let mut state = self.state.lock().expect("breaker lock");
        match *state {
            State::Closed { .. } => Permit::Allowed,
            State::Open { until } if now >= until => {
                *state = State::HalfOpen { since: now };
                Permit::Allowed
            }
            State::HalfOpen { since } if now >= since + self.cooldown => {
                *state = State::HalfOpen { since: now };
                Permit::Allowed
            }
            State::Open { .. } | State::HalfOpen { .. } => Permit::Refused,
        }
    }

    /// Records the outcome of an allowed call. Returns true if this call opened the circuit.
    pub fn record(&self, success: bool, now: Instant) -> bool {
        let mut state = self.state.lock().expect("breaker lock");
        let next = match (*state, success) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.failure_threshold => {
                State::Closed { failures: failures + 1 }
            }
            // A straggler from before the circuit opened changes nothing.
            (State::Open { until }, false) => State::Open { until },
            (State::Closed { .. } | State::HalfOpen { .. }, false) => State::Open { until: now + self.cooldown },
        };
        let opened = matches!(next, State::Open { .. }) && !matches!(*state, State::Open { .. });
        *state = next;
        opened
    }

    /// Whether [`Self::try_acquire`] would refuse now, without taking the one probe: so a
    /// call about to be refused spends no token and no quota turn on the way.
    pub fn would_refuse(&self, now: Instant) -> bool {
        match *self.state.lock().expect("breaker lock") {
            State::Closed { .. } => false,
            State::Open { until } => now < until,
            State::HalfOpen { since } => now < since + self.cooldown,
        }
    }

    pub fn is_open(&self, now: Instant) -> bool {
        matches!(*self.state.lock().expect("breaker lock"), State::Open { until } if now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL: Duration = Duration::from_secs(10);

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = Breaker::new(3, COOL);
        let t = Instant::now();
        assert!(!b.record(false, t));
        assert!(!b.record(false, t));
        assert!(!b.record(true, t), "a success resets the count");
        assert!(!b.record(false, t));
        assert!(!b.record(false, t));
        assert!(b.record(false, t), "third consecutive failure opens");
        assert_eq!(b.try_acquire(t), Permit::Refused);
        assert!(b.is_open(t) && b.would_refuse(t));
        assert!(!b.would_refuse(t + COOL), "a probe would go");
        assert_eq!(b.try_acquire(t + COOL), Permit::Allowed);
        assert!(b.would_refuse(t + COOL), "its one probe is out");
    }

    #[test]
    fn half_open_lets_one_probe_through_and_closes_on_success() {
        let b = Breaker::new(1, COOL);
        let t = Instant::now();
        b.record(false, t);
        assert_eq!(b.try_acquire(t + COOL / 2), Permit::Refused);
        let later = t + COOL;
        assert_eq!(b.try_acquire(later), Permit::Allowed, "the probe");
        assert_eq!(b.try_acquire(later), Permit::Refused, "only one probe at a time");
        b.record(true, later);
        assert_eq!(b.try_acquire(later), Permit::Allowed);
        assert!(!b.is_open(later));
    }

    #[test]
    fn a_failed_probe_opens_again_for_a_full_cooldown() {
        let b = Breaker::new(1, COOL);
        let t = Instant::now();
        b.record(false, t);
        let probe_at = t + COOL;
        assert_eq!(b.try_acquire(probe_at), Permit::Allowed);
        assert!(b.record(false, probe_at));
        assert_eq!(b.try_acquire(probe_at + COOL / 2), Permit::Refused);
        assert_eq!(b.try_acquire(probe_at + COOL), Permit::Allowed);
    }

    #[test]
    fn stragglers_do_not_extend_an_open_circuit() {
        let b = Breaker::new(1, COOL);
        let t = Instant::now();
        b.record(false, t);
        assert!(!b.record(false, t + COOL / 2));
        assert_eq!(b.try_acquire(t + COOL), Permit::Allowed);
    }
}
