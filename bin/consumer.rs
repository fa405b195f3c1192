//! A consumer-group member: fans each request out to the price APIs and caches the result.

use anyhow::Context;
use pricefront::{observability, settings::Settings, shutdown, telemetry, worker::Worker};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("loading settings")?;
    telemetry::init(&settings.log);
    let worker = Worker::build(&settings).context("building the consumer")?;
    let shutdown = shutdown::on_signal().context("installing signal handlers")?;
    let listen = settings.consumer.metrics_listen;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    tracing::info!(listen = %listener.local_addr()?, "metrics listening");
    let metrics = tokio::spawn(observability::serve(listener, shutdown.clone()));
    worker.run(shutdown).await;
    metrics.await.context("metrics task")?.context("serving metrics")?;
    Ok(())
}
