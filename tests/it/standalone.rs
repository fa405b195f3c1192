//! The zero-setup mode: the whole system in one process with no Redis and no broker.

use std::net::SocketAddr;
use std::time::Duration;

use pricefront::settings::Settings;
use tokio_util::sync::CancellationToken;

use crate::helpers::{free_port, get, wait_for};

/// The whole system in this process, configured by `toml(the mock's address)` over the
/// defaults, with Redis and the broker pointing where nothing listens: standalone must not need
/// them. Its API and mock addresses, and the token that stops it and the task that runs it.
async fn standalone(
    toml: impl Fn(SocketAddr) -> String,
) -> (SocketAddr, SocketAddr, CancellationToken, tokio::task::JoinHandle<Result<(), pricefront::standalone::Error>>) {
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (api_addr, mock_addr) = (api.local_addr().unwrap(), mock.local_addr().unwrap());
    let dead = free_port();
    let toml = format!(
        "[redis]\nurl = \"redis://127.0.0.1:{dead}\"\n[kafka]\nbrokers = \"127.0.0.1:{dead}\"\n{}",
        toml(mock_addr)
    );
    let path = std::env::temp_dir().join(format!("standalone-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, toml).unwrap();
    let settings = Settings::load_from(Some(&path), Some(Default::default())).unwrap();
    std::fs::remove_file(&path).unwrap();
    let shutdown = CancellationToken::new();
    let system = pricefront::standalone::Standalone::build(&settings).unwrap();
    let run = tokio::spawn(system.run(api, None, mock, shutdown.clone()));
    (api_addr, mock_addr, shutdown, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_answers_202_then_200_with_no_external_services() {
    let (api_addr, mock_addr, shutdown, run) = standalone(|mock_addr| {
        let mut toml = "[[mock.providers]]\nname = \"solo\"\nlatency_ms = 30\njitter_ms = 0\nerror_rate = 0.0\nhang_rate = 0.0\ncurrency = \"EUR\"\n\
             [[mock.providers]]\nname = \"duo\"\nlatency_ms = 60\njitter_ms = 0\nerror_rate = 0.0\nhang_rate = 0.0\ncurrency = \"EUR\"\n"
            .to_owned();
        for name in ["solo", "duo"] {
            toml.push_str(&format!(
                "[[providers]]\nname = \"{name}\"\nurl = \"http://{mock_addr}/{name}/prices/{{product_id}}\"\n"
            ));
        }
        toml
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("http://{api_addr}/v1/prices/solo-1");
    assert_eq!(get(&http, &format!("http://{api_addr}/readyz")).await.0, 200);

    let (status, headers, _) = get(&http, &url).await;
    assert_eq!(status, 202);
    assert_eq!(headers["location"], "/v1/prices/solo-1");
    let body = wait_for("the standalone result", Duration::from_secs(10), || async {
        match get(&http, &url).await {
            (200, _, body) => Ok(body),
            (status, _, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
    assert_eq!(body["status"], "complete");
    assert_eq!(body["quotes"].as_array().unwrap().len(), 2);

    // `Prefer: wait` through the same traits: the in-memory store announces the result.
    let waited = format!("http://{api_addr}/v1/prices/waited-1");
    let res = http.get(&waited).header("prefer", "wait=8").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["preference-applied"], "wait=8");

    // So do event streams: each source's quote, then the result.
    let watched = format!("http://{api_addr}/v1/prices/watched-1/events");
    let events = crate::sse::SseStream::open(&http, &watched, &[]).await.rest().await;
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["quote", "quote", "result"], "{events:?}");
    assert_eq!(events[0].provider(), "solo", "the faster source first: {events:?}");
    assert!(events[0].id.is_some(), "live events carry their log id: {events:?}");

    // One computation for many concurrent misses here too.
    let hot = format!("http://{api_addr}/v1/prices/hot-1");
    let statuses = futures::future::join_all((0..100).map(|_| get(&http, &hot))).await;
    assert!(statuses.iter().all(|(s, ..)| *s == 202 || *s == 200));
    wait_for("the hot result", Duration::from_secs(10), || async {
        if get(&http, &hot).await.0 == 200 { Ok(()) } else { Err("pending".to_string()) }
    })
    .await;
    let stats: serde_json::Value =
        http.get(format!("http://{mock_addr}/_stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["providers"]["solo"]["by_product"]["hot-1"], 1);

    let (status, _, body) = get(&http, &format!("http://{api_addr}/v1/prices/..%2Fx")).await;
    assert_eq!((status, body["status"].as_u64()), (400, Some(400)));
    shutdown.cancel();
    run.await.unwrap().unwrap();
}

/// A marketplace in standalone mode: the same code keeps its token, reads its listings and keeps
/// its quota (in the process, the whole fleet here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_fronts_a_marketplace_with_a_token_listings_and_a_quota() {
    let (api_addr, mock_addr, shutdown, run) = standalone(|mock_addr| {
        format!(
            r#"[consumer]
provider_timeout_ms = 1000
[[mock.providers]]
name = "market"
latency_ms = 5
jitter_ms = 0
error_rate = 0.0
hang_rate = 0.0
currency = "EUR"
shape = "ebay"
auth = {{ client_id = "shop", client_secret = "s3cret", token_ttl_secs = 60 }}
quota = {{ per_second = 5, burst = 2 }}
[[providers]]
name = "market"
url = "http://{mock_addr}/market/buy/browse/v1/item_summary/search?gtin={{product_id}}"
auth = {{ kind = "oauth2_client_credentials", token_url = "http://{mock_addr}/market/identity/v1/oauth2/token", client_id = "shop", client_secret = "s3cret" }}
quota = {{ per_second = 4, burst = 1 }}
response = {{ items = "/itemSummaries", match = {{ "/condition" = "New" }}, price = "/price/value", currency = "/price/currency", offer_url = "/itemWebUrl" }}
"#
        )
    })
    .await;
    let http = reqwest::Client::new();
    let products: Vec<String> = (0..8).map(|i| format!("gtin-{i}")).collect();
    for product in &products {
        assert_eq!(get(&http, &format!("http://{api_addr}/v1/prices/{product}")).await.0, 202);
    }
    let mut quoted = 0;
    for product in &products {
        let url = format!("http://{api_addr}/v1/prices/{product}");
        let body = wait_for("the marketplace's result", Duration::from_secs(15), || async {
            match get(&http, &url).await {
                (200, _, body) => Ok(body),
                (status, _, body) => Err(format!("{status} {body}")),
            }
        })
        .await;
        match body["status"].as_str() {
            Some("complete") => {
                let quote = &body["quotes"][0];
                let expected =
                    pricefront::mock::price_for("market", product, pricefront::domain::Currency::parse("EUR").unwrap());
                assert_eq!(quote["price"], expected.to_string(), "the cheapest new listing: {body}");
                assert!(quote["url"].as_str().is_some_and(|u| u.starts_with("https://")), "{body}");
                quoted += 1;
            }
            _ => assert_eq!(body["failures"][0]["reason"], "rate_limited", "{body}"),
        }
    }
    let stats: serde_json::Value =
        http.get(format!("http://{mock_addr}/_stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["providers"]["market"]["rate_limited"], 0, "the quota was kept: {stats}");
    assert_eq!(stats["providers"]["market"]["token_requests"], 1, "one token for every call: {stats}");
    assert!(quoted >= 4, "{quoted} of 8 quoted");
    shutdown.cancel();
    run.await.unwrap().unwrap();
}
