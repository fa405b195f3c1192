//! The whole pipeline on production Redis set-ups, each a real server started here: TLS with
//! an ACL user and mutual TLS (the real binaries, the password from `${NAME}` in the URL), and a
//! 3-master Redis Cluster (a master killed, then back). Each: cold → 202 → 200, a stampede
//! publishes once, Redis down → 503, and recovery.

use std::time::Duration;

use futures::future::join_all;
use serde_json::Value;

use crate::helpers::{TestEnv, env, get, provider, wait_for};
use crate::redis_servers::{RedisCluster, TlsRedis};

/// The commands the README lists for an ACL user.
const LEAST_COMMANDS: &[&str] = &[
    "+get",
    "+set",
    "+del",
    "+exists",
    "+pttl",
    "+pexpire",
    "+xadd",
    "+xrange",
    "+evalsha",
    "+eval",
    "+script",
    "+publish",
    "+psubscribe",
    "+ping",
    "+time",
    "+zadd",
    "+zrem",
    "+zcard",
    "+zrange",
    "+zremrangebyscore",
    "+incr",
    "+hset",
    "+hgetall",
    "+hdel",
    "+cluster|info",
];

/// GETs until the product is served (200), through 202s; what the last answer was if not.
async fn until_served(env: &TestEnv, base: &str, product: &str, deadline: Duration) -> Value {
    let url = format!("{base}/v1/prices/{product}");
    wait_for(&format!("{product} served"), deadline, || async {
        match get(&env.http, &url).await {
            (200, _, body) => Ok(body),
            (status, _, body) => Err(format!("{status} {body}")),
        }
    })
    .await
}

/// 200 concurrent GETs for one cold product: each answered 202 or 200, then one result from
/// one message and one call per source.
async fn stampede_publishes_once(env: &TestEnv, base: &str, product: &str) {
    let url = format!("{base}/v1/prices/{product}");
    let statuses = join_all((0..200).map(|_| {
        let (http, url) = (env.http.clone(), url.clone());
        async move { http.get(url).send().await.map(|r| r.status().as_u16()).unwrap() }
    }))
    .await;
    assert!(statuses.iter().all(|s| [200, 202].contains(s)), "{statuses:?}");
    until_served(env, base, product, Duration::from_secs(60)).await;
    let calls = env.calls_for(product).await;
    assert_eq!(calls.into_iter().collect::<Vec<_>>(), [("alpha".into(), 1), ("beta".into(), 1)], "one call per source");
    assert_eq!(env.messages_for(product).await, 1, "messages published for {product}");
}

/// A page of cold products spread over the hash slots: claimed and published in one pass,
/// then, waited for, every entry a result; asked again, every entry a hit.
async fn a_page_is_served_whole(env: &TestEnv, base: &str, tag: &str) {
    let products: Vec<String> = (0..12).map(|i| env.product(&format!("{tag}-{i}"))).collect();
    let url = format!("{base}/v1/prices?ids={}", products.join(","));
    let res = env.http.get(&url).header("prefer", "wait=10").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let statuses: Vec<&str> = products.iter().map(|p| body["results"][p]["status"].as_str().unwrap_or("?")).collect();
    assert!(statuses.iter().all(|s| *s == "complete"), "{statuses:?}: {body}");
    let (status, headers, _) = get(&env.http, &url).await;
    assert_eq!((status, headers["x-cache"].to_str().unwrap()), (200, "HIT"));
    for p in &products {
        assert_eq!(env.messages_for(p).await, 1, "messages published for {p}");
    }
}

/// A miss while Redis is away: 503 problem+json with Retry-After, never a hang.
async fn redis_down_is_a_503(env: &TestEnv, base: &str, product: &str) {
    let res = env.http.get(format!("{base}/v1/prices/{product}")).send().await.unwrap();
    assert_eq!(res.status(), 503, "{:?}", res.text().await);
    assert!(res.headers().contains_key("retry-after"));
}

/// A cold product's event stream: one live quote per source (each with its log id), then the
/// result.
async fn streams_each_source_live(env: &TestEnv, base: &str, product: &str) {
    let url = format!("{base}/v1/prices/{product}/events");
    let events = crate::sse::SseStream::open(&env.http, &url, &[]).await.rest().await;
    let (result, sources) = events.split_last().expect("events");
    assert_eq!(result.event, "result", "{events:?}");
    assert_eq!(sources.len(), env.settings.providers.len(), "{events:?}");
    assert!(sources.iter().all(|e| e.event == "quote" && e.id.is_some()), "live, from the log: {events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_on_tls_redis_as_an_acl_user_with_a_client_certificate() {
    let mut redis = TlsRedis::start(true).await;
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let path = |p: std::path::PathBuf| format!("{:?}", p.display().to_string());
    let env = env()
        .providers(vec![provider("alpha", 20), provider("beta", 40)])
        .set("redis", "url", &format!("{:?}", redis.url_with_user("shop", &password)))
        .set("redis", "ca_file", &path(redis.ca_file()))
        .set("redis", "client_cert", &path(redis.client_cert()))
        .set("redis", "client_key", &path(redis.client_key()))
        .start()
        .await;
    // The least the README says a user needs, for this test's key prefix.
    let scheme = env.keys();
    let keys = format!("~{}:*", scheme.prefix());
    let (ready, progress) = (format!("&{}*", scheme.ready_channels()), format!("&{}*", scheme.progress_channels()));
    let least = [keys.as_str(), ready.as_str(), progress.as_str()]
        .into_iter()
        .chain(LEAST_COMMANDS.iter().copied())
        .collect::<Vec<_>>();
    redis.acl_setuser_with("shop", &password, &least);
    // The binaries read the password from the environment, through `${NAME}` in the URL.
    let templated = format!("rediss://shop:${{PF_TEST_REDIS_PASSWORD}}@localhost:{}", redis.port());
    let vars = [("PRICEFRONT__REDIS__URL", templated), ("PF_TEST_REDIS_PASSWORD", password.clone())];
    let _consumer = env.spawn_consumer_process_with(&vars).await;
    let producer = env.spawn_producer_process_with(&vars).await;
    let clients = redis.redis_cli(&["CLIENT", "LIST"]);
    assert!(clients.contains("user=shop"), "connected as the ACL user: {clients}");

    let cold = env.product("tls-cold");
    let (status, headers, _) = get(&env.http, &format!("{}/v1/prices/{cold}", producer.base)).await;
    assert_eq!(status, 202, "{headers:?}");
    let body = until_served(&env, &producer.base, &cold, Duration::from_secs(60)).await;
    assert_eq!(body["status"], "complete", "{body}");
    assert!(env.assert_stored_within_guarantee(&cold).await.is_some(), "stored under {}", env.result_key(&cold));

    stampede_publishes_once(&env, &producer.base, &env.product("tls-stampede")).await;
    a_page_is_served_whole(&env, &producer.base, "tls-page").await;
    // Waiting hears the announcement (the user may subscribe to the ready channels).
    let waited = format!("{}/v1/prices/{}", producer.base, env.product("tls-wait"));
    let res = env.http.get(&waited).header("prefer", "wait=20").send().await.unwrap();
    assert_eq!(res.status(), 200);
    // So does an event stream, with each source's quote live (logged and announced as that user).
    streams_each_source_live(&env, &producer.base, &env.product("tls-events")).await;

    redis.stop();
    redis_down_is_a_503(&env, &producer.base, &env.product("tls-down")).await;
    redis.restart().await;
    // It keeps nothing across a restart, its users included.
    redis.acl_setuser_with("shop", &password, &least);
    until_served(&env, &producer.base, &env.product("tls-back"), Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_redis_password_variable_stops_the_producer_at_start_up() {
    let env = env().start().await;
    let vars = [("PRICEFRONT__REDIS__URL", "rediss://shop:${PF_TEST_UNSET_VARIABLE}@localhost:1".to_owned())];
    let (status, stderr) = env.run_to_exit(env!("CARGO_BIN_EXE_producer"), &vars, Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("PF_TEST_UNSET_VARIABLE is not set"), "{stderr}");
    assert!(stderr.contains("rediss://shop:<redacted>@localhost:1"), "the URL, password redacted: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_on_a_redis_cluster_and_recovers_when_a_master_returns() {
    let mut cluster = RedisCluster::start().await;
    let nodes = cluster.urls().iter().map(|u| format!("{u:?}")).collect::<Vec<_>>().join(", ");
    // Slow enough that a master can be killed while a product is being computed.
    let env = env()
        .providers(vec![provider("alpha", 300), provider("beta", 600)])
        .set("redis", "cluster_nodes", &format!("[{nodes}]"))
        .start()
        .await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();

    // Products whose keys live on different masters: the scripts run wherever the slot is.
    let products: Vec<String> = (0..6).map(|i| env.product(&format!("cluster-{i}"))).collect();
    let masters: std::collections::BTreeSet<usize> =
        products.iter().map(|p| cluster.node_for_key(&env.result_key(p))).collect();
    assert!(masters.len() > 1, "the products spread over the masters: {masters:?}");
    for p in &products {
        let (status, _, _) = get(&env.http, &format!("{}/v1/prices/{p}", producer.base)).await;
        assert_eq!(status, 202, "{p}");
    }
    for p in &products {
        let body = until_served(&env, &producer.base, p, Duration::from_secs(60)).await;
        assert_eq!(body["status"], "complete", "{body}");
    }

    stampede_publishes_once(&env, &producer.base, &env.product("cluster-stampede")).await;
    a_page_is_served_whole(&env, &producer.base, "cluster-page").await;
    streams_each_source_live(&env, &producer.base, &env.product("cluster-events")).await;

    // A master dies while the consumer computes a product whose keys it holds: the consumer
    // waits (the write is retried, nothing goes to the DLQ), and misses answer 503 meanwhile.
    let during = env.product("cluster-during");
    let owner = cluster.node_for_key(&env.result_key(&during));
    assert_eq!(get(&env.http, &format!("{}/v1/prices/{during}", producer.base)).await.0, 202);
    cluster.kill_master(owner);
    cluster.wait_down().await;
    let down = env.product("cluster-down");
    redis_down_is_a_503(&env, &producer.base, &down).await;
    crate::helpers::wait_for("not ready while the cluster is down", Duration::from_secs(20), || async {
        match env.http.get(format!("{}/readyz", producer.base)).send().await.map(|r| r.status().as_u16()) {
            Ok(503) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    cluster.restart_master(owner).await;
    cluster.wait_healthy().await;
    until_served(&env, &producer.base, &during, Duration::from_secs(60)).await;
    until_served(&env, &producer.base, &down, Duration::from_secs(60)).await;
    // A product on a master that never went away is served again too.
    let other = products.iter().find(|p| cluster.node_for_key(&env.result_key(p)) != owner).unwrap();
    until_served(&env, &producer.base, other, Duration::from_secs(30)).await;
    let dlq = env.settings.kafka.dlq_topic.clone();
    assert_eq!(env.messages_on(&dlq, &during).await, 0, "nothing dead-lettered while the cluster was down");
    let calls = env.calls_for(&during).await;
    assert!(calls.values().all(|&n| n >= 1), "computed: {calls:?}");

    consumer.stop().await;
    producer.stop().await;
}

/// The announcement subscription goes through the first seed node. When that master dies and
/// its replica takes over, waiting requests still hear their results: the subscription moves
/// to another node, and the ops port's readiness says where it stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_survive_a_cluster_failover() {
    let mut cluster = RedisCluster::start_with_replicas().await;
    let nodes = cluster.urls().iter().map(|u| format!("{u:?}")).collect::<Vec<_>>().join(", ");
    let env = env().set("redis", "cluster_nodes", &format!("[{nodes}]")).start().await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    let waited = |product: String| {
        let (http, url) = (env.http.clone(), format!("{}/v1/prices/{product}", producer.base));
        async move {
            let res = http.get(url).header("prefer", "wait=10").send().await.unwrap();
            (res.status().as_u16(), res.headers().get("x-cache").map(|v| v.to_str().unwrap().to_owned()))
        }
    };
    let announcements = || async {
        let (_, _, details) = get(&env.http, &format!("{}/readyz", producer.ops)).await;
        details["announcements"].as_str().unwrap_or_default().to_owned()
    };
    // A wait starts the subscription (through the first seed node), and hears its result.
    assert_eq!(waited(env.product("before")).await, (200, Some("MISS".into())));
    wait_for("the subscription to be up", Duration::from_secs(10), || async {
        match announcements().await.as_str() {
            "ok" => Ok(()),
            other => Err(other.to_owned()),
        }
    })
    .await;

    // The first seed node, a master, dies; its replica takes over.
    cluster.kill_master(0);
    cluster.wait_healthy().await;
    // Waits after the failover are still woken by their results.
    wait_for("a wait to be answered by its result after the failover", Duration::from_secs(60), || async {
        match waited(env.product(&format!("after-{}", uuid::Uuid::new_v4().simple()))).await {
            (200, _) => Ok(()),
            other => Err(format!("{other:?} (announcements: {})", announcements().await)),
        }
    })
    .await;
    assert_eq!(announcements().await, "ok");
    consumer.stop().await;
    producer.stop().await;
}
