//! `GET /v1/prices/{product_id}`: answer from cache, or start the work and answer 202.
//!
//! Lookup: L1 (moka) → Redis → claim the pending marker (`SET NX PX`) → publish. All
//! concurrent misses for one product in this process share one load (L1 coalescing); across
//! processes only the marker's claimant publishes. The load runs in its own task, so a client
//! that hangs up mid-load cannot leave a claimed marker with no message behind it.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;
use tracing::Instrument;

use super::problem::Problem;
use super::{ApiError, AppState};
use crate::cache::{self, Entry, Lookup, StoredResult};
use crate::domain::{Comparison, ProductId};
use crate::queue::PriceRequest;
use crate::queue::envelope::valid_traceparent;

/// Why a load failed; shared by every caller that waited on it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Cache(#[from] crate::cache::Error),
    #[error(transparent)]
    Publish(#[from] crate::queue::Error),
}

/// The 202 body.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Pending {
    #[schema(value_type = String, example = "sku-123")]
    pub product_id: ProductId,
    /// Always `pending`.
    #[schema(example = "pending")]
    pub status: &'static str,
}

/// Look up the price comparison for one product.
#[utoipa::path(
    get,
    path = "/v1/prices/{product_id}",
    tag = "prices",
    params(("product_id" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description = "The product to compare")),
    responses(
        (status = 200, description = "Cached comparison", body = Comparison, content_type = "application/json", headers(
            ("x-cache" = String, description = "HIT"),
            ("cache-control" = String, description = "max-age=<seconds of the price guarantee left>"),
            ("age" = u64, description = "Seconds since the comparison was computed"),
        )),
        (status = 202, description = "Not cached yet: the comparison is being computed; poll Location", body = Pending,
            content_type = "application/json", headers(
            ("x-cache" = String, description = "MISS"),
            ("location" = String, description = "Where to poll: this same URL"),
            ("retry-after" = u64, description = "Seconds to wait before polling"),
        )),
        (status = 400, description = "Invalid product id", body = Problem, content_type = "application/problem+json"),
        (status = 405, description = "Only GET and HEAD", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis or the broker is unavailable", body = Problem,
            content_type = "application/problem+json", headers(("retry-after" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn get_price(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::BadPath(e.body_text()))?;
    let id = ProductId::parse(&raw)?;
    tracing::Span::current().record("product_id", id.as_str());
    let traceparent =
        headers.get("traceparent").and_then(|v| v.to_str().ok()).filter(|v| valid_traceparent(v)).map(str::to_owned);

    // The whole lookup runs in its own task: a client hanging up can neither abort a load
    // that other requests are waiting on, nor leave a claimed marker with no message behind it.
    let lookup = {
        let (state, id) = (state.clone(), id.clone());
        let span = tracing::Span::current();
        tokio::spawn(
            async move { state.l1.get_or_load(&id, load(state.clone(), id.clone(), traceparent)).await }
                .instrument(span),
        )
    };
    let (entry, loaded) = lookup.await.expect("lookup task does not panic").map_err(|e| {
        let what = match &*e {
            LoadError::Cache(_) => "cache",
            LoadError::Publish(_) => "queue",
        };
        ApiError::Unavailable { what, retry_after_secs: state.retry_after_secs, cause: anyhow::Error::new(e) }
    })?;
    // A hit this request did not load came from L1 (a live entry, or a load it waited on).
    let tier = match (&entry, loaded) {
        (Entry::Hit(_), false) => "l1",
        (Entry::Hit(_), true) => "l2",
        (Entry::Miss, _) => "miss",
    };
    metrics::counter!("pricefront_cache_lookups_total", "tier" => tier).increment(1);
    Ok(match entry {
        Entry::Hit(stored) => hit(&stored),
        Entry::Miss => accepted(&id, state.retry_after_secs),
    })
}

async fn load(state: AppState, id: ProductId, traceparent: Option<String>) -> Result<Entry, LoadError> {
    let request = PriceRequest::new(id.clone());
    let token = request.request_id.to_string();
    tracing::Span::current().record("request_id", token.as_str());
    let lookup = match state.store.lookup_or_claim(&id, &token, state.pending_ttl).await {
        Err(cache::Error::Corrupt { key, source }) => {
            tracing::warn!(%key, error = %source, "cached result is not a comparison; deleting it");
            state.store.delete_result(&id).await?;
            state.store.lookup_or_claim(&id, &token, state.pending_ttl).await?
        }
        other => other?,
    };
    match lookup {
        Lookup::Hit(stored) => return Ok(Entry::Hit(Arc::new(*stored))),
        Lookup::AlreadyPending => {
            tracing::debug!("already pending");
            return Ok(Entry::Miss);
        }
        Lookup::Claimed => {}
    }
    match state.publisher.publish(&request, traceparent.as_deref()).await {
        Ok(delivery) => {
            tracing::Span::current().record("request_id", tracing::field::display(request.request_id));
            tracing::info!(partition = delivery.partition, offset = delivery.offset, "request published");
            Ok(Entry::Miss)
        }
        Err(e) => {
            // Release our claim so the next request can try again at once; in the background,
            // so the 503 is not delayed by it.
            tokio::spawn(async move {
                if let Err(release) = state.store.release_pending(&id, &token).await {
                    tracing::warn!(error = %release, "cannot release pending marker; it expires by itself");
                }
            });
            Err(e.into())
        }
    }
}

fn hit(stored: &StoredResult) -> Response {
    let now = OffsetDateTime::now_utc();
    // Whole seconds, rounded down: never more than the body's guarantee has left, by our clock
    // or by the store's.
    let max_age = stored.ttl_left().min(stored.comparison.guarantee_left(now)).as_secs();
    let age = (now - stored.comparison.computed_at).whole_seconds().max(0);
    let mut response = (StatusCode::OK, stored.body.clone()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("x-cache", HeaderValue::from_static("HIT"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_str(&format!("max-age={max_age}")).expect("ascii"));
    headers.insert(header::AGE, HeaderValue::from(age));
    response
}

fn accepted(id: &ProductId, retry_after_secs: u64) -> Response {
    let body = Pending { product_id: id.clone(), status: "pending" };
    let mut response = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert("x-cache", HeaderValue::from_static("MISS"));
    // The id is validated: only URL-safe characters.
    headers.insert(header::LOCATION, HeaderValue::from_str(&format!("/v1/prices/{id}")).expect("safe id"));
    headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /v1/prices/`: the id is empty.
pub async fn empty_id() -> ApiError {
    ApiError::InvalidProductId(crate::domain::InvalidProductId::Empty)
}
