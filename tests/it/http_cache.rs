//! HTTP caching on the real stack: a strong `ETag` on every 200, `If-None-Match` answering 304
//! on the L1 path and on the Redis path, `Cache-Control` a CDN can use, and `HEAD`.

use std::time::Duration;

use reqwest::header::HeaderMap;

use crate::helpers::{TestEnv, env, spawn_producer};

async fn request(
    env: &TestEnv,
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, HeaderMap, Vec<u8>) {
    let mut req = env.http.request(method, url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = req.send().await.unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    (status, headers, res.bytes().await.unwrap().to_vec())
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers.get(name).unwrap_or_else(|| panic!("no {name} in {headers:?}")).to_str().unwrap()
}

/// `public, max-age=N, stale-while-revalidate=W` → (N, W).
fn cache_control(headers: &HeaderMap) -> (u64, Option<u64>) {
    let value = header(headers, "cache-control");
    let mut parts = value.split(", ");
    assert_eq!(parts.next(), Some("public"), "{value}");
    let max_age = parts.next().and_then(|p| p.strip_prefix("max-age=")).expect(value).parse().unwrap();
    let swr = parts.next().map(|p| p.strip_prefix("stale-while-revalidate=").expect(value).parse().unwrap());
    assert_eq!(parts.next(), None, "{value}");
    (max_age, swr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_carries_a_strong_etag_and_if_none_match_answers_304_on_both_paths() {
    let env = env().set("cache", "ttl_secs", "60").start().await;
    let producer = env.spawn_producer().await;
    // A second producer whose L1 keeps nothing: every hit is read from Redis.
    let mut settings = env.settings.clone();
    settings.cache.l1_ttl = Duration::from_millis(1);
    let redis_path = spawn_producer(&settings).await;
    let consumer = env.spawn_consumer();

    let product = env.product("tagged");
    let url = format!("{}/v1/prices/{product}", producer.base);
    let (status, _, _) = request(&env, reqwest::Method::GET, &url, &[("prefer", "wait=30")]).await;
    assert_eq!(status, 200);

    let (status, headers, body) = request(&env, reqwest::Method::GET, &url, &[]).await;
    assert_eq!(status, 200);
    let etag = header(&headers, "etag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"), "strong: {etag}");
    let (max_age, swr) = cache_control(&headers);
    assert!((50..=60).contains(&max_age), "the guarantee left: {max_age}");
    assert_eq!(swr, Some(12), "the refresh window: 20% of 60 s");
    assert!(header(&headers, "age").parse::<u64>().unwrap() <= 10);
    assert_eq!(header(&headers, "vary"), "Prefer");
    let stored = env.stored_result(&product).await.unwrap();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap(), stored, "the stored bytes");

    for base in [&producer.base, &redis_path.base] {
        let url = format!("{base}/v1/prices/{product}");
        // The same result has the same tag, whichever path read it.
        let (status, headers, _) = request(&env, reqwest::Method::GET, &url, &[]).await;
        assert_eq!((status, header(&headers, "etag")), (200, etag.as_str()), "{base}");
        for matching in [etag.clone(), format!("W/{etag}"), format!("\"other\", {etag}"), "*".to_owned()] {
            let (status, headers, body) =
                request(&env, reqwest::Method::GET, &url, &[("if-none-match", &matching)]).await;
            assert_eq!(status, 304, "{base} If-None-Match: {matching}");
            assert!(body.is_empty());
            assert_eq!(header(&headers, "etag"), etag);
            assert_eq!(cache_control(&headers).1, Some(12));
            assert_eq!(header(&headers, "x-cache"), "HIT");
            assert!(headers.contains_key("age") && headers.get("content-type").is_none(), "{headers:?}");
        }
        let (status, _, body) = request(&env, reqwest::Method::GET, &url, &[("if-none-match", "\"stale\"")]).await;
        assert_eq!(status, 200, "another tag is not a match");
        assert!(!body.is_empty());
        // The slow path (a preference) answers the same.
        let (status, headers, _) =
            request(&env, reqwest::Method::GET, &url, &[("prefer", "wait=1"), ("if-none-match", &etag)]).await;
        assert_eq!((status, header(&headers, "etag")), (304, etag.as_str()), "{base}");
    }

    // HEAD: the same headers, no body.
    let (status, get_headers, body) = request(&env, reqwest::Method::GET, &url, &[]).await;
    let (head_status, head_headers, head_body) = request(&env, reqwest::Method::HEAD, &url, &[]).await;
    assert_eq!((status, head_status), (200, 200));
    assert!(head_body.is_empty());
    for name in ["etag", "content-type", "x-cache", "vary"] {
        assert_eq!(head_headers.get(name), get_headers.get(name), "{name}");
    }
    assert_eq!(header(&head_headers, "content-length"), body.len().to_string());
    assert_eq!(cache_control(&head_headers).1, cache_control(&get_headers).1);

    // A new computation is a new tag: the old one no longer matches.
    env.redis_del(&env.result_key(&product)).await;
    let fresh_url = format!("{}/v1/prices/{product}", redis_path.base);
    let (status, _, _) = request(&env, reqwest::Method::GET, &fresh_url, &[("prefer", "wait=30")]).await;
    assert_eq!(status, 200);
    let (status, headers, _) = request(&env, reqwest::Method::GET, &fresh_url, &[("if-none-match", &etag)]).await;
    assert_eq!(status, 200, "recomputed: the old tag is stale");
    assert_ne!(header(&headers, "etag"), etag);

    consumer.stop().await;
    redis_path.stop().await;
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_refresh_ahead_there_is_no_stale_while_revalidate() {
    let env = env().set("cache", "refresh_ahead", "0.0").start().await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    let url = format!("{}/v1/prices/{}", producer.base, env.product("plain"));
    let (status, headers, _) = request(&env, reqwest::Method::GET, &url, &[("prefer", "wait=30")]).await;
    assert_eq!(status, 200);
    assert_eq!(cache_control(&headers).1, None, "{headers:?}");
    let (status, headers, _) = request(&env, reqwest::Method::HEAD, &url, &[]).await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("etag"));
    consumer.stop().await;
    producer.stop().await;
}
