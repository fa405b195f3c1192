//! `/metrics` on the producer and the consumer: the counters move with real traffic.

use std::time::Duration;

use pricefront::observability;
use tokio_util::sync::CancellationToken;

use crate::helpers::{env, get};

/// Sum of the samples of `name` whose labels include every `key="value"` in `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
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
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let consumer_metrics = format!("http://{}/metrics", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(observability::serve(listener, stop.clone()));
    let producer_metrics = format!("{}/metrics", producer.base);

    // Other tests share this process's recorder: compare before and after.
    let before = scrape(&env.http, &producer_metrics).await;
    let product = env.product("metrics");
    let url = format!("{}/v1/prices/{product}", producer.base);
    assert_eq!(get(&env.http, &url).await.0, 202);
    env.wait_result(&product, Duration::from_secs(30)).await;
    assert_eq!(get(&env.http, &url).await.0, 200, "loaded from Redis");
    assert_eq!(get(&env.http, &url).await.0, 200, "served from L1");
    assert_eq!(get(&env.http, &format!("{}/v1/prices/..%2Fx", producer.base)).await.0, 400);
    let after = scrape(&env.http, &producer_metrics).await;

    let moved = |name: &str, labels: &[&str]| sample(&after, name, labels) - sample(&before, name, labels);
    let route = r#"route="/v1/prices/{product_id}""#;
    assert!(moved("pricefront_http_requests_total", &[route, r#"status="202""#]) >= 1.0, "{after}");
    assert!(moved("pricefront_http_requests_total", &[route, r#"status="200""#]) >= 2.0);
    assert!(moved("pricefront_http_requests_total", &[route, r#"status="400""#]) >= 1.0);
    assert!(moved("pricefront_http_request_duration_seconds_count", &[route]) >= 4.0);
    assert!(moved("pricefront_cache_lookups_total", &[r#"tier="miss""#]) >= 1.0);
    assert!(moved("pricefront_cache_lookups_total", &[r#"tier="l2""#]) >= 1.0);
    assert!(moved("pricefront_cache_lookups_total", &[r#"tier="l1""#]) >= 1.0);
    let topic = format!(r#"topic="{}""#, env.settings.kafka.topic);
    assert_eq!(
        moved("pricefront_publish_total", &[&topic, r#"outcome="ok""#]),
        1.0,
        "one publish for this test's topic"
    );

    let consumer_text = scrape(&env.http, &consumer_metrics).await;
    assert!(sample(&consumer_text, "pricefront_messages_total", &[r#"outcome="computed""#]) >= 1.0);
    for provider in ["alpha", "beta", "gamma"] {
        let labels = [&format!(r#"provider="{provider}""#) as &str, r#"outcome="ok""#];
        assert!(sample(&consumer_text, "pricefront_provider_calls_total", &labels) >= 1.0, "{provider}");
    }
    assert!(consumer_text.contains("pricefront_provider_call_duration_seconds_bucket"));
    assert!(consumer_text.contains("pricefront_circuit_open"));
    assert!(consumer_text.contains("pricefront_messages_in_flight"));
    stop.cancel();
    consumer.stop().await;
    producer.stop().await;
}
