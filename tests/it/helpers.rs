//! Test harness: every test gets its own Redis key prefix, topic, DLQ topic and consumer
//! group, its own mock price APIs on port 0, and spawns the real services (in-process on
//! port 0, or as processes where a test must kill one) against the real Redis and broker.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures::future::join_all;
use pricefront::api::{self, AppState};
use pricefront::cache::Connection;
use pricefront::domain::Currency;
use pricefront::mock::{self, Mock};
use pricefront::queue::admin;
use pricefront::settings::{MockProviderSettings, Settings};
use pricefront::worker::Worker;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub fn brokers() -> String {
    through_the_script();
    std::env::var("PRICEFRONT__KAFKA__BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn redis_url() -> String {
    through_the_script();
    std::env::var("PRICEFRONT__REDIS__URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Plain `cargo test` has no services: say so, rather than time out against whatever answers
/// on the default ports.
fn through_the_script() {
    if std::env::var_os("PRICEFRONT_TEST_TANSU").is_none() {
        panic!(
            "the integration suite needs the Redis and broker that scripts/test.sh starts and names; \
             run `scripts/test.sh` (all of it) or `scripts/test.sh --test it -- <filter>`. \
             `cargo test --lib --bins` runs the unit tests alone"
        );
    }
}

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

/// Polls `check` until it yields `Ok`, or fails after `deadline` with the last thing seen.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let seen = match check().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if started.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}; last seen: {seen}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

    pub fn result_key(&self, product: &str) -> String {
        format!("{}:result:{{{product}}}", self.settings.redis.key_prefix)
    }

    pub fn pending_key(&self, product: &str) -> String {
        format!("{}:pending:{{{product}}}", self.settings.redis.key_prefix)
    }

    /// Starts a producer and waits until `/readyz` says Redis and the topic are there, as a
    /// load balancer would before sending it traffic.
    pub async fn spawn_producer(&self) -> ProducerHandle {
        let producer = spawn_producer(&self.settings).await;
        producer.wait_ready(&self.http).await;
        producer
    }

    pub fn spawn_consumer(&self) -> ConsumerHandle {
        spawn_consumer(&self.settings)
    }

    /// Starts the real `consumer` binary with this test's config, capturing its JSON logs;
    /// its `/metrics` on a port of its own.
    pub fn spawn_consumer_process(&self) -> ConsumerProcess {
        self.spawn_consumer_process_with(&[])
    }

    /// [`Self::spawn_consumer_process`] with more environment (which wins over ours).
    pub fn spawn_consumer_process_with(&self, env: &[(&str, String)]) -> ConsumerProcess {
        let port = free_port();
        let mut vars = vec![("PRICEFRONT__CONSUMER__METRICS_LISTEN", format!("127.0.0.1:{port}"))];
        vars.extend(env.iter().cloned());
        let (child, log) = self.spawn_binary(env!("CARGO_BIN_EXE_consumer"), &vars, None);
        ConsumerProcess { child, metrics: format!("http://127.0.0.1:{port}/metrics"), log }
    }

    /// [`Self::spawn_consumer_process`] with its wall clock shifted by `offset` (`+3s`, `-3s`,
    /// through libfaketime), for a clock that disagrees with Redis's.
    pub fn spawn_consumer_process_shifted(&self, offset: &str) -> ConsumerProcess {
        let port = free_port();
        let vars = [("PRICEFRONT__CONSUMER__METRICS_LISTEN", format!("127.0.0.1:{port}"))];
        let (child, log) = self.spawn_binary(env!("CARGO_BIN_EXE_consumer"), &vars, Some(offset));
        ConsumerProcess { child, metrics: format!("http://127.0.0.1:{port}/metrics"), log }
    }

    /// Starts the real `producer` binary with this test's config on a port of its own, and
    /// waits until it is ready.
    pub async fn spawn_producer_process(&self) -> ProducerProcess {
        self.spawn_producer_process_with(&[]).await
    }

    /// [`Self::spawn_producer_process`] with more environment (which wins over ours). It
    /// binds port 0 for both listeners (unless `env` names them) and says in its log which
    /// ports it got: no port is picked here and freed for it, which another process may take.
    pub async fn spawn_producer_process_with(&self, env: &[(&str, String)]) -> ProducerProcess {
        let mut vars = vec![
            ("PRICEFRONT__PRODUCER__LISTEN", "127.0.0.1:0".to_owned()),
            ("PRICEFRONT__PRODUCER__OPS_LISTEN", "127.0.0.1:0".to_owned()),
        ];
        vars.extend(env.iter().cloned());
        let (child, log) = self.spawn_binary(env!("CARGO_BIN_EXE_producer"), &vars, None);
        let [listen, ops] = logged_addresses(&log, "producer listening", ["listen", "ops"]).await;
        let producer = ProducerProcess { child, base: format!("http://{listen}"), ops: format!("http://{ops}"), log };
        let url = format!("{}/readyz", producer.base);
        wait_for("the producer process to be ready", Duration::from_secs(60), || async {
            match self.http.get(&url).send().await {
                Ok(res) if res.status() == 200 => Ok(()),
                Ok(res) => Err(res.status().to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        producer
    }

    /// This test's config file with `extra` TOML appended, as a new file (for a process that
    /// must see settings the test itself cannot start with).
    pub fn config_with(&self, extra: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("{}-{}.toml", self.name, uuid::Uuid::new_v4().simple()));
        let base = std::fs::read_to_string(&self.config_path).unwrap();
        std::fs::write(&path, format!("{base}\n{extra}\n")).unwrap();
        path
    }

    /// Runs `binary` like [`Self::spawn_binary`] until it exits by itself (a start-up
    /// failure), within `deadline`; its status and stderr.
    pub async fn run_to_exit(&self, binary: &str, env: &[(&str, String)], deadline: Duration) -> (ExitStatus, String) {
        let mut command = tokio::process::Command::new(binary);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("PRICEFRONT")) {
            command.env_remove(key);
        }
        command
            .env("PRICEFRONT_CONFIG", &self.config_path)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let output = tokio::time::timeout(deadline, command.output())
            .await
            .unwrap_or_else(|_| panic!("{binary} still running after {deadline:?}"))
            .unwrap();
        (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
    }

    /// Runs `binary` with this test's config file and only `env` besides (which wins over
    /// ours); its JSON logs go to a file named after the test in the temp directory (printed
    /// if the test fails), whose path is returned with the child.
    fn spawn_binary(&self, binary: &str, env: &[(&str, String)], clock: Option<&str>) -> (Child, PathBuf) {
        let mut command = Command::new(binary);
        if let Some(offset) = clock {
            // libfaketime preloaded into the binary itself (not the `faketime` wrapper, whose
            // child would outlive a kill), shifting the wall clock only: a shifted monotonic
            // clock makes the runtime's timers spin.
            let library = std::env::var("PRICEFRONT_TEST_LIBFAKETIME")
                .expect("PRICEFRONT_TEST_LIBFAKETIME: scripts/test.sh names libfaketime.so.1");
            command.env("LD_PRELOAD", library).env("FAKETIME", offset).env("DONT_FAKE_MONOTONIC", "1");
        }
        // Only this test's config file (and `env`) may configure it.
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("PRICEFRONT")) {
            command.env_remove(key);
        }
        let name = std::path::Path::new(binary).file_name().unwrap().to_string_lossy().into_owned();
        let log = std::env::temp_dir().join(format!("{}-{name}-{}.log", self.name, uuid::Uuid::new_v4().simple()));
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .env("PRICEFRONT_CONFIG", &self.config_path)
            .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(file)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {binary}: {e}"));
        eprintln!("{name} (pid {}) logs to {}", child.id(), log.display());
        (child, log)
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

    /// The comparison stored at `product`'s result key (its JSON, after the `#pf1 …` header,
    /// which must agree with it), or `None`.
    pub async fn stored_result(&self, product: &str) -> Option<Value> {
        Some(result_json(&self.redis_get(&self.result_key(product)).await?))
    }

    pub async fn redis_get(&self, key: &str) -> Option<String> {
        redis::cmd("GET").arg(key).query_async(&mut self.redis.clone()).await.unwrap()
    }

    /// Checks the price guarantee of a stored result, `PTTL <= expires_at - now` (with `now`
    /// taken before the read), and returns the result; `None` if nothing is stored.
    pub async fn assert_stored_within_guarantee(&self, product: &str) -> Option<Value> {
        let key = self.result_key(product);
        let now = time::OffsetDateTime::now_utc();
        let (body, pttl): (Option<String>, i64) =
            redis::pipe().get(&key).pttl(&key).query_async(&mut self.redis.clone()).await.unwrap();
        let body = result_json(&body?);
        let left = guarantee_left_ms(&body, now);
        // PTTL is whole milliseconds; expires_at has sub-millisecond precision.
        assert!(i128::from(pttl) <= left + 1, "{key}: Redis keeps it {pttl} ms, the guarantee has {left} ms left");
        Some(body)
    }

    pub async fn redis_del(&self, key: &str) {
        redis::cmd("DEL").arg(key).query_async::<i64>(&mut self.redis.clone()).await.unwrap();
    }

    /// Waits until the result for `product` is in Redis and returns it.
    pub async fn wait_result(&self, product: &str, deadline: Duration) -> Value {
        let key = self.result_key(product);
        wait_for(&format!("result for {product}"), deadline, || async {
            match self.redis_get(&key).await {
                Some(body) => Ok(result_json(&body)),
                None => Err("no result key".into()),
            }
        })
        .await
    }

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

pub struct ProducerHandle {
    pub base: String,
    /// Its ops routes (`/metrics`, `/readyz` with details).
    pub ops: String,
    shutdown: CancellationToken,
    join: JoinHandle<std::io::Result<()>>,
}

impl ProducerHandle {
    pub async fn wait_ready(&self, http: &reqwest::Client) {
        let url = format!("{}/readyz", self.base);
        wait_for("producer readiness", Duration::from_secs(30), || async {
            match get(http, &url).await {
                (200, _, _) => Ok(()),
                (status, _, body) => Err(format!("{status} {body}")),
            }
        })
        .await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.join.await.unwrap().unwrap();
    }
}

pub async fn spawn_producer(settings: &Settings) -> ProducerHandle {
    let state = AppState::build(settings).expect("build producer");
    let listener = TcpListener::bind(settings.producer.listen).await.unwrap();
    let ops = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, ops_addr) = (listener.local_addr().unwrap(), ops.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(api::serve_ops(ops, state.clone(), shutdown.clone()));
    let join = tokio::spawn(api::serve(listener, state, shutdown.clone()));
    ProducerHandle { base: format!("http://{addr}"), ops: format!("http://{ops_addr}"), shutdown, join }
}

pub struct ConsumerHandle {
    shutdown: CancellationToken,
    join: JoinHandle<Result<(), pricefront::worker::QueueClosed>>,
}

impl ConsumerHandle {
    /// Graceful stop: drain, commit, leave the group.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.join.await.unwrap().expect("the consumer stopped only because it was asked to");
    }
}

pub fn spawn_consumer(settings: &Settings) -> ConsumerHandle {
    let worker = Worker::build(settings).expect("build consumer");
    let shutdown = CancellationToken::new();
    let join = tokio::spawn(worker.run(shutdown.clone()));
    ConsumerHandle { shutdown, join }
}

pub struct ConsumerProcess {
    pub child: Child,
    /// Its `/metrics` URL.
    pub metrics: String,
    /// Its JSON logs.
    pub log: PathBuf,
}

impl ConsumerProcess {
    /// The partitions this process holds now, from its `pricefront_partition_assigned` gauge
    /// (empty while it is not up yet).
    pub async fn assigned(&self, http: &reqwest::Client) -> Vec<i64> {
        let Ok(res) = http.get(&self.metrics).send().await else { return Vec::new() };
        let text = res.text().await.unwrap_or_default();
        text.lines()
            .filter_map(|line| line.strip_prefix("pricefront_partition_assigned{partition=\""))
            .filter_map(|rest| rest.split_once("\"} "))
            .filter(|(_, value)| value.trim() == "1")
            .filter_map(|(partition, _)| partition.parse().ok())
            .collect()
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }

    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }
}

impl Drop for ConsumerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `producer` binary, killed on drop.
pub struct ProducerProcess {
    pub child: Child,
    pub base: String,
    /// Its ops routes (`/metrics`, `/readyz` with details).
    pub ops: String,
    /// Its JSON logs.
    pub log: PathBuf,
}

impl Drop for ProducerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The comparison in a stored result value: `#pf1 <computed_at ms> <expires_at ms> <status>
/// <etag>\n<json>`, checking that the header says what the JSON does.
pub fn result_json(value: &str) -> Value {
    let (header, json) = value.split_once('\n').unwrap_or_else(|| panic!("no header line: {value}"));
    let body: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let words: Vec<&str> = header.split(' ').collect();
    assert_eq!(words.len(), 5, "{header}");
    assert_eq!(words[0], "#pf1", "{header}");
    let ms = |field: &str| {
        let t =
            time::OffsetDateTime::parse(body[field].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
                .unwrap();
        ((t.unix_timestamp_nanos() / 1_000_000) as i64).to_string()
    };
    assert_eq!((words[1], words[2]), (ms("computed_at").as_str(), ms("expires_at").as_str()), "{header}");
    assert_eq!(words[3], body["status"].as_str().unwrap(), "{header}");
    body
}

/// The `max-age` directive of a response's `Cache-Control`.
pub fn max_age(headers: &reqwest::header::HeaderMap) -> u64 {
    let value = headers["cache-control"].to_str().unwrap();
    value
        .split(',')
        .find_map(|d| d.trim().strip_prefix("max-age="))
        .unwrap_or_else(|| panic!("no max-age in {value}"))
        .parse()
        .unwrap()
}

/// GET with the status, headers and JSON body.
pub async fn get(http: &reqwest::Client, url: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let res = http.get(url).send().await.unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    let body = res.bytes().await.unwrap();
    (status, headers, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// The addresses a child process logged it listens on: the `fields` of the first line of its
/// JSON log whose message is `message` (the binaries log what they bound, port 0 included).
pub async fn logged_addresses<const N: usize>(log: &Path, message: &str, fields: [&str; N]) -> [String; N] {
    wait_for(&format!("{message:?} in {}", log.display()), Duration::from_secs(60), || async {
        let text = std::fs::read_to_string(log).map_err(|e| e.to_string())?;
        let line = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| line["message"] == message)
            .ok_or_else(|| format!("no {message:?} line yet"))?;
        let field = |name: &str| line[name].as_str().map(str::to_owned).ok_or_else(|| format!("no {name} in {line}"));
        let mut out = Vec::with_capacity(N);
        for name in fields {
            out.push(field(name)?);
        }
        Ok(out.try_into().expect("N fields"))
    })
    .await
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until the consumer group computes a first product through the producer at `base` (a
/// fresh group takes seconds to get its first message), so a test times the miss path, not
/// the join.
pub async fn warm_up(env: &TestEnv, base: &str) {
    let url = format!("{base}/v1/prices/{}", env.product("warm-up"));
    wait_for("the consumer to compute a first product", Duration::from_secs(60), || async {
        match get(&env.http, &url).await.0 {
            200 => Ok(()),
            status => Err(status.to_string()),
        }
    })
    .await;
}

/// A producer and a consumer in process on a private `redis-server` of their own (to stop and
/// restart while they work), warmed up.
pub async fn on_private_redis(env: &TestEnv) -> (RedisServer, ProducerHandle, ConsumerHandle) {
    let (redis, settings, producer) = producer_on_private_redis(env).await;
    let consumer = spawn_consumer(&settings);
    warm_up(env, &producer.base).await;
    (redis, producer, consumer)
}

/// A private `redis-server`, the test's settings pointed at it, and a ready in-process producer
/// on them.
pub async fn producer_on_private_redis(env: &TestEnv) -> (RedisServer, Settings, ProducerHandle) {
    let redis = RedisServer::start(&[]).await;
    let mut settings = env.settings.clone();
    settings.redis.url = redis.url();
    let producer = spawn_producer(&settings).await;
    producer.wait_ready(&env.http).await;
    (redis, settings, producer)
}

/// A private `redis-server` on a free port, killed on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    pub async fn start(extra_args: &[&str]) -> Self {
        Self::start_on(free_port(), extra_args).await
    }

    pub async fn start_on(port: u16, extra_args: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra_args)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let server = Self { child, port };
        let client = redis::Client::open(server.url()).unwrap();
        wait_for("a private redis-server", Duration::from_secs(10), || async {
            client.get_multiplexed_async_connection().await.map(drop).map_err(|e| e.to_string())
        })
        .await;
        server
    }

    /// Stops this server after `after`, keeps it down for `down`, then starts an empty one on
    /// the same port.
    pub async fn bounce(self, after: Duration, down: Duration) -> RedisServer {
        let port = self.port;
        tokio::time::sleep(after).await;
        drop(self);
        tokio::time::sleep(down).await;
        RedisServer::start_on(port, &[]).await
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops (`SIGSTOP`) or resumes (`SIGCONT`) the server: stopped, its connections stay open
    /// and nothing on them is answered, as with a host gone silent.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status().expect("kill on PATH");
        assert!(status.success(), "kill {signal}");
    }

    /// Runs one command with `redis-cli` against this server; its output.
    pub fn redis_cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli on PATH");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests every product once through the producer, `concurrency` at a time; returns the
/// products that were accepted (202) or already served (200).
pub async fn request_all(http: &reqwest::Client, base: &str, products: &[String], concurrency: usize) -> Vec<String> {
    use futures::StreamExt;
    futures::stream::iter(products.iter().cloned())
        .map(|p| async move {
            let status = http.get(format!("{base}/v1/prices/{p}")).send().await.map(|r| r.status().as_u16());
            (p, status)
        })
        .buffer_unordered(concurrency)
        .filter_map(|(p, status)| async move { matches!(status, Ok(200 | 202)).then_some(p) })
        .collect()
        .await
}

/// Products among `products` with no result yet in the Redis behind `conn` (one server or a
/// cluster: one `GET` per key, as the keys' slots differ).
pub async fn missing_results<C>(conn: &C, key_prefix: &str, products: &[String]) -> Vec<String>
where
    C: redis::aio::ConnectionLike + Clone + Send,
{
    let mut missing = Vec::new();
    for chunk in products.chunks(200) {
        let values = futures::future::join_all(chunk.iter().map(|p| {
            let mut conn = conn.clone();
            let key = format!("{key_prefix}:result:{{{p}}}");
            async move { redis::cmd("EXISTS").arg(key).query_async::<bool>(&mut conn).await.unwrap() }
        }))
        .await;
        missing.extend(chunk.iter().zip(values).filter(|(_, exists)| !exists).map(|(p, _)| p.clone()));
    }
    missing
}

/// Waits until every product has a result in the Redis behind `conn`.
pub async fn wait_all_results_in<C>(conn: &C, key_prefix: &str, products: &[String], deadline: Duration)
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync,
{
    wait_for(&format!("results for {} products", products.len()), deadline, || async {
        let missing = missing_results(conn, key_prefix, products).await;
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("{} missing, e.g. {:?}", missing.len(), &missing[..missing.len().min(3)]))
        }
    })
    .await
}

/// Waits until every product has a result in the test's Redis.
pub async fn wait_all_results(env: &TestEnv, products: &[String], deadline: Duration) {
    wait_all_results_in(&env.redis, &env.settings.redis.key_prefix, products, deadline).await
}

/// Products some provider was called for more than once (each call is one computation when
/// the provider has no faults, so no retries).
pub fn computed_twice(stats: &Value, provider: &str) -> usize {
    stats["providers"][provider]["by_product"].as_object().unwrap().values().filter(|n| n.as_u64().unwrap() > 1).count()
}

/// Waits until the DLQ holds a message keyed `key`; returns it with its headers as strings.
pub async fn dead_letter_for(env: &TestEnv, key: &str) -> (OwnedMessage, std::collections::HashMap<String, String>) {
    message_on(env, &env.settings.kafka.dlq_topic, key).await
}

/// The first message keyed `key` on `topic` (waiting for one), with its headers.
pub async fn message_on(
    env: &TestEnv,
    topic: &str,
    key: &str,
) -> (OwnedMessage, std::collections::HashMap<String, String>) {
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

/// Waits until every consumer process holds at least one partition; returns what each holds.
pub async fn wait_all_assigned(http: &reqwest::Client, consumers: &[&ConsumerProcess]) -> Vec<Vec<i64>> {
    wait_for("every consumer to hold partitions", Duration::from_secs(60), || async {
        let held: Vec<Vec<i64>> = join_all(consumers.iter().map(|c| c.assigned(http))).await;
        if held.iter().all(|h| !h.is_empty()) { Ok(held) } else { Err(format!("{held:?}")) }
    })
    .await
}

/// A private tansu broker (in-memory storage) on its own port, killed on drop. Tests that
/// stop or restart a broker use one, never the shared broker.
pub struct Broker {
    child: Child,
    pub port: u16,
}

impl Broker {
    pub async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    pub async fn start_on(port: u16) -> Self {
        let tansu = std::env::var("PRICEFRONT_TEST_TANSU")
            .expect("PRICEFRONT_TEST_TANSU must name the tansu binary (scripts/test.sh sets it)");
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        wait_for("a private broker", Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map(drop).map_err(|e| e.to_string())
        })
        .await;
        Self { child, port }
    }

    /// `kafka.brokers` for it, as a TOML string literal.
    pub fn toml(&self) -> String {
        format!("\"127.0.0.1:{}\"", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Milliseconds from `now` until the comparison's `expires_at` (negative once passed).
pub fn guarantee_left_ms(comparison: &Value, now: time::OffsetDateTime) -> i128 {
    let expires_at = comparison["expires_at"].as_str().unwrap();
    let expires_at = time::OffsetDateTime::parse(expires_at, &time::format_description::well_known::Rfc3339).unwrap();
    (expires_at - now).whole_milliseconds()
}

/// `expires_at - computed_at` in seconds.
pub fn guarantee_window(comparison: &serde_json::Value) -> i64 {
    let at = |field: &str| {
        let text = comparison[field].as_str().unwrap();
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
    };
    (at("expires_at") - at("computed_at")).whole_seconds()
}
