//! `GET /v1/prices/{product_id}`: answer from cache, or start the work and answer 202.
//!
//! A plain L1 hit (no preferences) is answered here, with no allocation before the answer, no
//! span and no task. Everything else goes through the miss path ([`super::miss`]): the look in
//! Redis, the claim within the limits, the publish and, with `Prefer: wait=N`, the wait for
//! the result (then 200, else 202 as without it). This module turns what it finds into HTTP:
//! a hit's 200 (304, or 404 for a cached `not_found`), the 202, or the error.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::miss::{self, Asking, Found, HITS_L1, Wait};
use super::problem::Problem;
use super::refresh;
use super::timed;
use super::track::RouteMetrics;
use super::{ApiError, AppState};
use crate::cache::StoredResult;
use crate::domain::{Comparison, ProductId, Status};

/// The route, and where the id starts in its path.
pub(super) const ROUTE: &str = "/v1/prices/{product_id}";
const ROUTE_PREFIX: &str = "/v1/prices/";
/// Whether `path` is this route's: `/v1/prices/` and a non-empty segment, valid or not (the
/// handler answers an invalid id).
pub(super) fn is_route(path: &str) -> bool {
    path.strip_prefix(ROUTE_PREFIX).is_some_and(|id| !id.is_empty() && !id.contains('/'))
}
static METRICS: RouteMetrics = RouteMetrics::new(ROUTE);
/// Header names, made once (a name given as `&str` is parsed on every use).
pub(super) static PREFER: HeaderName = HeaderName::from_static("prefer");
pub(super) static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// The 202 body.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Pending {
    #[schema(value_type = String, example = "sku-123")]
    pub product_id: ProductId,
    /// Always `pending`.
    #[schema(example = "pending")]
    pub status: &'static str,
}

/// Look up the price comparison for one product. `HEAD` answers the same headers, without a body.
#[utoipa::path(
    method(get, head),
    path = "/v1/prices/{product_id}",
    tag = "prices",
    params(
        ("product_id" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description = "The product to compare"),
        ("prefer" = Option<String>, Header, example = "wait=5",
            description = "RFC 7240. `wait=N`: on a miss, hold the request up to N seconds (at most `producer.max_wait_secs`) and answer 200 as soon as the result is written, else 202"),
        ("if-none-match" = Option<String>, Header, example = "\"19ad0b2c1f3-9e3c2b7a5d1f0c44\"",
            description = "RFC 9110. Entity tags (or `*`) the client holds; the current one answers 304 without a body"),
        ("traceparent" = Option<String>, Header, example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            description = "W3C Trace Context: the request joins the caller's trace, and the computation's spans follow it across the queue"),
    ),
    responses(
        (status = 200, description = "Cached comparison", body = Comparison, content_type = "application/json", headers(
            ("x-cache" = String, description = "HIT"),
            ("etag" = String, description = "Strong entity tag of this result: its computed_at and a hash of its bytes"),
            ("cache-control" = String, description = "public, max-age=<whole seconds of the price guarantee left>, stale-while-revalidate=<seconds of the refresh window> (the last `cache.refresh_ahead` of the guarantee; absent when refreshing ahead is off)"),
            ("age" = u64, description = "Seconds since the comparison was computed"),
            ("vary" = String, description = "Prefer"),
            ("preference-applied" = String, description = "wait=N, when the request asked to wait and was held"),
        )),
        (status = 202, description = "Not cached yet: the comparison is being computed; poll Location", body = Pending,
            content_type = "application/json", headers(
            ("x-cache" = String, description = "MISS"),
            ("location" = String, description = "Where to poll: this same URL"),
            ("retry-after" = u64, description = "Seconds to wait before polling"),
            ("cache-control" = String, description = "no-store"),
            ("vary" = String, description = "Prefer"),
            ("preference-applied" = String, description = "wait=N, when the request waited N seconds in vain"),
        )),
        (status = 304, description = "Not modified: `If-None-Match` names the current result. No body", headers(
            ("x-cache" = String, description = "HIT"),
            ("etag" = String, description = "The current entity tag"),
            ("cache-control" = String, description = "As on 200"),
            ("age" = u64, description = "Seconds since the comparison was computed"),
            ("vary" = String, description = "Prefer"),
        )),
        (status = 400, description = "Invalid product id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No price source sells this product (a cached `not_found` result)", body = Problem,
            content_type = "application/problem+json", headers(
            ("x-cache" = String, description = "HIT"),
            ("cache-control" = String, description = "public, max-age=<seconds the answer is kept>"),
        )),
        (status = 405, description = "Only GET and HEAD", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "This client caused too many misses (cold products); hits are never limited", body = Problem,
            content_type = "application/problem+json", headers(("retry-after" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Redis or the broker is unavailable, or this producer publishes as many new requests as it may",
            body = Problem, content_type = "application/problem+json", headers(("retry-after" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn get_price(State(state): State<AppState>, request: Request) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let response = respond(state, request).await;
    METRICS.record(&method, response.status().as_u16(), started);
    response
}

/// Any other method on this route.
pub async fn method_not_allowed(method: axum::http::Method) -> Response {
    let started = Instant::now();
    let response = ApiError::MethodNotAllowed.into_response();
    METRICS.record(&method, response.status().as_u16(), started);
    response
}

async fn respond(state: AppState, request: Request) -> Response {
    // The body is not `Sync`: only the head may be held across an await.
    let (request, _) = request.into_parts();
    let raw = request.uri.path().strip_prefix(ROUTE_PREFIX).unwrap_or_default();
    // The fast path, the product's most common answer: a live L1 hit, asked for without
    // preferences. No allocation before the answer, no span, no task.
    let now = Instant::now();
    if ProductId::is_valid(raw)
        && !request.headers.contains_key(&PREFER)
        && let Some((stored, reload)) = state.l1.look(raw, now)
    {
        HITS_L1.increment(1);
        if reload {
            miss::reload_l1(&state, raw);
        }
        if state.refresh.due(raw, &stored, now) {
            // Rare (once per result per process): only then is the client worked out.
            let peer = super::server::peer(&request.extensions);
            refresh::start(&state, raw, state.limits.client(peer, &request.headers));
        }
        return hit(&state, &stored, raw, &request.headers, now);
    }
    // Boxed: its states would otherwise make every request's future large, and the framework
    // moves that future several times per request.
    Box::pin(answer(state, request)).await
}

/// Everything but a plain L1 hit. It runs under no span of its own (the router's when spans
/// are exported): the claim makes one, and so does an error, where something is logged.
async fn answer(state: AppState, request: axum::http::request::Parts) -> Response {
    let raw = request.uri.path().strip_prefix(ROUTE_PREFIX).unwrap_or_default();
    let peer = super::server::peer(&request.extensions);
    match slow_path(&state, raw, &request.headers, peer).await {
        Ok(response) => response,
        // A 5xx logs its cause: under the request's span, made now if there is none (a span
        // costs more than a Redis hit does, so only what logs gets one).
        Err(error) => {
            let span = current_or(|| super::request_span(&request.method, request.uri.path(), &request.headers));
            if ProductId::is_valid(raw) {
                span.record("product_id", raw);
            }
            span.in_scope(|| error.into_response())
        }
    }
}

/// The current span, or `make()` when there is none (spans are not exported).
pub(super) fn current_or(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    match tracing::Span::current() {
        current if current.is_none() => make(),
        current => current,
    }
}

/// Everything but a plain L1 hit: decoding the path, `Prefer: wait`, the miss path.
async fn slow_path(
    state: &AppState,
    raw: &str,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Result<Response, ApiError> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::BadPath("the product id is not valid UTF-8 once percent-decoded".into()))?;
    let id = ProductId::parse(&decoded)?;
    tracing::Span::current().record("product_id", id.as_str());
    let ids = std::slice::from_ref(&id);
    // Registered before the first look: a result written from now on wakes it.
    let asking = Asking { peer, headers };
    let mut wait = Wait::register(state, ids, asking);
    let found = miss::find(state, &id, asking, wait.as_ref().map(|w| w.registered)).await;
    let waited = matches!(found, Found::Pending) && wait.is_some();
    let mut found = [found];
    if let Some(wait) = &mut wait {
        wait.until_final(state, ids, &mut found).await;
    }
    let [found] = found;
    let mut response = match found {
        Found::Hit(stored) => {
            let mut response = hit(state, &stored, id.as_str(), headers, Instant::now());
            if waited {
                // Computed while this request waited: not a cache hit.
                response.headers_mut().insert(&X_CACHE, HeaderValue::from_static("MISS"));
            }
            response
        }
        Found::Pending => accepted(&id, state.retry_after_secs),
        Found::Unavailable(unavailable) => return Err(unavailable.into()),
    };
    if let Some(wait) = wait {
        response.headers_mut().insert("preference-applied", wait.applied());
    }
    Ok(response)
}

/// A cached result's answer: 200 with its bytes; 304 when `If-None-Match` names it; 404 for
/// `not_found`. `Cache-Control` lets a CDN keep it until its guarantee ends and serve it
/// meanwhile for the refresh window while it revalidates.
fn hit(state: &AppState, stored: &StoredResult, id: &str, headers: &HeaderMap, now: Instant) -> Response {
    // Whole seconds, rounded down: never more than its guarantee has left.
    let max_age = stored.ttl_left_at(now).as_secs();
    let age = timed::age(stored.age_secs(SystemTime::now()));
    if stored.status == Status::NotFound {
        let id = ProductId::parse(id).expect("a stored result's id is valid");
        let mut response = ApiError::ProductNotFound(id).into_response();
        let headers = response.headers_mut();
        headers.insert(&X_CACHE, HeaderValue::from_static("HIT"));
        headers.insert(header::CACHE_CONTROL, timed::cache_control(max_age, None));
        headers.insert(header::AGE, age);
        headers.insert(header::VARY, HeaderValue::from_static("Prefer"));
        return response;
    }
    let not_modified = headers.get(header::IF_NONE_MATCH).is_some_and(|tags| stored.matches(tags.as_bytes()));
    // The fixed headers were made with the result; only what changes with time is added.
    let mut out = stored.headers.clone();
    out.insert(header::CACHE_CONTROL, timed::cache_control(max_age, state.refresh.window_secs(stored)));
    out.insert(header::AGE, age);
    let mut response = if not_modified {
        out.remove(header::CONTENT_TYPE);
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        Response::new(Body::from(stored.body.clone()))
    };
    *response.headers_mut() = out;
    response
}

fn accepted(id: &ProductId, retry_after_secs: u64) -> Response {
    let body = Pending { product_id: id.clone(), status: "pending" };
    let mut response = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(&X_CACHE, HeaderValue::from_static("MISS"));
    // The id is validated: only URL-safe characters.
    headers.insert(header::LOCATION, HeaderValue::from_str(&format!("/v1/prices/{id}")).expect("safe id"));
    headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::VARY, HeaderValue::from_static("Prefer"));
    response
}

/// `GET /v1/prices/`: the id is empty.
pub async fn empty_id() -> ApiError {
    ApiError::InvalidProductId(crate::domain::InvalidProductId::Empty)
}
