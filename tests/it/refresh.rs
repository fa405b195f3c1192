//! Refresh ahead: a product asked for in the last 20% of its guarantee window is recomputed in
//! the background, so it never goes cold; one nobody asks for is left to expire; a refresh
//! whose sources all fail leaves the previous result in place. Short guarantees (3 s) make it
//! quick; the real producer, broker, consumer and Redis do the work.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestEnv, env, get, provider, wait_for};

/// A world whose results live `ttl_secs`.
async fn short_lived(ttl_secs: u64) -> TestEnv {
    let ttl = ttl_secs.to_string();
    env().providers(vec![provider("alpha", 20), provider("beta", 40)]).set("cache", "ttl_secs", &ttl).start().await
}

async fn served(env: &TestEnv, url: &str) -> Value {
    wait_for("a result", Duration::from_secs(60), || async {
        match get(&env.http, url).await {
            (200, _, body) => Ok(body),
            (status, _, _) => Err(status.to_string()),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_asked_for_all_the_time_never_goes_cold_and_costs_about_one_call_per_ttl() {
    let env = short_lived(3).await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    let product = env.product("popular");
    let url = format!("{}/v1/prices/{product}", producer.base);
    let first = served(&env, &url).await;

    // Every 100 ms for three guarantee windows.
    let started = Instant::now();
    let mut statuses = Vec::new();
    let mut computed_at = std::collections::BTreeSet::new();
    computed_at.insert(first["computed_at"].as_str().unwrap().to_owned());
    while started.elapsed() < Duration::from_secs(9) {
        let (status, _, body) = get(&env.http, &url).await;
        statuses.push(status);
        if let Some(at) = body["computed_at"].as_str() {
            computed_at.insert(at.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(statuses.iter().all(|&s| s == 200), "never 202 once served: {statuses:?}");
    assert!(computed_at.len() >= 3, "refreshed about once per 3 s window: {computed_at:?}");
    let calls = env.calls_for(&product).await;
    for (source, n) in &calls {
        // 1 + one per window (3 in 9 s), give or take one: not one per request (~90).
        assert!((3..=6).contains(n), "{source} called {n} times: {calls:?}");
    }
    consumer.stop().await;
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_nobody_asks_for_is_not_refreshed() {
    let env = short_lived(3).await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    let product = env.product("forgotten");
    served(&env, &format!("{}/v1/prices/{product}", producer.base)).await;
    // Past its guarantee, untouched.
    wait_for("the result to expire", Duration::from_secs(10), || async {
        match env.redis_get(&env.result_key(&product)).await {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    let calls = env.calls_for(&product).await;
    assert!(calls.values().all(|&n| n == 1), "computed once: {calls:?}");
    consumer.stop().await;
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_whose_sources_all_fail_leaves_the_previous_result_in_place() {
    // 10 s, so the refresh window (its last 2 s) leaves time to look before it expires.
    let env = short_lived(10).await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    let product = env.product("fragile");
    let url = format!("{}/v1/prices/{product}", producer.base);
    let good = served(&env, &url).await;
    assert_eq!(good["status"], "complete");
    for source in ["alpha", "beta"] {
        env.set_faults(source, json!({"error_rate": 1.0})).await;
    }
    // Ask until, inside the refresh window, the refresh has run: the sources were called again
    // and the consumer released the marker.
    let calls_before: u64 = env.calls_for(&product).await.values().sum();
    let stored = wait_for("a failed refresh", Duration::from_secs(15), || async {
        let (status, _, body) = get(&env.http, &url).await;
        if status == 200 {
            assert_eq!(body["computed_at"], good["computed_at"], "the good result is still served");
        }
        let calls: u64 = env.calls_for(&product).await.values().sum();
        let pending = env.redis_get(&env.pending_key(&product)).await;
        if calls == calls_before || pending.is_some() {
            return Err(format!("{calls} calls, marker {pending:?}"));
        }
        Ok(env.redis_get(&env.result_key(&product)).await)
    })
    .await;
    let stored = crate::helpers::result_json(&stored.expect("the good result is kept"));
    assert_eq!(stored["computed_at"], good["computed_at"], "not overwritten by the failed refresh");
    assert_eq!(stored["status"], "complete");
    consumer.stop().await;
    producer.stop().await;
}
