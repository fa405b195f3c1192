//! Real price APIs' shapes, credentials, POST, not-found, and the limits that protect the
//! sources from cost attacks, all over real HTTP (the mock speaks each shape).

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use pricefront::domain::{Currency, FailureReason, ProductId};
use pricefront::mock::{self, Mock, price_for};
use pricefront::providers::PriceSources;
use pricefront::settings::{
    MockAuthSettings, MockProviderSettings, MockShape, PriceUnit, ProviderSettings, Secret, Settings,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{env, get, provider, wait_for};

/// Serves `providers` on a port of its own until the returned guard drops; returns its base URL.
async fn serve_mock(providers: Vec<MockProviderSettings>) -> (String, tokio_util::sync::DropGuard) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(mock::serve(listener, Mock::new(&providers).unwrap(), stop.clone()));
    (base, stop.drop_guard())
}

fn mock_source(name: &str, shape: MockShape, currency: &str) -> MockProviderSettings {
    let mut p = MockProviderSettings::new(name, 5, Currency::parse(currency).unwrap());
    p.shape = shape;
    p
}

fn source(settings: Value) -> ProviderSettings {
    serde_json::from_value(settings).unwrap()
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn id(text: &str) -> ProductId {
    ProductId::parse(text).unwrap()
}

#[tokio::test]
async fn each_shape_and_unit_is_read_exactly() {
    let mut cents = mock_source("cents", MockShape::Flat, "GBP");
    cents.price_unit = Some(PriceUnit::Cents);
    let (base, _mock) = serve_mock(vec![
        mock_source("flat", MockShape::Flat, "EUR"),
        cents,
        mock_source("ebay", MockShape::Ebay, "EUR"),
        mock_source("merchant", MockShape::Merchant, "CHF"),
        mock_source("bestbuy", MockShape::Bestbuy, "EUR"),
    ])
    .await;
    let sources = vec![
        source(json!({"name": "flat", "url": format!("{base}/flat/prices/{{product_id}}")})),
        source(json!({"name": "cents", "url": format!("{base}/cents/prices/{{product_id}}"),
            "response": {"price": "/price", "currency": "/currency", "price_unit": "cents", "product_id": "/product_id"}})),
        source(json!({"name": "ebay", "url": format!("{base}/ebay/search?gtin={{product_id}}"),
            "response": {"items": "/itemSummaries", "match": {"/conditionId": "1000"}, "price": "/price/value",
                "currency": "/price/currency", "product_id": "/gtin"}})),
        source(json!({"name": "merchant", "url": format!("{base}/merchant/products/{{product_id}}"),
            "response": {"price": "/productAttributes/price/amountMicros", "currency": "/productAttributes/price/currencyCode",
                "price_unit": "micros", "product_id": "/productAttributes/gtin/0"}})),
        source(json!({"name": "bestbuy", "url": format!("{base}/bestbuy/v1/products(upc={{product_id}})?format=json"),
            "response": {"price": "/products/0/salePrice", "default_currency": "USD", "product_id": "/products/0/upc"}})),
    ];
    let sources = PriceSources::with_env(&sources, Duration::from_secs(5), &no_env).unwrap();
    let product = "sku-42";
    let outcomes = sources.fan_out(&id(product), &Default::default()).await;
    let expected = [("flat", "EUR"), ("cents", "GBP"), ("ebay", "EUR"), ("merchant", "CHF"), ("bestbuy", "USD")];
    // What the mock quotes in: Best Buy's shape names no currency, and the source's default says USD.
    let quoted_in = ["EUR", "GBP", "EUR", "CHF", "EUR"];
    for (((name, currency), outcome), quoted_in) in expected.iter().zip(&outcomes).zip(quoted_in) {
        let quote = outcome.as_ref().unwrap_or_else(|f| panic!("{name}: {f:?}"));
        assert_eq!(quote.price, price_for(name, product, Currency::parse(quoted_in).unwrap()), "{name}");
        assert_eq!(quote.currency.as_str(), *currency, "{name}: configured or default currency");
    }
}

#[tokio::test]
async fn a_post_source_sends_its_body_with_the_id() {
    let (base, _mock) = serve_mock(vec![mock_source("internal", MockShape::Flat, "EUR")]).await;
    let post = source(json!({"name": "internal", "url": format!("{base}/internal/v1/quotes"), "method": "POST",
        "body": "{\"ids\": [\"{product_id}\"], \"region\": \"${REGION}\"}"}));
    let env = |name: &str| (name == "REGION").then(|| "eu".to_owned());
    let sources = PriceSources::with_env(&[post], Duration::from_secs(5), &env).unwrap();
    let quote = sources.fan_out(&id("p.1_a"), &Default::default()).await.remove(0).unwrap();
    assert_eq!(quote.price, price_for("internal", "p.1_a", Currency::parse("EUR").unwrap()));
}

#[tokio::test]
async fn a_wrong_credential_is_an_http_status_failure_that_never_shows_it() {
    let mut guarded = mock_source("guarded", MockShape::Flat, "EUR");
    guarded.require_header = Some("Authorization: Bearer right-token".into());
    let (base, _mock) = serve_mock(vec![guarded]).await;
    let dead = format!("http://127.0.0.1:{}", crate::helpers::free_port());
    let sources = [
        source(json!({"name": "guarded", "url": format!("{base}/guarded/prices/{{product_id}}"),
            "headers": {"Authorization": "Bearer ${TOKEN}"}, "retries": 0})),
        // The key in the query of a source that cannot be reached: its error names no URL.
        source(json!({"name": "keyed", "url": format!("{dead}/prices/{{product_id}}?key=${{TOKEN}}"), "retries": 0})),
    ];
    let secret = "wrong-s3cret-token";
    let env = |name: &str| (name == "TOKEN").then(|| secret.to_owned());
    let built = PriceSources::with_env(&sources, Duration::from_secs(5), &env).unwrap();
    let outcomes = built.fan_out(&id("p1"), &Default::default()).await;
    let unauthorized = outcomes[0].as_ref().unwrap_err();
    assert_eq!((unauthorized.reason, unauthorized.detail.as_str()), (FailureReason::HttpStatus, "401 Unauthorized"));
    let unreachable = outcomes[1].as_ref().unwrap_err();
    assert_eq!(unreachable.reason, FailureReason::Connect, "{unreachable:?}");
    for failure in [unauthorized, unreachable] {
        assert!(!format!("{failure:?}").contains(secret), "{failure:?}");
    }

    let right = |name: &str| (name == "TOKEN").then(|| "right-token".to_owned());
    let built = PriceSources::with_env(&sources[..1], Duration::from_secs(5), &right).unwrap();
    assert!(built.fan_out(&id("p1"), &Default::default()).await[0].is_ok(), "the right token is accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_variable_stops_the_consumer_before_it_binds_anything() {
    let env = env()
        .provider_option("beta", "headers", r#"{ Authorization = "Bearer ${PRICEFRONT_IT_NEVER_SET}" }"#)
        .start()
        .await;
    let port = crate::helpers::free_port();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_consumer"))
        .env("PRICEFRONT_CONFIG", &env.config_path)
        .env("PRICEFRONT__CONSUMER__METRICS_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("PRICEFRONT_IT_NEVER_SET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("PRICEFRONT_IT_NEVER_SET") && stderr.contains("providers[1] (beta)"), "{stderr}");
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "nothing was bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_no_source_sells_answers_404_and_stays_cached() {
    let not_sold = |name: &str, prefix: &str| {
        let mut p = provider(name, 10);
        p.not_found_prefix = Some(prefix.into());
        p
    };
    let mapping = r#"{ price = "/price", currency = "/currency", product_id = "/product_id", not_found = [404] }"#;
    let env = env()
        .providers(vec![not_sold("alpha", "gone-"), not_sold("beta", "gone-"), not_sold("gamma", "gone-everywhere-")])
        .provider_option("alpha", "response", mapping)
        .provider_option("beta", "response", mapping)
        .provider_option("gamma", "response", mapping)
        .start()
        .await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    let url = |p: &str| format!("{}/v1/prices/{p}", producer.base);

    // Two say "not sold here", one quotes: complete, with the two listed.
    let partly = env.product("gone-partly");
    assert_eq!(get(&env.http, &url(&partly)).await.0, 202);
    let result = env.wait_result(&partly, Duration::from_secs(30)).await;
    assert_eq!(result["status"], "complete", "{result}");
    let reasons: Vec<&str> =
        result["failures"].as_array().unwrap().iter().map(|f| f["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["not_found", "not_found"]);

    // Nobody sells it: not_found, kept for cache.not_found_ttl_secs, answered 404.
    let nowhere = env.product("gone-everywhere");
    assert_eq!(get(&env.http, &url(&nowhere)).await.0, 202);
    let result = env.wait_result(&nowhere, Duration::from_secs(30)).await;
    assert_eq!(result["status"], "not_found", "{result}");
    assert_eq!(result["best"], Value::Null);
    let window = crate::helpers::guarantee_window(&result);
    assert_eq!(window, env.settings.cache.not_found_ttl.as_secs() as i64);
    env.assert_stored_within_guarantee(&nowhere).await;
    for _ in 0..3 {
        let (status, headers, body) = get(&env.http, &url(&nowhere)).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(headers["x-cache"], "HIT");
        let max_age = crate::helpers::max_age(&headers);
        assert!(max_age > 500, "kept for the not-found TTL: max-age={max_age}");
        assert_eq!(body["type"], "/problems/product-not-found");
    }
    let calls = env.calls_for(&nowhere).await;
    assert!(calls.values().all(|&n| n == 1), "asked once each (never retried), then answered from cache: {calls:?}");
    consumer.stop().await;
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_miss_limit_gets_429_while_others_are_served() {
    let env = env()
        .set("producer.miss_rate_per_client", "per_second", "1")
        .set("producer.miss_rate_per_client", "burst", "3")
        .set("producer", "trusted_proxies", r#"["127.0.0.1"]"#)
        .start()
        .await;
    let producer = env.spawn_producer_process().await;
    let consumer = env.spawn_consumer();
    let ask = |client: &'static str, product: String| {
        let (http, url) = (env.http.clone(), format!("{}/v1/prices/{product}", producer.base));
        async move {
            let res = http.get(url).header("x-forwarded-for", client).send().await.unwrap();
            let status = res.status().as_u16();
            let retry_after = res.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            let body: Value = res.json().await.unwrap_or(Value::Null);
            (status, retry_after, body)
        }
    };
    // A served product, for the hit below.
    let cached = env.product("lim-cached");
    assert_eq!(ask("192.0.2.2", cached.clone()).await.0, 202);
    env.wait_result(&cached, Duration::from_secs(30)).await;

    // Client A invents products: its burst of 3 claims, then 429, all at once.
    let invented: Vec<String> = (0..8).map(|i| env.product(&format!("lim-a{i}"))).collect();
    let answers = join_all(invented.iter().map(|p| ask("192.0.2.1", p.clone()))).await;
    let accepted = answers.iter().filter(|a| a.0 == 202).count();
    let limited: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert_eq!((accepted, limited.len()), (3, 5), "{answers:?}");
    for (_, retry_after, body) in &limited {
        assert!(retry_after.as_deref().is_some_and(|s| s.parse::<u64>().unwrap() >= 1), "{retry_after:?}");
        assert_eq!(body["type"], "/problems/too-many-misses");
    }
    // Still limited, A gets hits and its products already pending; B is served.
    assert_eq!(ask("192.0.2.1", cached.clone()).await.0, 200, "a hit is never limited");
    let pending = invented.iter().zip(&answers).find(|(_, a)| a.0 == 202).unwrap().0.clone();
    assert_eq!(ask("192.0.2.1", pending).await.0, 202, "asking for a pending product costs nothing");
    assert_eq!(ask("192.0.2.2", env.product("lim-b")).await.0, 202, "another client is served");
    // A limited client asking for a product claims nothing, so it cannot hold it off others.
    let wanted = env.product("lim-wanted");
    assert_eq!(ask("192.0.2.1", wanted.clone()).await.0, 429);
    assert_eq!(env.redis_get(&env.pending_key(&wanted)).await, None, "no marker left behind");
    assert_eq!(ask("192.0.2.2", wanted.clone()).await.0, 202);
    env.wait_result(&wanted, Duration::from_secs(30)).await;
    // A forged X-Forwarded-For from an untrusted peer would not help: see the unit tests of
    // `api::limits`. The refusals are counted.
    let metrics = env.http.get(format!("{}/metrics", producer.ops)).send().await.unwrap().text().await.unwrap();
    let refused: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("pricefront_limited_total{") && l.contains(r#"limit="client_misses""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(refused, 6.0, "{metrics}");
    consumer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_producers_publish_rate_misses_answer_503() {
    let env = env().set("producer", "max_publish_rate", "2").start().await;
    let producer = env.spawn_producer_process().await;
    let products: Vec<String> = (0..6).map(|i| env.product(&format!("cap{i}"))).collect();
    let urls: Vec<String> = products.iter().map(|p| format!("{}/v1/prices/{p}", producer.base)).collect();
    let answers = join_all(urls.iter().map(|url| get(&env.http, url))).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses.iter().filter(|&&s| s == 202).count(), 2, "{statuses:?}");
    for (status, headers, body) in answers.iter().filter(|a| a.0 != 202) {
        assert_eq!(*status, 503);
        assert!(headers.contains_key("retry-after"));
        assert_eq!(body["type"], "/problems/overloaded");
    }
    let metrics = env.http.get(format!("{}/metrics", producer.ops)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with(r#"pricefront_limited_total{limit="publishes"} 4"#)), "{metrics}");
    // The refused claims were released: once the rate allows, the same product is accepted.
    let refused = products.iter().zip(&statuses).find(|(_, s)| **s == 503).unwrap().0.clone();
    let url = format!("{}/v1/prices/{refused}", producer.base);
    wait_for("the publish rate to allow one more", Duration::from_secs(30), || async {
        match get(&env.http, &url).await.0 {
            202 => Ok(()),
            status => Err(status.to_string()),
        }
    })
    .await;
}

/// The price-source guide's example sources, with their hosts swapped for the mock's: a configuration
/// written from the guide quotes from sources that speak none of the mock's default shape,
/// with the credentials each needs (an OAuth client, a service account's key, a key in the URL).
#[tokio::test]
async fn the_guides_examples_quote_from_their_shapes() {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/price-sources.md")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let key_file = crate::helpers::service_account_key(&format!("{base}/merchant/token"));
    let mut ebay = mock_source("ebay", MockShape::Ebay, "EUR");
    ebay.auth = Some(MockAuthSettings {
        client_id: Some("ebay-id".into()),
        client_secret: Some(Secret::new("ebay-secret")),
        key_file: None,
        token_ttl_secs: 7200,
    });
    let mut merchant = mock_source("merchant", MockShape::Merchant, "JPY");
    merchant.auth = Some(MockAuthSettings {
        client_id: None,
        client_secret: None,
        key_file: Some(key_file.clone()),
        token_ttl_secs: 3599,
    });
    let stop = CancellationToken::new();
    let mock = Mock::new(&[ebay, mock_source("bestbuy", MockShape::Bestbuy, "EUR"), merchant]).unwrap();
    tokio::spawn(mock::serve(listener, mock, stop.clone()));
    let _stop = stop.drop_guard();
    let examples = [
        ("ebay", "https://api.ebay.com", "EUR"),
        ("bestbuy", "https://api.bestbuy.com", "USD"),
        ("merchant", "https://merchantapi.googleapis.com", "JPY"),
    ];
    let key_path = key_file.to_str().unwrap().to_owned();
    let env: HashMap<&str, &str> = [
        ("EBAY_CLIENT_ID", "ebay-id"),
        ("EBAY_CLIENT_SECRET", "ebay-secret"),
        ("BESTBUY_API_KEY", "bb-key"),
        ("MERCHANT_ACCOUNT", "123"),
        ("GOOGLE_APPLICATION_CREDENTIALS", key_path.as_str()),
    ]
    .into();
    let lookup = |name: &str| env.get(name).map(|v| v.to_string());
    for (name, host, currency) in examples {
        let path = format!("{}/config/examples/{name}.toml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(guide.contains(text.trim()), "docs/price-sources.md shows config/examples/{name}.toml verbatim");
        let local = std::env::temp_dir().join(format!("example-{name}-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&local, text.replace(host, &format!("{base}/{name}"))).unwrap();
        let settings = Settings::load_from(Some(&local), Some(Default::default())).unwrap();
        std::fs::remove_file(&local).unwrap();
        let sources = PriceSources::with_env(&settings.providers, Duration::from_secs(5), &lookup).unwrap();
        let quote = sources
            .fan_out(&id("0885909950805"), &Default::default())
            .await
            .remove(0)
            .unwrap_or_else(|f| panic!("{name}: {f:?}"));
        let quoted_in = if name == "merchant" { "JPY" } else { "EUR" };
        assert_eq!(quote.price, price_for(name, "0885909950805", Currency::parse(quoted_in).unwrap()), "{name}");
        assert_eq!(quote.currency.as_str(), currency, "{name}");
        if name == "ebay" {
            assert!(quote.url.is_some() && quote.offer_id.is_some(), "a listing's id and page: {quote:?}");
        }
    }
    std::fs::remove_file(key_file).unwrap();
}
