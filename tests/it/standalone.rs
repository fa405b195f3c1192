//! The zero-setup mode: the whole system in one process with no Redis and no broker.

use std::time::Duration;

use pricefront::settings::Settings;
use tokio_util::sync::CancellationToken;

use crate::helpers::{free_port, get, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_answers_202_then_200_with_no_external_services() {
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (api_addr, mock_addr) = (api.local_addr().unwrap(), mock.local_addr().unwrap());
    // Nothing listens at these: the standalone mode must not need them.
    let dead = free_port();
    let mut toml = format!(
        "[redis]\nurl = \"redis://127.0.0.1:{dead}\"\n[kafka]\nbrokers = \"127.0.0.1:{dead}\"\n\
         [[mock.providers]]\nname = \"solo\"\nlatency_ms = 30\njitter_ms = 0\nerror_rate = 0.0\nhang_rate = 0.0\ncurrency = \"EUR\"\n\
         [[mock.providers]]\nname = \"duo\"\nlatency_ms = 60\njitter_ms = 0\nerror_rate = 0.0\nhang_rate = 0.0\ncurrency = \"EUR\"\n"
    );
    for name in ["solo", "duo"] {
        toml.push_str(&format!(
            "[[providers]]\nname = \"{name}\"\nurl = \"http://{mock_addr}/{name}/prices/{{product_id}}\"\n"
        ));
    }
    let path = std::env::temp_dir().join(format!("standalone-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, toml).unwrap();
    let settings = Settings::load_from(Some(&path), Some(Default::default())).unwrap();
    std::fs::remove_file(&path).unwrap();

    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (settings, shutdown) = (settings.clone(), shutdown.clone());
        let system = pricefront::standalone::Standalone::build(&settings).unwrap();
        async move { system.run(api, mock, shutdown).await }
    });
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
