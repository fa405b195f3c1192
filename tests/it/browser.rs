//! The widget and the demo page in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium-driver`, which `scripts/test.sh` installs), against a real stack: Redis,
//! the broker, the mock sources over HTTP, a producer and a consumer.
//!
//! Checks go through the widget's rendering contract (`data-state`, `data-provider`,
//! `data-best`, `data-failed-provider`), as a shop's own tests would.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::helpers::{TestEnv, env, free_port, get, provider, spawn_producer, wait_for};

/// A browser session, and the driver process behind it (killed, with the browsers it
/// started, when this drops).
pub struct Browser {
    pub client: Client,
    driver: Child,
}

impl Browser {
    pub async fn start() -> Self {
        let binary = std::env::var("PRICEFRONT_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = free_port();
        let mut command = Command::new(&binary);
        command.arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null());
        // Its own process group: the browsers it starts die with it.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command.spawn().unwrap_or_else(|e| {
            panic!("cannot start {binary:?} ({e}): run the suite through scripts/test.sh, which installs chromium and chromium-driver")
        });
        let url = format!("http://127.0.0.1:{port}");
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1000,1000", "--lang=en-GB", "--force-device-scale-factor=1"]}),
        );
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let client = wait_for("chromedriver to start a browser session", Duration::from_secs(60), || {
            let (url, caps) = (url.clone(), caps.clone());
            async move {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&url)
                    .await
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        Browser { client, driver }
    }

    /// The `<price-compare>` element's `data-state`, once it is no longer `loading`.
    pub async fn settled_state(&self) -> String {
        wait_for("the widget to finish", Duration::from_secs(90), || async {
            match self.attr("price-compare", "data-state").await.as_deref() {
                Some("loading") | None => Err(self.attr("price-compare", "data-state").await.unwrap_or_default()),
                Some(state) => Ok(state.to_owned()),
            }
        })
        .await
    }

    pub async fn attr(&self, selector: &str, name: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(selector)).await.ok()?;
        element.attr(name).await.ok().flatten()
    }

    /// Reads the elements matching `selector` in one go (the widget redraws its rows as events
    /// arrive: elements found one call earlier may be gone): each one's `attributes`.
    async fn read(&self, selector: &str, attributes: &[&str]) -> Vec<Vec<Option<String>>> {
        let script = "const [selector, names] = arguments;
            return [...document.querySelectorAll(selector)].map((e) => names.map((n) => e.getAttribute(n)));";
        let rows = self.client.execute(script, vec![json!(selector), json!(attributes)]).await.unwrap();
        serde_json::from_value(rows).unwrap()
    }

    /// Each quote's element, in page order: (provider, price as quoted, base price).
    pub async fn quotes(&self) -> Vec<(String, String, Option<Decimal>)> {
        let rows =
            self.read("price-compare [data-provider]", &["data-provider", "data-price", "data-base-price"]).await;
        rows.into_iter()
            .map(|row| {
                let base = row[2].as_ref().map(|p| p.parse().unwrap());
                (row[0].clone().unwrap(), row[1].clone().unwrap(), base)
            })
            .collect()
    }

    /// The providers marked best.
    pub async fn best(&self) -> Vec<String> {
        let rows = self.read("price-compare [data-best]", &["data-provider"]).await;
        rows.into_iter().map(|row| row[0].clone().unwrap()).collect()
    }

    /// Failed providers and their reasons.
    pub async fn failures(&self) -> BTreeMap<String, String> {
        let rows = self.read("price-compare [data-failed-provider]", &["data-failed-provider", "data-reason"]).await;
        rows.into_iter().map(|row| (row[0].clone().unwrap(), row[1].clone().unwrap_or_default())).collect()
    }

    /// The browser's console since the last call (Chromium's log, kept by `goog:loggingPrefs`).
    pub async fn console(&self) -> Vec<Value> {
        let logs = self.client.issue_cmd(BrowserLog).await.expect("chromedriver serves the browser's log");
        logs.as_array().cloned().unwrap_or_default()
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        self.kill();
    }

    fn kill(&mut self) {
        // The whole group: chromedriver and the browsers it started.
        let _ = Command::new("kill").args(["-s", "KILL", "--", &format!("-{}", self.driver.id())]).status();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
    }
}

/// chromedriver's `POST /session/{id}/se/log` for the browser's console.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (axum::http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

/// Errors in the console: failed loads, CSP violations, exceptions.
fn errors(console: &[Value]) -> Vec<&Value> {
    console.iter().filter(|entry| entry["level"] == "SEVERE").collect()
}

async fn comparison(env: &TestEnv, base: &str, product: &str) -> Value {
    let (status, _, body) = get(&env.http, &format!("{base}/v1/prices/{product}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn the_widget_shows_a_comparison_arrive_in_a_real_browser() {
    // gamma answers seconds after the others, well within the provider timeout.
    // gamma is a search, like eBay's: its offer links to its page.
    let mut gone = vec![provider("alpha", 30), provider("beta", 80), provider("gamma", 4000)];
    for p in &mut gone {
        p.not_found_prefix = Some("gone-".into());
    }
    gone[2].shape = pricefront::settings::MockShape::Ebay;
    let mapping = r#"{ price = "/price", currency = "/currency", product_id = "/product_id", not_found = [404] }"#;
    let search = r#"{ items = "/itemSummaries", match = { "/conditionId" = "1000" }, price = "/price/value", currency = "/price/currency", product_id = "/gtin", offer_id = "/itemId", offer_url = "/itemWebUrl" }"#;
    let env = ["alpha", "beta"]
        .into_iter()
        .fold(env().providers(gone), |env, name| env.provider_option(name, "response", mapping))
        .provider_option("gamma", "response", search)
        .set("consumer", "provider_timeout_ms", "15000")
        .set("cache", "pending_ttl_secs", "60")
        .start()
        .await;
    // The real binary: its /metrics feed the demo page's panel.
    let producer = env.spawn_producer_process().await;
    let _consumer = env.spawn_consumer();
    let base = &producer.base;
    crate::helpers::warm_up(&env, base).await;
    let browser = Browser::start().await;

    // A cold product: quotes appear one by one.
    let cold = env.product("cold");
    browser.client.goto(&format!("{base}/?product={cold}")).await.unwrap();
    wait_for("a quote shown before the result", Duration::from_secs(60), || async {
        let quotes = browser.quotes().await;
        let state = browser.attr("price-compare", "data-state").await;
        match (state.as_deref(), quotes.len()) {
            (Some("loading"), 1..) => Ok(()),
            _ => Err(format!("{state:?} with {} quotes", quotes.len())),
        }
    })
    .await;
    assert_eq!(browser.settled_state().await, "complete");
    let quotes = browser.quotes().await;
    let providers: Vec<&str> = quotes.iter().map(|(p, ..)| p.as_str()).collect();
    let mut sorted_providers = providers.clone();
    sorted_providers.sort();
    assert_eq!(sorted_providers, ["alpha", "beta", "gamma"], "one element per source");
    let bases: Vec<Decimal> = quotes.iter().map(|(_, _, b)| b.unwrap()).collect();
    assert!(bases.is_sorted(), "cheapest first: {quotes:?}");
    let best = browser.best().await;
    let cheapest = quotes.iter().min_by_key(|(_, _, b)| *b).unwrap();
    assert_eq!(best, std::slice::from_ref(&cheapest.0), "exactly one best offer, the cheapest: {quotes:?}");
    let api = comparison(&env, base, &cold).await;
    assert_eq!(api["best"]["provider"], cheapest.0.as_str(), "the API agrees: {api}");
    for (provider, price, _) in &quotes {
        let quoted = api["quotes"].as_array().unwrap().iter().find(|q| q["provider"] == provider.as_str()).unwrap();
        assert_eq!(quoted["price"], price.as_str(), "{provider}");
    }
    let link = browser.attr("price-compare tr[data-provider=gamma] a", "href").await;
    let offered = api["quotes"].as_array().unwrap().iter().find(|q| q["provider"] == "gamma").unwrap()["url"].clone();
    assert!(link.as_deref().is_some_and(|l| l.starts_with("https://www.ebay.example/itm/")), "{link:?}");
    assert_eq!(link.as_deref(), offered.as_str(), "the row links to the offer's page");
    assert_eq!(browser.attr("price-compare tr[data-provider=alpha] a", "href").await, None, "no page, no link");
    assert_eq!(browser.attr("price-compare", "data-cache").await.as_deref(), Some("miss"));
    assert_eq!(browser.attr("price-compare", "data-transport").await.as_deref(), Some("stream"));
    // Styled under the page's strict policy (a constructed sheet), the best offer stands out.
    let cell = browser.client.find(Locator::Css("price-compare tr[data-best] td")).await.unwrap();
    let background = cell.css_value("background-color").await.unwrap();
    assert!(background.starts_with("rgb") && background.contains("(231, 245, 236"), "{background}");
    let status = browser.client.find(Locator::Css("price-compare [role=status]")).await.unwrap().text().await.unwrap();
    assert!(status.starts_with(&format!("Best offer: {}", cheapest.0)), "announced: {status}");

    // The same product again: straight from the cache, no source asked.
    let calls = env.calls_for(&cold).await;
    browser.client.goto(&format!("{base}/?product={cold}")).await.unwrap();
    assert_eq!(browser.settled_state().await, "complete");
    assert_eq!(browser.attr("price-compare", "data-cache").await.as_deref(), Some("hit"));
    assert_eq!(browser.quotes().await, quotes);
    assert_eq!(browser.best().await, best);
    let footer = browser.client.find(Locator::Css("price-compare .pc-foot")).await.unwrap().text().await.unwrap();
    assert!(footer.starts_with("From cache"), "{footer}");
    assert_eq!(env.calls_for(&cold).await, calls);

    // A failing source, asked for through the page's form.
    env.set_faults("beta", json!({"error_rate": 1.0})).await;
    let partial = env.product("partial");
    let input = browser.client.find(Locator::Id("product")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(&partial).await.unwrap();
    browser.client.find(Locator::Css("form.ask button")).await.unwrap().click().await.unwrap();
    assert_eq!(browser.settled_state().await, "partial");
    assert!(browser.client.current_url().await.unwrap().as_str().ends_with(&format!("?product={partial}")));
    assert_eq!(browser.failures().await, BTreeMap::from([("beta".to_owned(), "http_status".to_owned())]));
    let providers: Vec<String> = browser.quotes().await.into_iter().map(|(p, ..)| p).collect();
    assert!(!providers.contains(&"beta".to_owned()) && providers.len() == 2, "{providers:?}");
    assert_eq!(browser.best().await.len(), 1);
    env.set_faults("beta", json!({"error_rate": 0.0})).await;

    // No source sells it.
    browser.client.goto(&format!("{base}/?product=gone-{}", env.product("x"))).await.unwrap();
    assert_eq!(browser.settled_state().await, "not_found");
    assert!(browser.quotes().await.is_empty());
    assert_eq!(browser.failures().await.values().collect::<Vec<_>>(), ["not_found"; 3]);

    // The live panel reads the producer's own figures.
    wait_for("the panel's figures", Duration::from_secs(30), || async {
        let mut seen = BTreeMap::new();
        for metric in ["hit_ratio", "requests_per_second", "open_streams"] {
            let cell = browser.client.find(Locator::Css(&format!("[data-metric={metric}]"))).await.unwrap();
            seen.insert(metric, cell.text().await.unwrap());
        }
        let number = |s: &str| s.trim_end_matches(" %").parse::<f64>().is_ok();
        if seen.values().all(|v| number(v)) && seen["hit_ratio"].ends_with('%') {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;

    // Under the page's strict policy nothing was refused, and nothing failed.
    let console = browser.console().await;
    assert!(errors(&console).is_empty(), "console errors: {console:#?}");
    browser.close().await;
}

/// A shop on another origin: page `/{n}` holds exactly the README's two lines, for the
/// `n`th (producer, product). Its `lang` is not a valid locale, as on many real sites.
async fn serve_shop(port: u16, pages: Vec<(String, String)>) -> tokio_util::sync::DropGuard {
    let pages: Vec<String> = pages
        .into_iter()
        .map(|(producer, product)| {
            format!(
                "<!doctype html><html lang=\"en_US\"><head><title>A shop</title></head><body><h1>A shop</h1>\n\
                 <script src=\"{producer}/static/price-compare.js\" defer></script>\n\
                 <price-compare product=\"{product}\"></price-compare>\n</body></html>"
            )
        })
        .collect();
    let page = move |axum::extract::Path(n): axum::extract::Path<usize>| {
        let html = pages.get(n).cloned().unwrap_or_default();
        async move { axum::response::Html(html) }
    };
    let app = axum::Router::new().route("/{n}", axum::routing::get(page));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let until = stop.clone();
    tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(until.cancelled_owned()).await });
    stop.drop_guard()
}

#[tokio::test]
async fn the_widget_embeds_on_another_origin_and_falls_back_to_a_plain_get() {
    let shop_port = free_port();
    let shop = format!("http://127.0.0.1:{shop_port}");
    let env = env().set("producer", "cors_allow_origins", &format!("[{shop:?}]")).start().await;
    let _consumer = env.spawn_consumer();
    let allowed = env.spawn_producer().await;
    let mut settings = env.settings.clone();
    settings.producer.max_streams = 0;
    let no_streams = spawn_producer(&settings).await;
    settings.producer.max_streams = 100;
    settings.producer.cors_allow_origins.clear();
    let no_cors = spawn_producer(&settings).await;
    for p in [&no_streams, &no_cors] {
        p.wait_ready(&env.http).await;
    }
    let browser = Browser::start().await;
    let (embedded, fallback, refused) = (env.product("embedded"), env.product("fallback"), env.product("refused"));
    let pages = [(&allowed.base, &embedded), (&no_streams.base, &fallback), (&no_cors.base, &refused)];
    let _shop = serve_shop(shop_port, pages.iter().map(|(p, id)| (p.to_string(), id.to_string())).collect()).await;

    // Two lines on the shop's page; the widget finds the API where its script came from.
    browser.client.goto(&format!("{shop}/0")).await.unwrap();
    assert_eq!(browser.settled_state().await, "complete");
    assert_eq!(browser.attr("price-compare", "data-transport").await.as_deref(), Some("stream"));
    assert_eq!(browser.quotes().await.len(), 3);
    assert_eq!(browser.best().await.len(), 1);

    // No stream to be had (503): the widget asks with Prefer: wait instead, across origins.
    browser.client.goto(&format!("{shop}/1")).await.unwrap();
    assert_eq!(browser.settled_state().await, "complete");
    assert_eq!(browser.attr("price-compare", "data-transport").await.as_deref(), Some("fetch"));
    assert_eq!(browser.attr("price-compare", "data-cache").await.as_deref(), Some("miss"), "computed for it");
    assert_eq!(browser.quotes().await.len(), 3);
    let best = browser.best().await;
    assert_eq!(best.len(), 1);
    assert_eq!(comparison(&env, &allowed.base, &fallback).await["best"]["provider"], best[0].as_str());

    // A producer that grants no origin: the browser keeps the answer from the shop's page.
    browser.client.goto(&format!("{shop}/2")).await.unwrap();
    assert_eq!(browser.settled_state().await, "failed");
    assert!(browser.quotes().await.is_empty());
    let error = browser.client.find(Locator::Css("price-compare [role=alert]")).await.unwrap().text().await.unwrap();
    assert_eq!(error, "The price service could not be reached.");
    browser.close().await;
}

/// `scripts/screenshot.sh` runs this (ignored otherwise) to make `docs/widget.png`.
#[tokio::test]
#[ignore = "makes docs/widget.png: scripts/screenshot.sh"]
async fn screenshot() {
    let out = std::env::var("PRICEFRONT_SCREENSHOT").expect("PRICEFRONT_SCREENSHOT: where to write the PNG");
    // Names, currencies and latencies as config/default.toml's mock sources.
    let currency = |code| pricefront::domain::Currency::parse(code).unwrap();
    let mut sources: Vec<_> =
        [("acme", 40), ("bestbuyish", 90), ("cheapo", 150), ("dealhub", 60), ("everyshop", 220), ("fastmart", 30)]
            .into_iter()
            .map(|(name, ms)| provider(name, ms))
            .collect();
    let mut dollars = provider("globalgoods", 180);
    dollars.currency = currency("USD");
    let mut pounds = provider("hyperprice", 120);
    pounds.currency = currency("GBP");
    sources.extend([dollars, pounds]);
    let env = env().providers(sources).start().await;
    let producer = env.spawn_producer_process().await;
    let _consumer = env.spawn_consumer();
    // A fresh group takes seconds to get its first message: not what the picture should time.
    crate::helpers::warm_up(&env, &producer.base).await;
    env.set_faults("everyshop", json!({"error_rate": 1.0})).await;
    let browser = Browser::start().await;
    let product = std::env::var("PRICEFRONT_SCREENSHOT_PRODUCT").unwrap_or_else(|_| "sku-123".into());
    browser.client.goto(&format!("{}/?product={product}", producer.base)).await.unwrap();
    assert_eq!(browser.settled_state().await, "partial");
    // Two rounds of the panel's figures.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let png = browser.client.screenshot().await.unwrap();
    std::fs::write(&out, png).unwrap();
    browser.close().await;
}
