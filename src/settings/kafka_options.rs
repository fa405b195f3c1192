//! `[kafka.options]`, `[kafka.producer_options]`, `[kafka.consumer_options]`: librdkafka
//! properties passed through as they are (security, tuning), with three rules checked at load:
//!
//! - a property the code depends on for correctness, or one that a typed `kafka.*` setting
//!   owns, is refused, with the reason;
//! - a value without `${NAME}` is checked by librdkafka itself now (unknown property, bad value),
//!   so a typo fails at start-up naming the property; a value with `${NAME}` is checked once
//!   expanded, when the client is built;
//! - a property whose name contains `password`, `secret`, `key` or `jaas` is a secret: every
//!   way this type is shown ([`fmt::Debug`], [`show`]) prints `<redacted>`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::template;

/// What a redacted value prints as.
pub const REDACTED: &str = "<redacted>";

/// Properties an override may not set, and why. librdkafka's aliases are listed too.
const REFUSED: &[(&str, &str)] = &[
    ("group.id", "set kafka.group_id instead"),
    ("bootstrap.servers", "set kafka.brokers instead"),
    ("metadata.broker.list", "set kafka.brokers instead"),
    (
        "enable.auto.offset.store",
        "offsets are stored only once a request's result is durable; automatic storing would commit work not yet done",
    ),
    (
        "enable.auto.commit",
        "the consumer commits what it stored on its own schedule and at revoke and shutdown; turning it off would never commit",
    ),
    ("auto.commit.enable", "an alias of enable.auto.commit, which the consumer owns"),
    (
        "auto.commit.interval.ms",
        "the consumer owns when stored offsets are committed (0 would commit only at revoke and shutdown)",
    ),
    ("statistics.interval.ms", "the consumer reads librdkafka's statistics for pricefront_consumer_lag"),
    ("enable.partition.eof", "the consumer does not expect end-of-partition events"),
    (
        "auto.offset.reset",
        "a new group must start from the earliest offset, or requests published before it joined are lost",
    ),
    (
        "enable.idempotence",
        "the publisher relies on idempotent, ordered delivery (and replaces itself when the broker loses its state)",
    ),
    ("acks", "idempotent delivery needs acks=all"),
    ("request.required.acks", "an alias of acks: idempotent delivery needs acks=all"),
    ("message.timeout.ms", "set kafka.publish_timeout_ms instead (it is also the 503 bound)"),
    ("delivery.timeout.ms", "an alias of message.timeout.ms: set kafka.publish_timeout_ms instead"),
    ("queue.buffering.max.messages", "set kafka.producer_queue_max_messages instead (it is also the 503 bound)"),
    ("session.timeout.ms", "set kafka.session_timeout_ms instead (it is checked against consumer.drain_timeout_ms)"),
];

/// Whether a property's value must never be shown.
pub fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "secret", "key", "jaas"].iter().any(|word| name.contains(word))
}

/// A set of librdkafka properties; values may hold `${NAME}` templates.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct KafkaOptions(BTreeMap<String, String>);

impl KafkaOptions {
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Checks the rules in the module doc; `section` names the table in errors
    /// (`kafka.options`).
    pub fn validate(&self, section: &str) -> Result<(), String> {
        let mut untemplated = rdkafka::ClientConfig::new();
        for (name, value) in self.iter() {
            if let Some((_, why)) = REFUSED.iter().find(|(refused, _)| refused.eq_ignore_ascii_case(name)) {
                return Err(format!("{section}.\"{name}\" cannot be overridden: {why}"));
            }
            let variables = template::variables(value).map_err(|e| format!("{section}.\"{name}\": {e}"))?;
            if variables.is_empty() {
                untemplated.set(name, value);
            }
        }
        untemplated.create_native_config().map(drop).map_err(|e| describe(section, &e))
    }
}

impl fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter().map(|(k, v)| (k, shown(k, v)))).finish()
    }
}

/// `name=value` pairs, comma-separated, secrets as [`REDACTED`].
pub fn show<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    pairs.map(|(k, v)| format!("{k}={}", if is_secret(k) { REDACTED } else { v })).collect::<Vec<_>>().join(", ")
}

/// A property's value as it may be shown.
fn shown<'a>(name: &str, value: &'a str) -> &'a str {
    if is_secret(name) { REDACTED } else { value }
}

/// librdkafka's complaint about a configuration, naming the property, without a secret's value
/// (its own message quotes the value).
pub fn describe(section: &str, error: &rdkafka::error::KafkaError) -> String {
    match error {
        rdkafka::error::KafkaError::ClientConfig(_, _, name, _) if is_secret(name) => {
            format!("{section}.\"{name}\": librdkafka refused its value ({REDACTED})")
        }
        rdkafka::error::KafkaError::ClientConfig(_, description, name, _) => {
            format!("{section}.\"{name}\": {description}")
        }
        other => format!("{section}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> KafkaOptions {
        KafkaOptions(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn secrets_are_recognised_by_name() {
        for name in [
            "sasl.password",
            "ssl.key.password",
            "ssl.key.location",
            "sasl.oauthbearer.client.secret",
            "sasl.jaas.config",
            "SSL.KEYSTORE.PASSWORD",
        ] {
            assert!(is_secret(name), "{name}");
        }
        for name in ["sasl.username", "security.protocol", "ssl.ca.location", "linger.ms"] {
            assert!(!is_secret(name), "{name}");
        }
    }

    #[test]
    fn secrets_never_show() {
        let o = options(&[("sasl.username", "shop"), ("sasl.password", "hunter2"), ("ssl.key.location", "/k.pem")]);
        let shown = [format!("{o:?}"), show(o.iter())];
        for s in &shown {
            assert!(!s.contains("hunter2") && !s.contains("/k.pem"), "{s}");
            assert!(s.contains("shop") && s.contains(REDACTED), "{s}");
        }
        assert_eq!(show(o.iter()), "sasl.password=<redacted>, sasl.username=shop, ssl.key.location=<redacted>");
    }

    #[test]
    fn refused_properties_say_why() {
        for name in [
            "enable.auto.offset.store",
            "enable.auto.commit",
            "group.id",
            "auto.offset.reset",
            "enable.idempotence",
            "Acks",
        ] {
            let err = options(&[(name, "x")]).validate("kafka.consumer_options").unwrap_err();
            assert!(err.starts_with(&format!("kafka.consumer_options.\"{name}\" cannot be overridden: ")), "{err}");
        }
    }

    #[test]
    fn librdkafka_checks_names_and_values_at_load() {
        let err = options(&[("linger.msx", "1")]).validate("kafka.producer_options").unwrap_err();
        assert!(err.contains("\"linger.msx\"") && err.contains("No such configuration property"), "{err}");
        let err = options(&[("linger.ms", "soon")]).validate("kafka.producer_options").unwrap_err();
        assert!(err.contains("\"linger.ms\"") && err.contains("Invalid value"), "{err}");
        let err = options(&[("ssl.key.password", "")]).validate("kafka.options");
        assert!(err.is_ok(), "{err:?}");
        // Templated values wait for their variables.
        assert!(options(&[("sasl.password", "${P}"), ("linger.ms", "${L}")]).validate("kafka.options").is_ok());
        assert!(options(&[("sasl.password", "${P")]).validate("kafka.options").is_err());
        assert!(
            options(&[("security.protocol", "SASL_SSL"), ("sasl.mechanism", "SCRAM-SHA-512")])
                .validate("kafka.options")
                .is_ok()
        );
    }
}
