//! Typed settings, layered: `config/default.toml` (compiled in), then the TOML file named
//! by env `PRICEFRONT_CONFIG` if set, then env `PRICEFRONT__SECTION__KEY`
//! (e.g. `PRICEFRONT__PRODUCER__LISTEN=127.0.0.1:18080`).
//!
//! Unknown keys are an error, durations are `Duration`s, and cross-field rules are checked
//! in [`Settings::validate`] at load time, so a bad config fails before any port is bound.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use serde::{Deserialize, Deserializer};

use crate::domain::{Currency, TtlPolicy};

/// The compiled-in base layer.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");
/// Env var naming an extra TOML file layered over the defaults.
pub const CONFIG_FILE_ENV: &str = "PRICEFRONT_CONFIG";
const ENV_PREFIX: &str = "PRICEFRONT";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot load settings")]
    Load(#[from] config::ConfigError),
    #[error("invalid settings: {0}")]
    Invalid(String),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub producer: ProducerSettings,
    pub redis: RedisSettings,
    pub kafka: KafkaSettings,
    pub cache: CacheSettings,
    pub consumer: ConsumerSettings,
    pub log: LogSettings,
    /// `[[providers]]`: the price sources the consumer asks.
    pub providers: Vec<ProviderSettings>,
    pub mock: MockSettings,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerSettings {
    /// `PRICEFRONT__PRODUCER__LISTEN`: address the HTTP API binds.
    pub listen: SocketAddr,
    /// `PRICEFRONT__PRODUCER__RETRY_AFTER_SECS`: `Retry-After` sent with 202 and 503.
    pub retry_after_secs: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `PRICEFRONT__REDIS__URL`
    pub url: String,
    /// `PRICEFRONT__REDIS__KEY_PREFIX`: every key is `{key_prefix}:…`.
    pub key_prefix: String,
    /// `PRICEFRONT__REDIS__TIMEOUT_MS`: bound on one connect or one response.
    #[serde(rename = "timeout_ms", deserialize_with = "millis")]
    pub timeout: Duration,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// `PRICEFRONT__KAFKA__BROKERS`: comma-separated bootstrap servers.
    pub brokers: String,
    /// `PRICEFRONT__KAFKA__TOPIC`: where price requests go.
    pub topic: String,
    /// `PRICEFRONT__KAFKA__DLQ_TOPIC`: where undecodable requests go.
    pub dlq_topic: String,
    /// `PRICEFRONT__KAFKA__GROUP_ID`: the consumer group.
    pub group_id: String,
    /// `PRICEFRONT__KAFKA__PARTITIONS`: partitions created for both topics; the most consumers that get work.
    pub partitions: i32,
    /// `PRICEFRONT__KAFKA__REPLICATION_FACTOR`
    pub replication_factor: i32,
    /// `PRICEFRONT__KAFKA__PUBLISH_TIMEOUT_MS`: a publish not confirmed by then answers 503.
    #[serde(rename = "publish_timeout_ms", deserialize_with = "millis")]
    pub publish_timeout: Duration,
    /// `PRICEFRONT__KAFKA__PRODUCER_QUEUE_MAX_MESSAGES`: unsent messages a producer holds
    /// while the broker is slow or away; past it, publishing fails at once (503).
    pub producer_queue_max_messages: u32,
    /// `PRICEFRONT__KAFKA__SESSION_TIMEOUT_MS`: how long before a dead consumer's partitions move.
    #[serde(rename = "session_timeout_ms", deserialize_with = "millis")]
    pub session_timeout: Duration,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// `PRICEFRONT__CACHE__TTL_SECS`: the price guarantee window.
    #[serde(rename = "ttl_secs", deserialize_with = "secs")]
    pub ttl: Duration,
    /// `PRICEFRONT__CACHE__FAILED_TTL_SECS`: TTL of a result where no source answered.
    #[serde(rename = "failed_ttl_secs", deserialize_with = "secs")]
    pub failed_ttl: Duration,
    /// `PRICEFRONT__CACHE__L1_TTL_MS`: longest an in-process entry lives.
    #[serde(rename = "l1_ttl_ms", deserialize_with = "millis")]
    pub l1_ttl: Duration,
    /// `PRICEFRONT__CACHE__L1_MAX_ENTRIES`
    pub l1_max_entries: u64,
    /// `PRICEFRONT__CACHE__PENDING_TTL_SECS`: lifetime of the "being computed" marker.
    #[serde(rename = "pending_ttl_secs", deserialize_with = "secs")]
    pub pending_ttl: Duration,
}

impl CacheSettings {
    pub fn ttl_policy(&self) -> TtlPolicy {
        TtlPolicy { answered: self.ttl, failed: self.failed_ttl }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSettings {
    /// `PRICEFRONT__CONSUMER__METRICS_LISTEN`: where the consumer serves `/metrics`.
    pub metrics_listen: SocketAddr,
    /// `PRICEFRONT__CONSUMER__MAX_IN_FLIGHT`: messages processed concurrently per consumer.
    pub max_in_flight: usize,
    /// `PRICEFRONT__CONSUMER__PROVIDER_TIMEOUT_MS`: bound on one provider call.
    #[serde(rename = "provider_timeout_ms", deserialize_with = "millis")]
    pub provider_timeout: Duration,
    /// `PRICEFRONT__CONSUMER__MAX_ATTEMPTS`: tries before a message whose processing keeps
    /// failing (Redis answering with an error) goes to the DLQ. An unreachable Redis is waited out instead.
    pub max_attempts: u32,
    /// `PRICEFRONT__CONSUMER__DRAIN_TIMEOUT_MS`: bound on finishing in-flight work at shutdown.
    #[serde(rename = "drain_timeout_ms", deserialize_with = "millis")]
    pub drain_timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `PRICEFRONT__LOG__FORMAT`: `text` or `json`.
    pub format: LogFormat,
    /// `PRICEFRONT__LOG__FILTER`: a tracing filter; `RUST_LOG` wins when set.
    pub filter: String,
}

/// One price source and how it is protected. Only `name` and `url` are required.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    pub name: String,
    /// URL template; `{product_id}` is replaced by the validated id.
    pub url: String,
    /// Bound on one attempt; the whole call (retries included) stays within
    /// `consumer.provider_timeout_ms`. Default: that whole budget (so a hang is not retried).
    #[serde(rename = "attempt_timeout_ms", default, deserialize_with = "opt_millis")]
    pub attempt_timeout: Option<Duration>,
    /// Extra attempts after a retryable failure (connect, timeout, 502/503/504), made only
    /// while the time budget allows.
    #[serde(default = "defaults::retries")]
    pub retries: u32,
    /// First back-off before a retry; doubles with jitter.
    #[serde(rename = "retry_backoff_ms", default = "defaults::retry_backoff", deserialize_with = "millis")]
    pub retry_backoff: Duration,
    /// Bulkhead: most calls in flight to this provider from one consumer.
    #[serde(default = "defaults::max_concurrency")]
    pub max_concurrency: usize,
    /// Consecutive failed attempts that open the circuit.
    #[serde(default = "defaults::breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open circuit refuses calls before one probe is let through.
    #[serde(rename = "breaker_cooldown_ms", default = "defaults::breaker_cooldown", deserialize_with = "millis")]
    pub breaker_cooldown: Duration,
}

mod defaults {
    use std::time::Duration;

    pub fn retries() -> u32 {
        1
    }
    pub fn retry_backoff() -> Duration {
        Duration::from_millis(50)
    }
    pub fn max_concurrency() -> usize {
        64
    }
    pub fn breaker_failures() -> u32 {
        5
    }
    pub fn breaker_cooldown() -> Duration {
        Duration::from_secs(10)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockSettings {
    /// `PRICEFRONT__MOCK__LISTEN`
    pub listen: SocketAddr,
    /// `[[mock.providers]]`
    pub providers: Vec<MockProviderSettings>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockProviderSettings {
    pub name: String,
    pub latency_ms: u64,
    pub jitter_ms: u64,
    /// Share of calls answered 503, in [0, 1].
    pub error_rate: f64,
    /// Share of calls never answered, in [0, 1].
    pub hang_rate: f64,
    pub currency: Currency,
}

impl Settings {
    /// Loads defaults, then `PRICEFRONT_CONFIG`, then the process environment.
    pub fn load() -> Result<Self, Error> {
        let file = std::env::var_os(CONFIG_FILE_ENV);
        Self::load_from(file.as_deref().map(Path::new), None)
    }

    /// For mains: loads the settings, or prints why not and exits with status 2 (a usage
    /// error), before anything starts.
    pub fn load_or_exit() -> Self {
        Self::load().unwrap_or_else(|e| exit_invalid(e))
    }

    /// Loads defaults, then `file`, then env: the process environment, or `env` when given
    /// (keys like `PRICEFRONT__KAFKA__TOPIC`), so tests build settings the way mains do.
    pub fn load_from(file: Option<&Path>, env: Option<HashMap<String, String>>) -> Result<Self, Error> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
        }
        let environment =
            Environment::with_prefix(ENV_PREFIX).prefix_separator("__").separator("__").try_parsing(true).source(env);
        let settings: Settings = builder.add_source(environment).build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Cross-field rules.
    pub fn validate(&self) -> Result<(), Error> {
        let fail = |msg: String| Err(Error::Invalid(msg));
        if self.redis.key_prefix.is_empty() || self.redis.key_prefix.contains(char::is_whitespace) {
            return fail("redis.key_prefix must be non-empty without whitespace".into());
        }
        if self.kafka.partitions < 1 {
            return fail("kafka.partitions must be at least 1".into());
        }
        if self.kafka.topic == self.kafka.dlq_topic {
            return fail("kafka.dlq_topic must differ from kafka.topic".into());
        }
        if self.cache.l1_ttl.is_zero() || self.cache.ttl.is_zero() || self.cache.failed_ttl.is_zero() {
            return fail("cache TTLs must be positive".into());
        }
        if self.consumer.max_in_flight == 0 || self.consumer.max_attempts == 0 {
            return fail("consumer.max_in_flight and consumer.max_attempts must be at least 1".into());
        }
        // The marker must outlive one fan-out, or a second request for the same product
        // would be published while the first is still being computed.
        if self.cache.pending_ttl <= self.consumer.provider_timeout {
            return fail(format!(
                "cache.pending_ttl_secs ({:?}) must exceed consumer.provider_timeout_ms ({:?})",
                self.cache.pending_ttl, self.consumer.provider_timeout
            ));
        }
        // Draining, then committing and leaving (at least 1 s more), must finish before the
        // group gives our partitions away.
        if self.consumer.drain_timeout + Duration::from_secs(1) >= self.kafka.session_timeout {
            return fail(format!(
                "consumer.drain_timeout_ms ({:?}) plus 1 s for the group leave must be below kafka.session_timeout_ms ({:?})",
                self.consumer.drain_timeout, self.kafka.session_timeout
            ));
        }
        unique_names("providers", self.providers.iter().map(|p| p.name.as_str()))?;
        for p in &self.providers {
            if !p.url.contains("{product_id}") {
                return fail(format!("providers.{}: url must contain {{product_id}}", p.name));
            }
            if reqwest::Url::parse(&p.url.replace("{product_id}", "x")).is_err() {
                return fail(format!("providers.{}: url {:?} is not a valid URL", p.name, p.url));
            }
            if p.max_concurrency == 0 || p.breaker_failures == 0 {
                return fail(format!("providers.{}: max_concurrency and breaker_failures must be at least 1", p.name));
            }
            if p.attempt_timeout.is_some_and(|t| t.is_zero() || t > self.consumer.provider_timeout) {
                return fail(format!(
                    "providers.{}: attempt_timeout_ms must be positive and at most consumer.provider_timeout_ms",
                    p.name
                ));
            }
        }
        // Their faults are the mock's to validate (`mock::Mock::new`): only it runs them.
        unique_names("mock.providers", self.mock.providers.iter().map(|p| p.name.as_str()))?;
        Ok(())
    }
}

/// Prints a configuration error with each cause once and exits with status 2 (a usage error).
pub fn exit_invalid(error: impl Into<anyhow::Error>) -> ! {
    eprintln!("pricefront: {:#}", error.into());
    std::process::exit(2)
}

fn unique_names<'a>(what: &str, names: impl Iterator<Item = &'a str>) -> Result<(), Error> {
    let mut seen = HashSet::new();
    for name in names {
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(Error::Invalid(format!("{what}: name {name:?} must be non-empty [A-Za-z0-9_-]")));
        }
        if !seen.insert(name) {
            return Err(Error::Invalid(format!("{what}: name {name:?} appears twice")));
        }
    }
    Ok(())
}

fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

fn opt_millis<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Option::<u64>::deserialize(d).map(|ms| ms.map(Duration::from_millis))
}

fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn defaults_load_and_match_the_documented_values() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.producer.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.redis.url, "redis://127.0.0.1:6379");
        assert_eq!(s.redis.key_prefix, "pricefront");
        assert_eq!(s.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(s.kafka.topic, "price-compare-requests");
        assert_eq!(s.kafka.dlq_topic, "price-compare-requests.dlq");
        assert_eq!(s.kafka.group_id, "price-compare-consumer-group");
        assert_eq!(s.kafka.partitions, 3);
        assert_eq!(s.kafka.publish_timeout, Duration::from_millis(1000));
        assert_eq!(s.cache.ttl, Duration::from_secs(300));
        assert_eq!(s.cache.l1_ttl, Duration::from_millis(1000));
        assert_eq!(s.cache.pending_ttl, Duration::from_secs(30));
        assert_eq!(s.consumer.max_in_flight, 256);
        assert_eq!(s.consumer.provider_timeout, Duration::from_millis(2000));
        assert_eq!(s.mock.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(s.providers.len(), 8);
        assert_eq!(s.mock.providers.len(), 8);
    }

    #[test]
    fn env_overrides_nested_keys() {
        let s = Settings::load_from(
            None,
            env(&[("PRICEFRONT__PRODUCER__LISTEN", "127.0.0.1:18080"), ("PRICEFRONT__KAFKA__PARTITIONS", "6")]),
        )
        .unwrap();
        assert_eq!(s.producer.listen.port(), 18080);
        assert_eq!(s.kafka.partitions, 6);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err =
            anyhow::Error::new(Settings::load_from(None, env(&[("PRICEFRONT__PRODUCER__LISTNE", "x")])).unwrap_err());
        let message = format!("{err:#}");
        assert!(message.contains("listne"), "{message}");
        assert_eq!(message.matches("listne").count(), 1, "each cause printed once: {message}");
    }

    #[test]
    fn file_layer_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("pricefront-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("o.toml");
        std::fs::write(&path, "[cache]\nttl_secs = 60\n").unwrap();
        let s = Settings::load_from(Some(&path), env(&[])).unwrap();
        assert_eq!(s.cache.ttl, Duration::from_secs(60));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn cross_field_rules_fail_at_load() {
        let err = Settings::load_from(None, env(&[("PRICEFRONT__CONSUMER__DRAIN_TIMEOUT_MS", "20000")])).unwrap_err();
        assert!(err.to_string().contains("drain_timeout_ms"), "{err}");
        let err = Settings::load_from(None, env(&[("PRICEFRONT__CONSUMER__DRAIN_TIMEOUT_MS", "9500")])).unwrap_err();
        assert!(err.to_string().contains("group leave"), "{err}");
        let err = Settings::load_from(None, env(&[("PRICEFRONT__CACHE__PENDING_TTL_SECS", "1")])).unwrap_err();
        assert!(err.to_string().contains("pending_ttl_secs"), "{err}");
    }
}
