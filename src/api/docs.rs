//! The OpenAPI 3.1 document, generated from the handlers' annotations and the types they
//! return, served at `GET /openapi.json`.

use axum::Json;
use utoipa::OpenApi;

use super::catalogue::{EntryStatus, Page, PageEntry, Reason, StatusOnly, Unavailable};
use super::health::{Health, Readiness};
use super::prices::Pending;
use super::problem::Problem;
use crate::domain::{Comparison, Failure, FailureReason, Quote, Status};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "pricefront",
        description = "Cache-fronted price comparison: 200 from cache, else 202 while the comparison is computed in the background."
    ),
    paths(
        super::prices::get_price,
        super::catalogue::get_prices,
        super::events::price_events,
        super::health::healthz,
        super::health::readyz,
        metrics,
        openapi_json
    ),
    components(schemas(
        Comparison,
        Quote,
        Failure,
        FailureReason,
        Status,
        Pending,
        Problem,
        Health,
        Readiness,
        Page,
        PageEntry,
        StatusOnly,
        EntryStatus,
        Unavailable,
        Reason
    ))
)]
pub struct ApiDoc;

/// Prometheus metrics in text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"),
))]
pub async fn metrics() -> impl axum::response::IntoResponse {
    crate::observability::metrics::endpoint().await
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses(
    (status = 200, description = "OpenAPI 3.1 document", body = Object, content_type = "application/json"),
))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
