//! Many concurrent misses for one product, across producer instances: one message, one call
//! per provider.

use std::time::Duration;

use futures::future::join_all;

use crate::helpers::{env, provider};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_misses_on_two_producers_publish_once() {
    let env = env().providers(vec![provider("alpha", 50), provider("beta", 80)]).start().await;
    let producers = [env.spawn_producer().await, env.spawn_producer().await];
    let consumer = env.spawn_consumer();
    let product = env.product("hot");

    let http = reqwest::Client::builder().pool_max_idle_per_host(512).build().unwrap();
    let requests = (0..500).map(|i| {
        let url = format!("{}/v1/prices/{product}", producers[i % 2].base);
        let http = http.clone();
        async move { http.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    let statuses: Vec<u16> = join_all(requests).await.into_iter().map(|r| r.expect("request")).collect();
    let accepted = statuses.iter().filter(|&&s| s == 202).count();
    let served = statuses.iter().filter(|&&s| s == 200).count();
    assert_eq!(accepted + served, 500, "only 202 or 200 expected: {statuses:?}");
    assert!(accepted > 0);

    env.wait_result(&product, Duration::from_secs(30)).await;
    let calls = env.calls_for(&product).await;
    assert_eq!(calls.values().copied().collect::<Vec<_>>(), [1, 1], "calls per provider: {calls:?}");

    assert_eq!(env.messages_for(&product).await, 1, "messages on the topic for {product}");

    consumer.stop().await;
    for p in producers {
        p.stop().await;
    }
}
