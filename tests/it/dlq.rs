//! A message that cannot be decoded goes to the DLQ, and the consumer moves on.

use std::time::Duration;

use rdkafka::Message;

use crate::helpers::{RedisServer, dead_letter_for, env, free_port, get, key_of, message_on, spawn_consumer, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_goes_to_the_dlq_and_the_next_message_is_processed() {
    let env = env().start().await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    let product = env.product("after-junk");

    // Same key as the good request, so both land on one partition, garbage first. It carries the
    // caller's headers, which its dead letter keeps.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let caller = [("traceparent", traceparent), ("x-request-id", "shop-junk-1")];
    env.produce_raw_with(&product, b"\x00not json at all", &caller).await;
    assert_eq!(get(&env.http, &format!("{}/v1/prices/{product}", producer.base)).await.0, 202);
    let result = env.wait_result(&product, Duration::from_secs(30)).await;
    assert_eq!(result["status"], "complete");

    let (dead, headers) = dead_letter_for(&env, &product).await;
    assert_eq!(dead.payload(), Some(&b"\x00not json at all"[..]));
    assert_eq!(headers["dlq.reason"], "invalid_json");
    assert_eq!(headers["dlq.source.topic"], env.settings.kafka.topic);
    assert!(headers["dlq.source.offset"].parse::<i64>().is_ok(), "{headers:?}");
    assert!(headers["dlq.source.partition"].parse::<i32>().is_ok(), "{headers:?}");
    assert!(!headers["dlq.error"].is_empty());
    assert_eq!((headers["traceparent"].as_str(), headers["x-request-id"].as_str()), (traceparent, "shop-junk-1"));

    // Its offset was stored: a restarted group does not dead-letter it again. A second
    // garbage message with the same key (so the same partitions, in order) marks the end.
    consumer.stop().await;
    let consumer = env.spawn_consumer();
    env.produce_raw(&product, b"end marker").await;
    let key = product.clone();
    let dlq = env
        .read_topic(&env.settings.kafka.dlq_topic, Duration::from_secs(30), move |seen| {
            seen.iter().any(|m| key_of(m) == key && m.payload() == Some(&b"end marker"[..]))
        })
        .await;
    let copies =
        dlq.iter().filter(|m| key_of(m) == product && m.payload() == Some(&b"\x00not json at all"[..])).count();
    assert_eq!(copies, 1, "dead-lettered once, never redelivered");
    consumer.stop().await;
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_keeps_failing_goes_to_the_dlq_after_bounded_attempts() {
    // A read-only replica answers every write with an error: Redis is up, the work fails.
    let replica = RedisServer::start(&["--replicaof", "127.0.0.1", &free_port().to_string()]).await;
    let env = env().set("consumer", "max_attempts", "2").start().await;
    let mut settings = env.settings.clone();
    settings.redis.url = replica.url();
    let consumer = spawn_consumer(&settings);

    let product = env.product("readonly");
    let request = pricefront::queue::PriceRequest::new(pricefront::domain::ProductId::parse(&product).unwrap());
    env.produce_raw(&product, &request.encode()).await;

    let (dead, headers) = dead_letter_for(&env, &product).await;
    let header = |name: &str| headers.get(name).cloned();
    assert_eq!(header("dlq.reason").as_deref(), Some("processing_failed"));
    let error = header("dlq.error").unwrap();
    assert!(error.contains("after 2 attempts") && error.to_lowercase().contains("read only"), "{error}");
    assert_eq!(dead.payload(), Some(&request.encode()[..]), "the original message, untouched");
    consumer.stop().await;
}

/// Deletes `topic` on the test broker.
async fn delete_topic(env: &crate::helpers::TestEnv, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &env.settings.kafka.brokers).create().unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.delete_topics(&[topic], &options).await.unwrap() {
        result.unwrap_or_else(|(topic, code)| panic!("cannot delete {topic}: {code}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_dlq_cannot_be_written_nothing_is_lost_and_no_new_message_is_taken() {
    // As a production cluster is: topics are not made by producing to them, and a missing one is
    // refused at once (UnknownTopicOrPartition), not after the publish timeout.
    let env = env()
        .set("kafka.producer_options", "\"allow.auto.create.topics\"", "\"false\"")
        .set("kafka.producer_options", "\"topic.metadata.propagation.max.ms\"", "\"10\"")
        .start()
        .await;
    // The broker refuses the DLQ: the topic is gone. (Before the consumer starts: tansu
    // re-creates a deleted topic when a client that knew it produces to it.)
    let dlq = env.settings.kafka.dlq_topic.clone();
    delete_topic(&env, &dlq).await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer_process().await;
    crate::helpers::warm_up(&env, &producer.base).await;
    let blocked = || async {
        let text = env.http.get(&consumer.metrics).send().await.unwrap().text().await.unwrap();
        crate::metrics::sample(&text, "pricefront_dlq_blocked", &[])
    };
    assert_eq!(blocked().await, 0.0);

    // A message that must go there arrives.
    let junk = env.product("junk");
    env.produce_raw(&junk, b"\x00junk while the DLQ is away").await;
    wait_for("the consumer to say the DLQ is blocked", Duration::from_secs(60), || async {
        match blocked().await {
            1.0 => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .await;

    // It takes no new message meanwhile: a request asked for now waits.
    let later = env.product("later");
    assert_eq!(get(&env.http, &format!("{}/v1/prices/{later}", producer.base)).await.0, 202);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(env.stored_result(&later).await.is_none(), "no message taken while the DLQ is blocked");
    assert_eq!(blocked().await, 1.0, "still trying");

    // The DLQ is back: the dead letter lands (the one held all along, not lost), then the rest flows.
    pricefront::queue::admin::ensure_topics(&env.settings.kafka).await.unwrap();
    let (dead, headers) = dead_letter_for(&env, &junk).await;
    assert_eq!(dead.payload(), Some(&b"\x00junk while the DLQ is away"[..]));
    assert_eq!(headers["dlq.reason"], "invalid_json");
    assert_eq!(env.wait_result(&later, Duration::from_secs(60)).await["status"], "complete");
    wait_for("the consumer to say the DLQ is writable again", Duration::from_secs(30), || async {
        match blocked().await {
            0.0 => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .await;
    drop(consumer);
    producer.stop().await;
}

/// Runs the `admin` binary with this test's config: (success, stdout, stderr).
async fn admin(env: &crate::helpers::TestEnv, args: &[&str]) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_admin"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("PRICEFRONT")) {
        command.env_remove(key);
    }
    let out = command.args(args).env("PRICEFRONT_CONFIG", &env.config_path).output().await.unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_dlq_lists_dead_letters_and_replays_the_decodable_ones_once() {
    use pricefront::domain::ProductId;
    use pricefront::queue::{Headers, PriceRequest, Publisher};
    use time::format_description::well_known::Rfc3339;

    let env = env().start().await;
    let dlq = &env.settings.kafka.dlq_topic;
    // The letters are set up by hand; a first send on a loaded CI machine may take over the
    // shop-facing 1 s publish timeout, which is not what this test is about.
    let mut kafka = env.settings.kafka.clone();
    kafka.publish_timeout = Duration::from_secs(30);
    let publisher = Publisher::new(&kafka).unwrap();
    let dead = |reason: &str, ago: time::Duration| {
        let at = (time::OffsetDateTime::now_utc() - ago).format(&Rfc3339).unwrap();
        Headers::new()
            .with("dlq.reason", reason)
            .with("dlq.error", format!("{reason} (test)"))
            .with("dlq.failed_at", at)
    };
    let (fresh, old) = (env.product("fresh"), env.product("old"));
    let request = |id: &str| PriceRequest::new(ProductId::parse(id).unwrap()).encode();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let caller = |headers: Headers| headers.with("traceparent", traceparent).with("x-request-id", "shop-fresh-1");
    let letters = [
        (fresh.as_str(), request(&fresh), caller(dead("processing_failed", time::Duration::minutes(5)))),
        ("junk-key", b"\x00junk".to_vec(), dead("invalid_json", time::Duration::minutes(1))),
        (old.as_str(), request(&old), dead("processing_failed", time::Duration::hours(3))),
    ];
    for (key, payload, headers) in &letters {
        publisher.send(dlq, key.as_bytes(), payload, headers).await.unwrap();
    }

    let (ok, out, err) = admin(&env, &["dlq", "list"]).await;
    assert!(ok, "{err}");
    let rows: Vec<Vec<&str>> = out.lines().skip(1).map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 3, "{out}");
    let row = |product: &str| rows.iter().find(|r| r[4] == product).unwrap_or_else(|| panic!("{product} in {out}"));
    assert_eq!((row(&fresh)[2], row(&fresh)[3]), ("5m", "processing_failed"));
    assert_eq!((row(&old)[2], row(&old)[3]), ("3h", "processing_failed"));
    assert_eq!((row("-")[3], row("-")[5]), ("invalid_json", "invalid_json (test)"), "undecodable: no product");
    let (ok, out, _) = admin(&env, &["dlq", "list", "--limit", "1"]).await;
    assert!(ok && out.lines().count() == 2, "{out}");

    // Replay what failed in the last hour: the fresh request; the junk cannot be, the old one is filtered.
    let (ok, out, err) = admin(&env, &["dlq", "replay", "--since", "1h"]).await;
    assert!(ok, "{err}");
    let kinds: Vec<(&str, &str)> = out
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0], f[3])
        })
        .collect();
    assert!(kinds.contains(&("replayed", fresh.as_str())), "{out}\n{err}");
    assert!(
        kinds.contains(&("undecodable", "invalid_json")) && kinds.contains(&("filtered", "processing_failed")),
        "{out}"
    );
    assert_eq!(kinds.iter().filter(|(k, _)| *k == "replayed").count(), 1, "{out}");
    assert!(err.contains("replayed 1, undecodable 1, filtered 1"), "{err}");
    // The copy keeps the caller's headers, and says where it came from.
    let (_, copied) = message_on(&env, &env.settings.kafka.topic, &fresh).await;
    assert_eq!((copied["traceparent"].as_str(), copied["x-request-id"].as_str()), (traceparent, "shop-fresh-1"));
    assert!(copied["dlq.replayed_from"].starts_with(dlq.as_str()), "{copied:?}");

    // The copy is a request like any other: a consumer computes it.
    let consumer = env.spawn_consumer();
    assert_eq!(env.wait_result(&fresh, Duration::from_secs(60)).await["status"], "complete");
    assert!(env.stored_result(&old).await.is_none());

    // Once: a second run finds nothing new, and the request topic holds one copy.
    let (ok, out, err) = admin(&env, &["dlq", "replay"]).await;
    assert!(ok && !out.contains("replayed"), "{out}\n{err}");
    assert!(err.contains("replayed 0") && err.contains("nothing new"), "{err}");
    assert_eq!(env.messages_for(&fresh).await, 1);
    let (ok, _, err) = admin(&env, &["dlq", "replay", "--since", "yesterday"]).await;
    assert!(!ok && err.contains("--since"), "{err}");
    consumer.stop().await;
}
