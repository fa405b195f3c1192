//! `GET /v1/prices?ids=…`: a catalogue page in one request, against real Redis, the real
//! broker and the mock's HTTP sources.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::future::join_all;
use serde_json::Value;

use crate::helpers::{env, get, max_age, provider, wait_for};

/// GETs a page; the status, headers and JSON body.
async fn page(
    http: &reqwest::Client,
    base: &str,
    ids: &[&str],
    prefer: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = http.get(format!("{base}/v1/prices?ids={}", ids.join(",")));
    if let Some(prefer) = prefer {
        request = request.header("prefer", prefer);
    }
    let res = request.send().await.unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    (status, headers, res.json().await.unwrap_or(Value::Null))
}

fn results(body: &Value) -> &serde_json::Map<String, Value> {
    body["results"].as_object().unwrap_or_else(|| panic!("no results object: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_answers_hits_misses_and_not_found_once_each_and_waits_for_all() {
    let mut sources = vec![provider("alpha", 20), provider("beta", 40)];
    for s in &mut sources {
        s.not_found_prefix = Some("gone-".into());
    }
    let mapping = r#"{ price = "/price", currency = "/currency", product_id = "/product_id", not_found = [404] }"#;
    let env = env()
        .providers(sources)
        .provider_option("alpha", "response", mapping)
        .provider_option("beta", "response", mapping)
        .start()
        .await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    let base = &producer.base;
    let (cached, gone, cold) = (env.product("cached"), format!("gone-{}", env.product("x")), env.product("cold"));
    for id in [&cached, &gone] {
        let res = env.http.get(format!("{base}/v1/prices/{id}")).header("prefer", "wait=30").send().await.unwrap();
        assert!([200, 404].contains(&res.status().as_u16()), "{id}: {}", res.status());
    }
    let (_, _, single) = get(&env.http, &format!("{base}/v1/prices/{cached}")).await;

    // A duplicate, and the three kinds of entry.
    let (status, headers, body) = page(&env.http, base, &[&cached, &gone, &cold, &cached], None).await;
    assert_eq!(status, 200, "{body}");
    let entries = results(&body);
    let ids: BTreeSet<&str> = entries.keys().map(String::as_str).collect();
    assert_eq!(ids, BTreeSet::from([cached.as_str(), gone.as_str(), cold.as_str()]), "one entry per distinct id");
    assert_eq!(entries[&cached], single, "a cached entry is the single product's body");
    assert_eq!(entries[&gone], serde_json::json!({"status": "not_found"}));
    assert_eq!(entries[&cold], serde_json::json!({"status": "pending"}));
    assert_eq!(headers["cache-control"], "no-store", "an entry is pending");
    assert_eq!(headers["x-cache"], "MISS");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(headers["content-type"], "application/json");

    // Asking again while it is computed publishes nothing more; waiting gets every entry final.
    let other = env.product("cold-2");
    let (status, headers, body) = page(&env.http, base, &[&cold, &other, &cached], Some("wait=30")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["preference-applied"], "wait=10", "capped at producer.max_wait_secs");
    let entries = results(&body);
    for id in [&cold, &other, &cached] {
        assert_eq!(entries[id.as_str()]["status"], "complete", "{id}: {body}");
        assert_eq!(entries[id.as_str()]["product_id"], id.as_str());
    }
    assert_eq!(headers["x-cache"], "HIT", "every entry is a result now, as a waited single product's");
    // Cached now: the page's max-age is its entries' smallest.
    let (_, headers, body) = page(&env.http, base, &[&cold, &other, &cached, &gone], None).await;
    assert_eq!(headers["x-cache"], "HIT", "{body}");
    let ages: Vec<u64> = join_all([&cold, &other, &cached, &gone].map(|id| {
        let url = format!("{base}/v1/prices/{id}");
        let http = env.http.clone();
        async move { max_age(&http.get(url).send().await.unwrap().headers().clone()) }
    }))
    .await;
    let page_age = max_age(&headers);
    assert!(page_age <= *ages.iter().min().unwrap(), "page max-age {page_age}, entries' {ages:?}");
    assert!(page_age + 5 >= *ages.iter().min().unwrap(), "page max-age {page_age}, entries' {ages:?}");
    for id in [&cold, &other] {
        assert_eq!(env.messages_for(id).await, 1, "{id} was published once");
    }
    consumer.stop().await;
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pages_are_400_problems_that_name_the_bad_ids() {
    let env = env().set("producer", "max_batch_ids", "3").start().await;
    let producer = env.spawn_producer().await;
    let base = &producer.base;
    let problem = |status: u16, headers: &reqwest::header::HeaderMap, body: &Value, kind: &str| {
        assert_eq!(status, 400, "{body}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(body["type"], kind, "{body}");
    };
    let (status, headers, body) = page(&env.http, base, &["ok", "b%20ad", "-x", "ok"], None).await;
    problem(status, &headers, &body, "/problems/invalid-product-ids");
    assert_eq!(body["invalid_ids"], serde_json::json!(["b ad", "-x"]));
    // Four distinct ids are too many; duplicates do not count.
    let (status, headers, body) = page(&env.http, base, &["a", "b", "c", "d"], None).await;
    problem(status, &headers, &body, "/problems/too-many-ids");
    let (status, _, body) = page(&env.http, base, &["a", "b", "c", "a", "b"], None).await;
    assert_eq!((status, results(&body).len()), (200, 3));
    let (status, headers, body) = get(&env.http, &format!("{base}/v1/prices")).await;
    problem(status, &headers, &body, "/problems/bad-query");
    let (status, headers, body) = get(&env.http, &format!("{base}/v1/prices?ids=")).await;
    problem(status, &headers, &body, "/problems/invalid-product-ids");
    // Nothing was claimed or published for any of them.
    let pending: Option<String> = env.redis_get(&env.pending_key("a")).await;
    assert!(pending.is_some(), "the one valid page claimed a");
    assert_eq!(env.redis_get(&env.pending_key("d")).await, None, "the refused page claimed nothing");
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_pages_sharing_products_publish_each_once() {
    let env = env().providers(vec![provider("alpha", 30), provider("beta", 50)]).start().await;
    let producers = [env.spawn_producer().await, env.spawn_producer().await];
    let consumer = env.spawn_consumer();
    let catalogue: Vec<String> = (0..120).map(|i| env.product(&format!("shelf-{i}"))).collect();
    // Pages of 48 ids, overlapping: page p starts at (p * 7) % 120 and wraps.
    let pages: Vec<Vec<&str>> =
        (0..200).map(|p| (0..48).map(|k| catalogue[(p * 7 + k) % catalogue.len()].as_str()).collect()).collect();
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
    let answers = join_all(pages.iter().enumerate().map(|(p, ids)| {
        let (http, base) = (http.clone(), producers[p % 2].base.clone());
        async move { page(&http, &base, ids, None).await }
    }))
    .await;
    for (status, _, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(results(body).len(), 48, "{body}");
        let kinds: BTreeSet<&str> = results(body).values().map(|e| e["status"].as_str().unwrap()).collect();
        assert!(kinds.iter().all(|k| ["pending", "complete"].contains(k)), "{kinds:?}");
    }
    // Every product comes out, from one message and one call per source.
    let ids: Vec<&str> = catalogue.iter().map(String::as_str).collect();
    for chunk in ids.chunks(40) {
        wait_for("the whole catalogue computed", Duration::from_secs(90), || async {
            let (_, _, body) = page(&http, &producers[0].base, chunk, None).await;
            let left: Vec<&String> =
                results(&body).iter().filter(|(_, e)| e["status"] != "complete").map(|(id, _)| id).collect();
            if left.is_empty() { Ok(()) } else { Err(format!("{} not complete yet", left.len())) }
        })
        .await;
    }
    let published = env.messages_by_key(&env.settings.kafka.topic).await;
    let wrong: BTreeMap<&str, usize> = catalogue
        .iter()
        .map(|id| (id.as_str(), published.get(id).copied().unwrap_or(0)))
        .filter(|(_, n)| *n != 1)
        .collect();
    assert!(wrong.is_empty(), "products not published exactly once: {wrong:?}");
    let stats = env.mock_stats().await;
    for source in ["alpha", "beta"] {
        let calls: u64 =
            catalogue.iter().map(|id| stats["providers"][source]["by_product"][id].as_u64().unwrap_or(0)).sum();
        assert_eq!(calls, catalogue.len() as u64, "{source}: one call per product");
    }
    consumer.stop().await;
    for p in producers {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_look_and_one_batch_claim_tell_cached_pending_and_absent_apart() {
    use pricefront::cache::{Lookup, Peek, RedisStore, ResultStore};
    use pricefront::domain::{Comparison, ProductId, Rates};
    let env = env().start().await;
    let store = RedisStore::connect_lazy(&env.settings.redis).unwrap();
    let id = |tag: &str| ProductId::parse(&env.product(tag)).unwrap();
    let (cached, pending, absent, untouched) = (id("b-cached"), id("b-pending"), id("b-absent"), id("b-untouched"));
    let hold = pricefront::cache::Hold { pending: Duration::from_secs(30), queued: Duration::from_secs(300) };
    let comparison = Comparison::aggregate(
        cached.clone(),
        [],
        time::OffsetDateTime::now_utc(),
        &env.settings.cache.ttl_policy(),
        &Rates::default(),
    );
    store.store(&comparison, "t").await.unwrap();
    assert!(store.claim_pending(&pending, "someone-else", hold).await.unwrap());

    let claims: Vec<(ProductId, String)> =
        [&cached, &pending, &absent].into_iter().map(|id| (id.clone(), format!("token-{id}"))).collect();
    let lookups = store.lookup_or_claim_many(&claims, hold).await.unwrap();
    let kinds: Vec<&str> = lookups
        .iter()
        .map(|l| match l.as_ref().unwrap() {
            Lookup::Hit(s) => {
                if s.body.starts_with(b"{") {
                    "hit"
                } else {
                    "hit?"
                }
            }
            Lookup::AlreadyPending => "pending",
            Lookup::Claimed => "claimed",
        })
        .collect();
    assert_eq!(kinds, ["hit", "pending", "claimed"]);
    assert_eq!(
        env.redis_get(&env.pending_key(absent.as_str())).await.as_deref(),
        Some(format!("token-{absent}").as_str())
    );

    let peeks = store.lookup_many(&[cached.clone(), pending, absent, untouched]).await.unwrap();
    let kinds: Vec<&str> = peeks
        .iter()
        .map(|p| match p.as_ref().unwrap() {
            Peek::Hit(_) => "hit",
            Peek::Pending => "pending",
            Peek::Absent => "absent",
        })
        .collect();
    assert_eq!(kinds, ["hit", "pending", "pending", "absent"], "the claimed one is pending now");
    let Ok(Peek::Hit(hit)) = &peeks[0] else { unreachable!() };
    assert_eq!(hit.comparison().unwrap(), comparison);
}
