//! Single flight: concurrent calls for one key share one run of the work, and each gets its
//! outcome. Nothing is kept: once the run ends, the next call runs the work again.
//!
//! Written here rather than taken from a crate: moka's `entry().or_try_insert_with()` did
//! this before, but its entries, though expiring at once, go through its whole insert,
//! housekeeping and eviction machinery, about 13,000 instructions per load on the Redis
//! hit path (callgrind).
//!
//! Two kinds of run. [`Flights::run`] is driven by its callers, as a read should be: the
//! first caller runs its work in place (no task, no boxing) and the others wait on the run's
//! cell (`tokio::sync::OnceCell`); if the caller running it goes away, one of those waiting
//! runs its own work instead (a read's work is the same whoever brings it), and once every
//! caller has gone the run leaves the map. This costs a load about half of what a shared
//! future did (`futures::future::Shared`: a boxed future, its notifier and wakers; 4,800
//! instructions a load, by callgrind). [`Flights::run_detached`] is a task of its own, as a
//! write should be: it goes to its end even if every caller goes away (a claim half made is
//! finished and published, not abandoned), at the cost of a spawn, which the hit path's
//! reads do not pay; its callers share its outcome through a `Shared`. Either takes itself
//! out of the map as it ends, so an ended run is never joined; a run that panics is taken out
//! too, and its callers panic with it (a caller-driven one's waiters run their own work).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared, WeakShared};
use tokio::task::JoinError;

/// The runs in flight, by key. Cheap to clone.
pub struct Flights<K, T> {
    /// Detached runs ([`Flights::run_detached`]).
    runs: Arc<Mutex<HashMap<K, Run<T>>>>,
    /// Caller-driven runs ([`Flights::run`]).
    slots: Arc<Mutex<HashMap<K, Arc<Slot<T>>>>>,
}

impl<K, T> Clone for Flights<K, T> {
    fn clone(&self) -> Self {
        Self { runs: self.runs.clone(), slots: self.slots.clone() }
    }
}

impl<K, T> Default for Flights<K, T> {
    fn default() -> Self {
        Self { runs: Arc::default(), slots: Arc::default() }
    }
}

/// A caller-driven run: its outcome, once there is one, and who waits for it.
struct Slot<T> {
    started: Instant,
    outcome: tokio::sync::OnceCell<T>,
    /// Callers in the run; changed only under the map's lock, so the last to leave knows it.
    callers: std::sync::atomic::AtomicUsize,
}

/// A caller's place in a [`Slot`]: leaving (however: an outcome, a drop, a panic's unwinding)
/// takes the run out of the map once it has an outcome or nobody is left in it.
struct Leave<'a, K: Hash + Eq, T> {
    slots: &'a Mutex<HashMap<K, Arc<Slot<T>>>>,
    key: &'a K,
    slot: &'a Arc<Slot<T>>,
}

impl<K: Hash + Eq, T> Drop for Leave<'_, K, T> {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let left = self.slot.callers.fetch_sub(1, Relaxed) - 1;
        // Only this run: a later one may be there.
        let ours = slots.get(self.key).is_some_and(|slot| Arc::ptr_eq(slot, self.slot));
        if ours && (left == 0 || self.slot.outcome.initialized()) {
            slots.remove(self.key);
        }
    }
}

type Outcome<T> = Shared<BoxFuture<'static, Result<T, Ended>>>;

struct Run<T> {
    id: u64,
    /// Weak: the callers own the run; the map only finds it for the next one.
    shared: WeakShared<BoxFuture<'static, Result<T, Ended>>>,
}

/// How a detached run that gave no outcome ended (a `JoinError` is not `Clone`, so every
/// caller gets this).
#[derive(Clone, Copy, Debug)]
struct Ended {
    panicked: bool,
}

impl From<JoinError> for Ended {
    fn from(e: JoinError) -> Self {
        Self { panicked: e.is_panic() }
    }
}

/// Takes a run out of the map when it ends or is dropped, however (a panic's unwinding too).
struct Remove<K: Hash + Eq, T> {
    runs: Arc<Mutex<HashMap<K, Run<T>>>>,
    key: K,
    id: u64,
}

impl<K: Hash + Eq, T> Drop for Remove<K, T> {
    fn drop(&mut self) {
        // Only this run: a later one may be there. A poisoned lock is used as it is (a map
        // entry holds no invariant a panic elsewhere could break).
        let mut runs = self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if runs.get(&self.key).is_some_and(|run| run.id == self.id) {
            runs.remove(&self.key);
        }
    }
}

static NEXT_RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl<K, T> Flights<K, T>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// `work`'s outcome, run once for every concurrent caller for `key`, driven by them; the
    /// flag is true for the caller whose `work` ran (the others' is dropped unrun).
    pub async fn run<F>(&self, key: &K, work: F) -> (T, bool)
    where
        F: Future<Output = T> + Send + 'static,
    {
        self.run_since(key, None, work).await
    }

    /// [`Self::run`], joining a run in flight only if it started at or after `since` (a read
    /// that must see what was written before `since`); an older one is left to its callers
    /// and a new one started.
    pub async fn run_since<F>(&self, key: &K, since: Option<Instant>, work: F) -> (T, bool)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let slot = {
            let mut slots = self.slots.lock().expect("flights lock");
            let slot = match slots.get(key) {
                Some(slot) if since.is_none_or(|since| slot.started >= since) => slot.clone(),
                _ => {
                    let slot = Arc::new(Slot {
                        started: Instant::now(),
                        outcome: tokio::sync::OnceCell::new(),
                        callers: Default::default(),
                    });
                    slots.insert(key.clone(), slot.clone());
                    slot
                }
            };
            slot.callers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            slot
        };
        let _leave = Leave { slots: &self.slots, key, slot: &slot };
        let mut ran = false;
        let outcome = slot
            .outcome
            .get_or_init(|| {
                ran = true;
                work
            })
            .await
            .clone();
        (outcome, ran)
    }

    /// [`Self::run`], as a task of its own: it runs to its end even if every caller goes away.
    pub async fn run_detached<F>(&self, key: &K, work: F) -> (T, bool)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let start = |remove: Remove<K, T>| {
            let task = tokio::spawn(async move {
                let _remove = remove;
                work.await
            });
            task.map(|ended| ended.map_err(Ended::from)).boxed()
        };
        let (shared, started) = self.join_or_start(key, start);
        Self::outcome(shared, started).await
    }

    /// The detached run in flight for `key`, or a new one from `start`.
    fn join_or_start(
        &self,
        key: &K,
        start: impl FnOnce(Remove<K, T>) -> BoxFuture<'static, Result<T, Ended>>,
    ) -> (Outcome<T>, bool) {
        let mut runs = self.runs.lock().expect("flights lock");
        let joined = runs.get(key).and_then(|run| run.shared.upgrade());
        if let Some(shared) = joined {
            return (shared, false);
        }
        let id = NEXT_RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let shared = start(Remove { runs: self.runs.clone(), key: key.clone(), id }).shared();
        let weak = shared.downgrade().expect("a run not polled yet has not ended");
        runs.insert(key.clone(), Run { id, shared: weak });
        (shared, true)
    }

    async fn outcome(shared: Outcome<T>, started: bool) -> (T, bool) {
        match shared.await {
            Ok(outcome) => (outcome, started),
            Err(Ended { panicked: true }) => panic!("a single-flight run panicked"),
            // Only a runtime shutting down cancels a spawned run.
            Err(Ended { panicked: false }) => panic!("a single-flight run was cancelled"),
        }
    }

    /// How many runs are in flight.
    pub fn in_flight(&self) -> usize {
        self.runs.lock().expect("flights lock").len() + self.slots.lock().expect("flights lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_calls_share_one_run_and_nothing_is_kept() {
        let flights: Flights<&str, usize> = Flights::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let call = || {
            let runs = runs.clone();
            flights.run(&"k", async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                runs.fetch_add(1, Ordering::SeqCst) + 1
            })
        };
        let outcomes = futures::future::join_all((0..50).map(|_| call())).await;
        assert!(outcomes.iter().all(|&(n, _)| n == 1), "{outcomes:?}");
        assert_eq!(outcomes.iter().filter(|(_, started)| *started).count(), 1);
        assert_eq!(flights.in_flight(), 0, "an ended run is out of the map");
        assert_eq!(call().await, (2, true), "the next call runs the work again");
    }

    #[tokio::test]
    async fn a_read_that_must_follow_a_write_does_not_join_an_older_run() {
        let flights: Flights<&str, &str> = Flights::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let old = tokio::spawn({
            let flights = flights.clone();
            async move {
                flights
                    .run(&"k", async {
                        rx.await.unwrap();
                        "before the write"
                    })
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let written = Instant::now();
        assert_eq!(flights.run_since(&"k", Some(written), async { "after it" }).await, ("after it", true));
        tx.send(()).unwrap();
        assert_eq!(old.await.unwrap(), ("before the write", true));
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_detached_run_everybody_left_still_ends_and_leaves_the_map() {
        let flights: Flights<&str, u32> = Flights::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut starter = Box::pin(flights.run_detached(&"k", async move {
            tx.send(()).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            1
        }));
        assert!(futures::poll!(&mut starter).is_pending());
        drop(starter);
        rx.await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while flights.in_flight() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the run ended with nobody awaiting it");
    }

    #[tokio::test]
    async fn a_run_everybody_left_is_dropped_and_leaves_the_map() {
        let flights: Flights<&str, u32> = Flights::default();
        let dropped = Arc::new(AtomicUsize::new(0));
        struct Count(Arc<AtomicUsize>);
        impl Drop for Count {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Count(dropped.clone());
        let mut starter = Box::pin(flights.run(&"k", async move {
            let _count = count;
            std::future::pending::<u32>().await
        }));
        assert!(futures::poll!(&mut starter).is_pending());
        assert_eq!(flights.in_flight(), 1);
        drop(starter);
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "the work was dropped with its last caller");
        assert_eq!(flights.in_flight(), 0);
        assert_eq!(flights.run(&"k", async { 2 }).await, (2, true), "the next caller starts afresh");
    }

    #[tokio::test]
    async fn a_run_that_panics_leaves_the_map() {
        let flights: Flights<&str, u32> = Flights::default();
        let call = flights.run(&"k", async { panic!("boom") });
        assert!(std::panic::AssertUnwindSafe(call).catch_unwind().await.is_err());
        assert_eq!(flights.in_flight(), 0);
        let call = flights.run_detached(&"k", async { panic!("boom") });
        assert!(std::panic::AssertUnwindSafe(call).catch_unwind().await.is_err());
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_run_whose_starter_went_away_is_run_by_one_of_the_others() {
        let flights: Flights<&str, u32> = Flights::default();
        let starter = flights.run(&"k", async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            7
        });
        let (second, third) = (flights.run(&"k", async { 8 }), flights.run(&"k", async { 9 }));
        let (mut starter, mut second, mut third) = (Box::pin(starter), Box::pin(second), Box::pin(third));
        // The starter runs its work, the others wait for it, then the starter goes away.
        assert!(futures::poll!(&mut starter).is_pending());
        assert!(futures::poll!(&mut second).is_pending());
        assert!(futures::poll!(&mut third).is_pending());
        assert_eq!(flights.in_flight(), 1);
        drop(starter);
        // One of those left runs its own work, and the other shares its outcome.
        let ((a, a_ran), (b, b_ran)) = futures::join!(second, third);
        assert_eq!(a, b);
        assert!(a_ran ^ b_ran, "exactly one ran its work");
        assert_eq!(a, if a_ran { 8 } else { 9 });
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_run_is_left_by_its_last_caller_whatever_order_they_go_in() {
        let flights: Flights<&str, u32> = Flights::default();
        let calls: Vec<_> = (0..3).map(|_| Box::pin(flights.run(&"k", std::future::pending::<u32>()))).collect();
        let mut calls = calls;
        for call in &mut calls {
            assert!(futures::poll!(call).is_pending());
        }
        assert_eq!(flights.in_flight(), 1);
        let last = calls.remove(1);
        drop(calls);
        assert_eq!(flights.in_flight(), 1, "one caller is still in the run");
        drop(last);
        assert_eq!(flights.in_flight(), 0);
    }
}
