//! Zero-setup mode: the whole system in one process, no Kafka, no Redis. For trying and
//! demos; production uses the `producer` and `consumer` binaries on Kafka and Redis.

use std::process::ExitCode;

use anyhow::Context;
use pricefront::settings::Settings;
use pricefront::standalone::Standalone;
use pricefront::{observability, shutdown};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(e) => return shutdown::invalid_config(e),
    };
    observability::logs::init(&settings.log);
    let system = match Standalone::build(&settings) {
        Ok(system) => system,
        Err(e) if e.is_configuration() => return shutdown::invalid_config(e),
        Err(e) => return shutdown::exit_code(Err(anyhow::Error::new(e).context("building"))),
    };
    shutdown::exit_code(run(settings, system).await)
}

async fn run(settings: Settings, system: Standalone) -> anyhow::Result<()> {
    observability::metrics::install().context("installing the metrics recorder")?;
    let shutdown = shutdown::on_signal().context("installing signal handlers")?;
    let (api, ops, mock_addr) = (settings.producer.listen, settings.producer.ops_listen, settings.mock.listen);
    let api_listener = tokio::net::TcpListener::bind(api).await.with_context(|| format!("binding {api}"))?;
    let ops_listener = tokio::net::TcpListener::bind(ops).await.with_context(|| format!("binding {ops}"))?;
    let mock_listener =
        tokio::net::TcpListener::bind(mock_addr).await.with_context(|| format!("binding {mock_addr}"))?;
    let api = api_listener.local_addr()?;
    tracing::info!(%api, ops = %ops_listener.local_addr()?, mock = %mock_listener.local_addr()?, "standalone: in-memory queue and store, no Kafka or Redis");
    println!(
        "\npricefront standalone is running (in-memory queue and store; production uses Kafka and Redis).\n\
         Ask for a price (202 at first, then 200 with the comparison):\n\n  curl -i http://{api}/v1/prices/sku-123\n\n\
         Ctrl-C stops it.\n"
    );
    system.run(api_listener, Some(ops_listener), mock_listener, shutdown).await.context("running")?;
    Ok(())
}
