//! A minimal in-test OpenTelemetry collector: an OTLP/HTTP trace receiver on 127.0.0.1:0
//! that decodes `POST /v1/traces` (binary protobuf; JSON and compressed bodies get 415) and
//! keeps every span it got, for tests to wait on.
//!
//! [`OtlpReceiver::endpoint`] is the base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` and
//! `telemetry.otlp_endpoint` take it. The exporter's own behaviour that the services depend on
//! (a URL set in code is used as given; batch export on the SDK's thread; flushing blocks, so
//! it belongs on a blocking thread; export errors are otherwise silent) is noted where it is
//! used, in `src/observability/traces.rs`; the self-test below pins it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::helpers::wait_for;

/// One span as received, with ids in lowercase hex.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// Resource attribute `service.name` (empty if absent).
    pub service: String,
    /// Resource attribute `service.version`.
    pub service_version: Option<String>,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// `None` for a root span (empty `parent_span_id` on the wire).
    pub parent_span_id: Option<String>,
    pub name: String,
    /// Span attributes; every value in string form (`"42"`, `"true"`, `"1.5"`, `"text"`).
    pub attributes: BTreeMap<String, String>,
    /// Span links as `(trace_id, span_id)` hex.
    pub links: Vec<(String, String)>,
}

#[derive(Default)]
struct Inner {
    spans: Mutex<Vec<ReceivedSpan>>,
    /// Requests that were answered with an error, for the timeout message.
    rejected: Mutex<Vec<String>>,
}

/// An OTLP/HTTP trace receiver running in the current tokio runtime; stops when dropped.
pub struct OtlpReceiver {
    addr: std::net::SocketAddr,
    inner: Arc<Inner>,
    server: JoinHandle<()>,
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind OTLP receiver");
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/v1/traces", post(receive_traces))
            // The exporter's own request limit is 64 MiB; axum's default (2 MiB) would 413 big batches.
            .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(inner.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("OTLP receiver failed");
        });
        OtlpReceiver { addr, inner, server }
    }

    /// The OTLP base URL, `http://127.0.0.1:PORT`: what `OTEL_EXPORTER_OTLP_ENDPOINT` takes.
    /// `SpanExporter::builder().with_http().with_endpoint(..)` needs `{endpoint}/v1/traces`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.inner.spans.lock().unwrap().clone()
    }

    /// Polls until `pred` holds for everything received so far and returns that; panics after
    /// `deadline` listing what was received.
    pub async fn wait_for_spans(
        &self,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        wait_for(what, deadline, || {
            let spans = self.spans();
            let result = if pred(&spans) { Ok(spans) } else { Err(self.describe(&spans)) };
            async move { result }
        })
        .await
    }

    fn describe(&self, spans: &[ReceivedSpan]) -> String {
        let mut out = format!("{} span(s) received at {}", spans.len(), self.endpoint());
        for s in spans {
            let _ = write!(
                out,
                "\n  {}/{} trace={} span={} parent={} attrs={:?}",
                s.service,
                s.name,
                s.trace_id,
                s.span_id,
                s.parent_span_id.as_deref().unwrap_or("-"),
                s.attributes
            );
            for (trace, span) in &s.links {
                let _ = write!(out, " link={trace}/{span}");
            }
        }
        let rejected = self.inner.rejected.lock().unwrap();
        for r in rejected.iter() {
            let _ = write!(out, "\n  rejected request: {r}");
        }
        out
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive_traces(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let reject = |status: StatusCode, why: String| {
        inner.rejected.lock().unwrap().push(format!("{status}: {why}"));
        (status, why).into_response()
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.starts_with("application/x-protobuf") {
        // OTLP/JSON would need opentelemetry-proto's `with-serde` feature, which is not enabled.
        return reject(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("unsupported content-type {content_type:?}"));
    }
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    if !encoding.eq_ignore_ascii_case("identity") {
        // No gzip decoder among the test's dependencies; the exporter does not compress by default.
        return reject(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("unsupported content-encoding {encoding:?}"));
    }
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) => request,
        Err(e) => return reject(StatusCode::BAD_REQUEST, format!("undecodable ExportTraceServiceRequest: {e}")),
    };

    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.map(|r| attributes(&r.attributes)).unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        let service_version = resource.get("service.version").cloned();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    service_version: service_version.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: (!span.parent_span_id.is_empty()).then(|| hex(&span.parent_span_id)),
                    name: span.name,
                    attributes: attributes(&span.attributes),
                    links: span.links.iter().map(|l| (hex(&l.trace_id), hex(&l.span_id))).collect(),
                });
            }
        }
    }
    inner.spans.lock().unwrap().extend(received);

    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map(any_value).unwrap_or_default())).collect()
}

fn any_value(value: &AnyValue) -> String {
    match &value.value {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => hex(b),
        Some(Value::ArrayValue(a)) => {
            format!("[{}]", a.values.iter().map(any_value).collect::<Vec<_>>().join(", "))
        }
        Some(Value::KvlistValue(kv)) => format!("{:?}", attributes(&kv.values)),
        Some(Value::StringValueStrindex(i)) => format!("strindex:{i}"),
    }
}

/// Drives the real exporter (batch processor, as the services would use it) into the receiver.
/// Runs on the default current_thread runtime on purpose: together with the receiver on the same
/// runtime it proves that spans can be ended in async code and that only flush/shutdown need
/// `spawn_blocking` (see the module docs).
#[tokio::test]
async fn exporter_spans_reach_the_receiver() {
    use opentelemetry::trace::{
        Link, Span as _, SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer, TracerProvider,
    };
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    let receiver = OtlpReceiver::start().await;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", receiver.endpoint()))
        .build()
        .expect("build OTLP exporter");
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name("selftest")
                .with_attribute(KeyValue::new("service.version", "1.2.3"))
                .build(),
        )
        .build();
    let tracer = provider.tracer("selftest");

    let linked = SpanContext::new(
        TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
        SpanId::from_hex("b7ad6b7169203331").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    // Ending spans on the runtime thread is fine with the batch processor.
    let parent = tracer.start("parent");
    let parent_cx = Context::current_with_span(parent);
    tracer
        .span_builder("child")
        .with_attributes([
            KeyValue::new("product.id", "p-1"),
            KeyValue::new("attempt", 2_i64),
            KeyValue::new("hit", true),
        ])
        .with_links(vec![Link::with_context(linked)])
        .start_with_context(&tracer, &parent_cx)
        .end();
    parent_cx.span().end();
    drop(parent_cx);

    // force_flush/shutdown block until the batch thread exported: off the runtime thread.
    tokio::task::spawn_blocking(move || {
        provider.force_flush().expect("force_flush");
        provider.shutdown().expect("shutdown");
    })
    .await
    .unwrap();

    // After a successful force_flush the spans are already here; the wait is only a safety net.
    let spans =
        receiver.wait_for_spans("the selftest parent and child span", Duration::from_secs(10), |s| s.len() >= 2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let parent = spans.iter().find(|s| s.name == "parent").expect("parent span");
    let child = spans.iter().find(|s| s.name == "child").expect("child span");
    for s in [parent, child] {
        assert_eq!(s.service, "selftest");
        assert_eq!(s.service_version.as_deref(), Some("1.2.3"));
        assert_eq!(s.trace_id.len(), 32);
        assert_eq!(s.span_id.len(), 16);
        assert!(s.trace_id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{}", s.trace_id);
    }
    assert_eq!(parent.parent_span_id, None);
    assert_eq!(child.trace_id, parent.trace_id);
    assert_eq!(child.parent_span_id.as_deref(), Some(parent.span_id.as_str()));
    assert_eq!(child.attributes.get("product.id").map(String::as_str), Some("p-1"));
    assert_eq!(child.attributes.get("attempt").map(String::as_str), Some("2"));
    assert_eq!(child.attributes.get("hit").map(String::as_str), Some("true"));
    assert_eq!(child.links, vec![("0af7651916cd43dd8448eb211c80319c".to_owned(), "b7ad6b7169203331".to_owned())]);
}
