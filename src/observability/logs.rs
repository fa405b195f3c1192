//! Logs and spans: human-readable text locally, one JSON object per line when
//! `log.format = "json"`. `RUST_LOG` overrides the configured filter. Spans are also exported
//! when an OTLP endpoint is configured ([`super::traces`]); one filter applies to both.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use super::traces::{self, Exporter};
use crate::settings::{LogFormat, LogSettings, TelemetrySettings};

/// Installs the global subscriber: logs only. Call once, first thing in a main.
pub fn init(settings: &LogSettings) {
    install(settings, None);
}

/// Installs the global subscriber, with span export if configured. Call once, first thing in
/// a main; shut the returned exporter down before exiting. `service` is the exported
/// `service.name`.
pub fn init_with_export(
    settings: &LogSettings,
    telemetry: &TelemetrySettings,
    service: &'static str,
) -> Result<Option<Exporter>, opentelemetry_otlp::ExporterBuildError> {
    let (exporter, layer) = match traces::exporter(telemetry, service)? {
        Some((exporter, layer)) => (Some(exporter), Some(layer)),
        None => (None, None),
    };
    install(settings, layer);
    Ok(exporter)
}

type Filtered = tracing_subscriber::layer::Layered<EnvFilter, Registry>;

/// One filter for both (`RUST_LOG`, else `log.filter`): a filter quieter than `info` for
/// `pricefront` also thins the exported spans.
fn install(settings: &LogSettings, export: Option<traces::Layer<Filtered>>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.filter));
    let stdout = tracing_subscriber::fmt::layer().with_writer(std::io::stdout);
    let stdout = match settings.format {
        LogFormat::Text => stdout.boxed(),
        LogFormat::Json => stdout.json().flatten_event(true).with_current_span(true).boxed(),
    };
    tracing_subscriber::registry().with(filter).with(export).with(stdout).init();
}
