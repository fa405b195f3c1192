//! Simulated external price APIs, one process serving every `[[mock.providers]]` entry,
//! so the whole system runs and is tested on one machine with no internet.
//!
//! - `GET /{provider}/prices/{product_id}`: 200 `{"product_id", "price", "currency"}`, the
//!   price deterministic per (provider, product); faults as configured: latency ± jitter,
//!   `error_rate` (503), `hang_rate` (no answer until the client gives up).
//! - `GET /_stats`: calls per provider and per product.
//! - `PUT /_faults/{provider}`: change any of `latency_ms`, `jitter_ms`, `error_rate`,
//!   `hang_rate` at run time (204).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::domain::{Currency, ProductId};
use crate::settings::MockProviderSettings;

/// Largest latency or jitter accepted, so delays stay meaningful and arithmetic cannot overflow.
pub const MAX_DELAY_MS: u64 = 60_000;
/// Longest a hanging call is held, so a client without a timeout is not held forever.
const MAX_HANG: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
struct Faults {
    latency_ms: u64,
    jitter_ms: u64,
    error_rate: f64,
    hang_rate: f64,
}

/// Body of `PUT /_faults/{provider}`: every field optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsPatch {
    latency_ms: Option<u64>,
    jitter_ms: Option<u64>,
    error_rate: Option<f64>,
    hang_rate: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
struct ProviderStats {
    calls: u64,
    by_product: BTreeMap<String, u64>,
}

struct Provider {
    currency: Currency,
    faults: Mutex<Faults>,
    stats: Mutex<ProviderStats>,
}

#[derive(Clone)]
struct MockState {
    providers: Arc<HashMap<String, Provider>>,
    shutdown: CancellationToken,
}

/// The mock's router; `shutdown` also ends hanging calls.
pub fn router(providers: &[MockProviderSettings], shutdown: CancellationToken) -> Router {
    let providers = providers
        .iter()
        .map(|p| {
            let faults = Faults {
                latency_ms: p.latency_ms,
                jitter_ms: p.jitter_ms,
                error_rate: p.error_rate,
                hang_rate: p.hang_rate,
            };
            let provider =
                Provider { currency: p.currency, faults: Mutex::new(faults), stats: Mutex::new(Default::default()) };
            (p.name.clone(), provider)
        })
        .collect();
    Router::new()
        .route("/{provider}/prices/{product_id}", get(price))
        .route("/_stats", get(stats))
        .route("/_faults/{provider}", put(set_faults))
        .with_state(MockState { providers: Arc::new(providers), shutdown })
}

/// Serves the mock on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    providers: &[MockProviderSettings],
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(providers, shutdown.clone());
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

/// The price a provider quotes for a product: stable across runs and processes.
pub fn price_for(provider: &str, product: &str) -> Decimal {
    // FNV-1a: tiny, stable, and good enough to spread prices; not for security.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in provider.bytes().chain([b'/']).chain(product.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // 10.00 ..= 999.99
    Decimal::new(1_000 + (hash % 99_000) as i64, 2)
}

fn problem(status: StatusCode, detail: impl Into<String>) -> Response {
    let body = json!({"type": "about:blank", "title": status.canonical_reason(), "status": status.as_u16(), "detail": detail.into()});
    (status, [("content-type", "application/problem+json")], body.to_string()).into_response()
}

async fn price(State(state): State<MockState>, Path((provider, product)): Path<(String, String)>) -> Response {
    let Some(p) = state.providers.get(&provider) else {
        return problem(StatusCode::NOT_FOUND, format!("no provider named {provider:?}"));
    };
    let product = match ProductId::parse(&product) {
        Ok(id) => id,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e.to_string()),
    };
    {
        let mut stats = p.stats.lock().expect("stats lock");
        stats.calls += 1;
        *stats.by_product.entry(product.to_string()).or_default() += 1;
    }
    let faults = *p.faults.lock().expect("faults lock");
    let roll = fastrand::f64();
    if roll < faults.error_rate + faults.hang_rate && roll >= faults.error_rate {
        wait_or_shutdown(tokio::time::sleep(MAX_HANG), &state.shutdown).await;
        return problem(StatusCode::SERVICE_UNAVAILABLE, "hung");
    }
    let jitter =
        if faults.jitter_ms == 0 { 0 } else { fastrand::i64(-(faults.jitter_ms as i64)..=faults.jitter_ms as i64) };
    let latency = Duration::from_millis((faults.latency_ms as i64 + jitter).max(0) as u64);
    wait_or_shutdown(tokio::time::sleep(latency), &state.shutdown).await;
    if roll < faults.error_rate {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "simulated outage");
    }
    let price = price_for(&provider, product.as_str());
    Json(json!({"product_id": product, "price": price.to_string(), "currency": p.currency})).into_response()
}

async fn wait_or_shutdown(wait: impl Future<Output = ()>, shutdown: &CancellationToken) {
    tokio::select! {
        _ = wait => {}
        _ = shutdown.cancelled() => {}
    }
}

async fn stats(State(state): State<MockState>) -> Response {
    let mut providers = serde_json::Map::new();
    for (name, p) in state.providers.iter() {
        let stats = p.stats.lock().expect("stats lock");
        providers.insert(name.clone(), serde_json::to_value(&*stats).expect("stats serialize"));
    }
    Json(json!({ "providers": providers })).into_response()
}

async fn set_faults(State(state): State<MockState>, Path(provider): Path<String>, body: axum::body::Bytes) -> Response {
    let Some(p) = state.providers.get(&provider) else {
        return problem(StatusCode::NOT_FOUND, format!("no provider named {provider:?}"));
    };
    let patch: FaultsPatch = match serde_json::from_slice(&body) {
        Ok(patch) => patch,
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("invalid faults: {e}")),
    };
    let mut faults = p.faults.lock().expect("faults lock");
    let next = Faults {
        latency_ms: patch.latency_ms.unwrap_or(faults.latency_ms),
        jitter_ms: patch.jitter_ms.unwrap_or(faults.jitter_ms),
        error_rate: patch.error_rate.unwrap_or(faults.error_rate),
        hang_rate: patch.hang_rate.unwrap_or(faults.hang_rate),
    };
    let rate_ok = |r: f64| (0.0..=1.0).contains(&r);
    if !rate_ok(next.error_rate) || !rate_ok(next.hang_rate) || next.error_rate + next.hang_rate > 1.0 {
        return problem(StatusCode::BAD_REQUEST, "error_rate and hang_rate must be in [0, 1] and sum to at most 1");
    }
    if next.latency_ms > MAX_DELAY_MS || next.jitter_ms > MAX_DELAY_MS {
        return problem(StatusCode::BAD_REQUEST, format!("latency_ms and jitter_ms must be at most {MAX_DELAY_MS}"));
    }
    *faults = next;
    tracing::info!(%provider, ?next, "faults changed");
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn settings() -> Vec<MockProviderSettings> {
        vec![MockProviderSettings {
            name: "acme".into(),
            latency_ms: 0,
            jitter_ms: 0,
            error_rate: 0.0,
            hang_rate: 0.0,
            currency: Currency::parse("EUR").unwrap(),
        }]
    }

    async fn call(app: &Router, method: &str, uri: &str, body: &str) -> (StatusCode, serde_json::Value) {
        let req = Request::builder().method(method).uri(uri).body(Body::from(body.to_owned())).unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    #[test]
    fn prices_are_deterministic_and_in_range() {
        assert_eq!(price_for("acme", "p1"), price_for("acme", "p1"));
        assert_ne!(price_for("acme", "p1"), price_for("other", "p1"));
        for i in 0..1000 {
            let p = price_for("x", &i.to_string());
            assert!(p >= Decimal::new(1000, 2) && p <= Decimal::new(99999, 2), "{p}");
        }
    }

    #[tokio::test]
    async fn quotes_counts_and_takes_faults() {
        let app = router(&settings(), CancellationToken::new());
        let (status, body) = call(&app, "GET", "/acme/prices/p1", "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["price"], price_for("acme", "p1").to_string());
        assert_eq!(body["currency"], "EUR");
        assert_eq!(call(&app, "GET", "/nobody/prices/p1", "").await.0, StatusCode::NOT_FOUND);

        assert_eq!(call(&app, "PUT", "/_faults/acme", r#"{"error_rate": 1.0}"#).await.0, StatusCode::NO_CONTENT);
        assert_eq!(call(&app, "GET", "/acme/prices/p1", "").await.0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(call(&app, "PUT", "/_faults/acme", r#"{"error_rate": 1.5}"#).await.0, StatusCode::BAD_REQUEST);
        assert_eq!(call(&app, "PUT", "/_faults/acme", r#"{"eror_rate": 1}"#).await.0, StatusCode::BAD_REQUEST);
        let huge = r#"{"jitter_ms": 18446744073709551615}"#;
        assert_eq!(call(&app, "PUT", "/_faults/acme", huge).await.0, StatusCode::BAD_REQUEST);
        assert_eq!(call(&app, "PUT", "/_faults/nobody", r#"{}"#).await.0, StatusCode::NOT_FOUND);

        let (_, stats) = call(&app, "GET", "/_stats", "").await;
        assert_eq!(stats["providers"]["acme"]["calls"], 2);
        assert_eq!(stats["providers"]["acme"]["by_product"]["p1"], 2);
    }
}
