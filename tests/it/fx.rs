//! Currency normalisation: quotes compared in `fx.base`, with configured rates and with live
//! ones from an ECB-format file served over real HTTP (the mock's, or one that starts failing).

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pricefront::domain::Currency;
use pricefront::mock::{ECB_PATH, ECB_RATES, price_for};
use pricefront::settings::MockProviderSettings;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;

use crate::helpers::{TestEnv, env, wait_for};
use crate::metrics::sample;

fn source(name: &str, currency: &str) -> MockProviderSettings {
    MockProviderSettings::new(name, 20, Currency::parse(currency).unwrap())
}

fn dec(v: &Value) -> Decimal {
    Decimal::from_str(v.as_str().unwrap_or_else(|| panic!("not a decimal string: {v}"))).unwrap()
}

fn in_eur(price: Decimal, rate: &str) -> Decimal {
    (price * Decimal::from_str(rate).unwrap()).round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// A consumer's `/metrics`, or nothing while it is not up.
async fn scrape(http: &reqwest::Client, url: &str) -> String {
    match http.get(url).send().await {
        Ok(res) => res.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The product's comparison, waited for.
async fn compare(env: &TestEnv, base: &str, product: &str) -> Value {
    let res = env.http.get(format!("{base}/v1/prices/{product}")).header("prefer", "wait=30").send().await.unwrap();
    assert_eq!(res.status(), 200, "{product}");
    res.json().await.unwrap()
}

/// The rate of `currency` in a comparison's quotes.
fn rate_of<'a>(comparison: &'a Value, currency: &str) -> &'a Value {
    let quote = comparison["quotes"].as_array().unwrap().iter().find(|q| q["currency"] == currency);
    &quote.unwrap_or_else(|| panic!("no {currency} quote: {comparison}"))["fx_rate"]
}

/// `1 / per_euro`, as a rate derived from the ECB's file is kept.
fn inverted(per_euro: &str) -> Decimal {
    (Decimal::ONE / Decimal::from_str(per_euro).unwrap())
        .round_dp_with_strategy(10, RoundingStrategy::MidpointNearestEven)
        .normalize()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_in_other_currencies_are_compared_in_the_base_one() {
    // The default rates: USD 0.92, GBP 1.17; none for CHF.
    let sources = vec![source("euro", "EUR"), source("dollar", "USD"), source("pound", "GBP"), source("franc", "CHF")];
    let env = env().providers(sources.clone()).start().await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    let rates = [("euro", "1"), ("dollar", "0.92"), ("pound", "1.17")];
    // A product whose nominally cheapest quote is not the cheapest in euros.
    let (product, nominal, cheapest) = (0..)
        .find_map(|i| {
            let product = env.product(&format!("fx-{i}"));
            let currency = |p: &str| sources.iter().find(|s| s.name == p).unwrap().currency;
            let price = |p: &str| price_for(p, &product, currency(p));
            let nominal = rates.iter().min_by_key(|(p, _)| price(p)).unwrap().0;
            let cheapest = rates.iter().min_by_key(|(p, rate)| in_eur(price(p), rate)).unwrap().0;
            (nominal != cheapest).then_some((product, nominal, cheapest))
        })
        .unwrap();

    let c = compare(&env, &producer.base, &product).await;
    assert_eq!((c["status"].as_str(), c["base_currency"].as_str()), (Some("complete"), Some("EUR")), "{c}");
    let best = &c["best"];
    assert_eq!(best["provider"], cheapest, "cheapest in EUR, not {nominal} (nominally): {c}");
    let order: Vec<&str> = c["quotes"].as_array().unwrap().iter().map(|q| q["provider"].as_str().unwrap()).collect();
    assert_eq!(order.last(), Some(&"franc"), "no rate: listed last: {order:?}");
    let converted: Vec<Decimal> = c["quotes"].as_array().unwrap()[..3].iter().map(|q| dec(&q["base_price"])).collect();
    assert!(converted.is_sorted(), "sorted by base_price: {converted:?}");
    for (provider, rate) in rates {
        let quote = c["quotes"].as_array().unwrap().iter().find(|q| q["provider"] == provider).unwrap();
        assert_eq!(dec(&quote["fx_rate"]), Decimal::from_str(rate).unwrap(), "{quote}");
        assert_eq!(dec(&quote["base_price"]), in_eur(dec(&quote["price"]), rate), "rounded to cents: {quote}");
    }
    let franc = c["quotes"].as_array().unwrap().iter().find(|q| q["provider"] == "franc").unwrap();
    assert!(franc.get("base_price").is_none() && franc.get("fx_rate").is_none(), "{franc}");
    assert_eq!(c["fx_missing"], serde_json::json!(["CHF"]));

    // A watcher sees the quotes converted as they arrive.
    let url = format!("{}/v1/prices/{}/events", producer.base, env.product("fx-live"));
    let events = crate::sse::SseStream::open(&env.http, &url, &[]).await.rest().await;
    let quotes: Vec<Value> =
        events.iter().filter(|e| e.event == "quote").map(|e| serde_json::from_str(&e.data).unwrap()).collect();
    assert_eq!(quotes.len(), 4, "{events:?}");
    assert!(quotes.iter().filter(|q| q["currency"] != "CHF").all(|q| q.get("base_price").is_some()), "{quotes:?}");
    consumer.stop().await;
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_rates_from_the_ecb_file_replace_the_configured_ones() {
    let sources = vec![source("euro", "EUR"), source("dollar", "USD"), source("franc", "CHF")];
    let env = env().providers(sources).mock_url("fx", "url", ECB_PATH).start().await;
    let consumer = env.spawn_consumer_process().await;
    let producer = env.spawn_producer().await;
    wait_for("the consumer to load the mock's rates", Duration::from_secs(60), || async {
        let text = scrape(&env.http, &consumer.metrics).await;
        let loaded = sample(&text, "pricefront_fx_refreshes_total", &["outcome=\"ok\""]);
        if loaded >= 1.0 { Ok(()) } else { Err(format!("{loaded} loads")) }
    })
    .await;
    let c = compare(&env, &producer.base, &env.product("fx-ecb")).await;
    let ecb = |code: &str| ECB_RATES.iter().find(|(c, _)| *c == code).unwrap().1;
    assert_eq!(dec(rate_of(&c, "USD")), inverted(ecb("USD")), "the ECB's USD, not the configured 0.92: {c}");
    assert_eq!(dec(rate_of(&c, "CHF")), inverted(ecb("CHF")), "the file has CHF, which the configuration lacks");
    assert_eq!(c["fx_missing"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_rates_url_keeps_the_last_good_rates_and_their_age_grows() {
    // A rates server that answers the ECB format until it is told to fail.
    let healthy = Arc::new(AtomicBool::new(true));
    let serving = healthy.clone();
    let app = axum::Router::new().route(
        "/rates.xml",
        axum::routing::get(move || {
            let healthy = serving.load(Ordering::SeqCst);
            async move {
                match healthy {
                    true => (axum::http::StatusCode::OK, pricefront::fx::ecb::render("2026-12-01", &[("USD", "1.25")])),
                    false => (axum::http::StatusCode::SERVICE_UNAVAILABLE, String::new()),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("\"http://{}/rates.xml\"", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let sources = vec![source("euro", "EUR"), source("dollar", "USD")];
    let env = env().providers(sources).set("fx", "url", &url).set("fx", "refresh_secs", "1").start().await;
    let consumer = env.spawn_consumer_process().await;
    let producer = env.spawn_producer().await;
    let metrics = || async { scrape(&env.http, &consumer.metrics).await };
    wait_for("a first load", Duration::from_secs(60), || async {
        let loaded = sample(&metrics().await, "pricefront_fx_refreshes_total", &["outcome=\"ok\""]);
        if loaded >= 1.0 { Ok(()) } else { Err(format!("{loaded} loads")) }
    })
    .await;
    let before = compare(&env, &producer.base, &env.product("fx-before")).await;
    assert_eq!(dec(rate_of(&before, "USD")), Decimal::from_str("0.8").unwrap(), "1 / 1.25: {before}");

    healthy.store(false, Ordering::SeqCst);
    let age = wait_for("failed loads and a growing age", Duration::from_secs(60), || async {
        let text = metrics().await;
        let failed = sample(&text, "pricefront_fx_refreshes_total", &["outcome=\"failed\""]);
        let age = sample(&text, "pricefront_fx_rates_age_seconds", &[]);
        if failed >= 2.0 && age >= 2.0 { Ok(age) } else { Err(format!("{failed} failed loads, age {age} s")) }
    })
    .await;
    let after = compare(&env, &producer.base, &env.product("fx-after")).await;
    assert_eq!(dec(rate_of(&after, "USD")), Decimal::from_str("0.8").unwrap(), "the last good rate: {after}");
    wait_for("the age to keep growing", Duration::from_secs(30), || async {
        let now = sample(&metrics().await, "pricefront_fx_rates_age_seconds", &[]);
        if now > age { Ok(()) } else { Err(format!("age {now} s, was {age} s")) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rates_url_that_never_loads_leaves_the_configured_rates() {
    let sources = vec![source("euro", "EUR"), source("dollar", "USD")];
    // The mock answers 404 there.
    let env =
        env().providers(sources).mock_url("fx", "url", "/fx/missing.xml").set("fx", "refresh_secs", "1").start().await;
    let consumer = env.spawn_consumer_process().await;
    let producer = env.spawn_producer().await;
    wait_for("a failed load", Duration::from_secs(60), || async {
        let failed = sample(
            &scrape(&env.http, &consumer.metrics).await,
            "pricefront_fx_refreshes_total",
            &["outcome=\"failed\""],
        );
        if failed >= 1.0 { Ok(()) } else { Err(format!("{failed} failed loads")) }
    })
    .await;
    let c = compare(&env, &producer.base, &env.product("fx-configured")).await;
    assert_eq!(dec(rate_of(&c, "USD")), Decimal::from_str("0.92").unwrap(), "{c}");
}
