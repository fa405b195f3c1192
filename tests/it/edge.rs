//! The edges: bad ids are refused before any I/O, and a dead Redis or broker means a quick
//! 503, never a hung request.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use pricefront::api::{AppState, router};
use tower::ServiceExt;

use crate::helpers::{env, free_port, get, producer_on_private_redis, spawn_producer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_product_ids_get_400_problem_json_and_touch_nothing() {
    let env = env().start().await;
    let app = router(AppState::build(&env.settings).unwrap());
    let too_long = "a".repeat(65);
    let bad = [
        "/v1/prices/..%2Fetc".to_owned(),
        format!("/v1/prices/{too_long}"),
        "/v1/prices/".to_owned(),
        "/v1/prices/%C3%A9t%C3%A9".to_owned(),
        "/v1/prices/a%20b".to_owned(),
        "/v1/prices/-lead".to_owned(),
        "/v1/prices/%FF%FE".to_owned(),
    ];
    for uri in &bad {
        let res = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(res.status(), 400, "{uri}");
        assert_eq!(res.headers()["content-type"], "application/problem+json", "{uri}");
        let body: serde_json::Value =
            serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(body["status"], 400, "{uri}");
        assert!(body["title"].is_string() && body["detail"].is_string() && body["type"].is_string(), "{body}");
    }
    let ok_but_longest = "a".repeat(64);
    let res = app
        .clone()
        .oneshot(Request::get(format!("/v1/prices/{ok_but_longest}x")).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    let res = app.clone().oneshot(Request::get("/nope").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/problem+json");

    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", env.settings.redis.key_prefix))
        .query_async(&mut env.redis.clone())
        .await
        .unwrap();
    assert!(keys.is_empty(), "no key may be written for a bad id: {keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_means_a_quick_503() {
    let env = env().start().await;
    let (server, _, producer) = producer_on_private_redis(&env).await;
    let (status, _, _) = get(&env.http, &format!("{}/v1/prices/{}", producer.base, env.product("up"))).await;
    assert_eq!(status, 202, "works while Redis is up");

    drop(server);
    let started = Instant::now();
    let (status, headers, body) = get(&env.http, &format!("{}/v1/prices/{}", producer.base, env.product("down"))).await;
    let took = started.elapsed();
    assert_eq!(status, 503, "{body}");
    // Bounded by 2 x redis.timeout_ms (1 s); generous for a loaded machine, where a hang would be unbounded.
    assert!(took < Duration::from_secs(6), "503 took {took:?}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(body["status"], 503);

    // Readiness is looked at every 2 s: the ops port says what is wrong, the public one only that.
    let details = not_ready(&env, &producer.ops).await;
    assert_ne!(details["redis"], "ok");
    assert_eq!(details["kafka"], "ok");
    let (status, _, body) = get(&env.http, &format!("{}/readyz", producer.base)).await;
    assert_eq!((status, body), (503, serde_json::json!({"status": "unavailable"})), "no dependency's text in public");
    assert_eq!(get(&env.http, &format!("{}/healthz", producer.base)).await.0, 200);
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_means_a_quick_503_and_the_claim_is_released() {
    let env = env().set("kafka", "publish_timeout_ms", "1000").start().await;
    let mut settings = env.settings.clone();
    settings.kafka.brokers = format!("127.0.0.1:{}", free_port());
    let producer = spawn_producer(&settings).await;
    let product = env.product("nobroker");

    let started = Instant::now();
    let (status, headers, body) = get(&env.http, &format!("{}/v1/prices/{product}", producer.base)).await;
    let took = started.elapsed();
    assert_eq!(status, 503, "{body}");
    // It waits out the 1 s publish timeout (nothing refuses it sooner), and no longer.
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(6), "503 took {took:?}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(env.redis_get(&env.pending_key(&product)).await, None, "marker released for the next try");

    let details = not_ready(&env, &producer.ops).await;
    assert_eq!(details["redis"], "ok");
    assert_ne!(details["kafka"], "ok");
    producer.stop().await;
}

/// The ops port's readiness details once it says not ready.
async fn not_ready(env: &crate::helpers::TestEnv, ops: &str) -> serde_json::Value {
    crate::helpers::wait_for("the producer to say it is not ready", Duration::from_secs(20), || async {
        match get(&env.http, &format!("{ops}/readyz")).await {
            (503, _, body) => Ok(body),
            (status, _, body) => Err(format!("{status} {body}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_never_5xx() {
    let env = env().start().await;
    let producer = env.spawn_producer().await;
    let url = |path: &str| format!("{}{path}", producer.base);

    for method in [reqwest::Method::POST, reqwest::Method::PUT, reqwest::Method::DELETE] {
        let res = env.http.request(method.clone(), url("/v1/prices/sku-1")).send().await.unwrap();
        assert_eq!(res.status(), 405, "{method}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        assert_eq!(res.headers()["allow"], "GET,HEAD");
    }
    for path in ["/v1/prices/%", "/v1/prices/%zz", "/v1/prices/a/b", "/v1/prices//", "/v1//prices/x"] {
        let status = env.http.get(url(path)).send().await.unwrap().status().as_u16();
        assert!((400..500).contains(&status), "{path}: {status}");
    }
    let status = env.http.get(url("/v1/prices/q-1?%%%=&&x=%FF")).send().await.unwrap().status().as_u16();
    assert!(status == 202 || status == 200, "a junk query string is ignored: {status}");
    let huge = "x".repeat(1024 * 1024);
    match env.http.get(url("/v1/prices/h-1")).header("x-junk", huge).send().await {
        Ok(res) => assert!(res.status().is_client_error(), "{}", res.status()),
        Err(e) => assert!(e.is_request() || e.is_connect() || e.is_body(), "connection refused outright: {e}"),
    }
    let res = env.http.get(url("/v1/prices/after-junk")).send().await.unwrap();
    assert_eq!(res.status(), 202, "the server is unharmed");
    producer.stop().await;
}
