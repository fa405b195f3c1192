//! L1: results held in process in front of Redis, and loads of one product shared by its
//! concurrent callers.
//!
//! - **Hits** are in a bounded cache (quick_cache, S3-FIFO eviction, at most `max_entries`),
//!   each with its own end: `min(cache.l1_ttl_ms, its guarantee left when read)`. A look past
//!   that end is a miss, so L1 never serves a result past its price guarantee; the entry is
//!   replaced by the next load, evicted, or dropped by [`L1::sweep`]. A look is a plain read:
//!   no load, no await, no allocation (the hit path's cost).
//! - **Reloads:** in the last fifth of a held result's life here, one look is told to reload
//!   it ([`L1::look`]); its caller does so in the background ([`L1::reload`]) while the held
//!   copy is served, so a popular product's requests never wait on the store.
//! - **Loads** run once for all concurrent callers of one product ([`Flights`]: it shares,
//!   never keeps). A miss is handed to every caller that was waiting on the same load, and is
//!   never served later.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::StoredResult;
use super::flight::Flights;
use crate::domain::ProductId;

/// What one load found.
#[derive(Clone, Debug)]
pub enum Entry {
    Hit(Arc<StoredResult>),
    /// No result, and somebody's request for it is pending (or was just published).
    Pending,
    /// No result, and nobody is computing it.
    Miss,
}

/// A held result: until when it is served here, and from when a look asks for a fresh copy
/// (the last fifth of its life here), once.
struct Held {
    stored: Arc<StoredResult>,
    until: Instant,
    reload_at: Instant,
    reloading: AtomicBool,
}

/// L1, whose loads fail with `E`.
pub struct L1<E> {
    hits: Arc<quick_cache::sync::Cache<ProductId, Arc<Held>>>,
    loads: Flights<ProductId, Result<Entry, Arc<E>>>,
    l1_ttl: Duration,
}

impl<E> Clone for L1<E> {
    fn clone(&self) -> Self {
        Self { hits: self.hits.clone(), loads: self.loads.clone(), l1_ttl: self.l1_ttl }
    }
}

impl<E: Send + Sync + 'static> L1<E> {
    /// Holds hits up to `l1_ttl` (zero: holds none, and only shares loads).
    pub fn new(l1_ttl: Duration, max_entries: u64) -> Self {
        let capacity = usize::try_from(max_entries).unwrap_or(usize::MAX).max(1);
        Self { hits: Arc::new(quick_cache::sync::Cache::new(capacity)), loads: Flights::default(), l1_ttl }
    }

    /// The live result for `id`, if L1 holds one.
    pub fn live(&self, id: &str) -> Option<Arc<StoredResult>> {
        self.look(id, Instant::now()).map(|(stored, _)| stored)
    }

    /// The live result for `id` at `now`, and whether this caller should reload it (it is in
    /// the last fifth of its life here; one caller is told, once): a hot product is read again
    /// from the store before its copy here ends, so its requests never wait on the store.
    pub fn look(&self, id: &str, now: Instant) -> Option<(Arc<StoredResult>, bool)> {
        let held = self.hits.get(id).filter(|held| held.until > now)?;
        let reload = now >= held.reload_at && !held.reloading.swap(true, Ordering::Relaxed);
        Some((held.stored.clone(), reload))
    }

    /// Returns the live result, or runs `load` once for all concurrent callers of this id
    /// (a hit it finds is held from then on). The flag is true for the one caller whose
    /// `load` produced the entry.
    pub async fn get_or_load<F>(&self, id: &ProductId, load: F) -> Result<(Entry, bool), Arc<E>>
    where
        F: Future<Output = Result<Entry, E>> + Send + 'static,
    {
        self.get_or_load_since(id, None, load).await
    }

    /// [`Self::get_or_load`], but a load is joined only if it started at or after `since`
    /// (a look after an announcement at `since` must see what was announced).
    pub async fn get_or_load_since<F>(
        &self,
        id: &ProductId,
        since: Option<Instant>,
        load: F,
    ) -> Result<(Entry, bool), Arc<E>>
    where
        F: Future<Output = Result<Entry, E>> + Send + 'static,
    {
        if let Some(stored) = self.live(id.as_str()) {
            return Ok((Entry::Hit(stored), false));
        }
        self.load(id, since, load).await
    }

    /// Runs `load` (shared with concurrent loads of this id) whether or not a result is held,
    /// and holds the hit it finds in place of the one held (see [`Self::look`]).
    pub async fn reload<F>(&self, id: &ProductId, load: F) -> Result<Entry, Arc<E>>
    where
        F: Future<Output = Result<Entry, E>> + Send + 'static,
    {
        self.load(id, None, load).await.map(|(entry, _)| entry)
    }

    async fn load<F>(&self, id: &ProductId, since: Option<Instant>, load: F) -> Result<(Entry, bool), Arc<E>>
    where
        F: Future<Output = Result<Entry, E>> + Send + 'static,
    {
        let (entry, loaded) = self.loads.run_since(id, since, async move { load.await.map_err(Arc::new) }).await;
        let entry = entry?;
        if loaded && let Entry::Hit(stored) = &entry {
            self.hold(id, stored);
        }
        Ok((entry, loaded))
    }

    /// Holds `stored`, read from the store just now by other means (a multi-get's one read),
    /// as a load would, in place of what is held.
    pub fn hold(&self, id: &ProductId, stored: &Arc<StoredResult>) {
        if self.l1_ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let life = self.l1_ttl.min(stored.ttl_left_at(now));
        let held = Held {
            stored: stored.clone(),
            until: now + life,
            reload_at: now + life * 4 / 5,
            reloading: AtomicBool::new(false),
        };
        self.hits.insert(id.clone(), Arc::new(held));
    }

    /// Drops the results whose life here has ended (a look would not serve them anyway), so
    /// memory follows what is live rather than what was ever asked for.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.hits.retain(|_, held| held.until > now);
    }

    /// How many results are held (live or not yet swept).
    pub fn held(&self) -> usize {
        self.hits.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Comparison, TtlPolicy};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn stored(ttl_left: Duration) -> Entry {
        let policy = TtlPolicy {
            answered: Duration::from_secs(300),
            transient: Duration::from_secs(300),
            failed: Duration::from_secs(30),
            not_found: Duration::from_secs(30),
        };
        let comparison = Comparison::aggregate(
            ProductId::parse("p").unwrap(),
            [],
            time::OffsetDateTime::now_utc(),
            &policy,
            &Default::default(),
        );
        let value = bytes::Bytes::from(StoredResult::encode(&comparison));
        let mut stored = StoredResult::decode(value, std::time::SystemTime::now()).unwrap();
        stored.expires = Instant::now() + ttl_left;
        Entry::Hit(Arc::new(stored))
    }

    async fn loads(l1: &L1<()>, id: &ProductId, counter: &Arc<AtomicUsize>, entry: Entry) -> Entry {
        let counter = counter.clone();
        l1.get_or_load(id, async move {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(entry)
        })
        .await
        .unwrap()
        .0
    }

    #[tokio::test]
    async fn one_look_in_the_last_fifth_of_its_life_is_told_to_reload_and_a_reload_replaces_it() {
        let l1 = L1::<()>::new(Duration::from_millis(500), 100);
        let id = ProductId::parse("p").unwrap();
        let counter = Arc::new(AtomicUsize::new(0));
        loads(&l1, &id, &counter, stored(Duration::from_secs(60))).await;
        let start = Instant::now();
        assert!(!l1.look("p", start).unwrap().1, "early in its life");
        let late = start + Duration::from_millis(450);
        assert!(l1.look("p", late).unwrap().1, "late: this caller reloads");
        assert!(!l1.look("p", late).unwrap().1, "once");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let reloaded = l1.reload(&id, async { Ok(stored(Duration::from_secs(60))) }).await.unwrap();
        let Entry::Hit(new) = reloaded else { panic!("a hit") };
        let (held, reload) = l1.look("p", Instant::now()).unwrap();
        assert!(Arc::ptr_eq(&held, &new) && !reload, "the reloaded copy is held, with a life of its own");
        assert!(l1.look("p", start + Duration::from_millis(550)).is_some(), "past the first copy's end");
        let gone = l1.reload(&id, async { Ok(Entry::Miss) }).await.unwrap();
        assert!(matches!(gone, Entry::Miss));
        assert!(l1.live("p").is_some(), "a miss does not drop what is held: it ends with its life");
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_load_and_are_not_kept() {
        let l1 = L1::<()>::new(Duration::from_secs(5), 100);
        let id = ProductId::parse("p").unwrap();
        let counter = Arc::new(AtomicUsize::new(0));
        let all = futures::future::join_all((0..50).map(|_| loads(&l1, &id, &counter, Entry::Miss))).await;
        assert!(all.iter().all(|e| matches!(e, Entry::Miss)));
        assert_eq!(counter.load(Ordering::SeqCst), 1);
        loads(&l1, &id, &counter, Entry::Miss).await;
        assert_eq!(counter.load(Ordering::SeqCst), 2, "a miss must not be served from L1");
    }

    #[tokio::test]
    async fn a_hit_lives_no_longer_than_the_redis_ttl_left() {
        let l1 = L1::<()>::new(Duration::from_secs(5), 100);
        let id = ProductId::parse("p").unwrap();
        let counter = Arc::new(AtomicUsize::new(0));
        loads(&l1, &id, &counter, stored(Duration::from_millis(100))).await;
        loads(&l1, &id, &counter, stored(Duration::from_millis(100))).await;
        assert_eq!(counter.load(Ordering::SeqCst), 1, "second read is an L1 hit");
        assert!(l1.live("p").is_some(), "and so is a look by name");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(l1.live("p").is_none(), "expired with the result");
        assert_eq!(l1.held(), 1);
        l1.sweep();
        assert_eq!(l1.held(), 0, "swept once expired");
        loads(&l1, &id, &counter, stored(Duration::from_millis(100))).await;
        assert_eq!(counter.load(Ordering::SeqCst), 2, "expired with the Redis TTL, not the L1 TTL");
    }
}
