//! L2 in process memory, for the standalone demo: the same contract as Redis (results live
//! until their `expires_at`, exclusive pending markers released only by their owner), nothing
//! shared between processes, nothing kept.
//!
//! Bounded: results are a moka cache of `max_entries`; expired markers are swept whenever
//! the marker map has doubled since the last sweep, so it holds at most about twice the
//! markers claimed within one `pending_ttl`; progress logs are a moka cache of `max_entries`
//! logs of at most [`MAX_EVENTS`] events, each gone with its marker or its result.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use moka::Expiry;
use moka::sync::Cache;

use super::earlier::{self, Earlier};
use super::progress::{MAX_EVENTS, Progress, ProgressId};
use super::ready::{Ready, Waiter};
use super::{
    Announcements, Backlog, BacklogState, CAPACITY_FRESH, Error, Hold, Lookup, Peek, ProgressLog, ResultStore,
    StoreOutcome, StoredResult,
};
use crate::domain::{Comparison, Failure, ProductId, Quote};

struct UntilExpiry;

impl Expiry<ProductId, StoredResult> for UntilExpiry {
    fn expire_after_create(&self, _: &ProductId, value: &StoredResult, now: Instant) -> Option<Duration> {
        Some(value.expires.saturating_duration_since(now))
    }

    /// A newer result replaces an older one with its own deadline (moka would keep the old one).
    fn expire_after_update(
        &self,
        _: &ProductId,
        value: &StoredResult,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.expires.saturating_duration_since(now))
    }
}

/// Quotes kept past their result's end (as stored: see `earlier`), until the last of them ends.
#[derive(Clone)]
struct Kept {
    json: Bytes,
    until: Instant,
}

struct UntilKeptEnds;

impl Expiry<ProductId, Kept> for UntilKeptEnds {
    fn expire_after_create(&self, _: &ProductId, kept: &Kept, now: Instant) -> Option<Duration> {
        Some(kept.until.saturating_duration_since(now))
    }

    fn expire_after_update(&self, _: &ProductId, kept: &Kept, now: Instant, _: Option<Duration>) -> Option<Duration> {
        Some(kept.until.saturating_duration_since(now))
    }
}

struct UntilWatchEnds;

impl Expiry<ProductId, Instant> for UntilWatchEnds {
    fn expire_after_create(&self, _: &ProductId, until: &Instant, now: Instant) -> Option<Duration> {
        Some(until.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &ProductId,
        until: &Instant,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(until.saturating_duration_since(now))
    }
}

/// One computation's progress, kept until `until` (its marker's end).
struct Log {
    events: Mutex<Vec<Progress>>,
    until: Instant,
}

struct UntilLogEnds;

impl Expiry<ProductId, Arc<Log>> for UntilLogEnds {
    fn expire_after_create(&self, _: &ProductId, log: &Arc<Log>, now: Instant) -> Option<Duration> {
        Some(log.until.saturating_duration_since(now))
    }
}

fn unix_ms(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The smallest marker map that is swept.
const SWEEP_FLOOR: usize = 1024;

/// Product → (token, expiry): pending markers in `live`, queued marks in `queued`, each swept
/// of expired entries as it grows.
#[derive(Default)]
struct Markers {
    live: HashMap<ProductId, (String, Instant)>,
    queued: HashMap<ProductId, (String, Instant)>,
    sweep_at: usize,
}

impl Markers {
    /// Claims `id` for `token`: its marker, and (`queued_until`) its queued mark.
    fn claim(&mut self, id: &ProductId, token: &str, until: Instant, queued_until: Option<Instant>, now: Instant) {
        if self.live.len() + self.queued.len() >= self.sweep_at.max(SWEEP_FLOOR) {
            self.live.retain(|_, (_, until)| *until > now);
            self.queued.retain(|_, (_, until)| *until > now);
            self.sweep_at = 2 * (self.live.len() + self.queued.len());
        }
        self.live.insert(id.clone(), (token.to_owned(), until));
        if let Some(queued_until) = queued_until {
            self.queued.insert(id.clone(), (token.to_owned(), queued_until));
        }
    }

    fn pending(&self, id: &ProductId, now: Instant) -> bool {
        self.live.get(id).is_some_and(|(_, until)| *until > now)
    }

    /// The token of `id`'s live queued mark.
    fn queued(&self, id: &ProductId, now: Instant) -> Option<&str> {
        self.queued.get(id).filter(|(_, until)| *until > now).map(|(token, _)| token.as_str())
    }

    /// Releases `token`'s queued mark of `id`, if it holds it.
    fn unqueue(&mut self, id: &ProductId, token: &str) {
        if self.queued.get(id).is_some_and(|(owner, _)| owner == token) {
            self.queued.remove(id);
        }
    }

    /// Releases `token`'s marker and queued mark; whether its live marker was there to release.
    fn release(&mut self, id: &ProductId, token: &str) -> bool {
        self.unqueue(id, token);
        if self.live.get(id).is_some_and(|(owner, _)| owner == token) {
            let (_, until) = self.live.remove(id).expect("just seen");
            return until > Instant::now();
        }
        false
    }
}

/// Results in a moka cache with per-entry expiry; pending markers in a swept map.
pub struct MemoryStore {
    results: Cache<ProductId, StoredResult>,
    /// Also the lock that makes lookup-or-claim and store atomic.
    pending: Mutex<Markers>,
    progress: Cache<ProductId, Arc<Log>>,
    kept: Cache<ProductId, Kept>,
    /// Products somebody watches, until when.
    watched: Cache<ProductId, Instant>,
    /// The next progress id (`0-<n>`).
    progress_seq: AtomicU64,
    /// A stored result, and each progress event, is announced here directly.
    ready: Ready,
    /// Outstanding requests, by when they were published.
    backlog: Mutex<HashMap<ProductId, SystemTime>>,
    finished: AtomicU64,
    /// Consumers' capacity reports: member → (requests per second, when).
    capacities: Mutex<HashMap<String, (f64, SystemTime)>>,
}

impl MemoryStore {
    pub fn new(max_entries: u64) -> Self {
        Self {
            results: Cache::builder().max_capacity(max_entries).expire_after(UntilExpiry).build(),
            pending: Mutex::default(),
            progress: Cache::builder().max_capacity(max_entries).expire_after(UntilLogEnds).build(),
            kept: Cache::builder().max_capacity(max_entries).expire_after(UntilKeptEnds).build(),
            watched: Cache::builder().max_capacity(max_entries).expire_after(UntilWatchEnds).build(),
            progress_seq: AtomicU64::new(1),
            ready: Ready::default(),
            backlog: Mutex::default(),
            finished: AtomicU64::new(0),
            capacities: Mutex::default(),
        }
    }

    fn live_result(&self, id: &ProductId) -> Option<StoredResult> {
        self.results.get(id).filter(|s| s.expires > Instant::now())
    }
}

#[async_trait::async_trait]
impl ResultStore for MemoryStore {
    async fn lookup(&self, id: &ProductId) -> Result<Peek, Error> {
        let pending = self.pending.lock().expect("pending lock");
        let now = Instant::now();
        Ok(match self.live_result(id) {
            Some(s) => Peek::Hit(Box::new(s)),
            None if pending.pending(id, now) || pending.queued(id, now).is_some() => Peek::Pending,
            None => Peek::Absent,
        })
    }

    async fn lookup_or_claim(&self, id: &ProductId, token: &str, hold: Hold) -> Result<Lookup, Error> {
        let mut pending = self.pending.lock().expect("pending lock");
        if let Some(s) = self.live_result(id) {
            return Ok(Lookup::Hit(Box::new(s)));
        }
        let now = Instant::now();
        if pending.pending(id, now) {
            return Ok(Lookup::AlreadyPending);
        }
        if let Some(queued) = pending.queued(id, now).map(str::to_owned) {
            pending.claim(id, &queued, now + hold.pending, None, now);
            return Ok(Lookup::AlreadyPending);
        }
        pending.claim(id, token, now + hold.pending, Some(now + hold.queued), now);
        Ok(Lookup::Claimed)
    }

    async fn delete_result(&self, id: &ProductId) -> Result<(), Error> {
        self.results.invalidate(id);
        Ok(())
    }

    async fn earlier(&self, id: &ProductId) -> Result<Earlier, Error> {
        let now = Instant::now();
        let kept = self.kept.get(id).filter(|k| k.until > now);
        let earlier = Earlier::read(self.live_result(id).as_ref(), kept.as_ref().map(|k| &k.json[..]));
        let watched = self.watched.get(id).is_some_and(|until| until > now);
        Ok(Earlier { watched, ..earlier })
    }

    async fn release_pending(&self, id: &ProductId, token: &str) -> Result<bool, Error> {
        Ok(self.pending.lock().expect("pending lock").release(id, token))
    }

    async fn claim_pending(&self, id: &ProductId, token: &str, hold: Hold) -> Result<bool, Error> {
        let mut pending = self.pending.lock().expect("pending lock");
        let now = Instant::now();
        if pending.pending(id, now) || pending.queued(id, now).is_some() {
            return Ok(false);
        }
        pending.claim(id, token, now + hold.pending, Some(now + hold.queued), now);
        Ok(true)
    }

    async fn store(&self, comparison: &Comparison, token: &str) -> Result<StoreOutcome, Error> {
        let id = &comparison.product_id;
        let mut pending = self.pending.lock().expect("pending lock");
        // Its computation is over, whatever becomes of the result.
        self.progress.invalidate(id);
        pending.unqueue(id, token);
        let old = self.live_result(id).map(|old| (old.computed_at_ms, old.status));
        let outcome = StoreOutcome::judge(
            unix_ms(time::OffsetDateTime::now_utc()),
            unix_ms(comparison.computed_at),
            unix_ms(comparison.expires_at),
            comparison.status,
            old,
        );
        if outcome != StoreOutcome::Stored {
            pending.release(id, token);
            return Ok(outcome);
        }
        // The same bytes and tag as Redis would keep.
        let encoded = Bytes::from(StoredResult::encode(comparison));
        let stored = StoredResult::decode(encoded, SystemTime::now()).expect("what encode writes, decode reads");
        self.results.insert(id.clone(), stored);
        match earlier::outliving(comparison) {
            Some((json, until_ms)) => {
                let left = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(until_ms) * 1_000_000)
                    .map_or(Duration::ZERO, |end| {
                        (end - time::OffsetDateTime::now_utc()).try_into().unwrap_or_default()
                    });
                self.kept.insert(id.clone(), Kept { json: Bytes::from(json), until: Instant::now() + left });
            }
            None => self.kept.invalidate(id),
        }
        pending.live.remove(id);
        drop(pending);
        self.ready.announce(id);
        Ok(StoreOutcome::Stored)
    }

    async fn ping(&self) -> Result<(), Error> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl ProgressLog for MemoryStore {
    async fn watch(&self, id: &ProductId, ttl: Duration) -> Result<(), Error> {
        self.watched.insert(id.clone(), Instant::now() + ttl);
        Ok(())
    }

    async fn progress(&self, id: &ProductId, outcome: &Result<Quote, Failure>, ttl: Duration) -> Result<(), Error> {
        let (kind, data) = Progress::encode(outcome);
        let seq = self.progress_seq.fetch_add(1, Ordering::Relaxed);
        let event = Progress::decode(ProgressId { ms: 0, seq }, kind.as_str().as_bytes(), &data)
            .expect("an encoded outcome decodes");
        let now = Instant::now();
        let until = match self.pending.lock().expect("pending lock").live.get(id) {
            Some((_, until)) if *until > now => *until,
            _ => now + ttl,
        };
        let log = self.progress.get_with_by_ref(id, || Arc::new(Log { events: Mutex::default(), until }));
        {
            let mut events = log.events.lock().expect("log lock");
            if events.len() >= MAX_EVENTS {
                events.remove(0);
            }
            events.push(event.clone());
        }
        self.ready.progress(id, event);
        Ok(())
    }

    async fn progress_log(&self, id: &ProductId) -> Result<Vec<Progress>, Error> {
        Ok(self.progress.get(id).map(|log| log.events.lock().expect("log lock").clone()).unwrap_or_default())
    }
}

#[async_trait::async_trait]
impl Backlog for MemoryStore {
    async fn enqueued(&self, ids: &[ProductId], at: SystemTime) -> Result<(), Error> {
        let mut backlog = self.backlog.lock().expect("backlog lock");
        for id in ids {
            backlog.insert(id.clone(), at);
        }
        Ok(())
    }

    async fn dequeued(&self, ids: &[ProductId]) -> Result<(), Error> {
        let mut backlog = self.backlog.lock().expect("backlog lock");
        for id in ids {
            backlog.remove(id);
        }
        Ok(())
    }

    async fn finished(&self, id: &ProductId) -> Result<(), Error> {
        self.backlog.lock().expect("backlog lock").remove(id);
        self.finished.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn report_capacity(&self, member: &str, per_sec: f64, now: SystemTime) -> Result<(), Error> {
        self.capacities.lock().expect("capacities lock").insert(member.to_owned(), (per_sec, now));
        Ok(())
    }

    async fn leave(&self, member: &str) -> Result<(), Error> {
        self.capacities.lock().expect("capacities lock").remove(member);
        Ok(())
    }

    async fn backlog(&self, now: SystemTime, horizon: Duration) -> Result<BacklogState, Error> {
        let age = |at: &SystemTime| now.duration_since(*at).unwrap_or_default();
        let mut capacities = self.capacities.lock().expect("capacities lock");
        capacities.retain(|_, (_, at)| age(at) <= 10 * CAPACITY_FRESH);
        let fresh = capacities.values().filter(|(_, at)| age(at) <= CAPACITY_FRESH);
        let (capacity_per_sec, consumers) = fresh.fold((0.0, 0), |(sum, n), (rate, _)| (sum + rate, n + 1));
        let mut backlog = self.backlog.lock().expect("backlog lock");
        backlog.retain(|_, at| age(at) <= horizon);
        Ok(BacklogState {
            outstanding: backlog.len() as u64,
            oldest: backlog.values().map(age).max(),
            finished: self.finished.load(Ordering::Relaxed),
            capacity_per_sec,
            consumers,
        })
    }
}

impl Announcements for MemoryStore {
    fn waiter(&self, id: &ProductId) -> Waiter {
        self.ready.waiter(id)
    }

    fn watcher(&self, id: &ProductId) -> Waiter {
        self.ready.watcher(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TtlPolicy;

    fn hold(secs: u64) -> Hold {
        Hold { pending: Duration::from_secs(secs), queued: Duration::from_secs(10 * secs) }
    }

    fn id() -> ProductId {
        ProductId::parse("p").unwrap()
    }

    #[tokio::test]
    async fn a_failed_result_does_not_replace_a_good_one_and_a_refresh_claim_is_exclusive() {
        use crate::domain::{Currency, Failure, FailureReason, Quote};
        let store = MemoryStore::new(100);
        let policy = TtlPolicy {
            answered: Duration::from_secs(300),
            transient: Duration::from_secs(300),
            failed: Duration::from_secs(30),
            not_found: Duration::from_secs(30),
        };
        let quote = Quote::new("a", rust_decimal::Decimal::new(1250, 2), Currency::parse("EUR").unwrap(), 5);
        let good =
            Comparison::aggregate(id(), [Ok(quote)], time::OffsetDateTime::now_utc(), &policy, &Default::default());
        assert_eq!(store.store(&good, "a").await.unwrap(), StoreOutcome::Stored);
        // A refresh claims the marker while the result exists, once.
        let ttl = hold(30);
        assert!(store.claim_pending(&id(), "r", ttl).await.unwrap());
        assert!(!store.claim_pending(&id(), "s", ttl).await.unwrap());
        let failure = Failure::new("a", FailureReason::Timeout, "slow");
        let failed =
            Comparison::aggregate(id(), [Err(failure)], time::OffsetDateTime::now_utc(), &policy, &Default::default());
        assert_eq!(store.store(&failed, "r").await.unwrap(), StoreOutcome::Kept);
        let Peek::Hit(kept) = store.lookup(&id()).await.unwrap() else { panic!("the good result stays") };
        assert_eq!(kept.comparison().unwrap(), good);
        assert!(store.claim_pending(&id(), "t", ttl).await.unwrap(), "the marker was released");
    }

    #[tokio::test]
    async fn claims_are_exclusive_and_released_only_by_their_owner() {
        let store = MemoryStore::new(100);
        let ttl = hold(30);
        assert!(matches!(store.lookup_or_claim(&id(), "a", ttl).await.unwrap(), Lookup::Claimed));
        assert!(matches!(store.lookup_or_claim(&id(), "b", ttl).await.unwrap(), Lookup::AlreadyPending));
        assert!(!store.release_pending(&id(), "b").await.unwrap(), "not b's to release");
        assert!(matches!(store.lookup_or_claim(&id(), "c", ttl).await.unwrap(), Lookup::AlreadyPending));
        assert!(store.release_pending(&id(), "a").await.unwrap());
        assert!(matches!(store.lookup_or_claim(&id(), "c", ttl).await.unwrap(), Lookup::Claimed));
    }

    #[tokio::test]
    async fn a_queued_product_is_pending_after_its_marker_ends_until_its_request_finishes() {
        let store = MemoryStore::new(100);
        let brief = Hold { pending: Duration::from_millis(20), queued: Duration::from_secs(30) };
        assert!(matches!(store.lookup_or_claim(&id(), "a", brief).await.unwrap(), Lookup::Claimed));
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(matches!(store.lookup(&id()).await.unwrap(), Peek::Pending), "its request is still queued");
        assert!(matches!(store.lookup_or_claim(&id(), "b", brief).await.unwrap(), Lookup::AlreadyPending));
        assert!(!store.claim_pending(&id(), "r", brief).await.unwrap(), "no refresh either");
        // The marker was set again, to the queued request's token: its owner releases both.
        assert!(store.release_pending(&id(), "a").await.unwrap());
        assert!(matches!(store.lookup_or_claim(&id(), "c", brief).await.unwrap(), Lookup::Claimed));
    }

    #[tokio::test]
    async fn a_stored_result_is_a_hit_until_its_ttl_and_clears_the_marker() {
        let store = MemoryStore::new(100);
        store.lookup_or_claim(&id(), "a", hold(30)).await.unwrap();
        let policy = TtlPolicy {
            answered: Duration::from_secs(300),
            transient: Duration::from_secs(300),
            failed: Duration::from_secs(1),
            not_found: Duration::from_secs(1),
        };
        let failed = Comparison::aggregate(id(), [], time::OffsetDateTime::now_utc(), &policy, &Default::default());
        assert_eq!(store.store(&failed, "a").await.unwrap(), StoreOutcome::Stored);
        assert!(store.earlier(&id()).await.unwrap().has_result);
        let Lookup::Hit(hit) = store.lookup_or_claim(&id(), "b", hold(30)).await.unwrap() else {
            panic!("expected a hit")
        };
        assert_eq!(hit.comparison().unwrap(), failed);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(!store.earlier(&id()).await.unwrap().has_result, "expired with its TTL");
        assert!(matches!(store.lookup_or_claim(&id(), "b", hold(30)).await.unwrap(), Lookup::Claimed));
    }

    #[tokio::test]
    async fn a_result_past_its_guarantee_is_not_stored_and_its_marker_is_released() {
        let store = MemoryStore::new(100);
        store.lookup_or_claim(&id(), "a", hold(30)).await.unwrap();
        let policy = TtlPolicy {
            answered: Duration::from_secs(1),
            transient: Duration::from_secs(1),
            failed: Duration::from_secs(1),
            not_found: Duration::from_secs(1),
        };
        let long_ago = time::OffsetDateTime::now_utc() - Duration::from_secs(5);
        let stale = Comparison::aggregate(id(), [], long_ago, &policy, &Default::default());
        assert_eq!(store.store(&stale, "a").await.unwrap(), StoreOutcome::Expired);
        assert!(!store.earlier(&id()).await.unwrap().has_result);
        assert!(matches!(store.lookup_or_claim(&id(), "b", hold(30)).await.unwrap(), Lookup::Claimed));
    }

    #[tokio::test]
    async fn a_newer_result_lives_until_its_own_deadline() {
        let store = MemoryStore::new(100);
        let short = TtlPolicy {
            answered: Duration::from_millis(300),
            transient: Duration::from_millis(300),
            failed: Duration::from_millis(300),
            not_found: Duration::from_millis(300),
        };
        let long = TtlPolicy {
            answered: Duration::from_secs(60),
            transient: Duration::from_secs(60),
            failed: Duration::from_secs(60),
            not_found: Duration::from_secs(60),
        };
        let now = time::OffsetDateTime::now_utc();
        store.store(&Comparison::aggregate(id(), [], now, &short, &Default::default()), "a").await.unwrap();
        store.store(&Comparison::aggregate(id(), [], now, &long, &Default::default()), "b").await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(store.earlier(&id()).await.unwrap().has_result, "kept until the newer deadline, not the older one");
    }

    #[tokio::test]
    async fn expired_markers_are_swept_as_the_map_grows() {
        let store = MemoryStore::new(100);
        for i in 0..10 * SWEEP_FLOOR {
            let id = ProductId::parse(&format!("p{i}")).unwrap();
            store.lookup_or_claim(&id, "t", Hold { pending: Duration::ZERO, queued: Duration::ZERO }).await.unwrap();
        }
        let live = store.pending.lock().unwrap().live.len();
        assert!(live <= SWEEP_FLOOR, "{live} markers kept, all of them expired");
    }
}
