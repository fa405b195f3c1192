//! `/metrics` on the producer and the consumer binaries: the counters move with real traffic.
//! Each binary has its own recorder, so what it reports is this test's traffic alone, and
//! nobody scraping does not make it keep samples (the upkeep runs on its own).

use std::time::Duration;

use crate::helpers::{env, get, wait_all_assigned};

/// Sum of the samples of `name` whose labels include every `key="value"` in `labels`.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|kv| l.contains(kv)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(http: &reqwest::Client, url: &str) -> String {
    let res = http.get(url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    res.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic() {
    let env = env().start().await;
    let producer = env.spawn_producer_process().await;
    let consumer = env.spawn_consumer_process().await;
    wait_all_assigned(&env.http, &[&consumer]).await;

    let product = env.product("metrics");
    let url = format!("{}/v1/prices/{product}", producer.base);
    assert_eq!(get(&env.http, &url).await.0, 202);
    env.wait_result(&product, Duration::from_secs(30)).await;
    assert_eq!(get(&env.http, &url).await.0, 200, "loaded from Redis");
    assert_eq!(get(&env.http, &url).await.0, 200, "from L1, or Redis again if the L1 entry lapsed");
    assert_eq!(get(&env.http, &format!("{}/v1/prices/..%2Fx", producer.base)).await.0, 400);
    let text = scrape(&env.http, &format!("{}/metrics", producer.ops)).await;

    let count = |name: &str, labels: &[&str]| sample(&text, name, labels);
    let route = r#"route="/v1/prices/{product_id}""#;
    assert_eq!(count("pricefront_http_requests_total", &[route, r#"status="202""#]), 1.0, "{text}");
    assert_eq!(count("pricefront_http_requests_total", &[route, r#"status="200""#]), 2.0);
    assert_eq!(count("pricefront_http_requests_total", &[route, r#"status="400""#]), 1.0);
    assert_eq!(count("pricefront_http_request_duration_seconds_count", &[route]), 4.0);
    assert_eq!(count("pricefront_cache_lookups_total", &[r#"tier="miss""#]), 1.0);
    assert!(count("pricefront_cache_lookups_total", &[r#"tier="l2""#]) >= 1.0);
    assert_eq!(count("pricefront_cache_lookups_total", &[r#"tier=""#]), 3.0, "one lookup per valid request");
    let topic = format!(r#"topic="{}""#, env.settings.kafka.topic);
    assert_eq!(count("pricefront_publish_total", &[&topic, r#"outcome="ok""#]), 1.0);

    let consumer_text = scrape(&env.http, &consumer.metrics).await;
    let count = |name: &str, labels: &[&str]| sample(&consumer_text, name, labels);
    assert_eq!(count("pricefront_messages_total", &[r#"outcome="computed""#]), 1.0, "{consumer_text}");
    for provider in ["alpha", "beta", "gamma"] {
        let labels = [&format!(r#"provider="{provider}""#) as &str, r#"outcome="ok""#];
        assert_eq!(count("pricefront_provider_calls_total", &labels), 1.0, "{provider}");
        assert_eq!(
            count("pricefront_provider_call_duration_seconds_count", &[&format!(r#"provider="{provider}""#)]),
            1.0
        );
    }
    assert_eq!(count("pricefront_partition_assigned", &[]), env.settings.kafka.partitions as f64, "it owns them all");
    assert_eq!(count("pricefront_circuit_open", &[]), 0.0);
    assert_eq!(count("pricefront_messages_in_flight", &[]), 0.0);
}
