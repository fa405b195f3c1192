//! Span export over OTLP/HTTP, and the W3C `traceparent` that ties one request's spans into
//! one trace across the queue.
//!
//! - **Export** ([`exporter`]): when `telemetry.otlp_endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`)
//!   is set, spans go, batched on the SDK's own thread, to `{endpoint}/v1/traces`, with resource
//!   attributes `service.name` and `service.version`. Without an endpoint there is no layer at
//!   all and an incoming `traceparent` is not even parsed: the hit path pays nothing. The log's filter
//!   applies to export too: spans are `info`, so a filter quieter than that drops them.
//! - **Coalesced misses:** concurrent misses for one product in one producer share one claim,
//!   so the message carries the first request's context; the others' traces end at the
//!   producer (their `http` spans carry the same `product_id`).
//! - **One trace per request:** the producer's `http` span continues an incoming `traceparent`
//!   ([`continue_trace`]); the Kafka message carries the `http` span's own context
//!   ([`traceparent_of`]); the consumer's `message` span continues it, and each `provider_call`
//!   is its child. Without export, an incoming `traceparent` is passed through unchanged.
//!
//! The OTLP exporter uses a blocking HTTP client on the batch processor's thread; flushing
//! blocks too, so [`Exporter::shutdown`] runs it on a blocking thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};

use crate::queue::envelope::valid_traceparent;
use crate::settings::TelemetrySettings;

/// Whether this process exports spans: without, an incoming `traceparent` costs nothing.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The `tracing` layer that records spans for export.
pub type Layer<S> = OpenTelemetryLayer<S, SdkTracer>;

/// The installed exporter; shut it down before exiting so the last spans are sent.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Sends what is batched and stops (bounded by the SDK's export timeout).
    pub async fn shutdown(self) {
        let provider = self.provider;
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "could not send the last spans");
        }
    }
}

/// The exporter and the `tracing` layer feeding it, if an endpoint is configured. `service`
/// is `service.name` (`pricefront-producer`, `pricefront-consumer`).
pub fn exporter<S>(
    settings: &TelemetrySettings,
    service: &'static str,
) -> Result<Option<(Exporter, Layer<S>)>, opentelemetry_otlp::ExporterBuildError>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let Some(url) = settings.traces_url() else { return Ok(None) };
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        // Set in code, the URL is used as given.
        .with_endpoint(url)
        .build()?;
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attributes([KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))])
        .build();
    // A sampled incoming trace is always followed; new traces are sampled at the ratio.
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sample_ratio.unwrap_or(1.0))));
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .with_sampler(sampler)
        .build();
    let layer =
        tracing_opentelemetry::layer().with_tracer(provider.tracer("pricefront")).with_tracked_inactivity(false);
    EXPORTING.store(true, Ordering::Relaxed);
    Ok(Some((Exporter { provider }, layer)))
}

/// Whether this process exports spans (an endpoint was configured).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Makes `span` (just created, not yet entered) continue the trace of an incoming
/// `traceparent`. Does nothing when spans are not exported or the value is not valid W3C.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if !EXPORTING.load(Ordering::Relaxed) {
        return;
    }
    let Some(traceparent) = traceparent.filter(|tp| valid_traceparent(tp)) else { return };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    // Fails only without the export layer, where there is nothing to continue.
    let _ = span.set_parent(parent);
}

/// The `traceparent` to send on with work started inside `span`: the span's own context when
/// spans are exported, else `incoming` as it came (so logs still correlate).
pub fn traceparent_of(span: &tracing::Span, incoming: Option<&str>) -> Option<String> {
    let context: Context = span.context();
    if context.span().span_context().is_valid() {
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut carrier);
        if let Some(tp) = carrier.remove("traceparent") {
            return Some(tp);
        }
    }
    incoming.filter(|tp| valid_traceparent(tp)).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn without_export_an_incoming_traceparent_passes_through() {
        let span = tracing::info_span!("http");
        continue_trace(&span, Some(INCOMING));
        assert_eq!(traceparent_of(&span, Some(INCOMING)).as_deref(), Some(INCOMING));
        assert_eq!(traceparent_of(&span, Some("garbage")), None);
        assert_eq!(traceparent_of(&span, None), None);
    }

    #[test]
    fn with_export_the_span_continues_the_trace_and_passes_on_its_own_id() {
        EXPORTING.store(true, Ordering::Relaxed);
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("http");
            continue_trace(&span, Some(INCOMING));
            let sent = traceparent_of(&span, Some(INCOMING)).unwrap();
            assert!(valid_traceparent(&sent), "{sent}");
            assert_eq!(&sent[..36], &INCOMING[..36], "same trace id");
            assert_ne!(&sent[36..52], &INCOMING[36..52], "the http span's own id, as the parent of what follows");
            assert!(sent.ends_with("-01"), "sampled, as the caller asked");
        });
    }
}
