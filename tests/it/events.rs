//! `GET /v1/prices/{id}/events` (Server-Sent Events) over the real broker and Redis: each
//! source's quote or failure as it comes, then the result; late joiners get what was
//! gathered; many streams share one message and one call per source; bounds and hang-ups.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use pricefront::settings::MockProviderSettings;

use crate::helpers::{TestEnv, env, get, on_private_redis, provider, wait_for, warm_up};
use crate::sse::{SseEvent, SseStream};

fn failing(name: &str) -> MockProviderSettings {
    MockProviderSettings { error_rate: 1.0, ..provider(name, 10) }
}

async fn has_result(env: &TestEnv, product: &str) -> bool {
    env.redis_get(&env.result_key(product)).await.is_some()
}

/// The quote and failure events by provider, checking there is one per provider.
fn by_provider(events: &[SseEvent]) -> BTreeMap<String, String> {
    let mut seen = BTreeMap::new();
    for e in events.iter().filter(|e| e.event != "result") {
        assert!(seen.insert(e.provider(), e.event.clone()).is_none(), "{} twice: {events:?}", e.provider());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_source_is_streamed_as_it_answers_then_the_result_and_the_stream_ends() {
    let env = env().providers(vec![provider("alpha", 50), failing("broken"), provider("slow", 1500)]).start().await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    warm_up(&env, &producer.base).await;

    let product = env.product("watched");
    let url = format!("{}/v1/prices/{product}/events", producer.base);
    let mut stream = SseStream::open(&env.http, &url, &[]).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.headers["content-type"], "text/event-stream");
    assert_eq!(stream.headers["cache-control"], "no-store");
    assert_eq!(stream.headers["x-cache"], "MISS");

    // The fast sources arrive live: while the slow one is still being asked, no result exists.
    let mut events = Vec::new();
    for _ in 0..2 {
        let event = stream.next().await.expect("an event");
        assert!(!has_result(&env, &product).await, "{event:?} came only after the result was stored");
        events.push(event);
    }
    events.extend(stream.rest().await);
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds.len(), 4, "{events:?}");
    assert_eq!(kinds[3], "result", "the result comes last, then the stream ends: {events:?}");
    let expected: BTreeMap<String, String> =
        [("alpha", "quote"), ("broken", "failure"), ("slow", "quote")].map(|(p, k)| (p.into(), k.into())).into();
    assert_eq!(by_provider(&events), expected);
    // Live events carry their place in the log; the slow quote is the last one logged.
    assert!(events[..3].iter().all(|e| e.id.is_some()), "{events:?}");
    assert_eq!(events[2].provider(), "slow");
    let failure = events.iter().find(|e| e.event == "failure").unwrap().json();
    assert_eq!(failure["reason"], "http_status");

    // The result is exactly what GET answers.
    let (status, _, body) = get(&env.http, &format!("{}/v1/prices/{product}", producer.base)).await;
    assert_eq!(status, 200);
    assert_eq!(events[3].json(), body);
    assert_eq!(body["status"], "partial");
    // Its log is gone with the computation.
    let log: i64 = redis::cmd("EXISTS")
        .arg(env.keys().progress(&crate::helpers::product_id(&product)))
        .query_async(&mut env.redis.clone())
        .await
        .unwrap();
    assert_eq!(log, 0);

    // Cached: one result event, at once.
    let mut cached = SseStream::open(&env.http, &url, &[]).await;
    assert_eq!(cached.headers["x-cache"], "HIT");
    let events = cached.rest().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].event.as_str(), events[0].json()), ("result", body));
    consumer.stop().await;
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_gets_what_was_gathered_then_the_rest_live() {
    let env = env().providers(vec![provider("alpha", 30), provider("beta", 60), provider("slow", 1200)]).start().await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    warm_up(&env, &producer.base).await;

    let product = env.product("late");
    let url = format!("{}/v1/prices/{product}/events", producer.base);
    let mut first = SseStream::open(&env.http, &url, &[]).await;
    let early = [first.next().await.unwrap(), first.next().await.unwrap()];

    // Joins while the slow source is still being asked.
    let mut late = SseStream::open(&env.http, &url, &[]).await;
    let gathered = [late.next().await.unwrap(), late.next().await.unwrap()];
    assert!(!has_result(&env, &product).await, "the late joiner got the log before the result existed");
    assert_eq!(gathered, early, "the events already gathered, first, with their ids");
    // Reconnecting with Last-Event-ID: what it had is not sent again.
    let last_id = early[0].id.clone().unwrap();
    let mut resumed = SseStream::open(&env.http, &url, &[("last-event-id", &last_id)]).await;

    let rest = late.rest().await;
    assert_eq!(rest.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(), ["quote", "result"], "{rest:?}");
    assert_eq!(rest[0].provider(), "slow");
    assert_eq!(first.rest().await, rest, "both streams end the same way");
    let resumed = resumed.rest().await;
    let providers: Vec<String> = resumed.iter().filter(|e| e.event != "result").map(SseEvent::provider).collect();
    assert_eq!(providers.len(), 2, "{resumed:?}");
    assert!(!providers.contains(&early[0].provider()), "{resumed:?}");
    consumer.stop().await;
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_streams_on_one_cold_product_publish_once_and_call_each_source_once() {
    // Every stream comes from 127.0.0.1: lift the per-client cap (hostile.rs tests the cap).
    let env = env()
        .providers(vec![provider("alpha", 200), provider("beta", 400)])
        .set("producer", "max_streams_per_client", "200")
        .start()
        .await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    warm_up(&env, &producer.base).await;

    let product = env.product("crowd");
    let url = format!("{}/v1/prices/{product}/events", producer.base);
    let streams = join_all((0..200).map(|_| {
        let (http, url) = (env.http.clone(), url.clone());
        async move { SseStream::open(&http, &url, &[]).await.rest().await }
    }))
    .await;
    for events in &streams {
        assert_eq!(events.last().map(|e| e.event.as_str()), Some("result"), "{events:?}");
        assert_eq!(by_provider(events).len(), 2, "{events:?}");
    }
    let calls = env.calls_for(&product).await;
    assert_eq!(calls.into_iter().collect::<Vec<_>>(), [("alpha".into(), 1), ("beta".into(), 1)]);
    assert_eq!(env.messages_for(&product).await, 1);
    consumer.stop().await;
    producer.stop().await;
}

/// A gauge or counter of a producer process (`name{labels}` as exposed), 0 when absent.
async fn metric(env: &TestEnv, base: &str, name: &str) -> f64 {
    let text = env.http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_closing_mid_stream_frees_its_place_at_once() {
    let env = env().providers(vec![provider("alpha", 20), provider("slow", 20_000)]).start().await;
    let producer = env.spawn_producer_process().await;
    let consumer = env.spawn_consumer();
    let product = env.product("closing");
    let url = format!("{}/v1/prices/{product}/events", producer.base);
    let mut stream = SseStream::open(&env.http, &url, &[]).await;
    assert_eq!(metric(&env, &producer.ops, "pricefront_open_streams").await, 1.0);
    // Mid-stream: the first source's quote has come, the slow one's has not.
    let first = stream.next().await.unwrap();
    assert_eq!(first.provider(), "alpha");
    drop(stream);
    wait_for("the stream's place to be freed", Duration::from_secs(5), || async {
        match metric(&env, &producer.ops, "pricefront_open_streams").await {
            0.0 => Ok(()),
            n => Err(format!("{n} open")),
        }
    })
    .await;
    assert_eq!(metric(&env, &producer.ops, "pricefront_streams_total{outcome=\"closed\"}").await, 1.0);
    consumer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_bounded_in_number_and_in_time() {
    let env = env().set("producer", "max_streams", "1").set("producer", "max_stream_secs", "2").start().await;
    // No consumer: nothing will be computed.
    let producer = env.spawn_producer().await;
    let url = format!("{}/v1/prices/{}/events", producer.base, env.product("never"));
    // Its miss publishes: a broker slowed by the rest of the suite may answer 503 (unavailable,
    // the claim released) first; the first stream is never refused for the bound.
    let mut open = crate::helpers::wait_for("a first stream", Duration::from_secs(60), || async {
        let open = SseStream::open(&env.http, &url, &[]).await;
        if open.status == 200 { Ok(open) } else { Err(open.status.to_string()) }
    })
    .await;

    let refused = env.http.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["content-type"], "application/problem+json");
    assert_eq!(refused.headers()["retry-after"], "1");
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/too-many-streams");

    // It ends after max_stream_secs, with no result; then its place is free again.
    let started = std::time::Instant::now();
    assert_eq!(open.rest().await, []);
    assert!(started.elapsed() >= Duration::from_millis(1500), "ended after {:?}", started.elapsed());
    let again = SseStream::open(&env.http, &url, &[]).await;
    assert_eq!(again.status, 200);
    drop(again);

    let (status, _, body) = get(&env.http, &format!("{}/v1/prices/..%2Fx/events", producer.base)).await;
    assert_eq!((status, body["status"].as_u64()), (400, Some(400)));
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_get_their_result_across_a_redis_restart() {
    let env = env().providers(vec![provider("alpha", 1500)]).start().await;
    let (redis, producer, consumer) = on_private_redis(&env).await;

    let url = format!("{}/v1/prices/{}/events", producer.base, env.product("restart"));
    let streams: Vec<_> = (0..20)
        .map(|_| {
            let (http, url) = (env.http.clone(), url.clone());
            tokio::spawn(async move { SseStream::open(&http, &url, &[]).await.rest().await })
        })
        .collect();
    // While the source takes its 1.5 s, Redis goes away and comes back (empty).
    let redis = redis.bounce(Duration::from_millis(300), Duration::from_millis(500)).await;
    for events in join_all(streams).await.into_iter().map(Result::unwrap) {
        let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(kinds, ["quote", "result"], "{events:?}");
    }
    drop(redis);
    consumer.stop().await;
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_logged_only_for_a_product_somebody_watches() {
    let env = env().providers(vec![provider("alpha", 30), provider("beta", 300)]).start().await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    warm_up(&env, &producer.base).await;
    // Every progress announcement of this test's products, as the producers would hear them.
    let client = redis::Client::open(env.settings.redis.url.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    let channels = env.keys().progress_channels();
    pubsub.psubscribe(format!("{channels}*")).await.unwrap();
    let mut announced = pubsub.into_on_message();

    // Asked for with a plain GET (or waited for): nobody watches, nothing is logged.
    let plain = env.product("plain");
    let (status, _, _) = get(&env.http, &format!("{}/v1/prices/{plain}", producer.base)).await;
    assert_eq!(status, 202);
    env.wait_result(&plain, Duration::from_secs(20)).await;
    // Watched: each source's answer is logged and announced.
    let watched = env.product("watched");
    let events =
        SseStream::open(&env.http, &format!("{}/v1/prices/{watched}/events", producer.base), &[]).await.rest().await;
    assert_eq!(by_provider(&events).len(), 2, "{events:?}");
    assert!(events[..2].iter().all(|e| e.id.is_some()), "live events, from the log: {events:?}");

    let mut channels = Vec::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_secs(1), futures::StreamExt::next(&mut announced)).await
    {
        channels.push(message.get_channel_name().to_owned());
    }
    assert!(!channels.iter().any(|c| c.ends_with(&format!(":{plain}"))), "{channels:?}");
    assert_eq!(channels.iter().filter(|c| c.ends_with(&format!(":{watched}"))).count(), 2, "{channels:?}");
    consumer.stop().await;
    producer.stop().await;
}
