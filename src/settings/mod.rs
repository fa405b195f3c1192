//! Typed settings, layered: `config/default.toml` (compiled in), then the TOML file named
//! by env `PRICEFRONT_CONFIG` if set, then env `PRICEFRONT__SECTION__KEY`
//! (e.g. `PRICEFRONT__PRODUCER__LISTEN=127.0.0.1:18080`).
//!
//! Unknown keys are an error, durations are `Duration`s, and each section's rules and the
//! rules across sections are checked in [`Settings::validate`] at load time, so a bad config
//! fails before any port is bound. One file per section (`producer`, `redis`, `kafka`,
//! `cache`, `consumer`, `log`, `providers`, `mock`, `telemetry`, `fx`), each with its own
//! rules; this one holds the root, the layering and the rules across sections.
//!
//! Secrets are redacted in exactly three shapes, each where it lives:
//! - a value that is a secret as a whole (a client secret) is a [`Secret`]: its `Debug` and
//!   `Serialize` print [`REDACTED`];
//! - a Redis URL holds its password inside it (`redis://user:password@host`), and the rest of
//!   the URL must stay readable: [`redact_url`];
//! - `[kafka.*options]` and a source's `headers` are maps whose keys are free-form, so whether
//!   a value is secret depends on its key (`sasl.password`, `Authorization`): [`is_secret`]
//!   and [`KafkaOptions`]'s `Debug`, and all header values in [`Settings::shown`].

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

mod cache;
mod consumer;
mod fx;
mod kafka;
mod kafka_options;
mod log;
mod mock;
mod producer;
mod providers;
mod redis;
mod secret;
mod telemetry;
pub mod template;

pub use cache::CacheSettings;
pub use consumer::ConsumerSettings;
pub use fx::FxSettings;
pub use kafka::{KafkaRole, KafkaSettings};
pub use kafka_options::{KafkaOptions, REDACTED, describe as kafka_options_error, is_secret, show as show_options};
pub use log::{LogFormat, LogSettings};
pub use mock::{MockAuthSettings, MockProviderSettings, MockQuotaSettings, MockSettings, MockShape};
pub use producer::{ProducerSettings, RateSettings};
pub use providers::{
    AuthSettings, ClientAuth, HttpMethod, PriceUnit, ProviderSettings, QuotaSettings, ResponseSettings, Select,
    json_pointer,
};
pub use redis::{RedisSettings, redact_url};
pub use secret::Secret;
pub use telemetry::TelemetrySettings;

/// The compiled-in base layer.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");
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
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    pub fx: FxSettings,
}

impl Settings {
    /// Loads defaults, then `PRICEFRONT_CONFIG`, then the process environment.
    pub fn load() -> Result<Self, Error> {
        let file = std::env::var_os(CONFIG_FILE_ENV);
        Self::load_from(file.as_deref().map(Path::new), None)
    }

    /// Every setting as layered (defaults, `PRICEFRONT_CONFIG`, env) and validated, as JSON,
    /// with secrets `<redacted>`: Redis URL passwords, librdkafka properties that are secrets
    /// ([`is_secret`]), price sources' header values, and every [`Secret`] (an `auth` table
    /// is shown as its type serializes it, defaults included). What `admin get` prints from.
    pub fn shown() -> Result<serde_json::Value, Error> {
        let file = std::env::var_os(CONFIG_FILE_ENV);
        Self::shown_from(file.as_deref().map(Path::new), None)
    }

    /// [`Self::shown`] from `file` and `env` (see [`Self::load_from`]).
    pub fn shown_from(file: Option<&Path>, env: Option<HashMap<String, String>>) -> Result<serde_json::Value, Error> {
        let settings = Self::load_from(file, env.clone())?;
        let mut value: serde_json::Value = layers(file, env)?.try_deserialize()?;
        let shown_error = |e: serde_json::Error| Error::Invalid(format!("showing settings: {e}"));
        let redis = &mut value["redis"];
        if let Some(url) = redis["url"].as_str() {
            redis["url"] = redact_url(url).into();
        }
        for node in redis["cluster_nodes"].as_array_mut().into_iter().flatten() {
            *node = redact_url(node.as_str().unwrap_or_default()).into();
        }
        for section in ["options", "producer_options", "consumer_options"] {
            for (name, v) in value["kafka"][section].as_object_mut().into_iter().flatten() {
                if is_secret(name) {
                    *v = REDACTED.into();
                }
            }
        }
        // The lists are in load order, so the typed entry at an index is the shown one's.
        for (provider, typed) in value["providers"].as_array_mut().into_iter().flatten().zip(&settings.providers) {
            for v in provider["headers"].as_object_mut().into_iter().flatten().map(|(_, v)| v) {
                *v = REDACTED.into();
            }
            if let Some(auth) = &typed.auth {
                provider["auth"] = serde_json::to_value(auth).map_err(shown_error)?;
            }
        }
        for (mock, typed) in
            value["mock"]["providers"].as_array_mut().into_iter().flatten().zip(&settings.mock.providers)
        {
            if let Some(auth) = &typed.auth {
                mock["auth"] = serde_json::to_value(auth).map_err(shown_error)?;
            }
        }
        Ok(value)
    }

    /// Loads defaults, then `file`, then env: the process environment, or `env` when given
    /// (keys like `PRICEFRONT__KAFKA__TOPIC`), so tests build settings the way mains do.
    pub fn load_from(file: Option<&Path>, env: Option<HashMap<String, String>>) -> Result<Self, Error> {
        let variables: Vec<String> = match &env {
            Some(env) => env.keys().cloned().collect(),
            None => std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()).collect(),
        };
        let layered = layers(file, env)?;
        let settings: Settings = layered.clone().try_deserialize().map_err(|e| {
            let names = |list: &str| -> Vec<String> {
                let entries = layered.get::<Vec<serde_json::Value>>(list).unwrap_or_default();
                entries.iter().map(|p| p["name"].as_str().unwrap_or("?").to_owned()).collect()
            };
            Error::Load(name_the_source(
                name_the_variable(e, &variables),
                &names("providers"),
                &names("mock.providers"),
            ))
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Each section's own rules, then the rules across sections.
    pub fn validate(&self) -> Result<(), Error> {
        let fail = |msg: String| Err(Error::Invalid(msg));
        self.redis.validate().map_err(Error::Invalid)?;
        self.kafka.validate().map_err(Error::Invalid)?;
        self.cache.validate().map_err(Error::Invalid)?;
        self.telemetry.validate().map_err(Error::Invalid)?;
        self.producer.validate().map_err(Error::Invalid)?;
        self.fx.validate().map_err(Error::Invalid)?;
        self.consumer.validate().map_err(Error::Invalid)?;
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
        for (i, p) in self.providers.iter().enumerate() {
            p.validate(self.consumer.provider_timeout)
                .map_err(|e| Error::Invalid(format!("{}: {e}", ProviderSettings::label(i, &p.name))))?;
        }
        // Their faults are the mock's to validate (`mock::Mock::new`): only it runs them.
        unique_names("mock.providers", self.mock.providers.iter().map(|p| p.name.as_str()))?;
        Ok(())
    }
}

/// A key inside a price source (or a mock source) names the source as `providers[1] (ebay)`,
/// with the dot the layering leaves out (`providers[1]quota.per_second` becomes
/// `providers[1] (ebay).quota.per_second`).
fn name_the_source(error: config::ConfigError, sources: &[String], mocks: &[String]) -> config::ConfigError {
    let text = error.to_string();
    if !text.contains("providers[") {
        return error;
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text.as_str();
    while let Some(at) = rest.find("providers[") {
        let (before, from) = rest.split_at(at + "providers[".len());
        out.push_str(before);
        let digits = from.bytes().take_while(u8::is_ascii_digit).count();
        let named = from[digits..].strip_prefix(']').and_then(|after| {
            let index: usize = from[..digits].parse().ok()?;
            let list = if before.ends_with("mock.providers[") { mocks } else { sources };
            Some((index, list.get(index)?, after))
        });
        match named {
            Some((index, name, after)) => {
                out.push_str(&format!("{index}] ({name})"));
                if after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                    out.push('.');
                }
                rest = after;
            }
            None => rest = from,
        }
    }
    out.push_str(rest);
    config::ConfigError::Message(out)
}

/// An unknown key that came from the environment is named as the variable that set it
/// (`PRICEFRONT__PRODUCER__LISTNE`), not as the lower-cased key the layering made of it.
fn name_the_variable(error: config::ConfigError, variables: &[String]) -> config::ConfigError {
    let text = error.to_string();
    let Some(field) = text.strip_prefix("unknown field `").and_then(|rest| rest.split('`').next()) else {
        return error;
    };
    let prefix = format!("{ENV_PREFIX}__");
    let culprits: Vec<&String> = variables
        .iter()
        .filter(|v| {
            v.starts_with(&prefix) && v.rsplit("__").next().is_some_and(|last| last.eq_ignore_ascii_case(field))
        })
        .collect();
    match culprits.as_slice() {
        [] => error,
        names => config::ConfigError::Message(format!(
            "environment variable {} is not a setting ({text})",
            names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
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

/// Defaults, then `file`, then env, merged (not yet typed).
fn layers(file: Option<&Path>, env: Option<HashMap<String, String>>) -> Result<Config, Error> {
    let mut builder = Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
    if let Some(path) = file {
        builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
    }
    let environment = Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        // Lists from env are comma-separated.
        .list_separator(",")
        .with_list_parse_key("producer.trusted_proxies")
        .with_list_parse_key("producer.cors_allow_origins")
        .with_list_parse_key("redis.cluster_nodes")
        .source(env);
    Ok(builder.add_source(environment).build()?)
}

/// What the tests of every section load settings with.
#[cfg(test)]
mod testing {
    use std::collections::HashMap;

    use super::{Error, Settings};

    pub fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    /// Loads the defaults with `toml` layered over them.
    pub fn with_toml(toml: &str) -> Result<Settings, Error> {
        let dir = std::env::temp_dir().join(format!("pricefront-toml-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("o.toml");
        std::fs::write(&path, toml).unwrap();
        let loaded = Settings::load_from(Some(&path), env(&[]));
        std::fs::remove_dir_all(dir).unwrap();
        loaded
    }

    /// Loads the defaults with one extra `[[providers]]` entry written in TOML.
    pub fn with_provider(toml: &str) -> Result<Settings, Error> {
        let dir = std::env::temp_dir().join(format!("pricefront-provider-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.toml");
        std::fs::write(&path, format!("[[providers]]\nname = \"x\"\n{toml}")).unwrap();
        let loaded = Settings::load_from(Some(&path), env(&[]));
        std::fs::remove_dir_all(dir).unwrap();
        loaded
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{env, with_toml};
    use super::*;

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
    fn a_type_error_in_a_source_names_it_with_its_dots_right() {
        let toml = "[[providers]]\nname = \"a\"\nurl = \"http://h/{product_id}\"\n[[providers]]\nname = \"quota\"\nurl = \"http://h/{product_id}\"\n[providers.quota]\nper_second = \"x\"\n";
        let err = format!("{:#}", anyhow::Error::new(with_toml(toml).unwrap_err()));
        assert!(err.contains("for key `providers[1] (quota).quota.per_second`"), "{err}");
        let unknown = "[[providers]]\nname = \"ebay\"\nurl = \"http://h/{product_id}\"\nretris = 3\n";
        let err = format!("{:#}", anyhow::Error::new(with_toml(unknown).unwrap_err()));
        assert!(err.contains("unknown field `retris`") && err.contains("for key `providers[0] (ebay)`"), "{err}");
    }

    #[test]
    fn a_misspelt_variable_is_named_as_the_variable() {
        let err = Settings::load_from(None, env(&[("PRICEFRONT__CACHE__TTL_SEC", "60")])).unwrap_err();
        let err = format!("{:#}", anyhow::Error::new(err));
        assert!(err.contains("environment variable PRICEFRONT__CACHE__TTL_SEC is not a setting"), "{err}");
    }

    #[test]
    fn every_client_secret_is_redacted_when_shown() {
        let toml = r#"
            [[providers]]
            name = "ebay"
            url = "https://api.ebay.com/x/{product_id}"
            [providers.auth]
            kind = "oauth2_client_credentials"
            token_url = "https://api.ebay.com/token"
            client_id = "id"
            client_secret = "t0p-s3cret"
        "#;
        let path = std::env::temp_dir().join(format!("shown-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&path, toml).unwrap();
        let shown = Settings::shown_from(Some(&path), env(&[])).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(!shown.to_string().contains("t0p-s3cret"));
        assert_eq!(shown["providers"][0]["auth"]["client_secret"], REDACTED);
        assert_eq!(shown["providers"][0]["auth"]["client_id"], "id");
        let mock = Settings::shown_from(None, env(&[])).unwrap();
        let dealhub = mock["mock"]["providers"].as_array().unwrap().iter().find(|p| p["name"] == "dealhub").unwrap();
        assert_eq!(dealhub["auth"]["client_secret"], REDACTED, "the mock's too");
    }

    #[test]
    fn every_setting_is_shown_and_secrets_are_not() {
        let toml = r#"
            [redis]
            url = "redis://shop:s3cret@h:6379"
            [kafka.options]
            "sasl.password" = "hunter2"
            "security.protocol" = "sasl_ssl"
            [[providers]]
            name = "ebay"
            url = "https://api.ebay.com/x/{product_id}"
            headers = { Authorization = "Bearer t0ken" }
        "#;
        let path = std::env::temp_dir().join(format!("shown-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&path, toml).unwrap();
        let shown = Settings::shown_from(Some(&path), env(&[("PRICEFRONT__CONSUMER__MAX_IN_FLIGHT", "64")])).unwrap();
        std::fs::remove_file(&path).unwrap();
        let text = shown.to_string();
        for secret in ["s3cret", "hunter2", "t0ken"] {
            assert!(!text.contains(secret), "{secret} shown: {text}");
        }
        assert_eq!(shown["redis"]["url"], "redis://shop:<redacted>@h:6379");
        assert_eq!(shown["kafka"]["options"]["security.protocol"], "sasl_ssl");
        assert_eq!(shown["consumer"]["max_in_flight"], 64, "env wins, as a number");
        assert_eq!(shown["cache"]["ttl_secs"], 300, "defaults included");
        assert_eq!(shown["providers"][0]["headers"]["Authorization"], REDACTED);
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

    /// `config/examples/` for secured Kafka and Redis load (librdkafka accepts every property
    /// name and value), and the operations guide shows each verbatim.
    #[test]
    fn connectivity_examples_load_and_the_guide_shows_them() {
        let guide = include_str!("../../docs/operations.md");
        for name in ["kafka-sasl-scram", "kafka-mtls", "redis-tls", "redis-cluster"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("config/examples/{name}.toml"));
            let settings = Settings::load_from(Some(&path), env(&[])).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert!(!format!("{settings:?}").contains("${REDIS_PASSWORD}@"), "{name}: the URL password is redacted");
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(guide.contains(text.trim()), "docs/operations.md shows config/examples/{name}.toml verbatim");
        }
    }
}
