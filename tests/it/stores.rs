//! One contract for the result stores, run against both: Redis (the Lua scripts) and the
//! standalone demo's memory store, so the two cannot drift apart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pricefront::cache::{
    BacklogState, Hold, Keys, Lookup, MemoryStore, Peek, RedisStore, ResultStore, Store, StoreOutcome,
};
use pricefront::domain::{Comparison, Currency, Failure, FailureReason, ProductId, Quote, TtlPolicy};
use pricefront::settings::Settings;
use time::OffsetDateTime;

fn redis_store() -> Arc<dyn Store> {
    let env: HashMap<String, String> = [
        ("PRICEFRONT__REDIS__URL".to_owned(), crate::helpers::redis_url()),
        ("PRICEFRONT__REDIS__KEY_PREFIX".to_owned(), format!("it-stores-{}", uuid::Uuid::new_v4().simple())),
    ]
    .into();
    let settings = Settings::load_from(None, Some(env)).unwrap();
    Arc::new(RedisStore::connect_lazy(&settings.redis).unwrap())
}

const HOLD: Hold = Hold { pending: Duration::from_secs(30), queued: Duration::from_secs(300) };

const TTL: TtlPolicy = TtlPolicy {
    answered: Duration::from_secs(300),
    transient: Duration::from_secs(30),
    failed: Duration::from_secs(30),
    not_found: Duration::from_secs(600),
};

fn comparison(id: &ProductId, at: OffsetDateTime, outcomes: Vec<Result<Quote, Failure>>) -> Comparison {
    Comparison::aggregate(id.clone(), outcomes, at, &TTL, &Default::default())
}

fn quote(provider: &str, cents: i64) -> Result<Quote, Failure> {
    Ok(Quote::new(provider, rust_decimal::Decimal::new(cents, 2), Currency::parse("EUR").unwrap(), 1))
}

async fn stored(store: &dyn Store, id: &ProductId) -> Option<Comparison> {
    match store.lookup(id).await.unwrap() {
        Peek::Hit(hit) => Some(hit.comparison().unwrap()),
        _ => None,
    }
}

async fn contract(store: Arc<dyn Store>) {
    let id = ProductId::parse(&format!("contract-{}", uuid::Uuid::new_v4().simple())).unwrap();
    let now = OffsetDateTime::now_utc();

    // The newest computation wins, whatever order the stores come in.
    let newer = comparison(&id, now, vec![quote("a", 200)]);
    let older = comparison(&id, now - Duration::from_secs(5), vec![quote("a", 100)]);
    assert_eq!(store.store(&newer, "t1").await.unwrap(), StoreOutcome::Stored);
    assert!(store.claim_pending(&id, "t2", HOLD).await.unwrap());
    assert_eq!(store.store(&older, "t2").await.unwrap(), StoreOutcome::Superseded);
    assert_eq!(stored(&*store, &id).await.unwrap(), newer, "the newer result stays");
    assert!(store.claim_pending(&id, "t3", HOLD).await.unwrap(), "the marker was released");
    assert!(!store.release_pending(&id, "t2").await.unwrap(), "t2's marker went with its store");
    assert!(store.release_pending(&id, "t3").await.unwrap());
    // Computed at the same moment (two consumers, one millisecond): the last write wins.
    let twin = comparison(&id, now, vec![quote("a", 250)]);
    assert_eq!(store.store(&twin, "t3").await.unwrap(), StoreOutcome::Stored);
    assert_eq!(stored(&*store, &id).await.unwrap(), twin);
    let newer = twin;

    // A failed result does not replace one that is not.
    let failed =
        comparison(&id, now + Duration::from_secs(1), vec![Err(Failure::new("a", FailureReason::Timeout, "slow"))]);
    assert_eq!(store.store(&failed, "t4").await.unwrap(), StoreOutcome::Kept);
    assert_eq!(stored(&*store, &id).await.unwrap(), newer);

    // A product is watched while its mark lasts, and only then.
    assert!(!store.earlier(&id).await.unwrap().watched, "nobody watches yet");
    store.watch(&id, Duration::from_secs(60)).await.unwrap();
    assert!(store.earlier(&id).await.unwrap().watched);
    // A later mark replaces it (a stream opened again); this one ends at once.
    store.watch(&id, Duration::from_millis(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!store.earlier(&id).await.unwrap().watched, "the mark ended with its time");

    // A result past its guarantee is not stored.
    let gone = ProductId::parse(&format!("gone-{}", uuid::Uuid::new_v4().simple())).unwrap();
    let stale = comparison(&gone, now - Duration::from_secs(400), vec![quote("a", 100)]);
    assert_eq!(store.store(&stale, "t5").await.unwrap(), StoreOutcome::Expired);
    assert!(stored(&*store, &gone).await.is_none());

    // Answers that outlive a brief result are kept for the next computation.
    let brief = ProductId::parse(&format!("brief-{}", uuid::Uuid::new_v4().simple())).unwrap();
    let outcomes = vec![
        quote("a", 100),
        Err(Failure::new("b", FailureReason::Timeout, "slow")),
        Err(Failure::new("c", FailureReason::NotFound, "404 Not Found")),
    ];
    let partial = comparison(&brief, now, outcomes);
    assert_eq!(store.store(&partial, "t6").await.unwrap(), StoreOutcome::Stored);
    let earlier = store.earlier(&brief).await.unwrap();
    assert!(earlier.has_result);
    assert_eq!(earlier.quotes.iter().map(|q| q.provider.as_str()).collect::<Vec<_>>(), ["a"]);
    assert_eq!(earlier.quotes[0].expires_at, Some(now + TTL.answered));
    assert_eq!(earlier.not_found.iter().map(|f| f.provider.as_str()).collect::<Vec<_>>(), ["c"]);
    assert_eq!(earlier.not_found[0].expires_at, Some(now + TTL.not_found));

    queued(&*store).await;
    backlog(&*store).await;
}

/// A product whose request is queued is never claimed again while it is, even after its marker
/// ends: asking again sets its marker again, for the queued request. Its result, or its owner's
/// release, ends it.
async fn queued(store: &dyn Store) {
    let id = ProductId::parse(&format!("queued-{}", uuid::Uuid::new_v4().simple())).unwrap();
    let brief = Hold { pending: Duration::from_millis(50), queued: Duration::from_secs(60) };
    assert!(matches!(store.lookup_or_claim(&id, "q1", brief).await.unwrap(), Lookup::Claimed));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(matches!(store.lookup(&id).await.unwrap(), Peek::Pending), "still queued");
    assert!(matches!(store.lookup_or_claim(&id, "q2", brief).await.unwrap(), Lookup::AlreadyPending));
    let many = store.lookup_or_claim_many(&[(id.clone(), "q3".to_owned())], brief).await.unwrap();
    assert!(matches!(many[0], Ok(Lookup::AlreadyPending)));
    assert!(!store.claim_pending(&id, "r1", brief).await.unwrap(), "no refresh while queued");
    // The result ends it: a refresh may claim it afterwards.
    let result = comparison(&id, OffsetDateTime::now_utc(), vec![quote("a", 100)]);
    assert_eq!(store.store(&result, "q1").await.unwrap(), StoreOutcome::Stored);
    assert!(store.claim_pending(&id, "r2", brief).await.unwrap());
    // A refresh's claim queues it too; its owner's release ends that.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!store.claim_pending(&id, "r3", brief).await.unwrap(), "the refresh is queued");
    assert!(!store.release_pending(&id, "r3").await.unwrap(), "not r3's to release");
    store.release_pending(&id, "r2").await.unwrap();
    assert!(store.claim_pending(&id, "r3", brief).await.unwrap());

    // A request whose result is not stored (its guarantee passed) is finished too: its queued
    // mark goes with it, but only its own.
    let late = ProductId::parse(&format!("late-{}", uuid::Uuid::new_v4().simple())).unwrap();
    assert!(matches!(store.lookup_or_claim(&late, "l1", brief).await.unwrap(), Lookup::Claimed));
    let stale = comparison(&late, OffsetDateTime::now_utc() - Duration::from_secs(400), vec![quote("a", 100)]);
    assert_eq!(store.store(&stale, "someone-else").await.unwrap(), StoreOutcome::Expired);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(matches!(store.lookup(&late).await.unwrap(), Peek::Pending), "not someone else's to clear");
    assert_eq!(store.store(&stale, "l1").await.unwrap(), StoreOutcome::Expired);
    assert!(matches!(store.lookup_or_claim(&late, "l2", brief).await.unwrap(), Lookup::Claimed));
}

/// The fleet's backlog: counted in once per product, out when finished, ages read, and what is
/// older than the horizon dropped. (The memory store's and a fresh Redis prefix's start empty.)
async fn backlog(store: &dyn Store) {
    let now = std::time::SystemTime::now();
    let ids: Vec<ProductId> = (0..3).map(|i| ProductId::parse(&format!("b{i}")).unwrap()).collect();
    let horizon = Duration::from_secs(300);
    store.enqueued(&ids[..2], now - Duration::from_secs(10)).await.unwrap();
    store.enqueued(&ids[1..], now).await.unwrap();
    let read = store.backlog(now, horizon).await.unwrap();
    assert_eq!((read.outstanding, read.finished), (3, 0));
    assert_eq!(read.oldest.map(|d| d.as_secs()), Some(10), "b0");
    store.finished(&ids[0]).await.unwrap();
    store.dequeued(&ids[2..]).await.unwrap();
    let read = store.backlog(now, horizon).await.unwrap();
    let expected = BacklogState { outstanding: 1, oldest: Some(Duration::ZERO), finished: 1, ..read };
    assert_eq!(read, expected, "b1 took its second, later time");
    let read = store.backlog(now + Duration::from_secs(301), horizon).await.unwrap();
    assert_eq!(read.outstanding, 0, "older than the horizon: lost");

    // The consumers' capacity: the sum of fresh reports; a silent one drops out, one leaving too.
    store.report_capacity("c1", 40.0, now).await.unwrap();
    store.report_capacity("c2", 25.0, now - Duration::from_secs(2)).await.unwrap();
    store.report_capacity("c3", 99.0, now - Duration::from_secs(30)).await.unwrap();
    let read = store.backlog(now, horizon).await.unwrap();
    assert_eq!((read.capacity_per_sec, read.consumers), (65.0, 2));
    store.leave("c1").await.unwrap();
    let read = store.backlog(now, horizon).await.unwrap();
    assert_eq!((read.capacity_per_sec, read.consumers), (25.0, 1));
}

#[tokio::test]
async fn redis_keeps_the_store_contract() {
    contract(redis_store()).await;
}

/// A result written before the `#pf1` header existed (its JSON alone) is read by the scripts
/// too: a failure does not replace an answered one, and an answer replaces it.
#[tokio::test]
async fn redis_reads_a_result_written_before_the_header() {
    let prefix = format!("it-legacy-{}", uuid::Uuid::new_v4().simple());
    let env: HashMap<String, String> = [
        ("PRICEFRONT__REDIS__URL".to_owned(), crate::helpers::redis_url()),
        ("PRICEFRONT__REDIS__KEY_PREFIX".to_owned(), prefix.clone()),
    ]
    .into();
    let settings = Settings::load_from(None, Some(env)).unwrap();
    let store = RedisStore::connect_lazy(&settings.redis).unwrap();
    let id = ProductId::parse("legacy-1").unwrap();
    let now = OffsetDateTime::now_utc();
    // Computed later than what follows: the header's newest-wins rule cannot see it.
    let legacy = comparison(&id, now + Duration::from_secs(1), vec![quote("a", 100)]);
    let mut redis =
        redis::Client::open(crate::helpers::redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let key = Keys::new(prefix).result(&id);
    redis::cmd("SET")
        .arg(&key)
        .arg(serde_json::to_vec(&legacy).unwrap())
        .arg("PX")
        .arg(60_000)
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    assert_eq!(stored(&store, &id).await.unwrap(), legacy, "read as it is");

    let failed = comparison(&id, now, vec![Err(Failure::new("a", FailureReason::Timeout, "slow"))]);
    assert_eq!(store.store(&failed, "t1").await.unwrap(), StoreOutcome::Kept, "its status is read from its JSON");
    assert_eq!(stored(&store, &id).await.unwrap(), legacy);

    let answered = comparison(&id, now, vec![quote("a", 90)]);
    assert_eq!(store.store(&answered, "t2").await.unwrap(), StoreOutcome::Stored, "replaced by any answer");
    assert_eq!(stored(&store, &id).await.unwrap(), answered);
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut redis).await.unwrap();
}

#[tokio::test]
async fn memory_keeps_the_store_contract() {
    contract(Arc::new(MemoryStore::new(100))).await;
}
