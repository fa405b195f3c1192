//! Promises the code makes, each checked against real Redis and a real broker in the state
//! that breaks it: a price never outlives its guarantee, a full producer queue answers 503
//! at once, and a consumer's exit is bounded even with the broker gone.

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::json;
use time::OffsetDateTime;

use crate::helpers::{
    Broker, ConsumerProcess, RedisServer, env, get, guarantee_left_ms, provider, wait_all_assigned, wait_for,
};

/// Waits until the mock has been asked for `product` by `source`: the fan-out is under way.
async fn wait_fan_out_started(env: &crate::helpers::TestEnv, product: &str, source: &str) {
    wait_for(&format!("{source} to be asked for {product}"), Duration::from_secs(60), || async {
        let calls = env.calls_for(product).await;
        if calls.get(source).copied().unwrap_or(0) > 0 { Ok(()) } else { Err(format!("{calls:?}")) }
    })
    .await
}

async fn pause_writes(redis: &pricefront::cache::Connection, for_ms: u64) {
    redis::cmd("CLIENT").arg("PAUSE").arg(for_ms).arg("WRITE").query_async::<()>(&mut redis.clone()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_never_outlives_its_guarantee_when_redis_stalls_writes() {
    // CLIENT PAUSE stalls every client of the server: a private one, so no other test stalls.
    let redis = RedisServer::start(&[]).await;
    let env = env()
        .providers(vec![provider("slow", 1000)])
        .set("redis", "url", &format!("{:?}", redis.url()))
        .set("cache", "ttl_secs", "3")
        .start()
        .await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    let url = |p: &str| format!("{}/v1/prices/{p}", producer.base);

    // A stall shorter than the guarantee: the result is written late, with only the time left.
    let late = env.product("late");
    assert_eq!(get(&env.http, &url(&late)).await.0, 202);
    wait_fan_out_started(&env, &late, "slow").await;
    pause_writes(&env.redis, 1500).await;
    env.wait_result(&late, Duration::from_secs(30)).await;
    let stored = env.assert_stored_within_guarantee(&late).await.expect("still stored");
    let now = OffsetDateTime::now_utc();
    let (status, headers, body) = get(&env.http, &url(&late)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, stored);
    let max_age = i128::from(crate::helpers::max_age(&headers));
    let left = guarantee_left_ms(&body, now);
    assert!(max_age * 1000 <= left, "max-age={max_age} s with {left} ms of guarantee left");

    // A stall longer than the guarantee: the result is never written, and the marker is
    // released so the product is computed again.
    let expired = env.product("expired");
    assert_eq!(get(&env.http, &url(&expired)).await.0, 202);
    wait_fan_out_started(&env, &expired, "slow").await;
    pause_writes(&env.redis, 5000).await;
    let pending = env.pending_key(&expired);
    wait_for("the consumer to give the product back", Duration::from_secs(60), || async {
        match env.redis_get(&pending).await {
            None => Ok(()),
            Some(token) => Err(format!("marker {token} still held")),
        }
    })
    .await;
    let written = env.assert_stored_within_guarantee(&expired).await;
    assert_eq!(written, None, "a result whose guarantee passed before it was written must not be stored");
    assert_eq!(get(&env.http, &url(&expired)).await.0, 202, "the next request claims it again");
    let fresh = env.wait_result(&expired, Duration::from_secs(30)).await;
    assert!(guarantee_left_ms(&fresh, OffsetDateTime::now_utc()) > 0, "{fresh}");
    assert_eq!(env.calls_for(&expired).await["slow"], 2, "computed again");
    consumer.stop().await;
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_producer_queue_answers_503_at_once() {
    let broker = Broker::start().await;
    let publish_timeout = Duration::from_secs(5);
    let env = env()
        .set("kafka", "brokers", &broker.toml())
        .set("kafka", "producer_queue_max_messages", "1")
        .set("kafka", "publish_timeout_ms", &publish_timeout.as_millis().to_string())
        .start()
        .await;
    let producer = env.spawn_producer().await;
    drop(broker);

    let requests = (0..20).map(|i| {
        let (http, url) = (env.http.clone(), format!("{}/v1/prices/{}", producer.base, env.product(&format!("q{i}"))));
        async move {
            let started = Instant::now();
            let (status, headers, _) = get(&http, &url).await;
            (status, headers.contains_key("retry-after"), started.elapsed())
        }
    });
    let answers = join_all(requests).await;
    assert!(answers.iter().all(|&(status, retry_after, _)| status == 503 && retry_after), "{answers:?}");
    // Enqueued ones wait for the publish timeout; the rest must not wait at all. The bound is
    // generous against CI load; the figure printed is what was measured.
    let mut fast: Vec<Duration> = answers.iter().map(|a| a.2).filter(|took| *took < publish_timeout / 4).collect();
    fast.sort();
    assert!(fast.len() >= 17, "only {} of 20 answered well before the publish timeout: {answers:?}", fast.len());
    println!(
        "full producer queue: {} of 20 answered 503 at once (median {:?}, slowest {:?}); publish timeout {publish_timeout:?}",
        fast.len(),
        fast[fast.len() / 2],
        fast.last().unwrap()
    );
    producer.stop().await;
}

/// SIGTERM, then waits up to `deadline` for the exit; kills it and fails if it does not come.
fn terminate_within(consumer: &mut ConsumerProcess, deadline: Duration) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    let pid = consumer.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    loop {
        if let Some(status) = consumer.child.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        if started.elapsed() > deadline {
            consumer.kill9();
            panic!("the consumer did not exit within {deadline:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A source that never answers, and a budget long enough that work is still in flight when
/// the consumer is told to stop.
fn hanging_env() -> crate::helpers::TestEnvBuilder {
    env()
        .providers(vec![provider("alpha", 20), provider("stuck", 20)])
        .set("consumer", "provider_timeout_ms", "20000")
        .set("cache", "pending_ttl_secs", "60")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_the_broker_gone_exits_within_the_drain_bound() {
    let broker = Broker::start().await;
    let env = hanging_env().set("kafka", "brokers", &broker.toml()).start().await;
    env.set_faults("stuck", json!({"hang_rate": 1.0})).await;
    let mut consumer = env.spawn_consumer_process().await;
    wait_all_assigned(&env.http, &[&consumer]).await;
    let product = env.product("inflight");
    env.request_directly(std::slice::from_ref(&product)).await;
    wait_fan_out_started(&env, &product, "stuck").await;

    drop(broker);
    let bound = env.settings.consumer.drain_timeout + Duration::from_secs(2);
    let (status, took) = terminate_within(&mut consumer, Duration::from_secs(120));
    println!("SIGTERM with the broker gone and work in flight: exited with {status} after {took:?} (bound {bound:?})");
    assert!(status.success(), "exit status {status}");
    assert!(took < bound, "exit took {took:?}, more than drain_timeout + 2 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_given_up_at_shutdown_is_redelivered_not_skipped() {
    let env = hanging_env().start().await;
    env.set_faults("stuck", json!({"hang_rate": 1.0})).await;
    let mut first = env.spawn_consumer_process().await;
    wait_all_assigned(&env.http, &[&first]).await;
    let product = env.product("given-up");
    env.request_directly(std::slice::from_ref(&product)).await;
    wait_fan_out_started(&env, &product, "stuck").await;

    let bound = env.settings.consumer.drain_timeout + Duration::from_secs(2);
    let (status, took) = terminate_within(&mut first, Duration::from_secs(120));
    assert!(status.success(), "exit status {status}");
    assert!(took < bound, "exit took {took:?}, more than drain_timeout + 2 s");
    assert_eq!(env.redis_get(&env.result_key(&product)).await, None, "the unfinished work stored nothing");

    env.set_faults("stuck", json!({"hang_rate": 0.0})).await;
    let second = env.spawn_consumer();
    let result = env.wait_result(&product, Duration::from_secs(60)).await;
    assert_eq!(result["status"], "complete", "{result}");
    let calls = env.calls_for(&product).await;
    assert_eq!((calls["alpha"], calls["stuck"]), (2, 2), "computed again by the next owner: {calls:?}");
    second.stop().await;
}
