//! A consumer-group member: fans each request out to the price APIs and caches the result.

use std::process::ExitCode;

use anyhow::Context;
use pricefront::settings::Settings;
use pricefront::{observability, shutdown, worker::Worker};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::load_or_exit();
    observability::logs::init(&settings.log);
    shutdown::exit_code(run(settings).await)
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    observability::metrics::install().context("installing the metrics recorder")?;
    let shutdown = shutdown::on_signal().context("installing signal handlers")?;
    let listen = settings.consumer.metrics_listen;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    tracing::info!(listen = %listener.local_addr()?, "metrics listening");
    let worker = Worker::build(&settings).context("building the consumer")?;
    let metrics = tokio::spawn(observability::metrics::serve(listener, shutdown.clone()));
    let consumed = worker.run(shutdown.clone()).await;
    shutdown.cancel();
    metrics.await.context("metrics task")?.context("serving metrics")?;
    consumed.context("consuming")?;
    Ok(())
}
