//! `X-Request-Id`: every answer names its request, and a miss's id follows its work into the
//! consumer's logs.

use std::time::Duration;

use axum::http::StatusCode;
use reqwest::Method;
use serde_json::Value;

use crate::helpers::{env, wait_for};

fn made_here(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_names_its_request_and_keeps_a_valid_incoming_id() {
    let env = env().start().await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    let base = &producer.base;
    let cold = env.product("rid-cold");
    let warm = env.product("rid-warm");
    let price = |id: &str| format!("{base}/v1/prices/{id}");
    assert_eq!(env.http.get(price(&warm)).send().await.unwrap().status(), 202);
    env.wait_result(&warm, Duration::from_secs(60)).await;

    let send = |method: Method, url: String, incoming: Option<&'static str>| {
        let mut request = env.http.request(method, url);
        if let Some(id) = incoming {
            request = request.header("x-request-id", id);
        }
        async move {
            let res = request.send().await.unwrap();
            let id = res.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_owned());
            (res.status(), id.unwrap_or_else(|| panic!("{} answered without X-Request-Id", res.url())))
        }
    };
    // Every kind of answer, each asked twice: two requests never share a made id.
    let asks = [
        (Method::GET, price(&cold), StatusCode::ACCEPTED),
        (Method::GET, price(&warm), StatusCode::OK),
        (Method::HEAD, price(&warm), StatusCode::OK),
        (Method::GET, price("-bad"), StatusCode::BAD_REQUEST),
        (Method::POST, price(&warm), StatusCode::METHOD_NOT_ALLOWED),
        (Method::GET, format!("{base}/no/such/route"), StatusCode::NOT_FOUND),
        (Method::GET, format!("{base}/v1/prices?ids={warm},{cold}"), StatusCode::OK),
        (Method::GET, format!("{base}/v1/prices/{warm}/events"), StatusCode::OK),
        (Method::GET, format!("{base}/static/price-compare.js"), StatusCode::OK),
        (Method::GET, format!("{base}/demo/metrics"), StatusCode::OK),
        (Method::GET, format!("{base}/readyz"), StatusCode::OK),
    ];
    let mut made = std::collections::HashSet::new();
    for (method, url, status) in asks {
        for _ in 0..2 {
            let (answered, id) = send(method.clone(), url.clone(), None).await;
            assert_eq!(answered, status, "{method} {url}");
            assert!(made_here(&id), "{method} {url}: {id}");
            assert!(made.insert(id.clone()), "{id} answered twice");
        }
    }
    // The hit path (an L1 hit: the warm product was just read) keeps a valid id and replaces
    // anything else; so does the miss path.
    for url in [price(&warm), price(&cold)] {
        assert_eq!(send(Method::GET, url.clone(), Some("shop-7f3a:edge/1")).await.1, "shop-7f3a:edge/1");
        let (_, replaced) = send(Method::GET, url.clone(), Some("two words")).await;
        assert!(made_here(&replaced), "{replaced}");
        let long = Box::leak("a".repeat(129).into_boxed_str());
        assert!(made_here(&send(Method::GET, url, Some(long)).await.1));
    }
    consumer.stop().await;
    producer.stop().await;
}

/// The JSON log lines of `path` whose current span has `request_id` = `id`.
fn lines_of(path: &std::path::Path, id: &str) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["span"]["request_id"] == id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misss_request_id_follows_its_message_into_the_consumers_logs() {
    let env = env().start().await;
    let producer = env.spawn_producer_process().await;
    let consumer = env.spawn_consumer_process().await;
    let product = env.product("rid-follow");
    let id = format!("shop-{}", uuid::Uuid::new_v4().simple());
    let res = env
        .http
        .get(format!("{}/v1/prices/{product}", producer.base))
        .header("x-request-id", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(res.headers()["x-request-id"], id.as_str());
    env.wait_result(&product, Duration::from_secs(60)).await;

    // The producer logged the publish under the request's id, with the message it published.
    let published = wait_for("the producer's publish line", Duration::from_secs(10), || {
        let lines = lines_of(&producer.log, &id);
        async move {
            lines.into_iter().find(|l| l["message"] == "request published").ok_or_else(|| "no line yet".to_owned())
        }
    })
    .await;
    let message_id = published["span"]["message_id"].as_str().expect("message_id").to_owned();
    assert!(uuid::Uuid::parse_str(&message_id).is_ok(), "{published}");
    assert_eq!(published["span"]["product_id"], product.as_str());

    // The consumer's lines for that message carry the same two ids.
    let computed = wait_for("the consumer's lines", Duration::from_secs(10), || {
        let lines = lines_of(&consumer.log, &id);
        async move { if lines.is_empty() { Err("none yet".to_owned()) } else { Ok(lines) } }
    })
    .await;
    assert!(computed.iter().all(|l| l["span"]["message_id"] == message_id.as_str()), "{computed:?}");
    assert!(computed.iter().all(|l| l["span"]["product_id"] == product.as_str()), "{computed:?}");
    let messages = env.messages_for(&product).await;
    assert_eq!(messages, 1);

    // Anybody who can write to the topic writes the headers: an invalid id is not logged.
    let forged = env.product("rid-forged");
    let request = pricefront::queue::PriceRequest::new(pricefront::domain::ProductId::parse(&forged).unwrap());
    let bad = "forged id\nlevel=error";
    env.produce_raw_with(&forged, &request.encode(), &[("x-request-id", bad)]).await;
    env.wait_result(&forged, Duration::from_secs(60)).await;
    let message_id = request.request_id.to_string();
    let lines = wait_for("the consumer's lines for the forged message", Duration::from_secs(10), || {
        let lines: Vec<Value> = std::fs::read_to_string(&consumer.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["span"]["message_id"] == message_id.as_str())
            .collect();
        async move { if lines.is_empty() { Err("none yet".to_owned()) } else { Ok(lines) } }
    })
    .await;
    assert!(lines.iter().all(|l| l["span"].get("request_id").is_none()), "{lines:?}");
}
