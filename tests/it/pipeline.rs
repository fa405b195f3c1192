//! The main path: cold product → 202 → result; TTLs; L1; partial results.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{env, get, guarantee_window, provider, wait_for};

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_product_is_accepted_then_served_complete_and_sorted() {
    let env = env().start().await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    let product = env.product("cold");
    let url = format!("{}/v1/prices/{product}", producer.base);

    let started = Instant::now();
    let (status, headers, body) = get(&env.http, &url).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(headers["location"], format!("/v1/prices/{product}").as_str());
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(headers["x-cache"], "MISS");
    assert_eq!(body, json!({"product_id": product, "status": "pending"}));

    let (headers, body) = wait_for("a 200", DEADLINE, || async {
        match get(&env.http, &url).await {
            (200, headers, body) => Ok((headers, body)),
            (status, _, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
    println!("time to result (cold group join included): {:?}", started.elapsed());

    assert_eq!(headers["x-cache"], "HIT");
    assert_eq!(headers["content-type"], "application/json");
    let max_age = crate::helpers::max_age(&headers);
    assert!((295..=300).contains(&max_age), "max-age={max_age}");
    assert!(headers.contains_key("age"));

    assert_eq!(body["product_id"], product.as_str());
    assert_eq!(body["status"], "complete");
    assert_eq!(body["failures"], json!([]));
    let quotes = body["quotes"].as_array().unwrap();
    let mut providers: Vec<&str> = quotes.iter().map(|q| q["provider"].as_str().unwrap()).collect();
    providers.sort();
    assert_eq!(providers, ["alpha", "beta", "gamma"]);
    let prices: Vec<rust_decimal::Decimal> =
        quotes.iter().map(|q| q["price"].as_str().unwrap().parse().unwrap()).collect();
    assert!(prices.windows(2).all(|w| w[0] <= w[1]), "sorted ascending: {prices:?}");
    assert_eq!(body["best"], quotes[0]);
    for q in quotes {
        let eur = pricefront::domain::Currency::parse("EUR").unwrap();
        let expected = pricefront::mock::price_for(q["provider"].as_str().unwrap(), &product, eur);
        assert_eq!(q["price"], expected.to_string());
        assert_eq!(q["currency"], "EUR");
    }
    consumer.stop().await;
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_ttl_is_the_guarantee_window_and_failed_results_are_short_lived() {
    let env = env().set("cache", "ttl_secs", "120").set("cache", "failed_ttl_secs", "7").start().await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();

    let good = env.product("good");
    assert_eq!(get(&env.http, &format!("{}/v1/prices/{good}", producer.base)).await.0, 202);
    let result = env.wait_result(&good, DEADLINE).await;
    assert_eq!(guarantee_window(&result), 120);
    env.assert_stored_within_guarantee(&good).await;

    for p in ["alpha", "beta", "gamma"] {
        env.set_faults(p, json!({"error_rate": 1.0})).await;
    }
    let bad = env.product("bad");
    assert_eq!(get(&env.http, &format!("{}/v1/prices/{bad}", producer.base)).await.0, 202);
    let result = env.wait_result(&bad, DEADLINE).await;
    assert_eq!(result["status"], "failed");
    assert_eq!(result["best"], serde_json::Value::Null);
    assert_eq!(result["failures"].as_array().unwrap().len(), 3);
    assert!(result["failures"].as_array().unwrap().iter().all(|f| f["reason"] == "http_status"));
    assert_eq!(guarantee_window(&result), 7);
    env.assert_stored_within_guarantee(&bad).await;
    assert_eq!(env.redis_get(&env.pending_key(&bad)).await, None, "marker cleared with the result");
    consumer.stop().await;
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_serves_within_its_lifetime_even_without_redis_and_not_after() {
    // Long enough that the reads below fit in it even on a loaded machine.
    let l1_ttl = Duration::from_secs(4);
    let env = env().set("cache", "l1_ttl_ms", "4000").start().await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    let product = env.product("l1");
    let url = format!("{}/v1/prices/{product}", producer.base);
    assert_eq!(get(&env.http, &url).await.0, 202);
    env.wait_result(&product, DEADLINE).await;

    // This read fills L1 from Redis.
    assert_eq!(get(&env.http, &url).await.0, 200);
    let filled = Instant::now();
    env.redis_del(&env.result_key(&product)).await;

    let (status, headers, body) = get(&env.http, &url).await;
    assert!(filled.elapsed() < l1_ttl, "too slow to test L1");
    assert_eq!(status, 200, "served from L1 after the Redis key is gone");
    assert_eq!(headers["x-cache"], "HIT");
    assert_eq!(body["product_id"], product.as_str());

    // Waiting for the lifetime to pass is the point: a 202 polled for would hide an entry
    // that lived too long.
    tokio::time::sleep((l1_ttl + Duration::from_millis(100)).saturating_sub(filled.elapsed())).await;
    let (status, _, _) = get(&env.http, &url).await;
    assert_eq!(status, 202, "L1 entry must be gone after its lifetime");
    consumer.stop().await;
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_hanging_providers_give_partial_results_within_the_timeout() {
    let provider_timeout = Duration::from_millis(800);
    let env = env()
        .providers(vec![provider("steady", 30), provider("broken", 30), provider("stuck", 30)])
        .set("consumer", "provider_timeout_ms", "800")
        .start()
        .await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();

    env.set_faults("broken", json!({"error_rate": 1.0})).await;
    let first = env.product("err");
    assert_eq!(get(&env.http, &format!("{}/v1/prices/{first}", producer.base)).await.0, 202);
    let result = env.wait_result(&first, DEADLINE).await;
    assert_eq!(result["status"], "partial", "{result}");
    assert_eq!(result["quotes"].as_array().unwrap().len(), 2);
    assert_eq!(
        result["failures"],
        json!([{"provider": "broken", "reason": "http_status", "detail": "503 Service Unavailable (after 2 attempts)", "http_status": 503}])
    );

    // The consumer is warm now; time one fan-out with a hanging source.
    env.set_faults("broken", json!({"error_rate": 0.0})).await;
    env.set_faults("stuck", json!({"hang_rate": 1.0})).await;
    let second = env.product("hang");
    let started = Instant::now();
    assert_eq!(get(&env.http, &format!("{}/v1/prices/{second}", producer.base)).await.0, 202);
    let result = env.wait_result(&second, DEADLINE).await;
    let took = started.elapsed();
    assert_eq!(result["status"], "partial", "{result}");
    assert_eq!(result["failures"].as_array().unwrap().len(), 1, "{result}");
    assert_eq!(result["failures"][0]["provider"], "stuck");
    assert_eq!(result["failures"][0]["reason"], "timeout");
    // The hanging source costs its budget and no more (the mock would hang for 600 s); the
    // margin covers the publish and the consumer's fetch on a loaded machine.
    let margin = Duration::from_secs(5);
    assert!(took >= provider_timeout && took < provider_timeout + margin, "result written after {took:?}");
    let steady = result["quotes"].as_array().unwrap().iter().find(|q| q["provider"] == "steady").unwrap();
    assert!(steady["latency_ms"].as_u64().unwrap() < 500, "a healthy source is not delayed: {steady}");
    consumer.stop().await;
    producer.stop().await;
}
