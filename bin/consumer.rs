//! A consumer-group member: fans each request out to the price APIs and caches the result.

use anyhow::Context;
use pricefront::{settings::Settings, shutdown, telemetry, worker::Worker};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("loading settings")?;
    telemetry::init(&settings.log);
    let worker = Worker::build(&settings).context("building the consumer")?;
    let shutdown = shutdown::on_signal().context("installing signal handlers")?;
    worker.run(shutdown).await;
    Ok(())
}
