//! `GET /healthz` (the process answers) and `GET /readyz` (Redis and the broker answer).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::AppState;

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// `/healthz` body.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// `/readyz` body: `ok` per dependency, or what is wrong with it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: &'static str,
    pub redis: String,
    pub kafka: String,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Redis answers and the broker knows the request topic.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready", body = Readiness),
    (status = 503, description = "A dependency is unavailable", body = Readiness),
))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let (redis, kafka) =
        tokio::join!(tokio::time::timeout(PROBE_TIMEOUT, state.store.ping()), state.publisher.check(PROBE_TIMEOUT),);
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
    (status, Json(Readiness { status: if ready { "ready" } else { "unavailable" }, redis, kafka }))
}
