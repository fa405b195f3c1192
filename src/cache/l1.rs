//! L1: an in-process moka cache in front of Redis, which also coalesces concurrent lookups
//! of one product into a single load.
//!
//! Invariant: a hit lives at most `min(cache.l1_ttl_ms, its guarantee left when read)`, so
//! L1 never serves a result past its price guarantee. A miss is handed to every caller
//! that was waiting on the same load, then expires at once: it is never served later.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use super::StoredResult;
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

struct Lifetime {
    l1_ttl: Duration,
}

impl Expiry<ProductId, Entry> for Lifetime {
    fn expire_after_create(&self, _: &ProductId, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(match entry {
            Entry::Hit(stored) => self.l1_ttl.min(stored.ttl_left()),
            Entry::Pending | Entry::Miss => Duration::ZERO,
        })
    }
}

#[derive(Clone)]
pub struct L1 {
    cache: Cache<ProductId, Entry>,
}

impl L1 {
    pub fn new(l1_ttl: Duration, max_entries: u64) -> Self {
        let cache = Cache::builder().max_capacity(max_entries).expire_after(Lifetime { l1_ttl }).build();
        Self { cache }
    }

    /// The live result for `id`, if L1 holds one: the hit path's one look, with no load and
    /// no allocation.
    pub async fn live(&self, id: &str) -> Option<Arc<StoredResult>> {
        match self.cache.get(id).await {
            Some(Entry::Hit(stored)) => Some(stored),
            _ => None,
        }
    }

    /// Returns the live entry, or runs `load` once for all concurrent callers of this id.
    /// The flag is true for the one caller whose `load` produced the entry.
    pub async fn get_or_load<E, F>(&self, id: &ProductId, load: F) -> Result<(Entry, bool), Arc<E>>
    where
        F: Future<Output = Result<Entry, E>>,
        E: Send + Sync + 'static,
    {
        let entry = self.cache.entry_by_ref(id).or_try_insert_with(load).await?;
        let loaded = entry.is_fresh();
        Ok((entry.into_value(), loaded))
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
            failed: Duration::from_secs(30),
            not_found: Duration::from_secs(30),
        };
        let comparison =
            Comparison::aggregate(ProductId::parse("p").unwrap(), [], time::OffsetDateTime::now_utc(), &policy);
        let value = bytes::Bytes::from(StoredResult::encode(&comparison));
        let mut stored = StoredResult::decode(value, std::time::SystemTime::now()).unwrap();
        stored.expires = Instant::now() + ttl_left;
        Entry::Hit(Arc::new(stored))
    }

    async fn loads(l1: &L1, id: &ProductId, counter: &AtomicUsize, entry: Entry) -> Entry {
        l1.get_or_load::<(), _>(id, async {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(entry)
        })
        .await
        .unwrap()
        .0
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_load_and_are_not_kept() {
        let l1 = L1::new(Duration::from_secs(5), 100);
        let id = ProductId::parse("p").unwrap();
        let counter = AtomicUsize::new(0);
        let all = futures::future::join_all((0..50).map(|_| loads(&l1, &id, &counter, Entry::Miss))).await;
        assert!(all.iter().all(|e| matches!(e, Entry::Miss)));
        assert_eq!(counter.load(Ordering::SeqCst), 1);
        loads(&l1, &id, &counter, Entry::Miss).await;
        assert_eq!(counter.load(Ordering::SeqCst), 2, "a miss must not be served from L1");
    }

    #[tokio::test]
    async fn a_hit_lives_no_longer_than_the_redis_ttl_left() {
        let l1 = L1::new(Duration::from_secs(5), 100);
        let id = ProductId::parse("p").unwrap();
        let counter = AtomicUsize::new(0);
        loads(&l1, &id, &counter, stored(Duration::from_millis(100))).await;
        loads(&l1, &id, &counter, stored(Duration::from_millis(100))).await;
        assert_eq!(counter.load(Ordering::SeqCst), 1, "second read is an L1 hit");
        assert!(l1.live("p").await.is_some(), "and so is a look by name");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(l1.live("p").await.is_none(), "expired with the result");
        loads(&l1, &id, &counter, stored(Duration::from_millis(100))).await;
        assert_eq!(counter.load(Ordering::SeqCst), 2, "expired with the Redis TTL, not the L1 TTL");
    }
}
