//! One test's isolated world: [`TestEnv`] (its names, settings, config file and mock price
//! APIs) and the builder that sets it up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use pricefront::cache::{Connection, Keys};
use pricefront::domain::{Currency, ProductId};
use pricefront::mock::{self, Mock};
use pricefront::queue::admin;
use pricefront::settings::{MockProviderSettings, ProviderSettings, Settings};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use toml::Table;

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
        overrides: Vec::new(),
        provider_options: BTreeMap::new(),
        mock_urls: Vec::new(),
    }
}

/// Builder for one test's isolated world. Its config is a TOML document built as data: the
/// price sources and the mock's from their own settings types, this test's names and the
/// test's overrides over them; [`Settings::load_from`] then reads it as any deployment's
/// (unknown keys refused, every rule checked), and the binaries read the same file.
pub struct TestEnvBuilder {
    providers: Vec<MockProviderSettings>,
    /// `[section] key = value` over the base, in order (a later one wins).
    overrides: Vec<(&'static str, Table)>,
    provider_options: BTreeMap<String, Table>,
    /// `[section] key = "http://<the mock>/<path>"`, set once the mock listens.
    mock_urls: Vec<(&'static str, String, String)>,
}

impl TestEnvBuilder {
    /// Sets `[section] key` to the URL of `path` on this test's mock (`/fx/eurofxref-daily.xml`).
    pub fn mock_url(mut self, section: &'static str, key: &str, path: &str) -> Self {
        self.mock_urls.push((section, key.into(), path.into()));
        self
    }

    /// Sets `[section] key = value` as the config file would say it: `section` may be dotted
    /// (`kafka.options`), `key` quoted (`"linger.ms"`), `value` is a TOML literal (`1500`, `"x"`).
    pub fn set(mut self, section: &'static str, key: &str, value: &str) -> Self {
        self.overrides.push((section, entry(key, value)));
        self
    }

    /// Sets a resilience key of one `[[providers]]` entry (`retries`, `breaker_failures`, …).
    pub fn provider_option(mut self, provider: &str, key: &str, value: &str) -> Self {
        self.provider_options.entry(provider.into()).or_default().extend(entry(key, value));
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

        // The price sources on this test's mock, as the real settings type writes them.
        let sources: Vec<ProviderSettings> = self
            .providers
            .iter()
            .map(|p| ProviderSettings::new(&p.name, &format!("http://{mock_addr}/{}/prices/{{product_id}}", p.name)))
            .collect();
        let mut config = Table::try_from(serde_json::json!({
            "producer": {
                "listen": "127.0.0.1:0",
                // The tests send all their traffic as one client: no limits unless a test sets them.
                "max_publish_rate": 1_000_000,
                "miss_rate_per_client": {"per_second": 1_000_000, "burst": 1_000_000},
            },
            "redis": {"url": redis_url(), "key_prefix": name},
            "kafka": {
                "brokers": brokers(),
                "topic": name,
                "dlq_topic": format!("{name}.dlq"),
                "group_id": format!("{name}-group"),
                "session_timeout_ms": 6000,
            },
            "consumer": {"drain_timeout_ms": 3000, "metrics_listen": "127.0.0.1:0"},
            "log": {"format": "json"},
            "mock": {"listen": "127.0.0.1:0"},
        }))
        .expect("test settings are a TOML document");
        // Straight to TOML, which leaves out what is `None` (JSON would say `null`).
        config.insert("providers".into(), toml::Value::try_from(&sources).expect("sources serialize"));
        // The mock's sources from their own settings type: every field the mock takes.
        let mock_sources = toml::Value::try_from(&self.providers).expect("mock settings serialize");
        config["mock"].as_table_mut().unwrap().insert("providers".into(), mock_sources);
        // A secret serializes redacted: the mock needs the real one.
        let tables = config["mock"]["providers"].as_array_mut().expect("a list");
        for (p, table) in self.providers.iter().zip(tables.iter_mut()) {
            if let Some(secret) = p.auth.as_ref().and_then(|a| a.client_secret.as_ref()) {
                table["auth"]["client_secret"] = toml::Value::String(secret.expose().to_owned());
            }
        }
        let tables = config["providers"].as_array_mut().expect("a list");
        for (p, table) in self.providers.iter().zip(tables.iter_mut()) {
            let table = table.as_table_mut().expect("a table");
            table.extend(self.provider_options.get(&p.name).cloned().unwrap_or_default());
        }
        let mock_urls = (self.mock_urls.into_iter()).map(|(section, key, path)| {
            (section, Table::from_iter([(key, format!("http://{mock_addr}{path}").into())]))
        });
        for (section, entries) in self.overrides.into_iter().chain(mock_urls) {
            let mut table = &mut config;
            for name in section.split('.') {
                let next = table.entry(name).or_insert_with(|| Table::new().into());
                table = next.as_table_mut().unwrap_or_else(|| panic!("[{section}]: {name} is not a table"));
            }
            table.extend(entries);
        }
        let toml = config.to_string();
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
    /// must see settings the test itself cannot start with). Text, not data: what it adds is
    /// mostly what the binaries must refuse (unknown librdkafka properties, a `${NAME}` that is
    /// not set), which no settings value can hold.
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

/// `key = value`, one line of TOML, read as TOML reads it.
fn entry(key: &str, value: &str) -> Table {
    format!("{key} = {value}").parse().unwrap_or_else(|e| panic!("`{key} = {value}` is not TOML: {e}"))
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
