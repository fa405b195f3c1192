//! One request, one trace: the real producer and consumer binaries export spans over OTLP/HTTP
//! to a receiver in the test, and a cold request sent with a known `traceparent` yields the
//! producer's span, the consumer's span and one span per source, all in that trace and linked
//! parent to child.

use std::time::Duration;

use crate::helpers::{env, get, provider, wait_for};
use crate::otlp::{OtlpReceiver, ReceivedSpan};

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_request_is_one_trace_across_producer_queue_consumer_and_every_source() {
    let receiver = OtlpReceiver::start().await;
    let env = env().providers(vec![provider("alpha", 20), provider("beta", 40), provider("gamma", 60)]).start().await;
    let vars = [
        ("PRICEFRONT__TELEMETRY__OTLP_ENDPOINT", receiver.endpoint()),
        // Send batches soon, not every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ];
    let _consumer = env.spawn_consumer_process_with(&vars).await;
    let producer = env.spawn_producer_process_with(&vars).await;

    let product = env.product("traced");
    let url = format!("{}/v1/prices/{product}", producer.base);
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let res = env.http.get(&url).header("traceparent", &traceparent).send().await.unwrap();
    assert_eq!(res.status(), 202);
    wait_for("the result", Duration::from_secs(60), || async {
        match get(&env.http, &url).await {
            (200, _, _) => Ok(()),
            (status, _, _) => Err(status.to_string()),
        }
    })
    .await;

    let in_trace =
        |spans: &[ReceivedSpan]| spans.iter().filter(|s| s.trace_id == TRACE_ID).cloned().collect::<Vec<_>>();
    let spans = receiver
        .wait_for_spans("the request's producer, consumer and provider spans", Duration::from_secs(30), |spans| {
            let spans = in_trace(spans);
            let named = |name: &str| spans.iter().filter(|s| s.name == name).count();
            named("http") >= 1 && named("message") >= 1 && named("provider_call") >= 3
        })
        .await;
    let spans = in_trace(&spans);

    let http = spans.iter().find(|s| s.name == "http").unwrap();
    assert_eq!(http.service, "pricefront-producer");
    assert_eq!(http.service_version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(http.parent_span_id.as_deref(), Some(CALLER_SPAN), "continues the caller's traceparent");

    let message = spans.iter().find(|s| s.name == "message").unwrap();
    assert_eq!(message.service, "pricefront-consumer");
    assert_eq!(
        message.parent_span_id.as_deref(),
        Some(http.span_id.as_str()),
        "the consumer's span is the request's child"
    );
    assert_eq!(message.attributes.get("product_id"), Some(&product));

    let calls: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == "provider_call").collect();
    let mut providers: Vec<&str> = calls.iter().map(|s| s.attributes["provider"].as_str()).collect();
    providers.sort();
    assert_eq!(providers, ["alpha", "beta", "gamma"], "{calls:#?}");
    for call in calls {
        assert_eq!(call.service, "pricefront-consumer");
        assert_eq!(call.parent_span_id.as_deref(), Some(message.span_id.as_str()), "{call:?}");
        assert_eq!(call.attributes.get("outcome").map(String::as_str), Some("ok"), "{call:?}");
        let latency: u64 = call.attributes["latency_ms"].parse().unwrap();
        assert!(latency >= 20, "the mock answers after 20 ms at least: {call:?}");
    }
}
