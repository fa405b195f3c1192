//! The HTTP API: answers from cache or publishes a request and answers 202.

use std::process::ExitCode;

use anyhow::Context;
use pricefront::settings::Settings;
use pricefront::{api, observability, shutdown};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(e) => return shutdown::invalid_config(e),
    };
    let exporter =
        match observability::logs::init_with_export(&settings.log, &settings.telemetry, "pricefront-producer") {
            Ok(exporter) => exporter,
            Err(e) => return shutdown::invalid_config(anyhow::Error::new(e).context("telemetry.otlp_endpoint")),
        };
    // Before any port is bound: Kafka options or a Redis URL that cannot work exit 2.
    let state = match api::AppState::build(&settings) {
        Ok(state) => state,
        Err(e) if e.is_configuration() => return shutdown::invalid_config(e),
        Err(e) => return shutdown::exit_code(Err(anyhow::Error::new(e).context("building clients"))),
    };
    let outcome = run(settings, state).await;
    if let Some(exporter) = exporter {
        exporter.shutdown().await;
    }
    shutdown::exit_code(outcome)
}

async fn run(settings: Settings, state: api::AppState) -> anyhow::Result<()> {
    observability::metrics::install().context("installing the metrics recorder")?;
    let shutdown = shutdown::on_signal().context("installing signal handlers")?;
    let (listen, ops) = (settings.producer.listen, settings.producer.ops_listen);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let ops_listener = tokio::net::TcpListener::bind(ops).await.with_context(|| format!("binding {ops}"))?;
    tracing::info!(listen = %listener.local_addr()?, ops = %ops_listener.local_addr()?, "producer listening");
    let ops = tokio::spawn(api::serve_ops(ops_listener, state.clone(), shutdown.clone()));
    api::serve(listener, state, shutdown).await.context("serving")?;
    ops.await.context("the ops listener")?.context("serving the ops routes")?;
    tracing::info!("producer stopped");
    Ok(())
}
