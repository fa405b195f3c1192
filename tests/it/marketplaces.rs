//! Real marketplaces over real HTTP: tokens that expire and renew themselves (OAuth 2.0 client
//! credentials, a service account's JWT), searches that list many offers, quotas and 429s, and
//! failures that pass without sticking for the whole guarantee. The mock plays the sources:
//! its token endpoints issue tokens that expire within the test, its eBay-like search lists
//! unsorted new and used offers, and its quota answers 429 with `Retry-After`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::future::join_all;
use pricefront::domain::{Currency, FailureReason, ProductId, Rates};
use pricefront::mock::{self, Mock, price_for};
use pricefront::providers::PriceSources;
use pricefront::settings::{
    MockAuthSettings, MockProviderSettings, MockQuotaSettings, MockShape, ProviderSettings, Secret,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{env, provider, service_account_key, wait_for};

/// Serves `providers` on a port of its own until the guard drops; returns its base URL.
async fn serve_mock(providers: Vec<MockProviderSettings>) -> (String, tokio_util::sync::DropGuard) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(mock::serve(listener, Mock::new(&providers).unwrap(), stop.clone()));
    (base, stop.drop_guard())
}

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

fn id(text: &str) -> ProductId {
    ProductId::parse(text).unwrap()
}

/// The rates the default settings convert with: GBP is worth more than EUR.
fn rates() -> Rates {
    let gbp = (Currency::parse("GBP").unwrap(), rust_decimal::Decimal::new(117, 2));
    Rates::new(eur(), [gbp].into()).unwrap()
}

fn source(settings: Value) -> ProviderSettings {
    serde_json::from_value(settings).unwrap()
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// A mock source behind a client-credentials token endpoint whose tokens live `ttl_secs`.
fn guarded(name: &str, ttl_secs: u64) -> MockProviderSettings {
    let mut p = provider(name, 5);
    p.auth = Some(MockAuthSettings {
        client_id: Some("shop-client".into()),
        client_secret: Some(Secret::new("right-s3cret")),
        key_file: None,
        token_ttl_secs: ttl_secs,
    });
    p
}

fn client_credentials(base: &str, name: &str, secret: &str, client_auth: &str) -> Value {
    json!({"name": name, "url": format!("{base}/{name}/prices/{{product_id}}"),
        "auth": {"kind": "oauth2_client_credentials", "token_url": format!("{base}/{name}/identity/v1/oauth2/token"),
            "client_id": "shop-client", "client_secret": secret, "scope": "https://api.ebay.com/oauth/api_scope",
            "client_auth": client_auth}})
}

async fn stats(http: &reqwest::Client, base: &str) -> Value {
    http.get(format!("{base}/_stats")).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn tokens_are_shared_and_renewed_before_they_expire() {
    let (base, _mock) = serve_mock(vec![guarded("basic", 4), guarded("posted", 4)]).await;
    let sources = [
        source(client_credentials(&base, "basic", "${SECRET}", "basic")),
        source(client_credentials(&base, "posted", "${SECRET}", "post")),
    ];
    let env = |name: &str| (name == "SECRET").then(|| "right-s3cret".to_owned());
    let sources = PriceSources::with_env(&sources, Duration::from_secs(5), &env).unwrap();
    let http = reqwest::Client::new();
    let rates = rates();

    // Twenty calls at once, no token yet: one request to each token endpoint, shared.
    let products: Vec<ProductId> = (0..20).map(|i| id(&format!("first-{i}"))).collect();
    let outcomes = join_all(products.iter().map(|p| sources.fan_out(p, &rates))).await;
    for (product, outcomes) in products.iter().zip(&outcomes) {
        for outcome in outcomes {
            let quote = outcome.as_ref().unwrap_or_else(|f| panic!("{product}: {f:?}"));
            assert_eq!(quote.price, price_for(&quote.provider, product.as_str(), eur()));
        }
    }
    let seen = stats(&http, &base).await;
    assert_eq!(seen["providers"]["basic"]["token_requests"], 1, "{seen}");
    assert_eq!(seen["providers"]["posted"]["token_requests"], 1, "{seen}");

    // Past several tokens' lives, calls keep succeeding: renewed ahead, never expired in use.
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(10) {
        i += 1;
        for outcome in sources.fan_out(&id(&format!("later-{i}")), &rates).await {
            let quote = outcome.unwrap_or_else(|f| panic!("a call after {:?}: {f:?}", started.elapsed()));
            assert_eq!(quote.price, price_for(&quote.provider, &format!("later-{i}"), eur()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = stats(&http, &base).await;
    // A token of 4 s is renewed after 3 s: a few renewals, never one per call.
    let most = started.elapsed().as_secs_f64() / 3.0 + 2.0;
    for name in ["basic", "posted"] {
        let requests = seen["providers"][name]["token_requests"].as_u64().unwrap();
        assert!((3..=most as u64).contains(&requests), "{name}: {requests} token requests over {i} rounds: {seen}");
        // A call whose token expired on its way (a stalled machine) is refused once and retried.
        let (calls, refused) = (
            seen["providers"][name]["calls"].as_u64().unwrap(),
            seen["providers"][name]["unauthorized"].as_u64().unwrap(),
        );
        assert_eq!(calls, 20 + i + refused, "{name}: one call per product, and one more per refusal");
        assert!(refused <= i / 4, "{name}: {refused} of {i} rounds used an expired token");
    }
}

#[tokio::test]
async fn a_refused_token_is_renewed_once_for_every_call_and_the_calls_retried() {
    let (base, _mock) = serve_mock(vec![guarded("ebay", 3600)]).await;
    let sources = [source(client_credentials(&base, "ebay", "right-s3cret", "basic"))];
    let sources = PriceSources::with_env(&sources, Duration::from_secs(5), &no_env).unwrap();
    let http = reqwest::Client::new();
    assert!(sources.fan_out(&id("warm"), &rates()).await[0].is_ok());
    // The source forgets its tokens (revoked, or expired early): every call is refused once.
    let revoked = http.delete(format!("{base}/_tokens/ebay")).send().await.unwrap();
    assert_eq!(revoked.status(), 204);
    let products: Vec<ProductId> = (0..10).map(|i| id(&format!("after-{i}"))).collect();
    let rates = rates();
    let outcomes = join_all(products.iter().map(|p| sources.fan_out(p, &rates))).await;
    for (product, outcome) in products.iter().zip(&outcomes) {
        let quote = outcome[0].as_ref().unwrap_or_else(|f| panic!("{product}: {f:?}"));
        assert_eq!(quote.price, price_for("ebay", product.as_str(), eur()));
    }
    let seen = stats(&http, &base).await;
    assert_eq!(seen["providers"]["ebay"]["token_requests"], 2, "one renewal for the ten refusals: {seen}");
    assert_eq!(seen["providers"]["ebay"]["calls"], 21, "the warm-up, ten refused, ten retried: {seen}");
}

#[tokio::test]
async fn a_failing_token_endpoint_is_auth_failed_shows_no_secret_and_spares_the_breaker() {
    let (base, _mock) = serve_mock(vec![guarded("ebay", 3600)]).await;
    let secret = "wrong-s3cret-value";
    let mut settings = client_credentials(&base, "ebay", secret, "basic");
    settings["breaker_failures"] = json!(2);
    let sources = PriceSources::with_env(&[source(settings)], Duration::from_secs(5), &no_env).unwrap();
    let http = reqwest::Client::new();
    let started = Instant::now();
    for i in 0..8 {
        let failure = sources.fan_out(&id(&format!("p{i}")), &rates()).await.remove(0).unwrap_err();
        assert_eq!(failure.reason, FailureReason::AuthFailed, "never circuit_open: {failure:?}");
        assert_eq!(failure.detail, "the token endpoint answered 401 Unauthorized (invalid_client)");
        assert!(!format!("{failure:?}").contains(secret));
    }
    let seen = stats(&http, &base).await;
    assert_eq!(seen["providers"]["ebay"]["calls"], 0, "no call without a token: {seen}");
    // A failure is the answer for a second: at most one request per second it took.
    let most = started.elapsed().as_secs() + 1;
    let requests = seen["providers"]["ebay"]["token_requests"].as_u64().unwrap();
    assert!((1..=most).contains(&requests), "{requests} token requests in {:?}", started.elapsed());
}

#[tokio::test]
async fn a_service_account_signs_for_its_token() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let token_uri = format!("{base}/merchant/token");
    let ours = service_account_key(&token_uri);
    let strangers = service_account_key(&token_uri);
    let mut merchant = provider("merchant", 5);
    merchant.shape = MockShape::Merchant;
    merchant.auth = Some(MockAuthSettings {
        client_id: None,
        client_secret: None,
        key_file: Some(ours.clone()),
        token_ttl_secs: 3599,
    });
    let stop = CancellationToken::new();
    tokio::spawn(mock::serve(listener, Mock::new(&[merchant]).unwrap(), stop.clone()));
    let _stop = stop.drop_guard();
    let with_key = |key: &PathBuf| {
        source(json!({"name": "merchant", "url": format!("{base}/merchant/products/{{product_id}}"),
            "auth": {"kind": "jwt_bearer", "key_file": key, "scope": "https://www.googleapis.com/auth/content"},
            "response": {"price": "/productAttributes/price/amountMicros", "currency": "/productAttributes/price/currencyCode",
                "price_unit": "micros"}}))
    };
    let sources = PriceSources::with_env(&[with_key(&ours)], Duration::from_secs(5), &no_env).unwrap();
    let quote = sources.fan_out(&id("gtin-1"), &rates()).await.remove(0).unwrap();
    assert_eq!(quote.price, price_for("merchant", "gtin-1", eur()));

    let sources = PriceSources::with_env(&[with_key(&strangers)], Duration::from_secs(5), &no_env).unwrap();
    let failure = sources.fan_out(&id("gtin-1"), &rates()).await.remove(0).unwrap_err();
    assert_eq!(
        (failure.reason, failure.detail.as_str()),
        (FailureReason::AuthFailed, "the token endpoint answered 400 Bad Request (invalid_grant)")
    );

    let missing = with_key(&std::env::temp_dir().join("no-such-key.json"));
    let Err(err) = PriceSources::with_env(&[missing], Duration::from_secs(5), &no_env) else {
        panic!("a missing key file")
    };
    assert!(err.to_string().starts_with("providers[0] (merchant): auth: cannot read key_file"), "{err}");
    for key in [ours, strangers] {
        std::fs::remove_file(key).unwrap();
    }
}

/// An eBay-like search: listings in relevance order, new and used, one in pounds.
fn search(base: &str, extra: Value) -> ProviderSettings {
    let mut response = json!({"items": "/itemSummaries", "price": "/price/value", "currency": "/price/currency",
        "offer_id": "/itemId", "offer_url": "/itemWebUrl", "match": {"/conditionId": "1000"}});
    response.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    source(json!({"name": "ebay", "url": format!("{base}/ebay/buy/browse/v1/item_summary/search?gtin={{product_id}}"),
        "response": response, "breaker_failures": 2}))
}

#[tokio::test]
async fn a_search_quotes_its_cheapest_matching_listing_and_nothing_found_is_not_found() {
    let mut ebay = provider("ebay", 5);
    ebay.shape = MockShape::Ebay;
    ebay.not_found_prefix = Some("unknown-".into());
    let (base, _mock) = serve_mock(vec![ebay]).await;
    let cheapest = PriceSources::with_env(&[search(&base, json!({}))], Duration::from_secs(5), &no_env).unwrap();
    let quote = cheapest.fan_out(&id("sku-7"), &rates()).await.remove(0).unwrap();
    // Not the first listing (used, cheaper), nor the nominally cheapest new one (in pounds).
    assert_eq!((quote.price, quote.currency), (price_for("ebay", "sku-7", eur()), eur()));
    assert!(quote.offer_id.as_deref().is_some_and(|o| o.starts_with("v1|")), "{quote:?}");
    assert!(quote.url.as_deref().is_some_and(|u| u.starts_with("https://www.ebay.example/itm/")), "{quote:?}");
    let first =
        PriceSources::with_env(&[search(&base, json!({"select": "first"}))], Duration::from_secs(5), &no_env).unwrap();
    let listed_first = first.fan_out(&id("sku-7"), &rates()).await.remove(0).unwrap();
    assert!(listed_first.price > quote.price, "the first new listing is dearer: {listed_first:?}");

    // eBay answers a product it does not list with 200 and no items: not sold here, however
    // often, and the breaker (2 failures) stays shut for the products it does list.
    for i in 0..6 {
        let failure = cheapest.fan_out(&id(&format!("unknown-{i}")), &rates()).await.remove(0).unwrap_err();
        assert_eq!((failure.reason, failure.detail.as_str()), (FailureReason::NotFound, "no offers at /itemSummaries"));
    }
    assert!(cheapest.fan_out(&id("sku-8"), &rates()).await[0].is_ok(), "still quoting");
}

/// A mock source with a quota of its own: past it, 429 with `Retry-After`.
fn limited(name: &str, per_second: f64, burst: u32, retry_after_secs: u64) -> MockProviderSettings {
    let mut p = provider(name, 5);
    p.quota = Some(MockQuotaSettings { per_second, burst, retry_after_secs });
    p
}

#[tokio::test]
async fn a_429s_retry_after_pauses_the_source_and_is_rate_limited() {
    let (base, _mock) = serve_mock(vec![limited("partner", 1.0, 2, 3)]).await;
    let partner =
        source(json!({"name": "partner", "url": format!("{base}/partner/prices/{{product_id}}"), "retries": 0}));
    // A budget shorter than the pause: a call that would have to wait it out is not made.
    let sources = PriceSources::with_env(&[partner], Duration::from_secs(1), &no_env).unwrap();
    let http = reqwest::Client::new();
    let products: Vec<ProductId> = (0..3).map(|i| id(&format!("burst-{i}"))).collect();
    let rates = rates();
    let outcomes = join_all(products.iter().map(|p| sources.fan_out(p, &rates))).await;
    let (ok, limited): (Vec<_>, Vec<_>) = outcomes.into_iter().flatten().partition(|o| o.is_ok());
    assert_eq!(ok.len(), 2, "the source's burst: {limited:?}");
    let refused = limited[0].as_ref().unwrap_err();
    assert_eq!((refused.reason, refused.http_status), (FailureReason::RateLimited, Some(429)));
    assert_eq!(refused.detail, "429 Too Many Requests, Retry-After 3 s");
    // Paused: no call until the Retry-After has passed.
    for i in 0..5 {
        let failure = sources.fan_out(&id(&format!("paused-{i}")), &rates).await.remove(0).unwrap_err();
        assert_eq!(failure.reason, FailureReason::RateLimited, "{failure:?}");
        assert!(failure.detail.starts_with("paused by the source's Retry-After"), "{failure:?}");
    }
    let seen = stats(&http, &base).await;
    assert_eq!(
        (seen["providers"]["partner"]["calls"].as_u64(), seen["providers"]["partner"]["rate_limited"].as_u64()),
        (Some(3), Some(1)),
        "{seen}"
    );
    wait_for("the source to quote again after its Retry-After", Duration::from_secs(10), || async {
        match sources.fan_out(&id("after-pause"), &rates).await.remove(0) {
            Ok(_) => Ok(()),
            Err(f) => Err(format!("{f:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_share_one_quota_and_the_source_never_answers_429() {
    // The source takes 10 calls a second; the fleet is told 5, leaving room for calls that
    // bunch up on their way. Two consumers keeping their own would make 10 and more.
    let quota = r#"{ per_second = 5, burst = 2 }"#;
    let env = env()
        .providers(vec![provider("steady", 5), limited("partner", 10.0, 4, 1)])
        .provider_option("partner", "quota", quota)
        .provider_option("partner", "retries", "0")
        .set("consumer", "provider_timeout_ms", "1500")
        .start()
        .await;
    let consumers = [env.spawn_consumer_process().await, env.spawn_consumer_process().await];
    crate::helpers::wait_all_assigned(&env.http, &[&consumers[0], &consumers[1]]).await;
    let products: Vec<String> = (0..60).map(|i| env.product(&format!("q{i}"))).collect();
    let started = Instant::now();
    env.request_directly(&products).await;
    crate::helpers::wait_all_results(&env, &products, Duration::from_secs(60)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let seen = env.mock_stats().await;
    assert_eq!(seen["providers"]["partner"]["rate_limited"], 0, "the source never had to refuse: {seen}");
    let calls = seen["providers"]["partner"]["calls"].as_u64().unwrap();
    assert!(calls as f64 <= 5.0 * elapsed + 2.0, "{calls} calls in {elapsed:.1} s");
    let (mut quoted, mut refused) = (0, 0);
    for product in &products {
        let result = env.stored_result(product).await.unwrap();
        let partner =
            |list: &str| result[list].as_array().unwrap().iter().find(|o| o["provider"] == "partner").cloned();
        match (partner("quotes"), partner("failures")) {
            (Some(_), None) => quoted += 1,
            (None, Some(failure)) => {
                assert_eq!(failure["reason"], "rate_limited", "{result}");
                assert!(failure["detail"].as_str().unwrap().starts_with("the quota's next turn is in"), "{failure}");
                // A failure that passes: the result is kept briefly, not for the guarantee.
                let window = crate::helpers::guarantee_window(&result);
                assert!(window <= env.settings.cache.partial_ttl.as_secs() as i64, "{window} s: {result}");
                refused += 1;
            }
            other => panic!("{other:?} in {result}"),
        }
    }
    assert!(quoted >= 3 && quoted + refused == products.len(), "{quoted} quoted, {refused} refused");
    assert!(refused > 0, "a burst of 60 at 5 a second within 1.5 s cannot all be quoted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_with_a_passing_failure_is_kept_briefly_and_recomputed_from_the_failed_source_alone() {
    let mut unsold = provider("unsold", 5);
    unsold.not_found_prefix = Some("passing-".into());
    let env = env()
        .providers(vec![provider("steady", 5), provider("flaky", 5), unsold])
        .provider_option("flaky", "retries", "0")
        .provider_option("unsold", "response", r#"{ price = "/price", currency = "/currency", not_found = [404] }"#)
        .set("cache", "partial_ttl_secs", "4")
        .start()
        .await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    env.set_faults("flaky", json!({"error_rate": 1.0})).await;
    let product = env.product("passing");
    let url = format!("{}/v1/prices/{product}", producer.base);
    assert_eq!(crate::helpers::get(&env.http, &url).await.0, 202);
    let first = env.wait_result(&product, Duration::from_secs(30)).await;
    assert_eq!(first["status"], "partial", "{first}");
    let failure = |result: &Value, name: &str| {
        result["failures"].as_array().unwrap().iter().find(|f| f["provider"] == name).cloned().unwrap_or(Value::Null)
    };
    let flaky = failure(&first, "flaky");
    assert_eq!((flaky["reason"].as_str(), flaky["http_status"].as_u64()), (Some("http_status"), Some(503)));
    assert_eq!(failure(&first, "unsold")["reason"], "not_found", "{first}");
    assert_eq!(crate::helpers::guarantee_window(&first), 4, "a 503 may pass: {first}");
    let steady_ends = first["quotes"][0]["expires_at"].as_str().unwrap().to_owned();
    assert!(env.redis_get(&env.keys().quotes(&id(&product))).await.is_some(), "steady's quote outlives the result");

    // The source recovers; the result ends by itself; the next computation asks it alone.
    env.set_faults("flaky", json!({"error_rate": 0.0})).await;
    wait_for("the brief result to end", Duration::from_secs(10), || async {
        match env.stored_result(&product).await {
            None => Ok(()),
            Some(r) => Err(r.to_string()),
        }
    })
    .await;
    assert_eq!(crate::helpers::get(&env.http, &url).await.0, 202);
    let second = wait_for("the recomputed result", Duration::from_secs(30), || async {
        match env.stored_result(&product).await {
            Some(r) if r["computed_at"] != first["computed_at"] => Ok(r),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(second["status"], "complete", "{second}");
    let calls = env.calls_for(&product).await;
    let asked = (calls["steady"], calls["flaky"], calls["unsold"]);
    assert_eq!(asked, (1, 2, 1), "steady's quote and unsold's answer were reused: {calls:?}");
    assert_eq!(failure(&second, "unsold")["reason"], "not_found", "{second}");
    assert_eq!(second["expires_at"], steady_ends, "the result ends with its oldest quote, reused: {second}");
    let quotes = second["quotes"].as_array().unwrap();
    let own = |name: &str| quotes.iter().find(|q| q["provider"] == name).unwrap()["expires_at"].clone();
    assert_eq!(own("steady"), Value::Null, "steady's ends with the result");
    assert!(own("flaky").as_str().is_some_and(|end| end > steady_ends.as_str()), "flaky's is fresh: {second}");
    consumer.stop().await;
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_never_makes_a_result_worse() {
    // A guarantee of 20 s refreshed in its last 95 %: after a second, a refresh asks every
    // source again (no quote has more than the refresh window left).
    let env = env()
        .providers(vec![provider("steady", 5), provider("flaky", 5)])
        .provider_option("flaky", "retries", "0")
        .set("cache", "ttl_secs", "20")
        .set("cache", "refresh_ahead", "0.95")
        .set("cache", "partial_ttl_secs", "2")
        .start()
        .await;
    let consumer = env.spawn_consumer();
    let product = env.product("refreshed");
    env.request_directly(std::slice::from_ref(&product)).await;
    let first = env.wait_result(&product, Duration::from_secs(30)).await;
    assert_eq!(first["status"], "complete", "{first}");
    let flaky =
        |result: &Value| result["quotes"].as_array().unwrap().iter().find(|q| q["provider"] == "flaky").cloned();
    let flaky_before = flaky(&first).unwrap();
    let computed = time::OffsetDateTime::parse(
        first["computed_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    wait_for("a second of the guarantee to pass", Duration::from_secs(5), || async {
        if time::OffsetDateTime::now_utc() > computed + Duration::from_millis(1100) {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;

    // A refresh while flaky fails: its earlier quote stands while it is guaranteed.
    env.set_faults("flaky", json!({"error_rate": 1.0})).await;
    let refresh = pricefront::queue::PriceRequest::refresh(id(&product)).encode();
    env.produce_raw(&product, &refresh).await;
    let refreshed = wait_for("the refreshed result", Duration::from_secs(15), || async {
        match env.stored_result(&product).await {
            Some(r) if r["computed_at"] != first["computed_at"] => Ok(r),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(refreshed["status"], "complete", "not partial: {refreshed}");
    assert_eq!(flaky(&refreshed).unwrap(), flaky_before, "flaky's earlier quote, whole: {refreshed}");
    assert_eq!(refreshed["expires_at"], first["expires_at"], "it ends with its oldest quote, flaky's");
    let calls = env.calls_for(&product).await;
    assert_eq!((calls["steady"], calls["flaky"]), (2, 2), "both asked again: {calls:?}");
    consumer.stop().await;
}
