//! Typed settings, layered: `config/default.toml` (compiled in), then the TOML file named
//! by env `PRICEFRONT_CONFIG` if set, then env `PRICEFRONT__SECTION__KEY`
//! (e.g. `PRICEFRONT__PRODUCER__LISTEN=127.0.0.1:18080`).
//!
//! Unknown keys are an error, durations are `Duration`s, and cross-field rules are checked
//! in [`Settings::validate`] at load time, so a bad config fails before any port is bound.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use serde::{Deserialize, Deserializer};
use serde_with::{DurationMilliSeconds, DurationSeconds, serde_as};

use crate::domain::{Currency, TtlPolicy};

mod kafka_options;
mod mock;
mod providers;
mod secret;
pub mod template;

pub use kafka_options::{KafkaOptions, REDACTED, describe as kafka_options_error, is_secret, show as show_options};
pub use mock::{MockAuthSettings, MockProviderSettings, MockQuotaSettings, MockSettings, MockShape};
pub use providers::{
    AuthSettings, ClientAuth, HttpMethod, PriceUnit, ProviderSettings, QuotaSettings, ResponseSettings, Select,
    json_pointer,
};
pub use secret::Secret;

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

#[serde_as]
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerSettings {
    /// `PRICEFRONT__PRODUCER__LISTEN`: address the HTTP API binds.
    pub listen: SocketAddr,
    /// `PRICEFRONT__PRODUCER__RETRY_AFTER_SECS`: `Retry-After` sent with 202 and 503.
    pub retry_after_secs: u64,
    /// `[producer.miss_rate_per_client]`: misses one client may cause (hits are never
    /// limited); past it, 429.
    pub miss_rate_per_client: RateSettings,
    /// `PRICEFRONT__PRODUCER__TRUSTED_PROXIES`: peers (IP addresses or CIDR blocks) whose
    /// `X-Forwarded-For` names the client; everyone else is identified by their own address.
    #[serde(deserialize_with = "networks")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `PRICEFRONT__PRODUCER__MAX_PUBLISH_RATE`: new requests one producer publishes per
    /// second at most (burst of the same size); past it, misses answer 503.
    pub max_publish_rate: u32,
    /// `PRICEFRONT__PRODUCER__MAX_WAIT_SECS`: the longest a `Prefer: wait=N` request is held.
    #[serde(rename = "max_wait_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub max_wait: Duration,
    /// `PRICEFRONT__PRODUCER__MAX_WAITERS`: requests held at once per producer; past it, a
    /// `Prefer: wait` miss answers 202 at once.
    pub max_waiters: usize,
    /// `PRICEFRONT__PRODUCER__MAX_STREAM_SECS`: the longest a `/v1/prices/{id}/events` stream
    /// stays open without a result; then it ends (an `EventSource` reconnects by itself).
    #[serde(rename = "max_stream_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub max_stream: Duration,
    /// `PRICEFRONT__PRODUCER__MAX_STREAMS`: event streams open at once per producer; past it,
    /// a new one answers 503 with `Retry-After`.
    pub max_streams: usize,
    /// `PRICEFRONT__PRODUCER__MAX_BATCH_IDS`: most ids one `GET /v1/prices?ids=` may ask for;
    /// more answer 400.
    pub max_batch_ids: usize,
    /// `PRICEFRONT__PRODUCER__CORS_ALLOW_ORIGINS` (comma-separated): the origins
    /// (`https://shop.example`) whose pages may call the API and open its event streams, for
    /// the widget embedded on another site; `["*"]` for any. Empty (the default): none.
    #[serde(deserialize_with = "origins")]
    pub cors_allow_origins: Vec<String>,
    /// `PRICEFRONT__PRODUCER__DEMO_PAGE`: serve the demo page at `/` (and the few figures its
    /// live panel reads, at `/demo/metrics`). The widget's script (`/static/price-compare.js`)
    /// is served either way.
    pub demo_page: bool,
    /// `PRICEFRONT__PRODUCER__OPS_LISTEN`: where `/metrics`, and `/healthz` and `/readyz` with
    /// their details, are served for scrapers and probes; keep it off the public network.
    pub ops_listen: SocketAddr,
    /// `PRICEFRONT__PRODUCER__MAX_CONNECTIONS`: connections open at once on the public port;
    /// past it, a new one is answered 503 and closed.
    pub max_connections: usize,
    /// `PRICEFRONT__PRODUCER__HEADER_READ_TIMEOUT_MS`: a request's head must arrive within
    /// this, and a kept-alive connection waiting this long for its next request is closed.
    #[serde(rename = "header_read_timeout_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub header_read_timeout: Duration,
    /// `PRICEFRONT__PRODUCER__IDLE_TIMEOUT_SECS`: a connection that moves no byte for this long
    /// is closed; longer than `max_wait_secs` and than an event stream's 15 s keep-alive.
    #[serde(rename = "idle_timeout_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub idle_timeout: Duration,
    /// `PRICEFRONT__PRODUCER__MAX_STREAMS_PER_CLIENT`: event streams one client may hold open;
    /// past it, 429.
    pub max_streams_per_client: usize,
    /// `PRICEFRONT__PRODUCER__MAX_WAITERS_PER_CLIENT`: `Prefer: wait` requests one client may
    /// have held at once; past it, a request answers as if it had not asked to wait.
    pub max_waiters_per_client: usize,
}

/// A rate with a burst: `per_second` on average, up to `burst` at once.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSettings {
    pub per_second: u32,
    pub burst: u32,
}

/// Where Redis is and how to reach it. `url` and `cluster_nodes` may hold `${NAME}` (read when
/// a client is built) and `user:password@`; shown anywhere, the password is redacted.
#[serde_as]
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `PRICEFRONT__REDIS__URL`: `redis://` or `rediss://` (TLS), `[user:password@]host:port`.
    pub url: String,
    /// `PRICEFRONT__REDIS__CLUSTER_NODES` (comma-separated): when set, Redis Cluster through
    /// these seed nodes, and `url` is not used.
    #[serde(default)]
    pub cluster_nodes: Vec<String>,
    /// `PRICEFRONT__REDIS__CA_FILE`: PEM roots to trust instead of the system's (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `PRICEFRONT__REDIS__CLIENT_CERT`: PEM certificate for mutual TLS (with `client_key`).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// `PRICEFRONT__REDIS__CLIENT_KEY`: PEM private key for mutual TLS (with `client_cert`).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// `PRICEFRONT__REDIS__KEY_PREFIX`: every key is `{key_prefix}:…`.
    pub key_prefix: String,
    /// `PRICEFRONT__REDIS__TIMEOUT_MS`: bound on one connect or one response.
    #[serde(rename = "timeout_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub timeout: Duration,
}

impl RedisSettings {
    /// The URLs clients connect to, as configured (templates unexpanded).
    pub fn urls(&self) -> Vec<&str> {
        if self.cluster_nodes.is_empty() {
            vec![self.url.as_str()]
        } else {
            self.cluster_nodes.iter().map(String::as_str).collect()
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.key_prefix.is_empty() || self.key_prefix.contains(|c: char| c.is_whitespace() || c == '{' || c == '}') {
            return Err("redis.key_prefix must be non-empty, without whitespace or braces (the product id is the keys' hash tag)".into());
        }
        let field = if self.cluster_nodes.is_empty() { "redis.url" } else { "redis.cluster_nodes" };
        let mut schemes = Vec::new();
        for url in self.urls() {
            template::variables(url).map_err(|e| format!("{field}: {e}"))?;
            let scheme = url.split_once("://").map(|(scheme, _)| scheme);
            match scheme {
                Some(s @ ("redis" | "rediss")) => schemes.push(s),
                _ => return Err(format!("{field}: {} must start with redis:// or rediss://", redact_url(url))),
            }
        }
        schemes.dedup();
        if schemes.len() > 1 {
            return Err("redis.cluster_nodes: all nodes must use the same scheme (redis:// or rediss://)".into());
        }
        let tls = schemes == ["rediss"];
        if !tls && (self.ca_file.is_some() || self.client_cert.is_some() || self.client_key.is_some()) {
            return Err(format!(
                "redis.ca_file, redis.client_cert and redis.client_key need TLS: {field} must use rediss://"
            ));
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err("redis.client_cert and redis.client_key go together (mutual TLS needs both)".into());
        }
        Ok(())
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("cluster_nodes", &self.cluster_nodes.iter().map(|u| redact_url(u)).collect::<Vec<_>>())
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key.as_ref().map(|_| REDACTED))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A Redis URL with its password (if any) replaced by [`REDACTED`]. The user info ends at the
/// last `@` (a password may hold `/`, `@` or `:` unencoded).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            // `redis://password@host` (no colon) is a password alone.
            let shown = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:{REDACTED}"),
                None => REDACTED.to_owned(),
            };
            format!("{scheme}://{shown}{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

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

/// `[telemetry]`: span export. Without an endpoint nothing is exported.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `PRICEFRONT__TELEMETRY__OTLP_ENDPOINT`: OTLP/HTTP base URL (e.g. `http://collector:4318`;
    /// spans go to `/v1/traces`). Unset or empty: the standard OTLP variables
    /// ([`TelemetrySettings::traces_url`]), and if those are unset too, no export.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `PRICEFRONT__TELEMETRY__SAMPLE_RATIO`: share of new traces (those without a sampled
    /// incoming `traceparent`) recorded, 0.0–1.0. Default 1.0.
    #[serde(default)]
    pub sample_ratio: Option<f64>,
}

impl TelemetrySettings {
    /// Where spans are sent, if anywhere: `{otlp_endpoint}/v1/traces`; else the standard
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given; else `{OTEL_EXPORTER_OTLP_ENDPOINT}/v1/traces`.
    /// Empty values count as unset.
    pub fn traces_url(&self) -> Option<String> {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.trim().is_empty());
        let base = |url: String| format!("{}/v1/traces", url.trim_end_matches('/'));
        let ours = self.otlp_endpoint.clone().filter(|e| !e.trim().is_empty());
        ours.map(base)
            .or_else(|| var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT").map(base))
    }
}

/// `[fx]`: the currency quotes are compared in, and the exchange rates into it.
#[serde_as]
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FxSettings {
    /// `PRICEFRONT__FX__BASE`: the ISO 4217 currency `best` is compared in.
    pub base: Currency,
    /// `[fx.rates]` (`PRICEFRONT__FX__RATES__USD=0.92`): one unit of the key in `base`, as a
    /// decimal string. The fallback while no live rates are loaded, and for currencies the
    /// live source does not list.
    #[serde(default, deserialize_with = "rates")]
    pub rates: BTreeMap<Currency, rust_decimal::Decimal>,
    /// `PRICEFRONT__FX__URL`: the ECB daily reference-rates XML (`eurofxref-daily.xml`) to load
    /// live rates from, every `refresh_secs`; empty: the configured rates only.
    #[serde(default)]
    pub url: Option<String>,
    /// `PRICEFRONT__FX__REFRESH_SECS`: how often the live rates are loaded again.
    #[serde(rename = "refresh_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub refresh: Duration,
}

impl FxSettings {
    /// The live-rates URL, if one is set.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref().map(str::trim).filter(|url| !url.is_empty())
    }

    /// The configured rates, validated.
    pub fn configured(&self) -> Result<crate::domain::Rates, crate::domain::InvalidRates> {
        crate::domain::Rates::new(self.base, self.rates.clone())
    }
}

/// `{ USD = "0.92" }`: ISO 4217 codes (any case: environment keys arrive lower-cased) to
/// decimal strings.
fn rates<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<Currency, rust_decimal::Decimal>, D::Error> {
    use serde::de::Error as _;
    BTreeMap::<String, String>::deserialize(d)?
        .into_iter()
        .map(|(code, rate)| {
            let currency = Currency::parse(&code.to_ascii_uppercase()).map_err(D::Error::custom)?;
            let rate = rate
                .trim()
                .parse::<rust_decimal::Decimal>()
                .map_err(|_| D::Error::custom(format!("fx.rates.{currency}: {rate:?} is not a decimal number")))?;
            Ok((currency, rate))
        })
        .collect()
}

#[serde_as]
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// `PRICEFRONT__CACHE__TTL_SECS`: the price guarantee window.
    #[serde(rename = "ttl_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub ttl: Duration,
    /// `PRICEFRONT__CACHE__PARTIAL_TTL_SECS`: the longest a result is kept while it holds a
    /// failure that may pass (a timeout, a connection error, a 5xx, `rate_limited`,
    /// `auth_failed`, `circuit_open`), so the sources that failed are asked again soon.
    #[serde(rename = "partial_ttl_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub partial_ttl: Duration,
    /// `PRICEFRONT__CACHE__FAILED_TTL_SECS`: TTL of a result where no source answered.
    #[serde(rename = "failed_ttl_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub failed_ttl: Duration,
    /// `PRICEFRONT__CACHE__NOT_FOUND_TTL_SECS`: TTL of a result where every source said it
    /// does not sell the product.
    #[serde(rename = "not_found_ttl_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub not_found_ttl: Duration,
    /// `PRICEFRONT__CACHE__L1_TTL_MS`: longest an in-process entry lives.
    #[serde(rename = "l1_ttl_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub l1_ttl: Duration,
    /// `PRICEFRONT__CACHE__L1_MAX_ENTRIES`
    pub l1_max_entries: u64,
    /// `PRICEFRONT__CACHE__PENDING_TTL_SECS`: lifetime of the "being computed" marker.
    #[serde(rename = "pending_ttl_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub pending_ttl: Duration,
    /// `PRICEFRONT__CACHE__REFRESH_AHEAD`: a hit served in the last this fraction of its
    /// result's guarantee window starts a background refresh (0 turns it off).
    pub refresh_ahead: f64,
}

impl CacheSettings {
    pub fn ttl_policy(&self) -> TtlPolicy {
        TtlPolicy {
            answered: self.ttl,
            transient: self.partial_ttl,
            failed: self.failed_ttl,
            not_found: self.not_found_ttl,
        }
    }
}

#[serde_as]
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSettings {
    /// `PRICEFRONT__CONSUMER__METRICS_LISTEN`: where the consumer serves `/metrics`.
    pub metrics_listen: SocketAddr,
    /// `PRICEFRONT__CONSUMER__MAX_IN_FLIGHT`: messages processed concurrently per consumer.
    pub max_in_flight: usize,
    /// `PRICEFRONT__CONSUMER__PROVIDER_TIMEOUT_MS`: bound on one provider call.
    #[serde(rename = "provider_timeout_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub provider_timeout: Duration,
    /// `PRICEFRONT__CONSUMER__MAX_ATTEMPTS`: tries before a message whose processing keeps
    /// failing (Redis answering with an error) goes to the DLQ. An unreachable Redis is waited out instead.
    pub max_attempts: u32,
    /// `PRICEFRONT__CONSUMER__DRAIN_TIMEOUT_MS`: bound on finishing in-flight work at shutdown.
    #[serde(rename = "drain_timeout_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
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

impl Settings {
    /// Loads defaults, then `PRICEFRONT_CONFIG`, then the process environment.
    pub fn load() -> Result<Self, Error> {
        let file = std::env::var_os(CONFIG_FILE_ENV);
        Self::load_from(file.as_deref().map(Path::new), None)
    }

    /// Every setting as layered (defaults, `PRICEFRONT_CONFIG`, env) and validated, as JSON,
    /// with secrets `<redacted>`: Redis URL passwords, librdkafka properties that are secrets
    /// ([`is_secret`]), price sources' header values. What `admin get` prints from.
    pub fn shown() -> Result<serde_json::Value, Error> {
        let file = std::env::var_os(CONFIG_FILE_ENV);
        Self::shown_from(file.as_deref().map(Path::new), None)
    }

    /// [`Self::shown`] from `file` and `env` (see [`Self::load_from`]).
    pub fn shown_from(file: Option<&Path>, env: Option<HashMap<String, String>>) -> Result<serde_json::Value, Error> {
        Self::load_from(file, env.clone())?;
        let mut value: serde_json::Value = layers(file, env)?.try_deserialize()?;
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
        for provider in value["providers"].as_array_mut().into_iter().flatten() {
            for v in provider["headers"].as_object_mut().into_iter().flatten().map(|(_, v)| v) {
                *v = REDACTED.into();
            }
            if let Some(secret) = provider.get_mut("auth").and_then(|auth| auth.get_mut("client_secret")) {
                *secret = REDACTED.into();
            }
        }
        for mock in value["mock"]["providers"].as_array_mut().into_iter().flatten() {
            if let Some(secret) = mock.get_mut("auth").and_then(|auth| auth.get_mut("client_secret")) {
                *secret = REDACTED.into();
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

    /// Cross-field rules.
    pub fn validate(&self) -> Result<(), Error> {
        let fail = |msg: String| Err(Error::Invalid(msg));
        self.redis.validate().map_err(Error::Invalid)?;
        for (section, options) in [
            ("kafka.options", &self.kafka.options),
            ("kafka.producer_options", &self.kafka.producer_options),
            ("kafka.consumer_options", &self.kafka.consumer_options),
        ] {
            options.validate(section).map_err(Error::Invalid)?;
        }
        if !(0.0..1.0).contains(&self.cache.refresh_ahead) {
            return fail(format!(
                "cache.refresh_ahead ({}) must be at least 0.0 and below 1.0",
                self.cache.refresh_ahead
            ));
        }
        if let Some(ratio) = self.telemetry.sample_ratio
            && !(0.0..=1.0).contains(&ratio)
        {
            return fail(format!("telemetry.sample_ratio ({ratio}) must be between 0.0 and 1.0"));
        }
        if self.kafka.partitions < 1 {
            return fail("kafka.partitions must be at least 1".into());
        }
        if self.kafka.topic == self.kafka.dlq_topic {
            return fail("kafka.dlq_topic must differ from kafka.topic".into());
        }
        let ttls = [
            self.cache.l1_ttl,
            self.cache.ttl,
            self.cache.partial_ttl,
            self.cache.failed_ttl,
            self.cache.not_found_ttl,
        ];
        if ttls.iter().any(Duration::is_zero) {
            return fail("cache TTLs must be positive".into());
        }
        let p = &self.producer;
        if p.max_connections == 0 || p.max_streams_per_client == 0 || p.max_waiters_per_client == 0 {
            return fail(
                "producer.max_connections, max_streams_per_client and max_waiters_per_client must be at least 1".into(),
            );
        }
        if p.header_read_timeout.is_zero() {
            return fail("producer.header_read_timeout_ms must be positive".into());
        }
        // Quiet on purpose: a held request, and the gap between an event stream's keep-alives;
        // 5 s more, for a loaded machine and the network between.
        let quiet = p.max_wait.max(Duration::from_secs(15)) + Duration::from_secs(5);
        if p.idle_timeout < quiet {
            return fail(format!(
                "producer.idle_timeout_secs ({:?}) must be at least 5 s more than producer.max_wait_secs and an event stream's 15 s keep-alive ({quiet:?})",
                p.idle_timeout
            ));
        }
        if p.max_stream.is_zero() {
            return fail("producer.max_stream_secs must be at least 1".into());
        }
        if p.max_batch_ids == 0 {
            return fail("producer.max_batch_ids must be at least 1".into());
        }
        self.fx.configured().map_err(|e| Error::Invalid(format!("fx: {e}")))?;
        if self.fx.url().is_some() && self.fx.refresh.is_zero() {
            return fail("fx.refresh_secs must be at least 1".into());
        }
        if p.miss_rate_per_client.per_second == 0 || p.miss_rate_per_client.burst == 0 || p.max_publish_rate == 0 {
            return fail(
                "producer.miss_rate_per_client (per_second, burst) and producer.max_publish_rate must be at least 1"
                    .into(),
            );
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

/// IP addresses (a one-address network) or CIDR blocks.
fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| {
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| serde::de::Error::custom(format!("{text:?} is not an IP address or CIDR block")))
        })
        .collect()
}

/// Web origins, `scheme://host[:port]` with no path, lower-cased as browsers send them; or
/// `*` alone.
fn origins<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let origins = Vec::<String>::deserialize(d)?;
    if origins.iter().any(|o| o == "*") {
        return match origins.len() {
            1 => Ok(origins),
            _ => Err(serde::de::Error::custom("\"*\" (any origin) cannot be listed with others")),
        };
    }
    origins
        .into_iter()
        .map(|text| {
            let origin = text.trim().to_ascii_lowercase();
            let host = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
            match host {
                // As a browser sends it: ASCII (an international name in punycode), no path.
                Some(host)
                    if !host.is_empty()
                        && host.bytes().all(|b| b.is_ascii_graphic())
                        && !host.contains(['/', '?', '#', '@', '\\']) =>
                {
                    Ok(origin)
                }
                _ => Err(serde::de::Error::custom(format!(
                    "{text:?} is not an origin: scheme://host[:port], http or https, no path (or \"*\" alone)"
                ))),
            }
        })
        .collect()
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
    fn exchange_rates_come_from_the_file_and_the_environment_as_decimals() {
        let usd = Currency::parse("USD").unwrap();
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!((s.fx.base.as_str(), s.fx.rates[&usd].to_string(), s.fx.url()), ("EUR", "0.92".into(), None));
        // Env keys arrive lower-cased and values parsed as numbers: both come back as they were.
        let s = Settings::load_from(
            None,
            env(&[("PRICEFRONT__FX__RATES__USD", "0.9137"), ("PRICEFRONT__FX__RATES__JPY", "0.0061")]),
        )
        .unwrap();
        assert_eq!(s.fx.rates[&usd].to_string(), "0.9137");
        assert_eq!(s.fx.rates[&Currency::parse("JPY").unwrap()].to_string(), "0.0061");
        for (key, value) in [
            ("PRICEFRONT__FX__RATES__USD", "-1"),
            ("PRICEFRONT__FX__RATES__ZZZ", "1"),
            ("PRICEFRONT__FX__BASE", "XAU"),
            ("PRICEFRONT__FX__RATES__USD", "cheap"),
        ] {
            assert!(Settings::load_from(None, env(&[(key, value)])).is_err(), "{key}={value}");
        }
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

    /// Loads the defaults with one extra `[[providers]]` entry written in TOML.
    fn with_provider(toml: &str) -> Result<Settings, Error> {
        let dir = std::env::temp_dir().join(format!("pricefront-provider-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.toml");
        std::fs::write(&path, format!("[[providers]]\nname = \"x\"\n{toml}")).unwrap();
        let loaded = Settings::load_from(Some(&path), env(&[]));
        std::fs::remove_dir_all(dir).unwrap();
        loaded
    }

    #[test]
    fn a_real_api_source_loads_with_its_mapping() {
        let s = with_provider(
            r#"url = "https://api.example.com/search?gtin={product_id}&limit=1"
headers = { Authorization = "Bearer ${EBAY_TOKEN}", "X-Marketplace" = "EBAY_DE" }
[providers.response]
price = "/itemSummaries/0/price/value"
currency = "/itemSummaries/0/price/currency"
default_currency = "USD"
price_unit = "micros"
product_id = "/itemSummaries/0/gtin"
not_found = [404]
"#,
        )
        .unwrap();
        let p = &s.providers[0];
        assert_eq!(p.headers.len(), 2);
        let r = p.response();
        assert_eq!((r.price_unit, r.not_found.as_slice()), (PriceUnit::Micros, &[404][..]));
        assert_eq!(ProviderSettings::new("y", "http://h/{product_id}").response(), ResponseSettings::flat());
    }

    #[test]
    fn bad_sources_fail_at_load_naming_the_problem() {
        let cases = [
            ("url = \"https://h/no-id\"", "{product_id}"),
            ("url = \"https://h/{product_id}\"\nbody = \"{}\"", "body is for method = \"POST\" only"),
            ("url = \"https://h/{product_id}?k=${BAD-NAME}\"", "not a variable name"),
            ("url = \"https://h/{product_id}\"\nheaders = { \"Bad Name\" = \"v\" }", "header name"),
            (
                "url = \"https://h/{product_id}\"\n[providers.response]\nprice = \"items.0\"\ndefault_currency = \"EUR\"",
                "JSON Pointer",
            ),
            ("url = \"https://h/{product_id}\"\n[providers.response]\nprice = \"/p\"", "default_currency"),
            (
                "url = \"https://h/{product_id}\"\n[providers.response]\nprice = \"/p\"\ndefault_currency = \"EUR\"\nnot_found = [503]",
                "not a 4xx status",
            ),
            ("url = \"https://h/{product_id}\"\nmethod = \"PUT\"", "PUT"),
        ];
        for (toml, expected) in cases {
            let err = format!("{:#}", anyhow::Error::new(with_provider(toml).unwrap_err()));
            assert!(err.contains(expected), "{toml}: {err}");
        }
        let post = "url = \"https://h/q\"\nmethod = \"POST\"\nbody = '{\"ids\": [\"{product_id}\"]}'";
        assert!(with_provider(post).is_ok(), "the id may be in the body only");
    }

    #[test]
    fn marketplace_sources_load_with_auth_offers_and_a_quota() {
        let s = with_provider(
            r#"url = "https://api.example.com/search?gtin={product_id}"
[providers.auth]
kind = "oauth2_client_credentials"
token_url = "https://api.example.com/identity/v1/oauth2/token"
client_id = "${EBAY_CLIENT_ID}"
client_secret = "s3cret-literal"
scope = "https://api.ebay.com/oauth/api_scope"
[providers.quota]
per_second = 0.5
burst = 3
[providers.response]
items = "/itemSummaries"
match = { "/conditionId" = "1000", "/buyingOptions~10" = true }
select = "first"
price = "/price/value"
currency = "/price/currency"
offer_id = "/itemId"
offer_url = "/itemWebUrl"
"#,
        )
        .unwrap();
        let p = &s.providers[0];
        let r = p.response();
        assert_eq!(r.items.as_deref(), Some("/itemSummaries"));
        assert_eq!(r.select, Select::First);
        // Keys keep their case: they are pointers into a source's answer.
        assert_eq!(r.matches["/conditionId"], serde_json::json!("1000"));
        assert_eq!(r.matches["/buyingOptions~10"], serde_json::json!(true));
        assert_eq!(p.quota.unwrap().burst, 3);
        assert!(matches!(p.auth, Some(AuthSettings::Oauth2ClientCredentials { client_auth: ClientAuth::Basic, .. })));
        assert!(!format!("{s:?}").contains("s3cret-literal"), "Debug redacts the client secret");
        let shown = serde_json::to_string(p).unwrap();
        assert!(!shown.contains("s3cret-literal") && shown.contains(REDACTED), "{shown}");
    }

    #[test]
    fn a_bad_source_is_named_by_place_and_name() {
        let path = std::env::temp_dir().join(format!("pricefront-bad-{}.toml", uuid::Uuid::new_v4()));
        let quota = "[[providers]]\nname = \"fine\"\nurl = \"http://h/{product_id}\"\n[[providers]]\nname = \"quota\"\nurl = \"http://h/{product_id}\"\n[providers.quota]\nper_second = 0\n";
        std::fs::write(&path, quota).unwrap();
        let err = Settings::load_from(Some(&path), env(&[])).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains("providers[1] (quota): quota: per_second (0) must be"), "{err}");
        for (toml, expected) in [
            (
                "url = \"http://h/{product_id}\"\n[providers.response]\nprice = \"/a~2b\"\ndefault_currency = \"EUR\"",
                "~ must be followed by 0 or 1",
            ),
            (
                "url = \"http://h/{product_id}\"\n[providers.response]\nprice = \"/p\"\ndefault_currency = \"EUR\"\nmatch = { \"/c\" = \"NEW\" }",
                "set items",
            ),
            (
                "url = \"http://h/{product_id}\"\n[providers.response]\nitems = \"/i\"\nprice = \"/p\"\ndefault_currency = \"EUR\"\nmatch = { \"/c\" = [1] }",
                "only a string",
            ),
            (
                "url = \"http://h/{product_id}\"\n[providers.auth]\nkind = \"oauth2_client_credentials\"\ntoken_url = \"ftp://h\"\nclient_id = \"a\"\nclient_secret = \"b\"",
                "token_url",
            ),
            (
                "url = \"http://h/{product_id}\"\n[providers.auth]\nkind = \"jwt_bearer\"\nkey_file = \"k.json\"\nscope = \"s\"\nextra = 1",
                "extra",
            ),
            ("url = \"http://h/{product_id}\"\n[providers.auth]\nkind = \"basic\"", "basic"),
        ] {
            let err = format!("{:#}", anyhow::Error::new(with_provider(toml).unwrap_err()));
            assert!(err.contains(expected), "{toml}: {err}");
        }
        let leaky = "url = \"http://h/{product_id}\"\n[providers.auth]\nkind = \"oauth2_client_credentials\"\ntoken_url = \"http://h/t\"\nclient_id = \"a\"\nclient_secret = \"p${ss-w0rd\"";
        let err = format!("{:#}", anyhow::Error::new(with_provider(leaky).unwrap_err()));
        assert!(err.contains("client_secret") && !err.contains("w0rd"), "{err}");
        assert!(json_pointer("/a~0b~1c").is_ok() && json_pointer("").is_ok());
        assert!(json_pointer("/a~").is_err() && json_pointer("a").is_err());
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
    fn trusted_proxies_take_addresses_and_blocks() {
        let s = Settings::load_from(None, env(&[("PRICEFRONT__PRODUCER__TRUSTED_PROXIES", "127.0.0.1,10.0.0.0/8")]));
        assert_eq!(s.unwrap().producer.trusted_proxies.len(), 2, "a comma-separated list from env");
        let net: Result<Vec<ipnet::IpNet>, _> = networks(serde_json::json!(["10.0.0.0/8", "192.0.2.1", "::1"]));
        assert_eq!(net.unwrap().len(), 3);
        assert!(networks(serde_json::json!(["not-an-ip"])).is_err());
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
    fn cors_origins_are_origins() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert!(s.producer.cors_allow_origins.is_empty() && s.producer.demo_page, "none by default; the demo page on");
        let pairs = [("PRICEFRONT__PRODUCER__CORS_ALLOW_ORIGINS", "https://Shop.example,http://127.0.0.1:3000")];
        let s = Settings::load_from(None, env(&pairs)).unwrap();
        assert_eq!(
            s.producer.cors_allow_origins,
            ["https://shop.example", "http://127.0.0.1:3000"],
            "from env, lower-cased"
        );
        let any = origins(serde_json::json!(["*"])).unwrap();
        assert_eq!(any, ["*"]);
        for bad in [
            serde_json::json!(["*", "https://a.example"]),
            serde_json::json!(["shop.example"]),
            serde_json::json!(["https://a.example/"]),
            serde_json::json!(["ftp://a.example"]),
            serde_json::json!(["https://"]),
            serde_json::json!(["https://a.ex\u{7}"]),
            serde_json::json!(["https://bücher.example"]),
        ] {
            assert!(origins(bad.clone()).is_err(), "{bad}");
        }
        let err =
            Settings::load_from(None, env(&[("PRICEFRONT__PRODUCER__CORS_ALLOW_ORIGINS", "https://a.example/x")]));
        let err = format!("{:#}", anyhow::Error::new(err.unwrap_err()));
        assert!(err.contains("not an origin"), "{err}");
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

    /// Loads the defaults with `toml` layered over them.
    fn with_toml(toml: &str) -> Result<Settings, Error> {
        let dir = std::env::temp_dir().join(format!("pricefront-toml-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("o.toml");
        std::fs::write(&path, toml).unwrap();
        let loaded = Settings::load_from(Some(&path), env(&[]));
        std::fs::remove_dir_all(dir).unwrap();
        loaded
    }

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
    fn redis_urls_tls_files_and_cluster_nodes_are_checked_at_load() {
        let s = Settings::load_from(
            None,
            env(&[("PRICEFRONT__REDIS__CLUSTER_NODES", "redis://10.0.0.1:6379,redis://10.0.0.2:6379")]),
        )
        .unwrap();
        assert_eq!(s.redis.urls(), ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"]);
        let cases = [
            ("[redis]\nurl = \"http://h:6379\"", "must start with redis:// or rediss://"),
            ("[redis]\nca_file = \"/ca.pem\"", "need TLS"),
            ("[redis]\nurl = \"rediss://h:6379\"\nclient_cert = \"/c.pem\"", "go together"),
            ("[redis]\nkey_prefix = \"a{b}\"", "braces"),
            ("[redis]\ncluster_nodes = [\"redis://a:1\", \"rediss://b:1\"]", "same scheme"),
            ("[redis]\nurl = \"rediss://u:${PASS@h:6379\"", "unterminated"),
        ];
        for (toml, expected) in cases {
            let err = with_toml(toml).unwrap_err().to_string();
            assert!(err.contains(expected), "{toml}: {err}");
        }
        let ok = "[redis]\nurl = \"rediss://shop:${REDIS_PASSWORD}@h:6380\"\nca_file = \"/ca.pem\"\nclient_cert = \"/c.pem\"\nclient_key = \"/k.pem\"";
        assert!(format!("{:?}", with_toml(ok).unwrap().redis).contains("rediss://shop:<redacted>@h:6380"));
    }

    #[test]
    fn redis_url_passwords_are_redacted() {
        assert_eq!(redact_url("rediss://shop:s3cret@h:6380/0"), "rediss://shop:<redacted>@h:6380/0");
        assert_eq!(redact_url("redis://s3cret@h:6379"), "redis://<redacted>@h:6379");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact_url("redis://u:p@ss@h:1"), "redis://u:<redacted>@h:1");
        assert_eq!(redact_url("rediss://shop:s3cr/et+Q==@h:6380"), "rediss://shop:<redacted>@h:6380");
    }

    #[test]
    fn telemetry_sample_ratio_is_a_share() {
        let err = Settings::load_from(None, env(&[("PRICEFRONT__TELEMETRY__SAMPLE_RATIO", "1.5")])).unwrap_err();
        assert!(err.to_string().contains("telemetry.sample_ratio"), "{err}");
    }

    /// `config/examples/` for secured Kafka and Redis load (librdkafka accepts every property
    /// name and value), and the README shows each verbatim.
    #[test]
    fn connectivity_examples_load_and_the_readme_shows_them() {
        let readme = include_str!("../../README.md");
        for name in ["kafka-sasl-scram", "kafka-mtls", "redis-tls", "redis-cluster"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("config/examples/{name}.toml"));
            let settings = Settings::load_from(Some(&path), env(&[])).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert!(!format!("{settings:?}").contains("${REDIS_PASSWORD}@"), "{name}: the URL password is redacted");
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(readme.contains(text.trim()), "README.md shows config/examples/{name}.toml verbatim");
        }
    }
}
