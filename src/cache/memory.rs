//! L2 in process memory, for the standalone demo: the same contract as Redis (TTLs, exclusive
//! pending markers released only by their owner), nothing shared between processes, nothing kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use moka::Expiry;
use moka::sync::Cache;

use super::{Error, Lookup, ResultStore, StoredResult};
use crate::domain::{Comparison, ProductId};

#[derive(Clone)]
struct Stored {
    comparison: Comparison,
    body: Bytes,
    expires: Instant,
}

struct UntilExpiry;

impl Expiry<ProductId, Stored> for UntilExpiry {
    fn expire_after_create(&self, _: &ProductId, value: &Stored, now: Instant) -> Option<Duration> {
        Some(value.expires.saturating_duration_since(now))
    }
}

/// Results in a moka cache with per-entry TTLs; pending markers in a map with deadlines.
pub struct MemoryStore {
    results: Cache<ProductId, Stored>,
    /// Product → (token, expiry). Also the lock that makes lookup-or-claim atomic.
    pending: Mutex<HashMap<ProductId, (String, Instant)>>,
}

impl MemoryStore {
    pub fn new(max_entries: u64) -> Self {
        Self {
            results: Cache::builder().max_capacity(max_entries).expire_after(UntilExpiry).build(),
            pending: Mutex::default(),
        }
    }

    fn live_result(&self, id: &ProductId) -> Option<Stored> {
        self.results.get(id).filter(|s| s.expires > Instant::now())
    }
}

impl ResultStore for MemoryStore {
    fn lookup_or_claim<'a>(
        &'a self,
        id: &'a ProductId,
        token: &'a str,
        pending_ttl: Duration,
    ) -> BoxFuture<'a, Result<Lookup, Error>> {
        Box::pin(async move {
            let mut pending = self.pending.lock().expect("pending lock");
            if let Some(s) = self.live_result(id) {
                return Ok(Lookup::Hit(Box::new(StoredResult {
                    comparison: s.comparison,
                    body: s.body,
                    expires: s.expires,
                })));
            }
            let now = Instant::now();
            match pending.get(id) {
                Some((_, until)) if *until > now => Ok(Lookup::AlreadyPending),
                _ => {
                    pending.insert(id.clone(), (token.to_owned(), now + pending_ttl));
                    Ok(Lookup::Claimed)
                }
            }
        })
    }

    fn delete_result<'a>(&'a self, id: &'a ProductId) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.results.invalidate(id);
            Ok(())
        })
    }

    fn has_result<'a>(&'a self, id: &'a ProductId) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move { Ok(self.live_result(id).is_some()) })
    }

    fn release_pending<'a>(&'a self, id: &'a ProductId, token: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let mut pending = self.pending.lock().expect("pending lock");
            if pending.get(id).is_some_and(|(owner, _)| owner == token) {
                pending.remove(id);
            }
            Ok(())
        })
    }

    fn store<'a>(&'a self, comparison: &'a Comparison) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let body = Bytes::from(serde_json::to_vec(comparison).expect("a Comparison always serializes"));
            let expires = Instant::now() + Duration::from_secs(comparison.ttl_secs());
            let mut pending = self.pending.lock().expect("pending lock");
            self.results
                .insert(comparison.product_id.clone(), Stored { comparison: comparison.clone(), body, expires });
            pending.remove(&comparison.product_id);
            Ok(())
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TtlPolicy;

    fn id() -> ProductId {
        ProductId::parse("p").unwrap()
    }

    #[tokio::test]
    async fn claims_are_exclusive_and_released_only_by_their_owner() {
        let store = MemoryStore::new(100);
        let ttl = Duration::from_secs(30);
        assert!(matches!(store.lookup_or_claim(&id(), "a", ttl).await.unwrap(), Lookup::Claimed));
        assert!(matches!(store.lookup_or_claim(&id(), "b", ttl).await.unwrap(), Lookup::AlreadyPending));
        store.release_pending(&id(), "b").await.unwrap();
        assert!(matches!(store.lookup_or_claim(&id(), "c", ttl).await.unwrap(), Lookup::AlreadyPending));
        store.release_pending(&id(), "a").await.unwrap();
        assert!(matches!(store.lookup_or_claim(&id(), "c", ttl).await.unwrap(), Lookup::Claimed));
    }

    #[tokio::test]
    async fn a_stored_result_is_a_hit_until_its_ttl_and_clears_the_marker() {
        let store = MemoryStore::new(100);
        store.lookup_or_claim(&id(), "a", Duration::from_secs(30)).await.unwrap();
        let policy = TtlPolicy { answered: Duration::from_secs(300), failed: Duration::from_secs(1) };
        let failed = Comparison::aggregate(id(), [], time::OffsetDateTime::now_utc(), &policy);
        store.store(&failed).await.unwrap();
        assert!(store.has_result(&id()).await.unwrap());
        let Lookup::Hit(hit) = store.lookup_or_claim(&id(), "b", Duration::from_secs(30)).await.unwrap() else {
            panic!("expected a hit")
        };
        assert_eq!(hit.comparison, failed);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(!store.has_result(&id()).await.unwrap(), "expired with its TTL");
        assert!(matches!(store.lookup_or_claim(&id(), "b", Duration::from_secs(30)).await.unwrap(), Lookup::Claimed));
    }
}
