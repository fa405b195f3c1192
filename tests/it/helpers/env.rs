//! One test's isolated world: [`TestEnv`] (its names, settings, config file and mock price
//! APIs) and the builder that sets it up.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use pricefront::cache::{Connection, Keys};
use pricefront::domain::{Currency, ProductId};
use pricefront::mock::{self, Mock};
use pricefront::queue::admin;
use pricefront::settings::{MockProviderSettings, Settings};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{brokers, redis_url};

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// A service account's JSON key, as Google issues it (a fresh RSA key), for a token endpoint at
/// `token_uri`; the caller removes the file.
pub fn service_account_key(token_uri: &str) -> PathBuf {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let json = serde_json::json!({"type": "service_account", "client_email": "pricefront@shop.iam.gserviceaccount.com",
        "private_key_id": "k1", "private_key": key.serialize_pem(), "token_uri": token_uri});
    let path = std::env::temp_dir().join(format!("service-account-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

/// A mock price API with a fixed latency and no faults.
pub fn provider(name: &str, latency_ms: u64) -> MockProviderSettings {
    MockProviderSettings::new(name, latency_ms, Currency::parse("EUR").unwrap())
}

pub fn env() -> TestEnvBuilder {
    TestEnvBuilder {
        providers: vec![provider("alpha", 20), provider("beta", 40), provider("gamma", 60)],
        overrides: BTreeMap::new(),
        provider_options: BTreeMap::new(),
        mock_urls: Vec::new(),
    }
}

/// Builder for one test's isolated world.
pub struct TestEnvBuilder {
    providers: Vec<MockProviderSettings>,
    overrides: BTreeMap<&'static str, Vec<(String, String)>>,
    provider_options: BTreeMap<String, Vec<(String, String)>>,
    /// `[section] key = "http://<the mock>/<path>"`, set once the mock listens.
    mock_urls: Vec<(&'static str, String, String)>,
}

impl TestEnvBuilder {
    /// Sets `[section] key` to the URL of `path` on this test's mock (`/fx/eurofxref-daily.xml`).
    pub fn mock_url(mut self, section: &'static str, key: &str, path: &str) -> Self {
        self.mock_urls.push((section, key.into(), path.into()));
        self
    }

    /// Sets `[section] key = value`; `value` is a TOML literal (`1500`, `"x"`).
    pub fn set(mut self, section: &'static str, key: &str, value: &str) -> Self {
        let entries = self.overrides.entry(section).or_default();
        entries.retain(|(k, _)| k != key);
        entries.push((key.into(), value.into()));
        self
    }

    /// Sets a resilience key of one `[[providers]]` entry (`retries`, `breaker_failures`, …).
    pub fn provider_option(mut self, provider: &str, key: &str, value: &str) -> Self {
        self.provider_options.entry(provider.into()).or_default().push((key.into(), value.into()));
        self
    }

    pub fn providers(mut self, providers: Vec<MockProviderSettings>) -> Self {
        self.providers = providers;
        self
    }

    pub async fn start(self) -> TestEnv {
        init_tracing();
        let name = format!("it-{}", uuid::Uuid::new_v4().simple());

        let mock_shutdown = CancellationToken::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mock_addr = listener.local_addr().unwrap();
        let mock = Mock::new(&self.providers).expect("valid mock providers");
        tokio::spawn(mock::serve(listener, mock, mock_shutdown.clone()));

        let mut base: BTreeMap<&'static str, Vec<(String, String)>> = BTreeMap::new();
        let mut put =
            |section, key: &str, value: String| base.entry(section).or_default().push((key.to_owned(), value));
        put("producer", "listen", "\"127.0.0.1:0\"".into());
        put("redis", "url", format!("{:?}", redis_url()));
        put("redis", "key_prefix", format!("{name:?}"));
        put("kafka", "brokers", format!("{:?}", brokers()));
        put("kafka", "topic", format!("{name:?}"));
        put("kafka", "dlq_topic", format!("\"{name}.dlq\""));
        put("kafka", "group_id", format!("\"{name}-group\""));
        put("kafka", "session_timeout_ms", "6000".into());
        put("consumer", "drain_timeout_ms", "3000".into());
        put("consumer", "metrics_listen", "\"127.0.0.1:0\"".into());
        put("log", "format", "\"json\"".into());
        put("mock", "listen", "\"127.0.0.1:0\"".into());
        // The tests send all their traffic as one client: no limits unless a test sets them.
        put("producer.miss_rate_per_client", "per_second", "1000000".into());
        put("producer.miss_rate_per_client", "burst", "1000000".into());
        put("producer", "max_publish_rate", "1000000".into());
        let mut overrides = self.overrides;
        for (section, key, path) in self.mock_urls {
            overrides.entry(section).or_default().push((key, format!("\"http://{mock_addr}{path}\"")));
        }
        for (section, entries) in overrides {
            for (key, value) in entries {
                let list = base.entry(section).or_default();
                list.retain(|(k, _)| *k != key);
                list.push((key, value));
            }
        }
        let mut toml = String::new();
        for (section, entries) in &base {
            writeln!(toml, "[{section}]").unwrap();
            for (key, value) in entries {
                writeln!(toml, "{key} = {value}").unwrap();
            }
        }
        for p in &self.providers {
            writeln!(
                toml,
                "[[providers]]\nname = {:?}\nurl = \"http://{mock_addr}/{}/prices/{{product_id}}\"",
                p.name, p.name
            )
            .unwrap();
            for (key, value) in self.provider_options.get(&p.name).into_iter().flatten() {
                writeln!(toml, "{key} = {value}").unwrap();
            }
        }
        // The mock's sources from their own settings type: every field the mock takes.
        #[derive(serde::Serialize)]
        struct Doc<'a> {
            mock: Sources<'a>,
        }
        #[derive(serde::Serialize)]
        struct Sources<'a> {
            providers: &'a [MockProviderSettings],
        }
        let mut mock = ::toml::Value::try_from(Doc { mock: Sources { providers: &self.providers } })
            .expect("mock settings serialize");
        // A secret serializes redacted: the mock needs the real one.
        let tables = mock["mock"]["providers"].as_array_mut().expect("a list");
        for (p, table) in self.providers.iter().zip(tables.iter_mut()) {
            if let Some(secret) = p.auth.as_ref().and_then(|a| a.client_secret.as_ref()) {
                table["auth"]["client_secret"] = ::toml::Value::String(secret.expose().to_owned());
            }
        }
        toml.push_str(&::toml::to_string(&mock).expect("mock settings serialize"));
        let config_path = std::env::temp_dir().join(format!("{name}.toml"));
        std::fs::write(&config_path, &toml).unwrap();
        let settings = Settings::load_from(Some(&config_path), Some(Default::default()))
            .unwrap_or_else(|e| panic!("test settings: {e}\n{toml}"));
        admin::ensure_topics(&settings.kafka).await.expect("create topics");

        // The library's own connection, so a test on TLS Redis or a cluster reads it too.
        let redis = Connection::lazy(&settings.redis).expect("redis settings");
        TestEnv { name, settings, config_path, mock_addr, http: reqwest::Client::new(), redis, mock_shutdown }
    }
}

pub struct TestEnv {
    pub name: String,
    pub settings: Settings,
    pub config_path: PathBuf,
    pub mock_addr: SocketAddr,
    pub http: reqwest::Client,
    pub redis: Connection,
    mock_shutdown: CancellationToken,
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.mock_shutdown.cancel();
        let _ = std::fs::remove_file(&self.config_path);
    }
}

impl TestEnv {
    pub fn product(&self, tag: &str) -> String {
        format!("{tag}-{}", &self.name[3..15])
    }

    /// This test's Redis key scheme: the library's own, under its key prefix.
    pub fn keys(&self) -> Keys {
        Keys::new(self.settings.redis.key_prefix.clone())
    }

    pub fn result_key(&self, product: &str) -> String {
        self.keys().result(&product_id(product))
    }

    pub fn pending_key(&self, product: &str) -> String {
        self.keys().pending(&product_id(product))
    }

    /// This test's config file with `extra` TOML appended, as a new file (for a process that
    /// must see settings the test itself cannot start with).
    pub fn config_with(&self, extra: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("{}-{}.toml", self.name, uuid::Uuid::new_v4().simple()));
        let base = std::fs::read_to_string(&self.config_path).unwrap();
        std::fs::write(&path, format!("{base}\n{extra}\n")).unwrap();
        path
    }

    /// The mock's `/_stats`.
    pub async fn mock_stats(&self) -> Value {
        self.http.get(format!("http://{}/_stats", self.mock_addr)).send().await.unwrap().json().await.unwrap()
    }

    pub async fn set_faults(&self, provider: &str, faults: Value) {
        let res =
            self.http.put(format!("http://{}/_faults/{provider}", self.mock_addr)).json(&faults).send().await.unwrap();
        assert_eq!(res.status(), 204);
    }

    /// Calls per provider for one product.
    pub async fn calls_for(&self, product: &str) -> BTreeMap<String, u64> {
        let stats = self.mock_stats().await;
        stats["providers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, s)| (name.clone(), s["by_product"][product].as_u64().unwrap_or(0)))
            .collect()
    }
}

/// `product` as the library's validated id (a test's products are valid ids).
pub fn product_id(product: &str) -> ProductId {
    ProductId::parse(product).unwrap_or_else(|e| panic!("{product:?}: {e}"))
}

/// Products some provider was called for more than once (each call is one computation when
/// the provider has no faults, so no retries).
pub fn computed_twice(stats: &Value, provider: &str) -> usize {
    stats["providers"][provider]["by_product"].as_object().unwrap().values().filter(|n| n.as_u64().unwrap() > 1).count()
}
