//! The HTTP API: answers from cache or publishes a request and answers 202.

use anyhow::Context;
use pricefront::{api, settings::Settings, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("loading settings")?;
    telemetry::init(&settings.log);
    let state = api::AppState::build(&settings).context("building clients")?;
    let shutdown = shutdown::on_signal().context("installing signal handlers")?;
    let listener = tokio::net::TcpListener::bind(settings.producer.listen)
        .await
        .with_context(|| format!("binding {}", settings.producer.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "producer listening");
    api::serve(listener, state, shutdown).await.context("serving")?;
    tracing::info!("producer stopped");
    Ok(())
}
