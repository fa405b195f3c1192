//! Single flight: concurrent calls for one key share one run of the work, and each gets its
//! outcome. Nothing is kept: once the run ends, the next call runs the work again.
//!
//! Written here rather than taken from a crate: moka's `entry().or_try_insert_with()` did
//! this before, but its entries, though expiring at once, go through its whole insert,
//! housekeeping and eviction machinery, about 13,000 instructions per load on the Redis
//! hit path (callgrind); this is a mutex-guarded map of `futures::future::Shared` runs.
//!
//! A run is a task of its own: it goes to its end even if every caller goes away (a claim
//! half made, say, is finished and published, not left in the map for a caller that may never
//! come). The run takes itself out of the map as it ends, so an ended run is never joined; a
//! run that panics is taken out too, and its callers panic with it.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::task::JoinError;

/// The runs in flight, by key. Cheap to clone.
pub struct Flights<K, T> {
    runs: Arc<Mutex<HashMap<K, Run<T>>>>,
}

impl<K, T> Clone for Flights<K, T> {
    fn clone(&self) -> Self {
        Self { runs: self.runs.clone() }
    }
}

impl<K, T> Default for Flights<K, T> {
    fn default() -> Self {
        Self { runs: Arc::default() }
    }
}

struct Run<T> {
    id: u64,
    started: Instant,
    shared: Shared<BoxFuture<'static, Result<T, Ended>>>,
}

/// How a run that gave no outcome ended (a `JoinError` is not `Clone`, so every caller gets this).
#[derive(Clone, Copy, Debug)]
struct Ended {
    panicked: bool,
}

impl From<JoinError> for Ended {
    fn from(e: JoinError) -> Self {
        Self { panicked: e.is_panic() }
    }
}

/// Takes a run out of the map when its task ends, however it ends.
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
    /// `work`'s outcome, run once for every concurrent caller for `key`; the flag is true for
    /// the caller whose `work` ran (the others' is dropped unrun).
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
        let (shared, started) = {
            let mut runs = self.runs.lock().expect("flights lock");
            match runs.get(key).filter(|run| since.is_none_or(|since| run.started >= since)) {
                Some(run) => (run.shared.clone(), false),
                None => {
                    let id = NEXT_RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let remove = Remove { runs: self.runs.clone(), key: key.clone(), id };
                    let task = tokio::spawn(async move {
                        let _remove = remove;
                        work.await
                    });
                    let shared = task.map(|ended| ended.map_err(Ended::from)).boxed().shared();
                    runs.insert(key.clone(), Run { id, started: Instant::now(), shared: shared.clone() });
                    (shared, true)
                }
            }
        };
        match shared.await {
            Ok(outcome) => (outcome, started),
            Err(Ended { panicked: true }) => panic!("a single-flight run panicked"),
            // Only a runtime shutting down cancels a spawned run.
            Err(Ended { panicked: false }) => panic!("a single-flight run was cancelled"),
        }
    }

    /// How many runs are in flight.
    pub fn in_flight(&self) -> usize {
        self.runs.lock().expect("flights lock").len()
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
    async fn a_run_everybody_left_still_ends_and_leaves_the_map() {
        let flights: Flights<&str, u32> = Flights::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut starter = Box::pin(flights.run(&"k", async move {
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
    async fn a_run_that_panics_leaves_the_map() {
        let flights: Flights<&str, u32> = Flights::default();
        let call = flights.run(&"k", async { panic!("boom") });
        assert!(std::panic::AssertUnwindSafe(call).catch_unwind().await.is_err());
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_run_whose_starter_went_away_is_driven_by_the_others() {
        let flights: Flights<&str, u32> = Flights::default();
        let starter = flights.run(&"k", async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            7
        });
        let joiner = flights.run(&"k", async { unreachable!("joins the run in flight") });
        let (mut starter, joiner) = (Box::pin(starter), Box::pin(joiner));
        // The starter registers the run, then goes away.
        assert!(futures::poll!(&mut starter).is_pending());
        drop(starter);
        assert_eq!(joiner.await, (7, false));
        assert_eq!(flights.in_flight(), 0);
    }
}
