//! One-off administration:
//! - `admin create-topics`: creates the request topic and its DLQ with `kafka.partitions` partitions.
//! - `admin get KEY`: prints one effective setting (after file and env layering), for scripts.

use std::process::ExitCode;

use anyhow::{Context, bail};
use pricefront::{observability, queue::admin, settings::Settings, shutdown};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::load_or_exit();
    shutdown::exit_code(run(settings).await)
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["create-topics"] => {
            observability::logs::init(&settings.log);
            admin::ensure_topics(&settings.kafka).await.context("creating topics")?;
            tracing::info!(topic = %settings.kafka.topic, dlq = %settings.kafka.dlq_topic, partitions = settings.kafka.partitions, "topics ready");
        }
        ["get", key] => println!("{}", get(&settings, key)?),
        _ => bail!("usage: admin create-topics | admin get KEY"),
    }
    Ok(())
}

fn get(s: &Settings, key: &str) -> anyhow::Result<String> {
    Ok(match key {
        "producer.listen" => s.producer.listen.to_string(),
        "mock.listen" => s.mock.listen.to_string(),
        "redis.url" => s.redis.url.clone(),
        "kafka.brokers" => s.kafka.brokers.clone(),
        "kafka.partitions" => s.kafka.partitions.to_string(),
        "kafka.topic" => s.kafka.topic.clone(),
        other => bail!("admin get: unsupported key {other:?}"),
    })
}
