//! A public endpoint facing hostile clients and lost replies, against real processes: slow
//! clients, a connection cap, metrics off the public port, bounded labels, one client's share
//! of streams and waits, a claim whose reply Redis lost, refreshes at the asker's cost, and
//! clocks that disagree.

use std::time::Duration;

use futures::future::join_all;
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{env, get, producer_on_private_redis, wait_for};

/// Reads until the server closes the connection (`Ok` with what it sent), or `deadline` passes.
async fn closed_within(stream: &mut TcpStream, deadline: Duration) -> Result<Vec<u8>, String> {
    let mut seen = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(()) => Ok(seen),
        Err(_) => Err(format!("still open after {deadline:?}; read {:?}", String::from_utf8_lossy(&seen))),
    }
}

fn host_port(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_connections_past_the_cap_are_refused_at_once() {
    // Five seconds: room for a loaded machine to open all forty before the first is cut off.
    let env =
        env().set("producer", "header_read_timeout_ms", "5000").set("producer", "max_connections", "40").start().await;
    let producer = env.spawn_producer_process().await;
    let address = host_port(&producer.base);

    // Slow loris: forty connections that never finish their headers fill the cap.
    let mut lorises = Vec::new();
    for i in 0..40 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream.write_all(format!("GET /v1/prices/loris-{i} HTTP/1.1\r\nHost: x\r\nX-Slow: ").as_bytes()).await.unwrap();
        lorises.push(stream);
    }
    // The forty-first is told 503 and closed, at once: it does not wait in a queue.
    let refused = wait_for("a connection past the cap to be refused", Duration::from_secs(10), || async {
        let mut extra = TcpStream::connect(&address).await.map_err(|e| e.to_string())?;
        let answer = closed_within(&mut extra, Duration::from_secs(5)).await?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        if text.starts_with("HTTP/1.1 503") { Ok(text) } else { Err(text) }
    })
    .await;
    assert!(refused.contains("retry-after: 1") && refused.contains("/problems/too-many-connections"), "{refused}");

    // Each slow one is closed once its header has taken the header-read timeout.
    for (i, loris) in lorises.iter_mut().enumerate() {
        closed_within(loris, Duration::from_secs(20)).await.unwrap_or_else(|e| panic!("loris {i}: {e}"));
    }
    // A kept-alive connection that goes quiet is closed too.
    let mut idle = TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let answered = closed_within(&mut idle, Duration::from_secs(20)).await.unwrap();
    assert!(String::from_utf8_lossy(&answered).starts_with("HTTP/1.1 200"), "answered, then closed when quiet");
    // The cap is free again: ordinary requests are served.
    assert_eq!(get(&env.http, &format!("{}/healthz", producer.base)).await.0, 200);
    let metrics = env.http.get(format!("{}/metrics", producer.ops)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("pricefront_connections_refused_total"), "counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_by_the_idle_timeout_and_http2_is_not_spoken() {
    // The shortest idle timeout allowed: 15 s of event-stream quiet, and 5 s of margin.
    let env = env().set("producer", "idle_timeout_secs", "20").start().await;
    let producer = env.spawn_producer_process().await;
    let address = host_port(&producer.base);
    let idle_closed = || async {
        let metrics = env.http.get(format!("{}/metrics", producer.ops)).send().await.unwrap().text().await.unwrap();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(r#"pricefront_connections_idle_closed_total{listener="public"} "#))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap())
    };
    assert_eq!(idle_closed().await, 0);

    // Hundreds of pipelined requests for the OpenAPI document, and not a byte read: the answers
    // fill both sockets' buffers, the producer's write waits, and nothing moves either way.
    let mut stalled = TcpStream::connect(&address).await.unwrap();
    let requests = "GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n".repeat(400);
    stalled.write_all(requests.as_bytes()).await.unwrap();
    wait_for("the connection to be closed as idle", Duration::from_secs(90), || async {
        match idle_closed().await {
            0 => Err("not yet".to_owned()),
            n => Ok(n),
        }
    })
    .await;
    drop(stalled);

    // An HTTP/2 client with prior knowledge gets no HTTP/2 connection (hyper's h2 server has no
    // header-read timeout and multiplexes past the connection cap).
    let mut h2 = TcpStream::connect(&address).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    let answer = closed_within(&mut h2, Duration::from_secs(10)).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || text.starts_with("HTTP/1.1 4") || text.starts_with("HTTP/1.1 5"), "{text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_live_on_the_ops_port_and_no_client_can_grow_their_labels() {
    let env = env().start().await;
    let producer = env.spawn_producer_process().await;
    assert_eq!(get(&env.http, &format!("{}/metrics", producer.base)).await.0, 404, "not on the public port");
    // Public readiness says only that; the ops port says why.
    let (status, _, body) = get(&env.http, &format!("{}/readyz", producer.base)).await;
    assert_eq!((status, body), (200, serde_json::json!({"status": "ready"})));
    let (status, _, details) = get(&env.http, &format!("{}/readyz", producer.ops)).await;
    assert_eq!(
        (status, &details["redis"], &details["kafka"]),
        (200, &Value::from("ok"), &Value::from("ok")),
        "{details}"
    );

    // Three hundred made-up methods.
    let url = format!("{}/v1/prices/{}", producer.base, env.product("labels"));
    let answers = join_all((0..300).map(|i| {
        let (http, url) = (env.http.clone(), url.clone());
        async move {
            http.request(Method::from_bytes(format!("FOO{i}").as_bytes()).unwrap(), url).send().await.unwrap().status()
        }
    }))
    .await;
    assert!(answers.iter().all(|s| s.as_u16() == 405), "{answers:?}");
    let metrics = env.http.get(format!("{}/metrics", producer.ops)).send().await.unwrap().text().await.unwrap();
    let methods: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("pricefront_http_requests_total{"))
        .filter_map(|l| l.split("method=\"").nth(1)?.split('"').next())
        .collect();
    assert!(methods.iter().all(|m| ["GET", "HEAD", "other", "any"].contains(m)), "{methods:?}");
    assert!(methods.contains("other"), "{methods:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_hold_every_stream_or_wait() {
    let env = env()
        .set("producer", "max_streams_per_client", "3")
        .set("producer", "max_waiters_per_client", "2")
        .set("producer", "trusted_proxies", r#"["127.0.0.1"]"#)
        .start()
        .await;
    // No consumer: every product stays pending, so streams stay open and waits are held.
    let producer = env.spawn_producer_process().await;
    let stream = |client: &'static str, product: String| {
        let (http, url) = (env.http.clone(), format!("{}/v1/prices/{product}/events", producer.base));
        async move { http.get(url).header("x-forwarded-for", client).send().await.unwrap() }
    };
    let mut open = Vec::new();
    for i in 0..3 {
        let res = stream("192.0.2.1", env.product(&format!("s{i}"))).await;
        assert_eq!(res.status(), 200);
        open.push(res);
    }
    let fourth = stream("192.0.2.1", env.product("s3")).await;
    assert_eq!(fourth.status(), 429);
    assert!(fourth.headers().contains_key("retry-after"));
    let problem: Value = fourth.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/too-many-client-streams");
    let other = stream("192.0.2.2", env.product("s4")).await;
    assert_eq!(other.status(), 200, "another client still gets one");
    drop(open.pop());
    wait_for("a stream given back to be free again", Duration::from_secs(10), || async {
        match stream("192.0.2.1", env.product("s5")).await.status().as_u16() {
            200 => Ok(()),
            status => Err(status.to_string()),
        }
    })
    .await;

    // Waits: two held for one client; the third answers at once, as if it had not asked.
    let wait = |client: &'static str, product: String, secs: u64| {
        let (http, url) = (env.http.clone(), format!("{}/v1/prices/{product}", producer.base));
        async move {
            let res = http
                .get(url)
                .header("x-forwarded-for", client)
                .header("prefer", format!("wait={secs}"))
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.headers().get("preference-applied").map(|v| v.to_str().unwrap().to_owned()))
        }
    };
    let held =
        [tokio::spawn(wait("192.0.2.7", env.product("w0"), 8)), tokio::spawn(wait("192.0.2.7", env.product("w1"), 8))];
    wait_for("two waits held", Duration::from_secs(10), || async {
        let metrics = env.http.get(format!("{}/metrics", producer.ops)).send().await.unwrap().text().await.unwrap();
        match metrics.lines().find_map(|l| l.strip_prefix("pricefront_waiting_requests ")) {
            Some("2") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(wait("192.0.2.7", env.product("w2"), 8).await, (202, None), "answered at once, not held");
    assert_eq!(wait("192.0.2.8", env.product("w3"), 1).await, (202, Some("wait=1".into())), "another client is held");
    for held in held {
        assert_eq!(held.await.unwrap(), (202, Some("wait=8".into())));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_reply_redis_lost_does_not_strand_its_product() {
    // A marker lives two minutes: a stranded product would be stuck far past this test's wait.
    let env = env().set("cache", "pending_ttl_secs", "120").start().await;
    let (server, settings, producer) = producer_on_private_redis(&env).await;
    let consumer = crate::helpers::spawn_consumer(&settings);
    let product = env.product("lost-reply");
    let url = format!("{}/v1/prices/{product}", producer.base);
    // A first claim loads the script: the paused one is a plain EVALSHA.
    assert_eq!(get(&env.http, &format!("{}/v1/prices/{}", producer.base, env.product("warm"))).await.0, 202);

    // Redis holds every write for 3 s: the claim script runs after its caller gave up (1 s).
    let paused = server.redis_cli(&["CLIENT", "PAUSE", "3000", "WRITE"]);
    assert_eq!(paused.trim(), "OK");
    let (status, _, body) = get(&env.http, &url).await;
    assert_eq!(status, 503, "{body}");
    // Once Redis answers again, the marker nobody published for is released: the product is
    // computed, long before the marker would have expired.
    wait_for("the product to be computed after Redis came back", Duration::from_secs(40), || async {
        match get(&env.http, &url).await {
            (200, _, body) => Ok(body),
            (status, _, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
    consumer.stop().await;
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_to_a_server_gone_silent_is_noticed_and_made_again() {
    let env = env().start().await;
    let (server, _, producer) = producer_on_private_redis(&env).await;
    let announcements = || async {
        let (_, _, details) = get(&env.http, &format!("{}/readyz", producer.ops)).await;
        details["announcements"].as_str().unwrap_or_default().to_owned()
    };
    // A wait starts the subscription.
    let url = format!("{}/v1/prices/{}", producer.base, env.product("silent"));
    let status = env.http.get(&url).header("prefer", "wait=1").send().await.unwrap().status();
    assert_eq!(status, 202);
    wait_for("the subscription to be up", Duration::from_secs(10), || async {
        match announcements().await.as_str() {
            "ok" => Ok(()),
            other => Err(other.to_owned()),
        }
    })
    .await;

    // The server stops answering; its sockets stay open, so nothing ends the subscription but
    // its unanswered PING.
    server.signal("-STOP");
    wait_for("readiness to report the subscription lost", Duration::from_secs(30), || async {
        match announcements().await.as_str() {
            "ok" => Err("still ok".to_owned()),
            other => Ok(other.to_owned()),
        }
    })
    .await;
    server.signal("-CONT");
    wait_for("the subscription to be made again", Duration::from_secs(30), || async {
        match announcements().await.as_str() {
            "ok" => Ok(()),
            other => Err(other.to_owned()),
        }
    })
    .await;
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_costs_the_client_that_starts_it() {
    // A 20-s guarantee refreshed in its last 95 % (from its first second on, for long enough
    // on a loaded machine); each client one miss a second, no burst.
    let env = env()
        .set("cache", "ttl_secs", "20")
        .set("cache", "refresh_ahead", "0.95")
        .set("cache", "partial_ttl_secs", "20")
        .set("producer.miss_rate_per_client", "per_second", "1")
        .set("producer.miss_rate_per_client", "burst", "1")
        .set("producer", "trusted_proxies", r#"["127.0.0.1"]"#)
        .start()
        .await;
    let producer = env.spawn_producer_process().await;
    let consumer = env.spawn_consumer();
    let ask = |client: &'static str, product: String| {
        let (http, url) = (env.http.clone(), format!("{}/v1/prices/{product}", producer.base));
        async move { http.get(url).header("x-forwarded-for", client).send().await.unwrap().status().as_u16() }
    };
    let refreshes = |stage: &'static str| {
        let (http, url) = (env.http.clone(), format!("{}/metrics", producer.ops));
        async move {
            let text = http.get(url).send().await.unwrap().text().await.unwrap();
            let line = format!("pricefront_refreshes_total{{stage=\"{stage}\"}} ");
            text.lines().find_map(|l| l.strip_prefix(&line)).map_or(0, |v| v.trim().parse::<u64>().unwrap())
        }
    };
    let hot = env.product("hot");
    assert_eq!(ask("192.0.2.9", hot.clone()).await, 202);
    env.wait_result(&hot, Duration::from_secs(30)).await;
    // Client A spends its token on a product of its own, and right after that (its next token
    // is a second away) hits `hot` in its window: it has no token when the hit would refresh.
    // A miss refused with 429 says nothing of when the next token comes, so only a spent
    // token (202) is followed by the hit.
    wait_for("a hit by a client without tokens to start no refresh", Duration::from_secs(10), || async {
        let own = ask("192.0.2.1", env.product(&format!("a-own-{}", uuid::Uuid::new_v4().simple()))).await;
        assert!(matches!(own, 202 | 429), "{own}");
        if own == 202 {
            assert_eq!(ask("192.0.2.1", hot.clone()).await, 200, "a hit is never limited");
        }
        match (refreshes("refused").await, refreshes("published").await) {
            (1.., 0) => Ok(()),
            seen => Err(format!("refused, published: {seen:?}")),
        }
    })
    .await;
    // Client B has its token: its hit refreshes.
    wait_for("a hit by a client with a token to refresh", Duration::from_secs(10), || async {
        assert_eq!(ask("192.0.2.2", hot.clone()).await, 200);
        match refreshes("published").await {
            1.. => Ok(()),
            n => Err(n.to_string()),
        }
    })
    .await;
    consumer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_is_logged_whichever_clock_is_ahead() {
    let env = env().start().await;
    for (offset, says) in
        [("+3s", "Redis's clock is behind this process's"), ("-3s", "Redis's clock is ahead of this process's")]
    {
        let consumer = env.spawn_consumer_process_shifted(offset).await;
        let log = consumer.log.clone();
        wait_for("the consumer to compare its clock with Redis's", Duration::from_secs(30), || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains(says) { Ok(()) } else { Err(format!("{offset}: not yet")) }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_forwarded_for_buys_no_fresh_budget_by_default() {
    // The shipped default: no proxy is trusted.
    let env = env()
        .set("producer.miss_rate_per_client", "per_second", "1")
        .set("producer.miss_rate_per_client", "burst", "2")
        .set("producer", "trusted_proxies", "[]")
        .start()
        .await;
    let producer = env.spawn_producer_process().await;
    let answers = join_all((0..6).map(|i| {
        let (http, url) =
            (env.http.clone(), format!("{}/v1/prices/{}", producer.base, env.product(&format!("forged-{i}"))));
        // Each request claims to come from somebody else.
        async move {
            http.get(url).header("x-forwarded-for", format!("198.51.100.{i}")).send().await.unwrap().status().as_u16()
        }
    }))
    .await;
    let (accepted, limited) =
        (answers.iter().filter(|&&s| s == 202).count(), answers.iter().filter(|&&s| s == 429).count());
    // The burst of two, and perhaps one more token if the six took over a second.
    assert!(accepted <= 3 && limited >= 3, "one client, whatever its header says: {answers:?}");
}
