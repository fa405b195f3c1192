//! Kafka as a foreign client sees it: raw produce to the request topic, and reading a topic
//! from the beginning to find or count messages by key.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::TestEnv;

impl TestEnv {
    /// Sends raw bytes to the request topic, as a foreign producer would.
    pub async fn produce_raw(&self, key: &str, payload: &[u8]) {
        self.produce_raw_with(key, payload, &[]).await;
    }

    /// As [`Self::produce_raw`], with Kafka headers.
    pub async fn produce_raw_with(&self, key: &str, payload: &[u8], headers: &[(&str, &str)]) {
        use rdkafka::message::{Header, OwnedHeaders};
        let producer: FutureProducer =
            ClientConfig::new().set("bootstrap.servers", &self.settings.kafka.brokers).create().unwrap();
        let headers = headers
            .iter()
            .fold(OwnedHeaders::new(), |all, (key, value)| all.insert(Header { key, value: Some(*value) }));
        let record = FutureRecord::to(&self.settings.kafka.topic).key(key).payload(payload).headers(headers);
        producer.send(record, Timeout::After(Duration::from_secs(10))).await.map_err(|(e, _)| e).unwrap();
    }

    /// Publishes a request for each product straight to the topic, as a producer would, all at once.
    pub async fn request_directly(&self, products: &[String]) {
        let producer: FutureProducer =
            ClientConfig::new().set("bootstrap.servers", &self.settings.kafka.brokers).create().unwrap();
        let requests: Vec<(String, Vec<u8>)> = products
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    pricefront::queue::PriceRequest::new(pricefront::domain::ProductId::parse(p).unwrap()).encode(),
                )
            })
            .collect();
        let sends = requests.iter().map(|(key, payload)| {
            let record = FutureRecord::to(&self.settings.kafka.topic).key(key).payload(payload);
            producer.send(record, Timeout::After(Duration::from_secs(10)))
        });
        for sent in join_all(sends).await {
            sent.map_err(|(e, _)| e).unwrap();
        }
    }

    /// How many requests for `product` are on the request topic.
    pub async fn messages_for(&self, product: &str) -> usize {
        self.messages_on(&self.settings.kafka.topic, product).await
    }

    /// How many messages keyed `product` are on `topic`: reads it up to a marker message
    /// written now to every partition.
    pub async fn messages_on(&self, topic: &str, product: &str) -> usize {
        self.messages_by_key(topic).await.get(product).copied().unwrap_or(0)
    }

    /// How many messages each key has on `topic` (read as [`Self::messages_on`] does).
    pub async fn messages_by_key(&self, topic: &str) -> BTreeMap<String, usize> {
        let marker = self.product(&format!("marker-{}", uuid::Uuid::new_v4().simple()));
        let producer: rdkafka::producer::FutureProducer =
            ClientConfig::new().set("bootstrap.servers", &self.settings.kafka.brokers).create().unwrap();
        for p in 0..self.settings.kafka.partitions {
            let record = rdkafka::producer::FutureRecord::to(topic).key(&marker).payload("marker").partition(p);
            producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
        }
        let partitions = self.settings.kafka.partitions as usize;
        let m = marker.clone();
        let read_marker = move |seen: &[OwnedMessage]| seen.iter().filter(|msg| key_of(msg) == m).count() == partitions;
        let messages = self.read_topic(topic, Duration::from_secs(30), read_marker).await;
        let mut counts = BTreeMap::new();
        for m in &messages {
            *counts.entry(key_of(m)).or_default() += 1;
        }
        counts
    }

    /// Reads every partition of `topic` from the beginning until `done` holds for what was read.
    /// Counts by reading, not by watermarks (the broker's watermarks are not trusted).
    pub async fn read_topic(
        &self,
        topic: &str,
        deadline: Duration,
        done: impl Fn(&[OwnedMessage]) -> bool + Send + 'static,
    ) -> Vec<OwnedMessage> {
        let (topic, partitions) = (topic.to_owned(), self.settings.kafka.partitions);
        let brokers = self.settings.kafka.brokers.clone();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
                .set("enable.auto.commit", "false")
                .create()
                .unwrap();
            let mut tpl = TopicPartitionList::new();
            for p in 0..partitions {
                tpl.add_partition_offset(&topic, p, Offset::Beginning).unwrap();
            }
            consumer.assign(&tpl).unwrap();
            let started = Instant::now();
            let mut seen = Vec::new();
            while !done(&seen) {
                assert!(
                    started.elapsed() < deadline,
                    "reading {topic}: condition not met after {deadline:?}; read {} messages",
                    seen.len()
                );
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                    seen.push(m.detach());
                }
            }
            seen
        })
        .await
        .unwrap()
    }
}

pub fn key_of(m: &OwnedMessage) -> String {
    String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned()
}

/// Waits until the DLQ holds a message keyed `key`; returns it with its headers as strings.
pub async fn dead_letter_for(env: &TestEnv, key: &str) -> (OwnedMessage, HashMap<String, String>) {
    message_on(env, &env.settings.kafka.dlq_topic, key).await
}

/// The first message keyed `key` on `topic` (waiting for one), with its headers.
pub async fn message_on(env: &TestEnv, topic: &str, key: &str) -> (OwnedMessage, HashMap<String, String>) {
    let wanted = key.to_owned();
    let all =
        env.read_topic(topic, Duration::from_secs(30), move |seen| seen.iter().any(|m| key_of(m) == wanted)).await;
    let dead = all.into_iter().find(|m| key_of(m) == key).unwrap();
    let headers = dead
        .headers()
        .map(|h| {
            use rdkafka::message::Headers;
            h.iter()
                .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                .collect()
        })
        .unwrap_or_default();
    (dead, headers)
}
