//! `GET /v1/prices/{product_id}`: answer from cache, or start the work and answer 202.
//!
//! 1. **Find it:** L1 (moka), else one Redis read, which also says whether a request for the
//!    product is pending (then: 202, costing nothing); concurrent requests for one product in
//!    this process share that read (L1 coalescing). A hit is never limited.
//! 2. **Claim and publish:** one script looks again and claims the pending marker (`SET NX
//!    PX`). Only a won claim starts work, so only it costs the client one of its
//!    `producer.miss_rate_per_client` tokens (none left: the claim is released, 429, and the
//!    client's misses are refused before they reach Redis until its next token is due);
//!    asking again for a product already pending costs nothing. Then one message is published,
//!    within `producer.max_publish_rate` (else the claim is released, 503). Concurrent
//!    claimants in this process share one claim; across processes only the marker's claimant
//!    publishes. It runs in its own task, so a client that hangs up cannot leave a claimed
//!    marker with no message behind it.
//!
//! 3. **Wait, if asked:** with `Prefer: wait=N`, a 202 is held until the result is written
//!    (then 200) or N seconds pass ([`super::wait`]).
//!
//! A cached result whose status is `not_found` (no source sells the product) answers 404.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;
use tracing::Instrument;

use super::limits::Refused;
use super::problem::Problem;
use super::refresh;
use super::wait::{self, Place, WAITING};
use super::{ApiError, AppState};
use crate::cache::{self, Entry, Lookup, Peek, StoredResult};
use crate::domain::{Comparison, ProductId, Status};
use crate::observability::traces;
use crate::queue::PriceRequest;

/// Why a lookup or a claim failed; shared by every caller that waited on it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Cache(#[from] crate::cache::Error),
    #[error(transparent)]
    Publish(#[from] crate::queue::Error),
    #[error(transparent)]
    Limited(Refused),
    /// `client` is over its miss limit; only that client is refused.
    #[error("client {client}: {refused}")]
    ClientLimited { client: IpAddr, refused: Refused },
}

impl LoadError {
    fn into_api(self: Arc<Self>, retry_after_secs: u64) -> ApiError {
        let what = match &*self {
            LoadError::Limited(refused) | LoadError::ClientLimited { refused, .. } => {
                return ApiError::Overloaded { retry_after_secs: refused.retry_after_secs() };
            }
            LoadError::Cache(_) => "cache",
            LoadError::Publish(_) => "queue",
        };
        ApiError::Unavailable { what, retry_after_secs, cause: anyhow::Error::new(self) }
    }
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
    params(
        ("product_id" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description = "The product to compare"),
        ("prefer" = Option<String>, Header, example = "wait=5",
            description = "RFC 7240. `wait=N`: on a miss, hold the request up to N seconds (at most `producer.max_wait_secs`) and answer 200 as soon as the result is written, else 202"),
    ),
    responses(
        (status = 200, description = "Cached comparison", body = Comparison, content_type = "application/json", headers(
            ("x-cache" = String, description = "HIT"),
            ("cache-control" = String, description = "max-age=<seconds of the price guarantee left>"),
            ("age" = u64, description = "Seconds since the comparison was computed"),
            ("vary" = String, description = "Prefer"),
            ("preference-applied" = String, description = "wait=N, when the request asked to wait and was held"),
        )),
        (status = 202, description = "Not cached yet: the comparison is being computed; poll Location", body = Pending,
            content_type = "application/json", headers(
            ("x-cache" = String, description = "MISS"),
            ("location" = String, description = "Where to poll: this same URL"),
            ("retry-after" = u64, description = "Seconds to wait before polling"),
            ("vary" = String, description = "Prefer"),
            ("preference-applied" = String, description = "wait=N, when the request waited N seconds in vain"),
        )),
        (status = 400, description = "Invalid product id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No price source sells this product (a cached `not_found` result)", body = Problem,
            content_type = "application/problem+json", headers(
            ("x-cache" = String, description = "HIT"),
            ("cache-control" = String, description = "max-age=<seconds the answer is kept>"),
        )),
        (status = 405, description = "Only GET and HEAD", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "This client caused too many misses (cold products); hits are never limited", body = Problem,
            content_type = "application/problem+json", headers(("retry-after" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Redis or the broker is unavailable, or this producer publishes as many new requests as it may",
            body = Problem, content_type = "application/problem+json", headers(("retry-after" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn get_price(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Result<Response, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::BadPath(e.body_text()))?;
    let id = ProductId::parse(&raw)?;
    tracing::Span::current().record("product_id", id.as_str());
    // Registered before the first look: a result written from now on wakes it.
    let wait =
        wait::preferred_wait(&headers).map(|asked| wait::granted(asked, state.max_wait)).filter(|w| !w.is_zero());
    let place = wait.and_then(|_| Place::take(&state.wait_places, WAITING, || state.store.waiter(&id)));
    if wait.is_some() && place.is_none() {
        metrics::counter!("pricefront_waits_total", "outcome" => "refused").increment(1);
    }
    let mut response = answer(&state, &id, &headers, peer).await?;
    if let (Some(wait), Some(mut place)) = (wait, place) {
        if response.status() == StatusCode::ACCEPTED {
            response = wait_for_result(&state, &id, wait, &mut place).await;
        }
        let applied = HeaderValue::from_str(&format!("wait={}", wait.as_secs())).expect("ascii");
        response.headers_mut().insert("preference-applied", applied);
    }
    response.headers_mut().append(header::VARY, HeaderValue::from_static("Prefer"));
    Ok(response)
}

/// Holds a 202 until the result is written (200, or 404 for `not_found`) or `wait` runs out
/// (the 202 as it was).
async fn wait_for_result(state: &AppState, id: &ProductId, wait: Duration, place: &mut Place) -> Response {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        tokio::select! {
            _ = place.waiter.announced() => {}
            _ = tokio::time::sleep_until(deadline) => break,
        }
        if let Some(stored) = look_again(state, id).await {
            metrics::counter!("pricefront_waits_total", "outcome" => "result").increment(1);
            return hit(&stored);
        }
    }
    metrics::counter!("pricefront_waits_total", "outcome" => "timeout").increment(1);
    accepted(id, state.retry_after_secs)
}

/// A woken waiter's look: the result if it is there now. Woken waiters of one product share
/// this read (L1 coalescing); Redis trouble is "not yet" (the waiter's deadline bounds it).
pub(super) async fn look_again(state: &AppState, id: &ProductId) -> Option<Arc<StoredResult>> {
    match state.l1.get_or_load(id, lookup(state.clone(), id.clone())).await {
        Ok((Entry::Hit(stored), _)) => Some(stored),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(error = %e, "cannot look again while waiting");
            None
        }
    }
}

/// The answer without waiting: a hit, or a claim and 202.
async fn answer(
    state: &AppState,
    id: &ProductId,
    headers: &HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Result<Response, ApiError> {
    Ok(match find(state, id, headers, peer).await? {
        Found::Hit(stored) => hit(&stored),
        Found::Pending => accepted(id, state.retry_after_secs),
    })
}

/// What [`find`] found.
pub(super) enum Found {
    Hit(Arc<StoredResult>),
    /// Being computed: somebody's request was pending, or this one was just published.
    Pending,
}

/// A hit, or a claim and publish (within the limits): the miss path every route shares.
pub(super) async fn find(
    state: &AppState,
    id: &ProductId,
    headers: &HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Result<Found, ApiError> {
    let (state, id) = (state.clone(), id.clone());
    let retry_after_secs = state.retry_after_secs;

    let (entry, loaded) =
        state.l1.get_or_load(&id, lookup(state.clone(), id.clone())).await.map_err(|e| e.into_api(retry_after_secs))?;
    match entry {
        Entry::Hit(stored) => {
            // A hit this request did not load came from L1 (a live entry, or a load it waited on).
            let tier = if loaded { "l2" } else { "l1" };
            metrics::counter!("pricefront_cache_lookups_total", "tier" => tier).increment(1);
            if state.refresh.due(&stored, OffsetDateTime::now_utc()) {
                tokio::spawn(refresh::refresh(state.clone(), id.clone()).instrument(tracing::Span::current()));
            }
            return Ok(Found::Hit(stored));
        }
        Entry::Pending => {
            // Being computed: asking again costs nothing and claims nothing.
            metrics::counter!("pricefront_cache_lookups_total", "tier" => "miss").increment(1);
            return Ok(Found::Pending);
        }
        Entry::Miss => metrics::counter!("pricefront_cache_lookups_total", "tier" => "miss").increment(1),
    }

    let client = state.limits.client(peer.map(|Extension(ConnectInfo(addr))| addr), headers);
    if let Some(refused) = state.limits.still_refused(client) {
        metrics::counter!("pricefront_limited_total", "limit" => refused.limit.as_str()).increment(1);
        return Err(ApiError::TooManyMisses { retry_after_secs: refused.retry_after_secs() });
    }
    // The request span's context when spans are exported (the consumer's span becomes its
    // child), else the caller's traceparent as it came.
    let traceparent =
        traces::traceparent_of(&tracing::Span::current(), headers.get("traceparent").and_then(|v| v.to_str().ok()));
    let claiming = {
        let (state, id) = (state.clone(), id.clone());
        tokio::spawn(claim_shared(state, id, client, traceparent).instrument(tracing::Span::current()))
    };
    Ok(match claiming.await.expect("claim task does not panic")? {
        // Written between the look and the claim.
        Entry::Hit(stored) => Found::Hit(stored),
        Entry::Pending | Entry::Miss => Found::Pending,
    })
}

/// Claims with whoever in this process claims the same product now. If the one whose claim
/// was shared is over its limit, the others try again on their own budget.
async fn claim_shared(
    state: AppState,
    id: ProductId,
    client: IpAddr,
    traceparent: Option<String>,
) -> Result<Entry, ApiError> {
    const TRIES: usize = 3;
    for _ in 0..TRIES {
        let load = claim(state.clone(), id.clone(), client, traceparent.clone());
        let error = match state.claims.get_or_load(&id, load).await {
            Ok((entry, _)) => return Ok(entry),
            Err(error) => error,
        };
        match &*error {
            LoadError::ClientLimited { client: refused_client, refused } if *refused_client == client => {
                tracing::debug!(%client, "claim refused: the client is over its miss limit");
                return Err(ApiError::TooManyMisses { retry_after_secs: refused.retry_after_secs() });
            }
            LoadError::ClientLimited { .. } => continue,
            _ => return Err(error.into_api(state.retry_after_secs)),
        }
    }
    Err(ApiError::Overloaded { retry_after_secs: state.retry_after_secs })
}

/// Stage 1: the result if Redis has it, else whether it is pending. A corrupt one is deleted
/// (and is a miss).
async fn lookup(state: AppState, id: ProductId) -> Result<Entry, LoadError> {
    match state.store.lookup(&id).await {
        Ok(Peek::Hit(stored)) => Ok(Entry::Hit(Arc::new(*stored))),
        Ok(Peek::Pending) => Ok(Entry::Pending),
        Ok(Peek::Absent) => Ok(Entry::Miss),
        Err(cache::Error::Corrupt { key, source }) => {
            tracing::warn!(%key, error = %source, "cached result is not a comparison; deleting it");
            state.store.delete_result(&id).await?;
            Ok(Entry::Miss)
        }
        Err(e) => Err(e.into()),
    }
}

/// Stage 2: look again and claim the marker in one script; a won claim costs `client` a
/// miss token, and is published within the producer's publish rate.
async fn claim(
    state: AppState,
    id: ProductId,
    client: IpAddr,
    traceparent: Option<String>,
) -> Result<Entry, LoadError> {
    let request = PriceRequest::new(id.clone());
    let token = request.request_id.to_string();
    tracing::Span::current().record("request_id", token.as_str());
    match state.store.lookup_or_claim(&id, &token, state.pending_ttl).await? {
        Lookup::Hit(stored) => return Ok(Entry::Hit(Arc::new(*stored))),
        Lookup::AlreadyPending => {
            tracing::debug!("already pending");
            return Ok(Entry::Pending);
        }
        Lookup::Claimed => {}
    }
    let allowed = match state.limits.miss(client) {
        Err(refused) => Err(LoadError::ClientLimited { client, refused }),
        Ok(()) => state.limits.publish().map_err(LoadError::Limited),
    };
    if let Err(LoadError::Limited(refused) | LoadError::ClientLimited { refused, .. }) = &allowed {
        metrics::counter!("pricefront_limited_total", "limit" => refused.limit.as_str()).increment(1);
        tracing::debug!(%client, limit = refused.limit.as_str(), "claim refused by a limit; released");
    }
    let published = match allowed {
        Ok(()) => state.publisher.publish(&request, traceparent.as_deref()).await.map_err(LoadError::from),
        Err(refused) => Err(refused),
    };
    match published {
        Ok(delivery) => {
            tracing::info!(partition = delivery.partition, offset = delivery.offset, "request published");
            Ok(Entry::Pending)
        }
        Err(e) => {
            // Release our claim so the next request can try again at once.
            let release = async move {
                if let Err(release) = state.store.release_pending(&id, &token).await {
                    tracing::warn!(error = %release, "cannot release pending marker; it expires by itself");
                }
            };
            if matches!(e, LoadError::Limited(_) | LoadError::ClientLimited { .. }) {
                // Before answering: others may be waiting for this product.
                release.await;
            } else {
                // In the background: the broker is in trouble, the 503 must not wait on Redis too.
                tokio::spawn(release);
            }
            Err(e)
        }
    }
}

fn hit(stored: &StoredResult) -> Response {
    let now = OffsetDateTime::now_utc();
    // Whole seconds, rounded down: never more than the body's guarantee has left, by our clock
    // or by the store's.
    let max_age = stored.ttl_left().min(stored.comparison.guarantee_left(now)).as_secs();
    let age = (now - stored.comparison.computed_at).whole_seconds().max(0);
    let mut response = if stored.comparison.status == Status::NotFound {
        ApiError::ProductNotFound(stored.comparison.product_id.clone()).into_response()
    } else {
        let mut ok = (StatusCode::OK, stored.body.clone()).into_response();
        ok.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        ok
    };
    let headers = response.headers_mut();
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
