//! The dead letters, for operators: [`list`] reads the DLQ topic (`admin dlq list`), [`replay`]
//! re-publishes the decodable ones to the request topic (`admin dlq replay`), once.
//!
//! - A dead letter is the original message, unchanged, with `dlq.*` headers saying why and
//!   where it came from (the worker writes them).
//! - [`list`] assigns every partition from the beginning (no group, nothing committed) and reads
//!   until nothing arrives for [`IDLE`]: messages are counted by reading them, since some brokers
//!   (tansu) report wrong high watermarks.
//! - [`replay`] reads as the consumer group `{kafka.group_id}.dlq-replay`, from its committed
//!   offsets, and commits what it read once the replayed copies are acknowledged: a second run
//!   starts after them. A message a filter passes over is passed over for good by this group
//!   (offsets are a position, not a set); the output names every offset range read, so nothing
//!   is passed over silently.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::config::{client_config, creation_error};
use super::{DecodeError, Delivery, Error, Headers, PriceRequest, Publisher};
use crate::settings::{KafkaRole, KafkaSettings};

/// Reading stops once nothing has arrived for this long.
pub const IDLE: Duration = Duration::from_secs(3);
/// How long one replayed copy may take to be acknowledged (at least `kafka.publish_timeout_ms`).
const REPLAY_PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// The header a replayed copy carries: `topic/partition/offset` of its dead letter.
pub const REPLAYED_FROM: &str = "dlq.replayed_from";
/// The headers a dead letter carries besides the original's (written by the worker, read here
/// and by `admin dlq`): why, the error, where the original was, and when it failed.
pub const REASON: &str = "dlq.reason";
pub const ERROR: &str = "dlq.error";
pub const SOURCE_TOPIC: &str = "dlq.source.topic";
pub const SOURCE_PARTITION: &str = "dlq.source.partition";
pub const SOURCE_OFFSET: &str = "dlq.source.offset";
pub const FAILED_AT: &str = "dlq.failed_at";

/// One message of the DLQ topic.
#[derive(Debug)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Headers,
    /// The broker's timestamp, when it has one.
    pub timestamp_ms: Option<i64>,
}

impl DeadLetter {
    fn read(m: &BorrowedMessage<'_>) -> Self {
        let headers = m.headers().map_or_else(Headers::new, |h| {
            h.iter().fold(Headers::new(), |all, h| all.with(h.key, h.value.unwrap_or_default()))
        });
        Self {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers,
            timestamp_ms: m.timestamp().to_millis(),
        }
    }

    /// Why it was dead-lettered (`dlq.reason`: `invalid_json`, `processing_failed`, …).
    pub fn reason(&self) -> &str {
        self.headers.get_str(REASON).unwrap_or("unknown")
    }

    pub fn error(&self) -> &str {
        self.headers.get_str(ERROR).unwrap_or_default()
    }

    /// When it failed (`dlq.failed_at`), else when the broker got it.
    pub fn failed_at(&self) -> Option<OffsetDateTime> {
        let header = self.headers.get_str(FAILED_AT).and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
        header.or_else(|| OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.timestamp_ms?) * 1_000_000).ok())
    }

    /// The request it carries, if it decodes.
    pub fn request(&self) -> Result<PriceRequest, DecodeError> {
        PriceRequest::decode(self.payload.as_deref())
    }
}

fn consumer(settings: &KafkaSettings, group: &str) -> Result<StreamConsumer, Error> {
    let ours = [
        ("group.id", group.to_owned()),
        ("enable.auto.commit", "false".to_owned()),
        ("enable.auto.offset.store", "false".to_owned()),
        ("auto.offset.reset", "earliest".to_owned()),
        ("fetch.wait.max.ms", "10".to_owned()),
        // As the consumer's: a join waits on the session's timers.
        ("session.timeout.ms", settings.session_timeout.as_millis().to_string()),
        ("heartbeat.interval.ms", (settings.session_timeout.as_millis() / 4).max(100).to_string()),
    ];
    client_config(settings, KafkaRole::Consumer, &ours)?.create().map_err(|e| creation_error(e, KafkaRole::Consumer))
}

/// Reads until nothing arrives for `idle`, or `limit` messages were read; each goes to `each`.
async fn read(
    consumer: &StreamConsumer,
    limit: usize,
    idle: Duration,
    mut each: impl FnMut(DeadLetter),
) -> Result<(), Error> {
    let mut read = 0;
    while read < limit {
        match tokio::time::timeout(idle, consumer.recv()).await {
            Err(_) => break,
            Ok(Ok(m)) => {
                read += 1;
                each(DeadLetter::read(&m));
            }
            Ok(Err(e)) => return Err(Error::Kafka(e)),
        }
    }
    Ok(())
}

/// Up to `limit` dead letters, oldest first per partition.
pub async fn list(settings: &KafkaSettings, limit: usize, idle: Duration) -> Result<Vec<DeadLetter>, Error> {
    let consumer = consumer(settings, &format!("{}.dlq-list", settings.group_id))?;
    let topic = settings.dlq_topic.as_str();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics().iter().filter(|t| t.name() == topic).flat_map(|t| t.partitions()) {
        assignment.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
    }
    if assignment.count() == 0 {
        return Err(Error::Config(format!("the DLQ topic {topic:?} has no partitions (does it exist?)")));
    }
    consumer.assign(&assignment)?;
    let mut letters = Vec::new();
    read(&consumer, limit, idle, |letter| letters.push(letter)).await?;
    letters.sort_by_key(|l| (l.partition, l.offset));
    Ok(letters)
}

/// Which dead letters to replay.
#[derive(Debug, Default)]
pub struct Filter {
    /// Only those that failed at or after this.
    pub since: Option<OffsetDateTime>,
    /// Only those with this `dlq.reason`.
    pub reason: Option<String>,
}

impl Filter {
    fn takes(&self, letter: &DeadLetter) -> bool {
        let recent = self.since.is_none_or(|since| letter.failed_at().is_some_and(|at| at >= since));
        recent && self.reason.as_deref().is_none_or(|r| r == letter.reason())
    }
}

/// What one replay did.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Re-published, with where each copy went.
    pub published: Vec<(DeadLetter, Delivery)>,
    /// Read but not replayed: not a request (they would only come back).
    pub undecodable: Vec<DeadLetter>,
    /// Read, and passed over by the filter.
    pub filtered: Vec<DeadLetter>,
    /// Per partition, the first and last offset read.
    pub ranges: BTreeMap<i32, (i64, i64)>,
}

/// Re-publishes the decodable dead letters that `filter` takes to the request topic, each
/// once; see the module doc.
pub async fn replay(settings: &KafkaSettings, filter: &Filter, idle: Duration) -> Result<Replayed, Error> {
    let consumer = consumer(settings, &format!("{}.dlq-replay", settings.group_id))?;
    consumer.subscribe(&[settings.dlq_topic.as_str()])?;
    let mut letters = Vec::new();
    // A group's first message takes a join (seconds): allow for it before counting idleness.
    match tokio::time::timeout(idle + settings.session_timeout * 3, consumer.recv()).await {
        Err(_) => {}
        Ok(Ok(m)) => {
            letters.push(DeadLetter::read(&m));
            read(&consumer, usize::MAX, idle, |letter| letters.push(letter)).await?;
        }
        Ok(Err(e)) => return Err(Error::Kafka(e)),
    }
    // An operator's one-off run: worth waiting for the broker longer than a shop's request is.
    let mut patient = settings.clone();
    patient.publish_timeout = settings.publish_timeout.max(REPLAY_PUBLISH_TIMEOUT);
    let publisher = Publisher::new(&patient)?;
    let mut done = Replayed::default();
    for letter in letters {
        let range = done.ranges.entry(letter.partition).or_insert((letter.offset, letter.offset));
        range.0 = range.0.min(letter.offset);
        range.1 = range.1.max(letter.offset);
        if !filter.takes(&letter) {
            done.filtered.push(letter);
            continue;
        }
        if letter.request().is_err() {
            done.undecodable.push(letter);
            continue;
        }
        let from = format!("{}/{}/{}", settings.dlq_topic, letter.partition, letter.offset);
        let headers = letter.headers.kept(&super::envelope::CALLER_HEADERS).with(REPLAYED_FROM, &from);
        let (key, payload) = (letter.key.as_deref().unwrap_or_default(), letter.payload.as_deref().unwrap_or_default());
        let delivery = publisher.send(&settings.topic, key, payload, &headers).await?;
        done.published.push((letter, delivery));
    }
    publisher.flush(Duration::from_secs(5)).await;
    // Only now, every copy acknowledged: a failure above leaves them to the next run.
    let mut positions = TopicPartitionList::new();
    for (partition, (_, last)) in &done.ranges {
        positions.add_partition_offset(&settings.dlq_topic, *partition, Offset::Offset(last + 1))?;
    }
    if positions.count() > 0 {
        consumer.commit(&positions, rdkafka::consumer::CommitMode::Sync)?;
    }
    Ok(done)
}
