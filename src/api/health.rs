//! `GET /healthz` (the process answers) and `GET /readyz` (it can serve: Redis answers, the
//! broker knows the request topic, and the announcements subscription is up where one runs).
//!
//! Readiness is state the process keeps ([`Probe`]): one look at each dependency every
//! [`PROBE_EVERY`], in the background. A `/readyz` reads it and costs nothing more, so probes
//! cannot load Redis or the broker however often they come. The public port answers the
//! status alone; the ops port (`producer.ops_listen`) adds what is wrong with each
//! dependency, which is for operators, not for the internet.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use tokio_util::sync::CancellationToken;

use super::AppState;

/// How often the dependencies are looked at.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// `/healthz` body.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// The public `/readyz` body: the status alone.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    #[schema(example = "ready")]
    pub status: &'static str,
}

/// The ops port's `/readyz` body: `ok` per dependency, or what is wrong with it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Details {
    /// `ready` or `unavailable`.
    pub status: &'static str,
    pub redis: String,
    pub kafka: String,
    /// The subscription that wakes waiting requests and feeds event streams: `ok`, `idle`
    /// (none started yet: nobody has waited), or what is wrong with it.
    pub announcements: String,
    /// Admission control: whether new products are admitted, and the backlog it judges by
    /// (see `api::admission`). It does not make the producer unready: hits are still served.
    pub admission: super::admission::Snapshot,
}

impl Details {
    fn ready(&self) -> bool {
        self.status == "ready"
    }
}

/// What the last look at the dependencies found.
pub struct Probe {
    last: RwLock<Details>,
}

impl Default for Probe {
    fn default() -> Self {
        let unknown = || "not looked at yet".to_owned();
        Self {
            last: RwLock::new(Details {
                status: "unavailable",
                redis: unknown(),
                kafka: unknown(),
                announcements: unknown(),
                admission: Default::default(),
            }),
        }
    }
}

impl Probe {
    pub fn details(&self) -> Details {
        self.last.read().expect("probe lock").clone()
    }

    /// Looks at every dependency now.
    pub async fn look(&self, state: &AppState) {
        let (redis, kafka) =
            tokio::join!(tokio::time::timeout(PROBE_TIMEOUT, state.store.ping()), state.publisher.check(PROBE_TIMEOUT));
        let redis = match redis {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
        };
        let kafka = kafka.map(|()| "ok".to_owned()).unwrap_or_else(|e| e.to_string());
        let announcements = match state.store.announcements() {
            None => "idle".to_owned(),
            Some(Ok(())) => "ok".to_owned(),
            Some(Err(e)) => e,
        };
        let ready = redis == "ok" && kafka == "ok" && matches!(announcements.as_str(), "ok" | "idle");
        let details = Details {
            status: if ready { "ready" } else { "unavailable" },
            redis,
            kafka,
            announcements,
            admission: state.admission.snapshot(),
        };
        let was_ready = std::mem::replace(&mut *self.last.write().expect("probe lock"), details.clone()).ready();
        if was_ready && !ready {
            tracing::warn!(redis = %details.redis, kafka = %details.kafka, announcements = %details.announcements, "not ready");
        } else if !was_ready && ready {
            tracing::info!("ready");
        }
        metrics::gauge!("pricefront_ready").set(if ready { 1.0 } else { 0.0 });
    }

    /// Looks every [`PROBE_EVERY`] until `shutdown`.
    pub fn spawn(state: AppState, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PROBE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while tokio::select! { _ = every.tick() => true, _ = shutdown.cancelled() => false } {
                state.health.look(&state).await;
            }
        });
    }
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Ready to serve: Redis answers, the broker knows the request topic, and the announcements
/// subscription is up where one runs (as last looked at, every 2 s). The status alone; the
/// ops port (`producer.ops_listen`) says what is wrong.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready", body = Readiness),
    (status = 503, description = "A dependency is unavailable", body = Readiness),
))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let details = state.health.details();
    (status_of(&details), Json(Readiness { status: details.status }))
}

/// `/readyz` on the ops port: the status and each dependency's state.
pub async fn readyz_details(State(state): State<AppState>) -> (StatusCode, Json<Details>) {
    let details = state.health.details();
    (status_of(&details), Json(details))
}

fn status_of(details: &Details) -> StatusCode {
    if details.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
}

/// The ops port's `/healthz`.
pub async fn healthz_ops() -> Json<Health> {
    Json(Health { status: "ok" })
}

pub(super) type Shared = Arc<Probe>;
