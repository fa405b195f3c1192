//! Simulated external price APIs with tunable latency and faults.

use anyhow::Context;
use pricefront::{mock, settings::Settings, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("loading settings")?;
    telemetry::init(&settings.log);
    let shutdown = shutdown::on_signal().context("installing signal handlers")?;
    let listener = tokio::net::TcpListener::bind(settings.mock.listen)
        .await
        .with_context(|| format!("binding {}", settings.mock.listen))?;
    let names: Vec<&str> = settings.mock.providers.iter().map(|p| p.name.as_str()).collect();
    tracing::info!(listen = %listener.local_addr()?, providers = ?names, "mock providers listening");
    mock::serve(listener, &settings.mock.providers, shutdown).await.context("serving")?;
    Ok(())
}
