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

use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::limits::Refused;
use super::problem::Problem;
use super::refresh;
use super::track::RouteMetrics;
use super::wait::{self, Place, WAITING};
use super::{ApiError, AppState};
use crate::cache::{self, Entry, Lookup, Peek, StoredResult};
use crate::domain::{Comparison, ProductId, Status};

/// Which level answered a look (`pricefront_cache_lookups_total{tier}`).
pub(super) static HITS_L1: LazyCounter =
    LazyCounter::new(|| metrics::counter!("pricefront_cache_lookups_total", "tier" => "l1"));
pub(super) static HITS_L2: LazyCounter =
    LazyCounter::new(|| metrics::counter!("pricefront_cache_lookups_total", "tier" => "l2"));
pub(super) static MISSES: LazyCounter =
    LazyCounter::new(|| metrics::counter!("pricefront_cache_lookups_total", "tier" => "miss"));

/// The route, and where the id starts in its path.
pub(super) const ROUTE: &str = "/v1/prices/{product_id}";
const ROUTE_PREFIX: &str = "/v1/prices/";
static METRICS: RouteMetrics = RouteMetrics::new(ROUTE);
/// Header names, made once (a name given as `&str` is parsed on every use).
pub(super) static PREFER: HeaderName = HeaderName::from_static("prefer");
pub(super) static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
use crate::observability::metrics::LazyCounter;
use crate::observability::traces;
use crate::queue::{Caller, PriceRequest};

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
            reload_l1(&state, raw);
        }
        if state.refresh.due(raw, &stored, now) {
            refresh::start(&state, raw);
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
    let peer = request.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| *addr);
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

/// Everything but a plain L1 hit: decoding the path, `Prefer: wait`, the Redis look, the claim.
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
    // Registered before the first look: a result written from now on wakes it.
    let wait = wait::preferred_wait(headers).map(|asked| wait::granted(asked, state.max_wait)).filter(|w| !w.is_zero());
    let place = wait.and_then(|_| Place::take(&state.wait_places, WAITING, || state.store.waiter(&id)));
    if wait.is_some() && place.is_none() {
        metrics::counter!("pricefront_waits_total", "outcome" => "refused").increment(1);
    }
    let registered = place.as_ref().map(|_| Instant::now());
    let mut response = match find(state, &id, headers, peer, registered).await? {
        Found::Hit(stored) => hit(state, &stored, id.as_str(), headers, Instant::now()),
        Found::Pending => accepted(&id, state.retry_after_secs),
    };
    if let (Some(wait), Some(mut place)) = (wait, place) {
        if response.status() == StatusCode::ACCEPTED {
            response = wait_for_result(state, &id, headers, wait, &mut place).await;
        }
        let applied = HeaderValue::from_str(&format!("wait={}", wait.as_secs())).expect("ascii");
        response.headers_mut().insert("preference-applied", applied);
    }
    Ok(response)
}

/// Holds a 202 until the result is written (200, or 404 for `not_found`) or `wait` runs out
/// (the 202 as it was).
async fn wait_for_result(
    state: &AppState,
    id: &ProductId,
    headers: &HeaderMap,
    wait: Duration,
    place: &mut Place,
) -> Response {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let announced = tokio::select! {
            at = place.waiter.announced() => at,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        if let Some(stored) = look_again(state, id, announced).await {
            metrics::counter!("pricefront_waits_total", "outcome" => "result").increment(1);
            let mut response = hit(state, &stored, id.as_str(), headers, Instant::now());
            // Computed while this request waited: not a cache hit.
            response.headers_mut().insert(&X_CACHE, HeaderValue::from_static("MISS"));
            return response;
        }
    }
    metrics::counter!("pricefront_waits_total", "outcome" => "timeout").increment(1);
    accepted(id, state.retry_after_secs)
}

/// A woken waiter's look: the result if it is there now. Waiters woken by one announcement
/// (at `announced`) share this read, but never join one that started before it, which may
/// not see the result; Redis trouble is "not yet" (the waiter's deadline bounds it).
pub(super) async fn look_again(state: &AppState, id: &ProductId, announced: Instant) -> Option<Arc<StoredResult>> {
    match state.l1.get_or_load_since(id, Some(announced), lookup(state.clone(), id.clone())).await {
        Ok((Entry::Hit(stored), _)) => Some(stored),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(error = %e, "cannot look again while waiting");
            None
        }
    }
}

/// What [`find`] found.
pub(super) enum Found {
    Hit(Arc<StoredResult>),
    /// Being computed: somebody's request was pending, or this one was just published.
    Pending,
}

/// A hit, or a claim and publish (within the limits): the miss path every route shares.
/// `registered`: when the caller registered a waiter, if it did. Its look then never joins a
/// read that started earlier: that read may have missed a result written just before the
/// waiter could hear the announcement, and the waiter would wait for nothing.
pub(super) async fn find(
    state: &AppState,
    id: &ProductId,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    registered: Option<Instant>,
) -> Result<Found, ApiError> {
    let (state, id) = (state.clone(), id.clone());
    let retry_after_secs = state.retry_after_secs;

    let (entry, loaded) = state
        .l1
        .get_or_load_since(&id, registered, lookup(state.clone(), id.clone()))
        .await
        .map_err(|e| e.into_api(retry_after_secs))?;
    match entry {
        Entry::Hit(stored) => {
            // A hit this request did not load came from L1 (a live entry, or a load it waited on).
            if loaded { &HITS_L2 } else { &HITS_L1 }.increment(1);
            if state.refresh.due(id.as_str(), &stored, Instant::now()) {
                refresh::start(&state, id.as_str());
            }
            return Ok(Found::Hit(stored));
        }
        Entry::Pending => {
            // Being computed: asking again costs nothing and claims nothing.
            MISSES.increment(1);
            return Ok(Found::Pending);
        }
        Entry::Miss => MISSES.increment(1),
    }

    let client = state.limits.client(peer, headers);
    if let Some(refused) = state.limits.still_refused(client) {
        metrics::counter!("pricefront_limited_total", "limit" => refused.limit.as_str()).increment(1);
        return Err(ApiError::TooManyMisses { retry_after_secs: refused.retry_after_secs() });
    }
    let asker = Asker::of(headers);
    // A claim logs (what it published, what refused it): under a span naming the product and
    // the request.
    let span = current_or(|| {
        let (request_id, traceparent) = (asker.request_id.as_deref(), asker.traceparent.as_deref());
        tracing::info_span!("miss", product_id = %id, request_id, traceparent, message_id = tracing::field::Empty)
    });
    let claiming = {
        let (state, id) = (state.clone(), id.clone());
        tokio::spawn(claim_shared(state, id, client, asker).instrument(span))
    };
    Ok(match claiming.await.expect("claim task does not panic")? {
        // Written between the look and the claim.
        Entry::Hit(stored) => Found::Hit(stored),
        Entry::Pending | Entry::Miss => Found::Pending,
    })
}

/// Claims with whoever in this process claims the same product now. If the one whose claim
/// was shared is over its limit, the others try again on their own budget.
async fn claim_shared(state: AppState, id: ProductId, client: IpAddr, asker: Asker) -> Result<Entry, ApiError> {
    const TRIES: usize = 3;
    for _ in 0..TRIES {
        let load = claim(state.clone(), id.clone(), client, asker.clone());
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

/// Who asked for a miss, as the message tells the consumer: owned, for the claim's task.
#[derive(Clone, Debug, Default)]
pub(super) struct Asker {
    /// The request span's context when spans are exported (the consumer's span becomes its
    /// child), else the caller's valid traceparent as it came.
    pub(super) traceparent: Option<String>,
    /// The request's `X-Request-Id`.
    pub(super) request_id: Option<String>,
}

impl Asker {
    pub(super) fn of(headers: &HeaderMap) -> Self {
        let incoming = headers.get("traceparent").and_then(|v| v.to_str().ok());
        Self {
            traceparent: traces::traceparent_of(&tracing::Span::current(), incoming),
            request_id: super::request_id::of(headers).map(str::to_owned),
        }
    }

    pub(super) fn caller(&self) -> Caller<'_> {
        Caller { traceparent: self.traceparent.as_deref(), request_id: self.request_id.as_deref() }
    }
}

/// Reads `id` from Redis again in the background, for L1 (see `cache::L1::look`).
pub(super) fn reload_l1(state: &AppState, raw: &str) {
    let Ok(id) = ProductId::parse(raw) else { return };
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = state.l1.reload(&id, lookup(state.clone(), id.clone())).await {
            tracing::debug!(product_id = %id, error = %e, "cannot reload a held result; it ends with its life");
        }
    });
}

/// Stage 1: the result if Redis has it, else whether it is pending. A corrupt one is deleted
/// (and is a miss).
async fn lookup(state: AppState, id: ProductId) -> Result<Entry, LoadError> {
    let peek = state.store.lookup(&id).await;
    settle(&state, &id, peek).await
}

/// What a look at `id` in the store found, as an entry: a corrupt value is deleted (and is a
/// miss). Shared with the multi-get, which looks many up at once.
pub(super) async fn settle(
    state: &AppState,
    id: &ProductId,
    peek: Result<Peek, cache::Error>,
) -> Result<Entry, LoadError> {
    match peek {
        Ok(Peek::Hit(stored)) => Ok(Entry::Hit(Arc::new(*stored))),
        Ok(Peek::Pending) => Ok(Entry::Pending),
        Ok(Peek::Absent) => Ok(Entry::Miss),
        Err(cache::Error::Corrupt { key, source }) => {
            tracing::warn!(%key, error = %source, "cached result is not a comparison; deleting it");
            state.store.delete_result(id).await?;
            Ok(Entry::Miss)
        }
        Err(e) => Err(e.into()),
    }
}

/// Stage 2: look again and claim the marker in one script; a won claim costs `client` a
/// miss token, and is published within the producer's publish rate.
async fn claim(state: AppState, id: ProductId, client: IpAddr, asker: Asker) -> Result<Entry, LoadError> {
    let request = PriceRequest::new(id.clone());
    let token = request.request_id.to_string();
    tracing::Span::current().record("message_id", token.as_str());
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
        Ok(()) => state.publisher.publish(&request, asker.caller()).await.map_err(LoadError::from),
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

/// A cached result's answer: 200 with its bytes; 304 when `If-None-Match` names it; 404 for
/// `not_found`. `Cache-Control` lets a CDN keep it until its guarantee ends and serve it
/// meanwhile for the refresh window while it revalidates.
fn hit(state: &AppState, stored: &StoredResult, id: &str, headers: &HeaderMap, now: Instant) -> Response {
    // Whole seconds, rounded down: never more than its guarantee has left.
    let max_age = stored.ttl_left_at(now).as_secs();
    let age = HeaderValue::from(stored.age_secs(SystemTime::now()));
    if stored.status == Status::NotFound {
        let id = ProductId::parse(id).expect("a stored result's id is valid");
        let mut response = ApiError::ProductNotFound(id).into_response();
        let headers = response.headers_mut();
        headers.insert(&X_CACHE, HeaderValue::from_static("HIT"));
        headers.insert(header::CACHE_CONTROL, cache_control(max_age, None));
        headers.insert(header::AGE, age);
        headers.insert(header::VARY, HeaderValue::from_static("Prefer"));
        return response;
    }
    let not_modified = headers.get(header::IF_NONE_MATCH).is_some_and(|tags| stored.matches(tags.as_bytes()));
    // The fixed headers were made with the result; only what changes with time is added.
    let mut out = stored.headers.clone();
    out.insert(header::CACHE_CONTROL, cache_control(max_age, state.refresh.window_secs(stored)));
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

/// `public, max-age=N[, stale-while-revalidate=W]`.
pub(super) fn cache_control(max_age: u64, stale_while_revalidate: Option<u64>) -> HeaderValue {
    let mut value = String::with_capacity(56);
    value.push_str("public, max-age=");
    value.push_str(itoa::Buffer::new().format(max_age));
    if let Some(window) = stale_while_revalidate {
        value.push_str(", stale-while-revalidate=");
        value.push_str(itoa::Buffer::new().format(window));
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).expect("ascii")
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
