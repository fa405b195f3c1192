//! A message that cannot be decoded goes to the DLQ, and the consumer moves on.

use std::time::Duration;

use rdkafka::Message;

use crate::helpers::{RedisServer, dead_letter_for, env, free_port, get, key_of, spawn_consumer, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_goes_to_the_dlq_and_the_next_message_is_processed() {
    let env = env().start().await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    let product = env.product("after-junk");

    // Same key as the good request, so both land on one partition, garbage first.
    env.produce_raw(&product, b"\x00not json at all").await;
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
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &env.settings.kafka.brokers)
        .create()
        .unwrap();
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
    let consumer = env.spawn_consumer_process();
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

