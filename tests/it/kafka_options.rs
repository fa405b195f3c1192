//! `[kafka.options]`, `[kafka.producer_options]`, `[kafka.consumer_options]` reach librdkafka,
//! through the real binaries: its own verdict stops a process at start-up (exit 2) naming the
//! property, a missing `${NAME}` does too, and the consumer's effective configuration is logged
//! at debug level with secrets redacted.

use std::time::Duration;

use crate::helpers::{env, get, provider, wait_for};
use crate::secure_broker::SecureBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_ssl_ca_location_stops_both_binaries_with_librdkafkas_own_message() {
    let env = env().start().await;
    let config = env.config_with(
        "[kafka.options]\n\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"/nonexistent/pricefront-ca.pem\"",
    );
    let vars = [("PRICEFRONT_CONFIG", config.display().to_string())];
    for binary in [env!("CARGO_BIN_EXE_producer"), env!("CARGO_BIN_EXE_consumer")] {
        let (status, stderr) = env.run_to_exit(binary, &vars, Duration::from_secs(30)).await;
        assert_eq!(status.code(), Some(2), "{binary}: {stderr}");
        // librdkafka's words: "ssl.ca.location failed: error:…:x509 certificate routines::…"
        assert!(stderr.contains("ssl.ca.location failed"), "{binary}: {stderr}");
    }
    std::fs::remove_file(config).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_properties_refused_overrides_and_missing_variables_stop_the_process_naming_the_property() {
    let env = env().start().await;
    let cases = [
        ("[kafka.producer_options]\n\"linger.msec\" = \"1\"", "kafka.producer_options.\"linger.msec\""),
        ("[kafka.consumer_options]\n\"fetch.wait.max.ms\" = \"soon\"", "kafka.consumer_options.\"fetch.wait.max.ms\""),
        ("[kafka.consumer_options]\n\"enable.auto.offset.store\" = \"true\"", "cannot be overridden"),
        ("[kafka.options]\n\"sasl.password\" = \"${PF_TEST_UNSET_KAFKA_PASSWORD}\"", "kafka.options.\"sasl.password\""),
    ];
    for (toml, expected) in cases {
        let config = env.config_with(toml);
        let vars = [("PRICEFRONT_CONFIG", config.display().to_string())];
        let (status, stderr) = env.run_to_exit(env!("CARGO_BIN_EXE_consumer"), &vars, Duration::from_secs(30)).await;
        assert_eq!(status.code(), Some(2), "{toml}: {stderr}");
        assert!(stderr.contains(expected), "{toml}: {stderr}");
        std::fs::remove_file(config).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_options_show_in_the_consumers_effective_configuration_with_secrets_redacted() {
    let env = env().start().await;
    let secret = format!("s3cret-{}", uuid::Uuid::new_v4().simple());
    let config = env.config_with(
        "[kafka.options]\n\"sasl.username\" = \"shop\"\n\"sasl.password\" = \"${PF_TEST_KAFKA_PASSWORD}\"\n\
         [kafka.consumer_options]\n\"fetch.wait.max.ms\" = \"10\"\n[kafka.producer_options]\n\"linger.ms\" = \"1\"",
    );
    let vars = [
        ("PRICEFRONT_CONFIG", config.display().to_string()),
        ("PF_TEST_KAFKA_PASSWORD", secret.clone()),
        ("RUST_LOG", "info,pricefront::queue=debug,librdkafka=warn,rdkafka=warn".to_owned()),
    ];
    let consumer = env.spawn_consumer_process_with(&vars).await;
    let line = wait_for("the consumer's kafka configuration in its log", Duration::from_secs(30), || async {
        let log = std::fs::read_to_string(&consumer.log).unwrap_or_default();
        log.lines()
            .find(|l| l.contains("kafka client configuration") && l.contains("\"client\":\"consumer\""))
            .map(str::to_owned)
            .ok_or_else(|| format!("{} lines so far", log.lines().count()))
    })
    .await;
    assert!(line.contains("fetch.wait.max.ms=10"), "{line}");
    assert!(line.contains("sasl.username=shop"), "{line}");
    assert!(line.contains("sasl.password=<redacted>"), "{line}");
    assert!(line.contains("enable.auto.offset.store=false") && line.contains("group.id="), "ours too: {line}");
    assert!(!line.contains("linger.ms=1"), "producer options are the producer's: {line}");
    let log = std::fs::read_to_string(&consumer.log).unwrap();
    assert!(!log.contains(&secret), "the secret never reaches the log");
    std::fs::remove_file(config).unwrap();
}

/// The whole pipeline through a real TLS listener (socat terminating TLS, with client
/// certificates required, in front of a private tansu that advertises it): the real binaries
/// reach Kafka only through `[kafka.options]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_on_kafka_over_mutual_tls_configured_by_options_alone() {
    let broker = SecureBroker::start(true).await;
    let mut builder = env().providers(vec![provider("alpha", 20), provider("beta", 40)]);
    builder = builder.set("kafka", "brokers", &format!("{:?}", broker.brokers()));
    for (name, value) in broker.options() {
        builder = builder.set("kafka.options", &format!("{name:?}"), &format!("{value:?}"));
    }
    // Topics are created through TLS too (`admin::ensure_topics` with the same options).
    let env = builder.start().await;
    let _consumer = env.spawn_consumer_process().await;
    let producer = env.spawn_producer_process().await;

    let product = env.product("over-tls");
    let url = format!("{}/v1/prices/{product}", producer.base);
    assert_eq!(get(&env.http, &url).await.0, 202);
    let body = wait_for("the result over TLS", Duration::from_secs(60), || async {
        match get(&env.http, &url).await {
            (200, _, body) => Ok(body),
            (status, _, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
    assert_eq!(body["status"], "complete", "{body}");
}
