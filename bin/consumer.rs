//! A consumer-group member: fans each request out to the price APIs and caches the result.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use pricefront::settings::Settings;
use pricefront::{observability, shutdown, worker::Worker};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(e) => return shutdown::invalid_config(e),
    };
    let exporter =
        match observability::logs::init_with_export(&settings.log, &settings.telemetry, "pricefront-consumer") {
            Ok(exporter) => exporter,
            Err(e) => return shutdown::invalid_config(anyhow::Error::new(e).context("telemetry.otlp_endpoint")),
        };
    // Before any port is bound or message taken: a price source whose credentials are not
    // in the environment is a configuration error (exit 2).
    let worker = match Worker::build(&settings) {
        Ok(worker) => worker,
        Err(e) if e.is_configuration() => return shutdown::invalid_config(e),
        Err(e) => return shutdown::exit_code(Err(anyhow::Error::new(e).context("building the consumer"))),
    };
    let outcome = run(settings, worker).await;
    if let Some(exporter) = exporter {
        exporter.shutdown().await;
    }
    shutdown::exit_code(outcome)
}

async fn run(settings: Settings, worker: Worker) -> anyhow::Result<()> {
    observability::metrics::install().context("installing the metrics recorder")?;
    let shutdown = shutdown::on_signal().context("installing signal handlers")?;
    let listen = settings.consumer.metrics_listen;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    tracing::info!(listen = %listener.local_addr()?, "metrics listening");
    // Ready while it holds partitions: a member the group has not given any (yet, or because
    // there are more consumers than partitions) takes no work.
    let assigned = worker.assigned();
    let ready: observability::metrics::Readiness = Arc::new(move || {
        let partitions = assigned.as_ref().map(|a| a.partitions()).unwrap_or_default();
        if partitions.is_empty() {
            Err(serde_json::json!({"status": "not_ready", "partitions": partitions}))
        } else {
            Ok(serde_json::json!({"status": "ready", "partitions": partitions}))
        }
    });
    let metrics = tokio::spawn(observability::metrics::serve(listener, shutdown.clone(), ready));
    let consumed = worker.run(shutdown.clone()).await;
    shutdown.cancel();
    metrics.await.context("metrics task")?.context("serving metrics")?;
    consumed.context("consuming")?;
    Ok(())
}
