//! Admission control: past what the consumers can compute within `cache.pending_ttl_secs`, a
//! miss for a product neither cached nor pending is refused at once (503, `Retry-After`),
//! rather than accepted with a 202 that will not finish in time. No number to set by hand: it follows
//! the fleet's backlog and the consumers' measured throughput.
//!
//! - **The signal** is the fleet's backlog in the store ([`crate::cache::Backlog`]): every
//!   producer counts what it publishes in, every consumer counts what it finishes out. Each
//!   producer reads it every [`EVERY`] (one round trip): how many requests are outstanding,
//!   how long the oldest has waited, and how many were finished since the last read.
//! - **Capacity** is what the consumers say they can finish: each reports, every second, its
//!   in-flight bound over its mean time per request (`consumer.max_in_flight` / the sources'
//!   latency, as measured). Their sum is the fleet's. It is known before any backlog builds up,
//!   follows consumers that join, slow down or leave (a silent one drops out after
//!   [`crate::cache::CAPACITY_FRESH`]), and needs no burst to learn it.
//! - **The rule:** a new request would wait about `outstanding / capacity`. The door is open
//!   while that wait and the oldest request's age are both within [`BUDGET_SHARE`] of
//!   `pending_ttl` (the rest is for the computation itself and the estimate's error). While no
//!   consumer reports (none runs, or none has timed a request yet), the oldest request's age
//!   decides instead: if nothing is taken, the door closes once the oldest request has waited
//!   its share. (Not while consumers report: one request whose finish was never counted would
//!   then shut the door for everybody until the backlog's horizon drops it.)
//! - **Between reads**, what this producer admits is reserved as it is admitted and counts as
//!   outstanding, so a burst cannot slip through between two reads (other producers' show at
//!   the next read, within [`EVERY`]).
//! - **If the backlog cannot be read** (Redis, or its `{fleet}` slot, is away), the door stays
//!   as it was for [`crate::cache::CAPACITY_FRESH`], then opens: admission must not outlast
//!   the knowledge it rests on.
//! - Refreshes are never refused here: they keep popular products warm, and consumers serve
//!   them first. Neither is a product already pending, nor one this producer tried to refresh
//!   lately (a popular product whose refresh failed: see `miss::claim`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::cache::BacklogState;

/// How often each producer reads the fleet's backlog.
pub const EVERY: Duration = Duration::from_millis(500);
/// The share of `pending_ttl` a new request may expect to wait in the queue.
pub const BUDGET_SHARE: f64 = 0.75;

/// What admission control knows now: the ops port's `/readyz` shows it.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Snapshot {
    /// New products are admitted.
    pub open: bool,
    /// Requests published and not yet finished, fleet-wide, at the last read.
    pub outstanding: u64,
    /// How long the oldest of them had waited, in seconds.
    pub oldest_secs: f64,
    /// What the consumers reporting now can finish, requests per second (0: none reports).
    pub capacity_per_sec: f64,
    /// How many consumers report.
    pub consumers: u64,
    /// How many requests the fleet finished per second lately (measured).
    pub finished_per_sec: f64,
    /// How long a request admitted now would wait for a consumer, in seconds (estimated).
    pub wait_secs: f64,
    /// When the backlog could not be read, why (the door then stays as it was).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub struct Admission {
    budget: Duration,
    /// The backlog's horizon (`cache.queued_ttl_secs`): older requests count as lost.
    horizon: Duration,
    open: AtomicBool,
    /// Admitted by this producer since the last read.
    admitted: AtomicU64,
    estimate: Mutex<Estimate>,
}

#[derive(Default)]
struct Estimate {
    snapshot: Snapshot,
    /// The last read's finished count and time.
    last: Option<(u64, Instant)>,
    /// Since when the backlog cannot be read.
    failing_since: Option<Instant>,
    retry_after_secs: u64,
}

impl Admission {
    pub fn new(pending_ttl: Duration, horizon: Duration) -> Self {
        Self {
            budget: pending_ttl.mul_f64(BUDGET_SHARE),
            horizon,
            open: AtomicBool::new(true),
            admitted: AtomicU64::new(0),
            estimate: Mutex::new(Estimate {
                snapshot: Snapshot { open: true, ..Snapshot::default() },
                ..Default::default()
            }),
        }
    }

    /// Admits `n` more new products now, reserving them in the count of outstanding requests
    /// (give back with [`Self::unreserve`] what is not published); if not, when to ask again
    /// (seconds).
    pub fn admit(&self, n: usize) -> Result<(), u64> {
        if !self.open.load(Ordering::Relaxed) {
            return Err(self.retry_after_secs());
        }
        let reserved = self.admitted.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        let estimate = self.estimate.lock().expect("admission lock");
        let capacity = estimate.snapshot.capacity_per_sec;
        if capacity > 0.0 {
            let outstanding = estimate.snapshot.outstanding + reserved;
            if outstanding as f64 / capacity > self.budget.as_secs_f64() {
                self.unreserve(n);
                return Err(retry_after(outstanding, capacity, self.budget));
            }
        }
        Ok(())
    }

    /// Gives back `n` of what [`Self::admit`] reserved: they were not published (pending
    /// already, refused by a limit, or their publish failed).
    pub fn unreserve(&self, n: usize) {
        let _ = self.admitted.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| Some(r.saturating_sub(n as u64)));
    }

    fn retry_after_secs(&self) -> u64 {
        self.estimate.lock().expect("admission lock").retry_after_secs
    }

    pub fn snapshot(&self) -> Snapshot {
        self.estimate.lock().expect("admission lock").snapshot.clone()
    }

    /// Takes in a read of the backlog made at `at`.
    fn update(&self, read: Result<BacklogState, String>, at: Instant) {
        let mut estimate = self.estimate.lock().expect("admission lock");
        let state = match read {
            Ok(state) => state,
            Err(e) => {
                let failing_since = *estimate.failing_since.get_or_insert(at);
                estimate.snapshot.error = Some(e);
                if at.duration_since(failing_since) >= crate::cache::CAPACITY_FRESH
                    && !self.open.load(Ordering::Relaxed)
                {
                    tracing::warn!(error = ?estimate.snapshot.error, "the backlog cannot be read: admitting new products again");
                    // What it knew is stale: no capacity, no backlog, until a read succeeds.
                    estimate.snapshot =
                        Snapshot { open: true, error: estimate.snapshot.error.take(), ..Snapshot::default() };
                    self.open.store(true, Ordering::Relaxed);
                    metrics::gauge!("pricefront_admission_open").set(1.0);
                }
                return;
            }
        };
        estimate.failing_since = None;
        self.admitted.store(0, Ordering::Relaxed);
        let previous = estimate.snapshot.clone();
        let capacity = state.capacity_per_sec;
        let finished_per_sec = match estimate.last {
            Some((finished, when)) if at > when && state.finished >= finished => {
                (state.finished - finished) as f64 / at.duration_since(when).as_secs_f64()
            }
            _ => previous.finished_per_sec,
        };
        estimate.last = Some((state.finished, at));
        let decision = decide(state, capacity, self.budget);
        estimate.retry_after_secs = decision.retry_after_secs;
        estimate.snapshot = Snapshot {
            open: decision.open,
            outstanding: state.outstanding,
            oldest_secs: state.oldest.unwrap_or_default().as_secs_f64(),
            capacity_per_sec: capacity,
            consumers: state.consumers,
            finished_per_sec,
            wait_secs: decision.wait.as_secs_f64(),
            error: None,
        };
        if decision.open != previous.open {
            if decision.open {
                tracing::info!(
                    outstanding = state.outstanding,
                    capacity_per_sec = capacity,
                    "admitting new products again"
                );
            } else {
                tracing::warn!(
                    outstanding = state.outstanding,
                    capacity_per_sec = capacity,
                    wait_s = decision.wait.as_secs_f64(),
                    oldest_s = state.oldest.unwrap_or_default().as_secs_f64(),
                    "the backlog would not be computed in time: refusing new products"
                );
            }
        }
        self.open.store(decision.open, Ordering::Relaxed);
        let gauge = |name: &'static str, value: f64| metrics::gauge!(name).set(value);
        gauge("pricefront_backlog_requests", state.outstanding as f64);
        gauge("pricefront_backlog_oldest_seconds", state.oldest.unwrap_or_default().as_secs_f64());
        gauge("pricefront_backlog_capacity_per_second", capacity);
        gauge("pricefront_backlog_finished_per_second", finished_per_sec);
        gauge("pricefront_backlog_wait_seconds", decision.wait.as_secs_f64());
        gauge("pricefront_admission_open", if decision.open { 1.0 } else { 0.0 });
    }

    /// Reads the fleet's backlog every [`EVERY`] until `shutdown`.
    pub fn spawn(state: AppState, shutdown: CancellationToken) {
        // Present from the start, so the first shed misses show as a rate, not as a new series.
        metrics::counter!("pricefront_limited_total", "limit" => "backlog").increment(0);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while tokio::select! { _ = every.tick() => true, _ = shutdown.cancelled() => false } {
                let read = state.store.backlog(SystemTime::now(), state.admission.horizon).await;
                state.admission.update(read.map_err(|e| e.to_string()), Instant::now());
            }
        });
    }
}

struct Decision {
    open: bool,
    /// How long a request admitted now would wait.
    wait: Duration,
    retry_after_secs: u64,
}

/// The rule (see the module doc), for the backlog `state` and the estimated `capacity`.
fn decide(state: BacklogState, capacity: f64, budget: Duration) -> Decision {
    let oldest = state.oldest.unwrap_or_default();
    // The oldest request's age only while no consumer reports (see the module doc).
    let wait = match capacity > 0.0 {
        true => Duration::from_secs_f64(state.outstanding as f64 / capacity),
        false => oldest,
    };
    let open = wait <= budget;
    let retry_after_secs = match capacity > 0.0 {
        true => retry_after(state.outstanding, capacity, budget),
        // Nothing finishes: ask again once a tenth of the budget passed.
        false => (budget.as_secs() / 10).max(1),
    };
    Decision { open, wait, retry_after_secs }
}

/// When the backlog will have shrunk to what fits the budget again, in whole seconds (at least
/// one, at most the budget).
fn retry_after(outstanding: u64, capacity: f64, budget: Duration) -> u64 {
    let excess = outstanding as f64 - capacity * budget.as_secs_f64();
    let secs = (excess / capacity).ceil().max(1.0) as u64;
    secs.min(budget.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backlog(outstanding: u64, oldest_secs: u64, capacity_per_sec: f64) -> BacklogState {
        let oldest = Some(Duration::from_secs(oldest_secs));
        BacklogState { outstanding, oldest, finished: 0, capacity_per_sec, consumers: 1 }
    }

    #[test]
    fn a_backlog_that_fits_the_budget_is_open_and_one_that_does_not_is_closed() {
        let budget = Duration::from_secs(20);
        let decide = |state: BacklogState| decide(state, state.capacity_per_sec, budget);
        assert!(decide(backlog(100, 2, 40.0)).open, "2.5 s of work");
        let full = decide(backlog(1000, 2, 40.0));
        assert!(!full.open, "25 s of work");
        assert_eq!(full.wait, Duration::from_secs(25));
        assert_eq!(full.retry_after_secs, 5, "until 800 are left");
        assert!(decide(backlog(10, 100, 40.0)).open, "one old request (its finish not counted) closes nothing");
        // No consumer reports: the oldest request's age alone decides.
        assert!(decide(backlog(500, 3, 0.0)).open);
        assert!(!decide(backlog(5, 25, 0.0)).open);
        assert!(decide(BacklogState::default()).open, "nothing outstanding");
    }

    #[test]
    fn what_is_admitted_between_reads_counts_and_a_failed_read_leaves_the_door_as_it_was() {
        let admission = Admission::new(Duration::from_secs(20), Duration::from_secs(300));
        let start = Instant::now();
        admission.update(Ok(backlog(300, 2, 40.0)), start);
        assert!(admission.admit(1).is_ok(), "300 at 40/s is 7.5 s of work, within 15 s");
        assert!(admission.admit(299).is_ok(), "reserved: 600 is 15 s");
        assert_eq!(admission.admit(1), Err(1), "601 is 15.03 s: over by one request, so 1 s");
        admission.unreserve(10);
        assert!(admission.admit(10).is_ok(), "what was given back may be admitted again");
        admission.update(Err("Redis away".into()), start + EVERY);
        assert_eq!(admission.snapshot().error.as_deref(), Some("Redis away"));
        assert!(admission.snapshot().open, "as it was");
        // The next read has them in its count.
        admission.update(Ok(BacklogState { finished: 20, ..backlog(580, 2, 40.0) }), start + 2 * EVERY);
        assert!(admission.admit(1).is_ok());
        assert_eq!(admission.snapshot().finished_per_sec, 20.0);
    }

    #[test]
    fn a_closed_door_refuses_with_the_time_the_backlog_needs_and_opens_when_it_cannot_be_read() {
        let admission = Admission::new(Duration::from_secs(20), Duration::from_secs(300));
        let start = Instant::now();
        admission.update(Ok(backlog(1000, 1, 40.0)), start);
        assert!(!admission.snapshot().open);
        assert_eq!(admission.admit(1), Err(10), "1000 at 40/s: 400 over the 15 s budget, 10 s");
        // Unreadable for a moment: as it was; for longer than a capacity report lasts: open.
        admission.update(Err("Redis away".into()), start + EVERY);
        assert!(admission.admit(1).is_err());
        admission.update(Err("Redis away".into()), start + crate::cache::CAPACITY_FRESH + EVERY);
        assert!(admission.admit(1).is_ok());
    }
}
