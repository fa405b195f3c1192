//! `GET /healthz` (the process answers) and `GET /readyz` (Redis and the broker answer).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;

use super::AppState;

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let (redis, kafka) = tokio::join!(
        tokio::time::timeout(PROBE_TIMEOUT, state.store.ping()),
        state.publisher.check_broker(PROBE_TIMEOUT),
    );
    let redis = match redis {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
    };
    let kafka = kafka.map(|()| "ok".to_owned()).unwrap_or_else(|e| e.to_string());
    let ready = redis == "ok" && kafka == "ok";
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    if !ready {
        tracing::warn!(%redis, %kafka, "not ready");
    }
    (status, Json(json!({"status": if ready { "ready" } else { "unavailable" }, "redis": redis, "kafka": kafka})))
}
