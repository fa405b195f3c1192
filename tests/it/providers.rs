//! Price API resilience, against the mock APIs over real HTTP: bounded retries inside the
//! time budget, the circuit breaker, the bulkhead, and hostile response bodies.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use pricefront::domain::{FailureReason, ProductId};
use pricefront::providers::PriceSources;
use pricefront::settings::{MockProviderSettings, ProviderSettings};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::helpers::provider;

struct Mock {
    base: String,
    http: reqwest::Client,
    _stop: tokio_util::sync::DropGuard,
}

async fn mock(providers: Vec<MockProviderSettings>) -> Mock {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let mock = pricefront::mock::Mock::new(&providers).unwrap();
    tokio::spawn(pricefront::mock::serve(listener, mock, stop.clone()));
    Mock { base, http: reqwest::Client::new(), _stop: stop.drop_guard() }
}

impl Mock {
    fn source(&self, name: &str) -> ProviderSettings {
        let mut source = ProviderSettings::new(name, &format!("{}/{name}/prices/{{product_id}}", self.base));
        source.retry_backoff = Duration::from_millis(20);
        source
    }

    async fn faults(&self, name: &str, faults: serde_json::Value) {
        let res = self.http.put(format!("{}/_faults/{name}", self.base)).json(&faults).send().await.unwrap();
        assert_eq!(res.status(), 204);
    }

    async fn calls(&self, name: &str) -> u64 {
        let stats: serde_json::Value =
            self.http.get(format!("{}/_stats", self.base)).send().await.unwrap().json().await.unwrap();
        stats["providers"][name]["calls"].as_u64().unwrap()
    }
}

fn id(s: &str) -> ProductId {
    ProductId::parse(s).unwrap()
}

#[tokio::test]
async fn retryable_failures_are_retried_within_the_budget_only() {
    let m = mock(vec![provider("flaky", 5), provider("stuck", 5)]).await;
    m.faults("flaky", json!({"error_rate": 1.0})).await;
    m.faults("stuck", json!({"hang_rate": 1.0})).await;
    let mut stuck = m.source("stuck");
    stuck.attempt_timeout = Some(Duration::from_millis(200));
    let sources = PriceSources::new(&[m.source("flaky"), stuck], Duration::from_millis(600)).unwrap();

    let started = Instant::now();
    let outcomes = sources.fan_out(&id("p1"), &Default::default()).await;
    let took = started.elapsed();
    // A retry that got a fresh budget would take another 600 ms; the rest is slack for a
    // loaded machine.
    assert!(took < Duration::from_millis(1100), "the budget never grows: {took:?}");
    let flaky = outcomes[0].as_ref().unwrap_err();
    assert_eq!(flaky.reason, FailureReason::HttpStatus);
    assert!(flaky.detail.ends_with("(after 2 attempts)"), "{}", flaky.detail);
    assert_eq!(m.calls("flaky").await, 2, "one call plus one retry");
    let stuck = outcomes[1].as_ref().unwrap_err();
    assert_eq!(stuck.reason, FailureReason::Timeout);
    assert_eq!(m.calls("stuck").await, 2, "a hung attempt is retried while budget remains");
}

#[tokio::test]
async fn a_failing_provider_trips_its_breaker_and_a_probe_closes_it() {
    let m = mock(vec![provider("down", 5), provider("fine", 5)]).await;
    m.faults("down", json!({"error_rate": 1.0})).await;
    let mut down = m.source("down");
    down.retries = 0;
    down.breaker_failures = 3;
    down.breaker_cooldown = Duration::from_millis(300);
    let sources = PriceSources::new(&[down, m.source("fine")], Duration::from_millis(500)).unwrap();

    for i in 0..3 {
        let outcomes = sources.fan_out(&id(&format!("b{i}")), &Default::default()).await;
        assert_eq!(outcomes[0].as_ref().unwrap_err().reason, FailureReason::HttpStatus);
    }
    for i in 3..10 {
        let outcomes = sources.fan_out(&id(&format!("b{i}")), &Default::default()).await;
        assert_eq!(outcomes[0].as_ref().unwrap_err().reason, FailureReason::CircuitOpen);
        assert!(outcomes[1].is_ok(), "the others are unaffected");
    }
    assert_eq!(m.calls("down").await, 3, "an open circuit sends no calls");

    m.faults("down", json!({"error_rate": 0.0})).await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    let outcomes = sources.fan_out(&id("probe"), &Default::default()).await;
    assert!(outcomes[0].is_ok(), "the half-open probe succeeds: {:?}", outcomes[0]);
    let outcomes = sources.fan_out(&id("after"), &Default::default()).await;
    assert!(outcomes[0].is_ok(), "closed again");
    assert_eq!(m.calls("down").await, 5);
}

#[tokio::test]
async fn the_bulkhead_caps_concurrent_calls_per_provider() {
    let m = mock(vec![provider("slow", 600)]).await;
    let mut slow = m.source("slow");
    slow.max_concurrency = 2;
    let sources = PriceSources::new(&[slow], Duration::from_millis(1000)).unwrap();
    let ids: Vec<ProductId> = (0..6).map(|i| id(&format!("c{i}"))).collect();
    let rates = pricefront::domain::Rates::default();
    let outcomes = futures::future::join_all(ids.iter().map(|i| sources.fan_out(i, &rates))).await;
    // Two calls run (0-600 ms), two more get the freed slots with 400 ms of budget left and
    // time out, and the last two never get a slot within the budget. (The first two have
    // 400 ms of slack for a loaded machine.)
    let ok = outcomes.iter().filter(|o| o[0].is_ok()).count();
    assert_eq!(ok, 2, "only two calls fit: {outcomes:?}");
    let failures: Vec<_> = outcomes.iter().filter_map(|o| o[0].as_ref().err()).collect();
    assert!(failures.iter().all(|f| f.reason == FailureReason::Timeout), "{failures:?}");
    let never_called = failures.iter().filter(|f| f.detail.starts_with("no free call slot")).count();
    assert_eq!(never_called, 2, "{failures:?}");
    assert_eq!(m.calls("slow").await, 4, "the provider never saw more than two calls at once");
}

#[tokio::test]
async fn hostile_bodies_are_invalid_responses_not_crashes() {
    let huge = "x".repeat(200 * 1024);
    let app = Router::new()
        .route("/notjson/{id}", get(|| async { "<html>oops</html>" }))
        .route(
            "/negative/{id}",
            get(|axum::extract::Path(id): axum::extract::Path<String>| async move {
                axum::Json(json!({"product_id": id, "price": "-1.00", "currency": "EUR"}))
            }),
        )
        .route(
            "/absurd/{id}",
            get(|axum::extract::Path(id): axum::extract::Path<String>| async move {
                axum::Json(json!({"product_id": id, "price": "99999999999.00", "currency": "EUR"}))
            }),
        )
        .route(
            "/currency/{id}",
            get(|axum::extract::Path(id): axum::extract::Path<String>| async move {
                axum::Json(json!({"product_id": id, "price": "1.00", "currency": "euro"}))
            }),
        )
        .route(
            // Three upper-case letters, but no ISO 4217 currency.
            "/unknown_code/{id}",
            get(|axum::extract::Path(id): axum::extract::Path<String>| async move {
                axum::Json(json!({"product_id": id, "price": "1.00", "currency": "ZZZ"}))
            }),
        )
        .route(
            "/boolean/{id}",
            get(|axum::extract::Path(id): axum::extract::Path<String>| async move {
                axum::Json(json!({"product_id": id, "price": true, "currency": "EUR"}))
            }),
        )
        .route(
            "/other/{id}",
            get(|| async { axum::Json(json!({"product_id": "someone-else", "price": "1.00", "currency": "EUR"})) }),
        )
        .route(
            // A value 45 KB long where the price belongs.
            "/garbage/{id}",
            get(|axum::extract::Path(id): axum::extract::Path<String>| async move {
                axum::Json(json!({"product_id": id, "price": "9".repeat(45_000), "currency": "EUR"}))
            }),
        )
        .route(
            // Less than the smallest coin.
            "/crumb/{id}",
            get(|axum::extract::Path(id): axum::extract::Path<String>| async move {
                axum::Json(json!({"product_id": id, "price": "0.004", "currency": "EUR"}))
            }),
        )
        .route("/huge/{id}", get(move || async move { huge }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let names =
        ["notjson", "negative", "absurd", "currency", "unknown_code", "boolean", "other", "garbage", "crumb", "huge"];
    let settings: Vec<ProviderSettings> = names
        .iter()
        .map(|n| {
            let mut source = ProviderSettings::new(n, &format!("{base}/{n}/{{product_id}}"));
            source.retry_backoff = Duration::from_millis(10);
            source.max_concurrency = 8;
            source
        })
        .collect();
    let sources = PriceSources::new(&settings, Duration::from_secs(2)).unwrap();
    let outcomes = sources.fan_out(&id("p"), &Default::default()).await;
    for (name, outcome) in names.iter().zip(&outcomes) {
        let failure = outcome.as_ref().expect_err(name);
        assert_eq!(failure.reason, FailureReason::InvalidResponse, "{name}: {failure:?}");
        assert!(!failure.detail.contains("after"), "{name}: an invalid body is not retried");
        assert!(failure.detail.len() <= pricefront::domain::MAX_DETAIL, "{name}: {} bytes", failure.detail.len());
    }
    // What a source sends is never echoed whole: the comparison stays small.
    let comparison = pricefront::domain::Comparison::aggregate(
        id("p"),
        outcomes,
        time::OffsetDateTime::now_utc(),
        &pricefront::settings::Settings::load_from(None, Some(Default::default())).unwrap().cache.ttl_policy(),
        &Default::default(),
    );
    let size = serde_json::to_vec(&comparison).unwrap().len();
    assert!(size < 4096, "{size} bytes from {} sources", names.len());
}
