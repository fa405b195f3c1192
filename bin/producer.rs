//! The HTTP API: answers from cache or publishes a request and answers 202.

use std::process::ExitCode;

use anyhow::Context;
use pricefront::settings::Settings;
use pricefront::{api, observability, shutdown};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::load_or_exit();
    observability::logs::init(&settings.log);
    shutdown::exit_code(run(settings).await)
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    observability::metrics::install().context("installing the metrics recorder")?;
    let state = api::AppState::build(&settings).context("building clients")?;
    let shutdown = shutdown::on_signal().context("installing signal handlers")?;
    let listen = settings.producer.listen;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    tracing::info!(listen = %listener.local_addr()?, "producer listening");
    api::serve(listener, state, shutdown).await.context("serving")?;
    tracing::info!("producer stopped");
    Ok(())
}
