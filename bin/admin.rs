//! One-off administration: `admin create-topics` creates the request topic and its DLQ.

use anyhow::{Context, bail};
use pricefront::{queue::admin, settings::Settings, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("loading settings")?;
    telemetry::init(&settings.log);
    match std::env::args().nth(1).as_deref() {
        Some("create-topics") => {
            admin::ensure_topics(&settings.kafka).await.context("creating topics")?;
            tracing::info!(topic = %settings.kafka.topic, dlq = %settings.kafka.dlq_topic, partitions = settings.kafka.partitions, "topics ready");
            Ok(())
        }
        _ => bail!("usage: admin create-topics"),
    }
}
