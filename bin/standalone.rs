//! Zero-setup mode: the whole system in one process, no Kafka, no Redis. For trying and
//! demos; production uses the `producer` and `consumer` binaries on Kafka and Redis.

use anyhow::Context;
use pricefront::{settings::Settings, shutdown, standalone, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("loading settings")?;
    telemetry::init(&settings.log);
    let shutdown = shutdown::on_signal().context("installing signal handlers")?;
    let (api, mock) = (settings.producer.listen, settings.mock.listen);
    let api_listener = tokio::net::TcpListener::bind(api).await.with_context(|| format!("binding {api}"))?;
    let mock_listener = tokio::net::TcpListener::bind(mock).await.with_context(|| format!("binding {mock}"))?;
    let api = api_listener.local_addr()?;
    tracing::info!(%api, mock = %mock_listener.local_addr()?, "standalone: in-memory queue and store, no Kafka or Redis");
    println!(
        "\npricefront standalone is running (in-memory queue and store; production uses Kafka and Redis).\n\
         Ask for a price (202 at first, then 200 with the comparison):\n\n  curl -i http://{api}/v1/prices/sku-123\n\n\
         Ctrl-C stops it.\n"
    );
    standalone::run(&settings, api_listener, mock_listener, shutdown).await.context("running")?;
    Ok(())
}
