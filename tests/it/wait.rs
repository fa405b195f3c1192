//! `Prefer: wait=N` (RFC 7240): a miss held until its result is written, over the real broker
//! and Redis; the waiters share one subscription, one message and one call per source.

use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::helpers::{TestEnv, env, on_private_redis, provider, wait_for, warm_up};

/// GET with a `Prefer` header: status, headers, body.
async fn get_waiting(env: &TestEnv, url: &str, prefer: &str) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let res = env.http.get(url).header("prefer", prefer).send().await.unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    (status, headers, res.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_product_with_prefer_wait_answers_200_in_one_round_trip() {
    let env = env().providers(vec![provider("alpha", 100), provider("beta", 300)]).start().await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    warm_up(&env, &producer.base).await;

    let url = format!("{}/v1/prices/{}", producer.base, env.product("cold"));
    let started = Instant::now();
    let (status, headers, body) = get_waiting(&env, &url, "wait=8").await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "complete");
    assert_eq!(headers["preference-applied"], "wait=8");
    assert_eq!(headers["x-cache"], "MISS", "computed while it waited");
    assert_eq!(headers["vary"], "Prefer");
    assert!(crate::helpers::max_age(&headers) > 0);
    // At least the slowest source; well before the wait ran out (the result woke it).
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(8), "took {took:?}");

    // A hit answers at once, the same with or without the preference.
    let (status, headers, _) = get_waiting(&env, &url, "wait=8").await;
    assert_eq!((status, &headers["x-cache"]), (200, &"HIT".parse().unwrap()));
    consumer.stop().await;
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_runs_out_answers_202_and_the_wait_is_capped() {
    let env = env().set("producer", "max_wait_secs", "2").start().await;
    // No consumer: nothing will be computed.
    let producer = env.spawn_producer().await;
    let url = format!("{}/v1/prices/{}", producer.base, env.product("never"));
    let started = Instant::now();
    let (status, headers, body) = get_waiting(&env, &url, "respond-async, wait=1").await;
    assert_eq!(status, 202, "{body}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(headers["preference-applied"], "wait=1");
    assert_eq!(headers["vary"], "Prefer");
    assert_eq!(headers["cache-control"], "no-store");
    // Found pending (somebody else's marker): waits too, and the wait is capped at 2 s.
    let (status, headers, _) = get_waiting(&env, &url, "wait=60").await;
    assert_eq!(status, 202);
    assert_eq!(headers["preference-applied"], "wait=2");
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_waiters_on_one_cold_product_get_200_from_one_message_and_one_call_per_source() {
    // Every waiter comes from 127.0.0.1: lift the per-client cap (hostile.rs tests the cap).
    let env = env()
        .providers(vec![provider("alpha", 200), provider("beta", 400)])
        .set("producer", "max_waiters_per_client", "1000")
        .start()
        .await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    warm_up(&env, &producer.base).await;

    let product = env.product("crowd");
    let url = format!("{}/v1/prices/{product}", producer.base);
    let http = reqwest::Client::builder().pool_max_idle_per_host(1024).build().unwrap();
    let answers = join_all((0..1000).map(|_| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let res = http.get(url).header("prefer", "wait=10").send().await.unwrap();
            res.status().as_u16()
        }
    }))
    .await;
    let ok = answers.iter().filter(|&&s| s == 200).count();
    assert_eq!(
        ok,
        1000,
        "every waiter gets the result: {:?}",
        answers.iter().filter(|&&s| s != 200).take(5).collect::<Vec<_>>()
    );
    let calls = env.calls_for(&product).await;
    assert_eq!(calls.into_iter().collect::<Vec<_>>(), [("alpha".into(), 1), ("beta".into(), 1)]);
    assert_eq!(env.messages_for(&product).await, 1);
    consumer.stop().await;
    producer.stop().await;
}

/// The `pricefront_waiting_requests` gauge of a producer process.
async fn waiting(env: &TestEnv, base: &str) -> f64 {
    let text = env.http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix("pricefront_waiting_requests ")).map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_frees_its_place_at_once() {
    let env = env().start().await;
    // No consumer: the request would wait its full 30 s.
    let producer = env.spawn_producer_process().await;
    let url = format!("{}/v1/prices/{}", producer.base, env.product("hang-up"));
    let client = reqwest::Client::new();
    let request = tokio::spawn(async move { client.get(url).header("prefer", "wait=30").send().await });
    wait_for("the request to wait", Duration::from_secs(10), || async {
        if waiting(&env, &producer.ops).await == 1.0 { Ok(()) } else { Err("not waiting yet".to_string()) }
    })
    .await;
    request.abort();
    wait_for("its place to be freed", Duration::from_secs(5), || async {
        match waiting(&env, &producer.ops).await {
            0.0 => Ok(()),
            n => Err(format!("{n} waiting")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_get_their_result_across_a_redis_restart() {
    let env = env().providers(vec![provider("alpha", 1500)]).start().await;
    let (redis, producer, consumer) = on_private_redis(&env).await;

    let url = format!("{}/v1/prices/{}", producer.base, env.product("restart"));
    let waiters: Vec<_> = (0..20)
        .map(|_| {
            let (http, url) = (env.http.clone(), url.clone());
            tokio::spawn(
                async move { http.get(url).header("prefer", "wait=25").send().await.unwrap().status().as_u16() },
            )
        })
        .collect();
    // While the source takes its 1.5 s, Redis goes away and comes back (empty).
    let redis = redis.bounce(Duration::from_millis(300), Duration::from_millis(500)).await;
    let statuses: Vec<u16> = join_all(waiters).await.into_iter().map(Result::unwrap).collect();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    drop(redis);
    consumer.stop().await;
    producer.stop().await;
}
