//! Past capacity (issue 25): one consumer that computes about 6 products a second is sent four
//! times that in new products while a few popular products are asked for all the time. The
//! popular ones stay warm (their refreshes go first), new ones are either computed within
//! `cache.pending_ttl_secs` or refused at once with 503 and `Retry-After`, and no product is
//! published twice. Shares and counts, no timings: the real producer, broker, consumer and
//! Redis do the work. `scripts/bench-overload.sh` reports the same figures for a longer run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::helpers::{env, get, provider, wait_for};

/// What one kind of request got, by status.
#[derive(Default, Debug)]
struct Tally {
    statuses: BTreeMap<u16, usize>,
}

impl Tally {
    fn share(&self, status: u16) -> f64 {
        let total: usize = self.statuses.values().sum();
        self.statuses.get(&status).copied().unwrap_or(0) as f64 / total.max(1) as f64
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_capacity_hot_products_stay_warm_new_ones_are_computed_in_time_or_refused_and_none_is_published_twice() {
    const PENDING_TTL: Duration = Duration::from_secs(4);
    const OVERLOAD: Duration = Duration::from_secs(20);
    const NEW_PER_SEC: u64 = 25;
    let env = env()
        .providers(vec![provider("alpha", 300), provider("beta", 300)])
        .set("cache", "ttl_secs", "6")
        .set("cache", "pending_ttl_secs", &PENDING_TTL.as_secs().to_string())
        .set("consumer", "max_in_flight", "2")
        .start()
        .await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    let base = producer.base.clone();

    // Warm: five popular products served, then asked for through one refresh each, so both of
    // the consumer's group members are in before the flood.
    let hot: Vec<String> = (0..5).map(|i| env.product(&format!("hot{i}"))).collect();
    for product in &hot {
        let url = format!("{base}/v1/prices/{product}");
        wait_for("a popular product served", Duration::from_secs(60), || async {
            let response = env.http.get(&url).header("Prefer", "wait=5").send().await.map_err(|e| e.to_string())?;
            (response.status() == 200).then_some(()).ok_or(response.status().to_string())
        })
        .await;
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let hot_tally = Arc::new(Mutex::new(Tally::default()));
    let counting = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut askers = Vec::new();
    for product in hot.clone() {
        let (http, url, stop, tally, counting) = (
            env.http.clone(),
            format!("{base}/v1/prices/{product}"),
            stop.clone(),
            hot_tally.clone(),
            counting.clone(),
        );
        askers.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                let (status, _, _) = get(&http, &url).await;
                if counting.load(std::sync::atomic::Ordering::Relaxed) {
                    *tally.lock().unwrap().statuses.entry(status).or_default() += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    // One guarantee window and more: every popular product refreshed once.
    tokio::time::sleep(Duration::from_secs(8)).await;

    // Every result announced from now on, and when: results live 6 s, so they are heard as they
    // come rather than read afterwards.
    let client = redis::Client::open(env.settings.redis.url.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    let channels = pricefront::cache::Keys::new(env.settings.redis.key_prefix.clone()).ready_channels();
    pubsub.psubscribe(format!("{channels}*")).await.unwrap();
    let announced: Arc<Mutex<BTreeMap<String, SystemTime>>> = Arc::default();
    let listening = {
        let announced = announced.clone();
        tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(message) = futures::StreamExt::next(&mut messages).await {
                let product = message.get_channel_name().trim_start_matches(&channels).to_owned();
                announced.lock().unwrap().entry(product).or_insert_with(SystemTime::now);
            }
        })
    };

    // The flood: NEW_PER_SEC new products a second, each asked once, for OVERLOAD.
    counting.store(true, std::sync::atomic::Ordering::Relaxed);
    let accepted: Arc<Mutex<Vec<(String, SystemTime)>>> = Arc::default();
    let new_tally = Arc::new(Mutex::new(Tally::default()));
    let refused_without_retry_after = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut every = tokio::time::interval(Duration::from_millis(1000 / NEW_PER_SEC));
    let mut asks = Vec::new();
    let mut n = 0;
    while started.elapsed() < OVERLOAD {
        every.tick().await;
        n += 1;
        let product = env.product(&format!("new{n:05}"));
        let (http, url) = (env.http.clone(), format!("{base}/v1/prices/{product}"));
        let (accepted, tally, no_retry) = (accepted.clone(), new_tally.clone(), refused_without_retry_after.clone());
        asks.push(tokio::spawn(async move {
            let (status, headers, _) = get(&http, &url).await;
            *tally.lock().unwrap().statuses.entry(status).or_default() += 1;
            match status {
                202 => accepted.lock().unwrap().push((product, SystemTime::now())),
                503 if headers.get("retry-after").is_none() => {
                    no_retry.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                _ => {}
            }
        }));
    }
    for ask in asks {
        ask.await.unwrap();
    }
    counting.store(false, std::sync::atomic::Ordering::Relaxed);
    stop.cancel();
    for asker in askers {
        asker.await.unwrap();
    }

    // Until each accepted product is announced, or its pending_ttl is long past.
    let accepted = accepted.lock().unwrap().clone();
    let give_up = Instant::now() + PENDING_TTL * 3;
    while Instant::now() < give_up && !accepted.iter().all(|(p, _)| announced.lock().unwrap().contains_key(p)) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    listening.abort();
    let announced = std::mem::take(&mut *announced.lock().unwrap());
    // A product is in time if its result was announced within pending_ttl of its 202.
    let in_time = accepted
        .iter()
        .filter(|(product, at)| {
            announced.get(product).is_some_and(|done| done.duration_since(*at).unwrap_or_default() <= PENDING_TTL)
        })
        .count();
    let computed = accepted.iter().filter(|(product, _)| announced.contains_key(product)).count();

    let published = env.messages_by_key(&env.settings.kafka.topic).await;
    let new_published: usize = published.iter().filter(|(key, _)| key.starts_with("new")).map(|(_, count)| count).sum();
    let twice: Vec<_> = published.iter().filter(|(key, count)| key.starts_with("new") && **count > 1).collect();

    let hot_tally = std::mem::take(&mut *hot_tally.lock().unwrap());
    let new_tally = std::mem::take(&mut *new_tally.lock().unwrap());
    let report = format!(
        "hot: {:?} ({:.1}% 200); new: {n} asked, {:?}; accepted {}, {in_time} computed within {PENDING_TTL:?} \
         ({} computed at all); {new_published} published for them, twice: {twice:?}",
        hot_tally.statuses,
        100.0 * hot_tally.share(200),
        new_tally.statuses,
        accepted.len(),
        computed,
    );
    eprintln!("{report}");
    assert!(hot_tally.share(200) >= 0.95, "popular products stay warm: {report}");
    assert!(new_tally.share(503) > 0.2, "past capacity, new products are shed: {report}");
    assert!(accepted.len() as f64 >= 0.1 * n as f64, "and some are admitted: {report}");
    assert_eq!(refused_without_retry_after.load(std::sync::atomic::Ordering::Relaxed), 0, "{report}");
    assert!(
        new_tally.statuses.keys().all(|status| [202, 503].contains(status)),
        "a new product is accepted or refused: {report}"
    );
    assert!(in_time as f64 >= 0.9 * accepted.len() as f64, "admitted products are computed in time: {report}");
    assert!(twice.is_empty() && new_published <= accepted.len(), "nothing is published twice: {report}");

    consumer.stop().await;
    producer.stop().await;
}
