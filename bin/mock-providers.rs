//! Simulated external price APIs with tunable latency and faults.

use std::process::ExitCode;

use anyhow::Context;
use pricefront::settings::Settings;
use pricefront::{mock, observability, shutdown};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(e) => return shutdown::invalid_config(e),
    };
    let mock = match mock::Mock::new(&settings.mock.providers) {
        Ok(mock) => mock,
        Err(e) => return shutdown::invalid_config(e),
    };
    observability::logs::init(&settings.log);
    shutdown::exit_code(run(settings, mock).await)
}

async fn run(settings: Settings, mock: mock::Mock) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal().context("installing signal handlers")?;
    let listen = settings.mock.listen;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let names: Vec<&str> = settings.mock.providers.iter().map(|p| p.name.as_str()).collect();
    tracing::info!(listen = %listener.local_addr()?, providers = ?names, "mock providers listening");
    mock::serve(listener, mock, shutdown).await.context("serving")?;
    Ok(())
}
