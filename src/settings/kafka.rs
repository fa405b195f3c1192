//! `[kafka]`: brokers, topics, the group, timeouts, and the librdkafka options per client role
//! ([`KafkaOptions`]).

use std::time::Duration;

use serde::Deserialize;
use serde_with::{DurationMilliSeconds, serde_as};

use super::KafkaOptions;

#[serde_as]
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// `PRICEFRONT__KAFKA__BROKERS`: comma-separated bootstrap servers.
    pub brokers: String,
    /// `PRICEFRONT__KAFKA__TOPIC`: where price requests go.
    pub topic: String,
    /// `PRICEFRONT__KAFKA__DLQ_TOPIC`: where undecodable requests go.
    pub dlq_topic: String,
    /// `PRICEFRONT__KAFKA__REFRESH_TOPIC`: where refreshes go, served first by every consumer
    /// (its group: `group_id` + `.refresh`); empty: `topic` + `.refresh`. See
    /// [`Self::refresh_topic`].
    #[serde(rename = "refresh_topic")]
    pub refresh_topic_name: String,
    /// `PRICEFRONT__KAFKA__GROUP_ID`: the consumer group.
    pub group_id: String,
    /// `PRICEFRONT__KAFKA__PARTITIONS`: partitions created for both topics; the most consumers that get work.
    pub partitions: i32,
    /// `PRICEFRONT__KAFKA__REPLICATION_FACTOR`
    pub replication_factor: i32,
    /// `PRICEFRONT__KAFKA__PUBLISH_TIMEOUT_MS`: a publish not confirmed by then answers 503.
    #[serde(rename = "publish_timeout_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub publish_timeout: Duration,
    /// `PRICEFRONT__KAFKA__PRODUCER_QUEUE_MAX_MESSAGES`: unsent messages a producer holds
    /// while the broker is slow or away; past it, publishing fails at once (503).
    pub producer_queue_max_messages: u32,
    /// `PRICEFRONT__KAFKA__SESSION_TIMEOUT_MS`: how long before a dead consumer's partitions move.
    #[serde(rename = "session_timeout_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub session_timeout: Duration,
    /// `[kafka.options]`: librdkafka properties for every client (security, tuning); values
    /// may hold `${NAME}`. See [`KafkaOptions`] for what is refused and what is redacted.
    #[serde(default)]
    pub options: KafkaOptions,
    /// `[kafka.producer_options]`: applied over `options`, producer (and DLQ publisher) only.
    #[serde(default)]
    pub producer_options: KafkaOptions,
    /// `[kafka.consumer_options]`: applied over `options`, group consumer only.
    #[serde(default)]
    pub consumer_options: KafkaOptions,
}

/// Which of our Kafka clients a configuration is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KafkaRole {
    Producer,
    Consumer,
    Admin,
}

impl KafkaRole {
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaRole::Producer => "producer",
            KafkaRole::Consumer => "consumer",
            KafkaRole::Admin => "admin",
        }
    }
}

impl KafkaSettings {
    /// The overrides a client in `role` gets, in order (later wins), each with its table's name.
    pub fn options_for(&self, role: KafkaRole) -> Vec<(&'static str, &KafkaOptions)> {
        let mut layers = vec![("kafka.options", &self.options)];
        match role {
            KafkaRole::Producer => layers.push(("kafka.producer_options", &self.producer_options)),
            KafkaRole::Consumer => layers.push(("kafka.consumer_options", &self.consumer_options)),
            KafkaRole::Admin => {}
        }
        layers
    }
}

impl KafkaSettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        for (section, options) in [
            ("kafka.options", &self.options),
            ("kafka.producer_options", &self.producer_options),
            ("kafka.consumer_options", &self.consumer_options),
        ] {
            options.validate(section)?;
        }
        if self.partitions < 1 {
            return Err("kafka.partitions must be at least 1".into());
        }
        if self.topic == self.dlq_topic {
            return Err("kafka.dlq_topic must differ from kafka.topic".into());
        }
        let refresh = self.refresh_topic();
        if refresh == self.topic || refresh == self.dlq_topic {
            return Err("kafka.refresh_topic must differ from kafka.topic and kafka.dlq_topic".into());
        }
        Ok(())
    }

    /// The refresh topic: `refresh_topic`, or `topic` + `.refresh` when that is empty.
    pub fn refresh_topic(&self) -> String {
        match self.refresh_topic_name.as_str() {
            "" => format!("{}.refresh", self.topic),
            name => name.to_owned(),
        }
    }

    /// The consumer group that reads the refresh topic: `group_id` + `.refresh`.
    pub fn refresh_group(&self) -> String {
        format!("{}.refresh", self.group_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::testing::with_toml;

    #[test]
    fn kafka_options_keep_dotted_names_and_layer_by_role() {
        let s = with_toml(
            r#"
[kafka.options]
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "SCRAM-SHA-512"
"sasl.username" = "${KAFKA_USER}"
"sasl.password" = "${KAFKA_PASSWORD}"
[kafka.producer_options]
"linger.ms" = "1"
[kafka.consumer_options]
"fetch.wait.max.ms" = "10"
"#,
        )
        .unwrap();
        let names = |role| {
            s.kafka.options_for(role).iter().flat_map(|(_, o)| o.iter().map(|(k, _)| k.to_owned())).collect::<Vec<_>>()
        };
        assert_eq!(names(KafkaRole::Admin), ["sasl.mechanism", "sasl.password", "sasl.username", "security.protocol"]);
        assert!(names(KafkaRole::Producer).contains(&"linger.ms".to_owned()));
        assert!(names(KafkaRole::Consumer).contains(&"fetch.wait.max.ms".to_owned()));
        assert!(!names(KafkaRole::Consumer).contains(&"linger.ms".to_owned()));
        assert!(!format!("{s:?}").contains("KAFKA_PASSWORD"), "Debug redacts secrets");
    }

    #[test]
    fn kafka_overrides_the_code_depends_on_are_refused_at_load() {
        let err = with_toml(
            "[kafka.consumer_options]
\"enable.auto.commit\" = \"false\"\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("kafka.consumer_options.\"enable.auto.commit\" cannot be overridden"),
            "{err}"
        );
        let err = with_toml("[kafka.options]\n\"securty.protocol\" = \"SSL\"\n").unwrap_err();
        assert!(err.to_string().contains("\"securty.protocol\""), "{err}");
    }

    #[test]
    fn the_dlq_is_another_topic() {
        let err = with_toml("[kafka]\ndlq_topic = \"price-compare-requests\"\n").unwrap_err();
        assert!(err.to_string().contains("kafka.dlq_topic"), "{err}");
    }
}
