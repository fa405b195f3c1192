//! One-off administration:
//! - `admin create-topics`: creates the request topic and its DLQ with `kafka.partitions` partitions.
//! - `admin get KEY`: prints one effective setting (after file and env layering), for scripts:
//!   one of a few top-level keys, or a price source's, `providers.NAME.FIELD[.FIELD…]` (e.g.
//!   `providers.ebay.response.price`), defaults filled in and header values `<redacted>`.

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
        // Password redacted; the scripts need only the host and port.
        "redis.url" => pricefront::settings::redact_url(&s.redis.url),
        "redis.key_prefix" => s.redis.key_prefix.clone(),
        "kafka.brokers" => s.kafka.brokers.clone(),
        "kafka.partitions" => s.kafka.partitions.to_string(),
        "kafka.topic" => s.kafka.topic.clone(),
        other if other.starts_with("providers.") => provider_setting(s, other)?,
        other => bail!("admin get: unsupported key {other:?}"),
    })
}

/// `providers.NAME.FIELD…`: strings print bare, anything else as JSON.
fn provider_setting(s: &Settings, key: &str) -> anyhow::Result<String> {
    let mut parts = key.split('.').skip(1);
    let name = parts.next().unwrap_or_default();
    let Some(provider) = s.providers.iter().find(|p| p.name == name) else {
        bail!("admin get: no provider named {name:?}");
    };
    let mut value = serde_json::to_value(provider)?;
    value["response"] = serde_json::to_value(provider.response())?;
    // Header values are where credentials live.
    if let Some(headers) = value["headers"].as_object_mut() {
        headers.values_mut().for_each(|v| *v = "<redacted>".into());
    }
    let mut at = &value;
    for part in parts {
        at = at.get(part).ok_or_else(|| anyhow::anyhow!("admin get: {key:?} is not a setting"))?;
    }
    Ok(match at {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    })
}
