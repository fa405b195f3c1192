//! `GET /v1/prices?ids=a,b,c`: a catalogue page's products in one request.
//!
//! The answer is always 200, `{"results": {"<id>": <entry>, …}}`, one entry per distinct id in
//! the order asked: the comparison if it is cached, `{"status": "not_found"}` if its cached
//! result says no source sells it, `{"status": "pending"}` while it is computed, or
//! `{"status": "unavailable", "reason", "retry_after_secs"}` when it could not be looked up or
//! started (Redis or the broker failed, or a limit refused it).
//!
//! What it costs, for the page as a whole:
//! 1. **One L1 pass;** then **one Redis round trip** for everything L1 missed (a pipeline of
//!    `GET` + `EXISTS` per product; on a cluster one pipeline per hash slot, all at once).
//! 2. For the products neither cached nor pending, **one script** that looks again and claims
//!    each one's marker (per hash slot on a cluster). Each won claim costs the client one
//!    miss token and the producer one publish, as a single miss does; one a limit refuses is
//!    released and answered `unavailable`.
//! 3. **One batch of publishes** for the won claims, none waiting on another's ack. Claims and
//!    publishes run in their own task, so a client that hangs up leaves no claim unpublished.
//! 4. With `Prefer: wait=N`, the answer is held until every entry is final or N seconds pass
//!    (every product's waiter is registered before the look, as for one product).
//!
//! `Cache-Control` is the smallest `max-age` among the entries, or `no-store` when any entry
//! is pending or unavailable (then `Retry-After` says when to ask again).

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use tracing::Instrument;

use super::limits::Limit;
use super::prices::{self, HITS_L1, HITS_L2, MISSES, X_CACHE};
use super::refresh;
use super::wait::{self, Place, WAITING};
use super::{ApiError, AppState};
use crate::cache::{self, Lookup, StoredResult, Waiter};
use crate::domain::{Comparison, ProductId, Status};
use crate::queue::PriceRequest;

pub(super) const ROUTE: &str = "/v1/prices";

/// The answer's schema (for the OpenAPI document; the body is assembled from stored bytes).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Page {
    /// One entry per distinct id asked for.
    #[schema(example = json!({"sku-1": {"status": "pending"}, "sku-2": {"status": "not_found"}}))]
    pub results: std::collections::BTreeMap<String, PageEntry>,
}

/// One product's entry in a [`Page`]. Only its schema is used: entries are written from the
/// stored bytes (see [`page`]), so its size does not matter.
#[allow(dead_code, clippy::large_enum_variant)]
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum PageEntry {
    /// Cached: exactly the body `GET /v1/prices/{product_id}` answers.
    Comparison(Comparison),
    /// Being computed (`pending`), or no source sells it (`not_found`).
    Status(StatusOnly),
    /// Could not be looked up or started now.
    Unavailable(Unavailable),
}

/// An entry that is a status alone.
#[derive(Serialize, utoipa::ToSchema)]
pub struct StatusOnly {
    pub status: EntryStatus,
}

#[derive(Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryStatus {
    Pending,
    NotFound,
}

/// An entry that could not be answered now: ask again after `retry_after_secs`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Unavailable {
    /// Always `unavailable`.
    #[schema(example = "unavailable")]
    pub status: &'static str,
    pub reason: Reason,
    pub retry_after_secs: u64,
}

/// Why an entry is unavailable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Redis failed or was too slow.
    Cache,
    /// The broker did not take the request.
    Queue,
    /// This client caused too many misses lately (`producer.miss_rate_per_client`).
    MissLimit,
    /// This producer publishes as many new requests as it may (`producer.max_publish_rate`).
    PublishLimit,
}

/// One product's state while the page is put together.
enum Entry {
    Hit(Arc<StoredResult>),
    Pending,
    Unavailable { reason: Reason, retry_after_secs: u64 },
}

impl Entry {
    fn is_final(&self) -> bool {
        !matches!(self, Entry::Pending)
    }
}

/// Look up the price comparisons of many products at once (a catalogue page).
#[utoipa::path(
    method(get, head),
    path = "/v1/prices",
    tag = "prices",
    params(
        ("ids" = String, Query, example = "sku-1,sku-2,sku-3",
            description = "Comma-separated product ids (each `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`), 1 to `producer.max_batch_ids` distinct ones; duplicates are answered once. `ids` may also be repeated"),
        ("prefer" = Option<String>, Header, example = "wait=5",
            description = "RFC 7240. `wait=N`: hold the answer up to N seconds (at most `producer.max_wait_secs`) until every entry is final"),
        ("traceparent" = Option<String>, Header, description = "W3C Trace Context, as for one product"),
    ),
    responses(
        (status = 200, description = "One entry per distinct id", body = Page, content_type = "application/json", headers(
            ("x-cache" = String, description = "HIT when every entry came from cache, else MISS"),
            ("cache-control" = String, description = "public, max-age=<the smallest guarantee left among the entries>; no-store when an entry is pending or unavailable"),
            ("retry-after" = u64, description = "When an entry is pending or unavailable: seconds to wait before asking again"),
            ("vary" = String, description = "Prefer"),
            ("preference-applied" = String, description = "wait=N, when the request asked to wait and was held"),
        )),
        (status = 400, description = "`ids` missing, an id invalid (all of them are named in `invalid_ids`), or more than `producer.max_batch_ids` distinct ids",
            body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 405, description = "Only GET and HEAD", body = super::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_prices(State(state): State<AppState>, request: Request) -> Response {
    let (request, _) = request.into_parts();
    let peer = request.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| *addr);
    match respond(&state, request.uri.query(), &request.headers, peer).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn respond(
    state: &AppState,
    query: Option<&str>,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Result<Response, ApiError> {
    let ids = parse_ids(query, state.max_batch_ids)?;
    let wait = wait::preferred_wait(headers).map(|asked| wait::granted(asked, state.max_wait)).filter(|w| !w.is_zero());
    // Registered before the look, as for one product: a result written from now on wakes them.
    let place = wait.and_then(|_| {
        Place::take(&state.wait_places, WAITING, || ids.iter().map(|id| state.store.waiter(id)).collect::<Vec<_>>())
    });
    if wait.is_some() && place.is_none() {
        metrics::counter!("pricefront_waits_total", "outcome" => "refused").increment(1);
    }
    let mut entries = look(state, &ids, headers, peer).await;
    if let (Some(wait), Some(mut place)) = (wait, place) {
        if !entries.iter().all(Entry::is_final) {
            let waiters = std::mem::take(&mut place.waiter);
            let outcome =
                if wait_for_all(state, &ids, &mut entries, waiters, wait).await { "result" } else { "timeout" };
            metrics::counter!("pricefront_waits_total", "outcome" => outcome).increment(1);
        }
        let mut response = page(state, &ids, &entries);
        let applied = HeaderValue::from_str(&format!("wait={}", wait.as_secs())).expect("ascii");
        response.headers_mut().insert("preference-applied", applied);
        return Ok(response);
    }
    Ok(page(state, &ids, &entries))
}

/// The distinct ids of `ids=` (comma-separated, the parameter maybe repeated), in order.
fn parse_ids(query: Option<&str>, max: usize) -> Result<Vec<ProductId>, ApiError> {
    let mut values = Vec::new();
    for pair in query.unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "ids" {
            continue;
        }
        let value: Cow<'_, str> = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| ApiError::BadQuery("ids is not valid UTF-8 once percent-decoded"))?;
        values.push(value);
    }
    if values.is_empty() {
        return Err(ApiError::BadQuery("ids is required: GET /v1/prices?ids=a,b,c"));
    }
    let (mut ids, mut invalid, mut seen) = (Vec::new(), Vec::new(), HashSet::new());
    for raw in values.iter().flat_map(|value| value.split(',')) {
        if !seen.insert(raw) {
            continue;
        }
        match ProductId::parse(raw) {
            Ok(id) => ids.push(id),
            Err(why) => invalid.push((raw.to_owned(), why)),
        }
    }
    if !invalid.is_empty() {
        return Err(ApiError::InvalidProductIds(invalid));
    }
    if ids.len() > max {
        return Err(ApiError::TooManyIds { count: ids.len(), max });
    }
    Ok(ids)
}

/// Each product's entry: L1, then one Redis read for the rest, then one claim for what is
/// neither cached nor pending.
async fn look(state: &AppState, ids: &[ProductId], headers: &HeaderMap, peer: Option<SocketAddr>) -> Vec<Entry> {
    let now = Instant::now();
    let mut entries: Vec<Option<Entry>> = Vec::with_capacity(ids.len());
    let mut missed = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        match state.l1.look(id.as_str(), now) {
            Some((stored, reload)) => {
                if reload {
                    prices::reload_l1(state, id.as_str());
                }
                entries.push(Some(hit(state, id, stored, now)));
            }
            None => {
                entries.push(None);
                missed.push(i);
            }
        }
    }
    // Counted once per page: a counter bumped per id is a contended atomic 100 times.
    HITS_L1.increment((ids.len() - missed.len()) as u64);
    if !missed.is_empty() {
        let absent = look_in_store(state, ids, &missed, &mut entries).await;
        if !absent.is_empty() {
            let client = state.limits.client(peer, headers);
            let asker = prices::Asker::of(headers);
            let wanted: Vec<ProductId> = absent.iter().map(|&i| ids[i].clone()).collect();
            let span = prices::current_or(|| {
                let (request_id, traceparent) = (asker.request_id.as_deref(), asker.traceparent.as_deref());
                tracing::info_span!("misses", products = wanted.len(), request_id, traceparent)
            });
            let claiming = tokio::spawn(claim_all(state.clone(), wanted, client, asker).instrument(span));
            let claimed = claiming.await.expect("claim task does not panic");
            for (i, entry) in absent.into_iter().zip(claimed) {
                entries[i] = Some(entry);
            }
        }
    }
    entries.into_iter().map(|entry| entry.expect("every product has an entry")).collect()
}

/// A hit's bookkeeping: a refresh ahead if it is due.
fn hit(state: &AppState, id: &ProductId, stored: Arc<StoredResult>, now: Instant) -> Entry {
    if state.refresh.due(id.as_str(), &stored, now) {
        refresh::start(state, id.as_str());
    }
    Entry::Hit(stored)
}

/// Stage 1 for the products L1 missed (`missed`, indexes into `ids`), in one round trip: fills
/// their entries, except the absent ones, which it returns for claiming.
async fn look_in_store(
    state: &AppState,
    ids: &[ProductId],
    missed: &[usize],
    entries: &mut [Option<Entry>],
) -> Vec<usize> {
    let wanted: Vec<ProductId> = missed.iter().map(|&i| ids[i].clone()).collect();
    let peeks = match state.store.lookup_many(&wanted).await {
        Ok(peeks) => peeks,
        Err(e) => {
            tracing::warn!(error = %e, products = wanted.len(), "cannot look products up in Redis; answering them unavailable");
            for &i in missed {
                entries[i] = Some(unavailable(Reason::Cache, state.retry_after_secs));
            }
            return Vec::new();
        }
    };
    let (mut absent, mut hits, mut misses) = (Vec::new(), 0, 0);
    for (&i, peek) in missed.iter().zip(peeks) {
        entries[i] = match prices::settle(state, &ids[i], peek).await {
            Ok(cache::Entry::Hit(stored)) => {
                hits += 1;
                state.l1.hold(&ids[i], &stored);
                Some(hit(state, &ids[i], stored, Instant::now()))
            }
            Ok(cache::Entry::Pending) => {
                misses += 1;
                Some(Entry::Pending)
            }
            Ok(cache::Entry::Miss) => {
                misses += 1;
                absent.push(i);
                None
            }
            Err(_) => Some(unavailable(Reason::Cache, state.retry_after_secs)),
        };
    }
    HITS_L2.increment(hits);
    MISSES.increment(misses);
    absent
}

/// Stages 2 and 3 for products neither cached nor pending: one script claims them all, the
/// limits take their share, and the won claims are published as one batch. Their entries, in
/// order.
async fn claim_all(state: AppState, ids: Vec<ProductId>, client: IpAddr, asker: prices::Asker) -> Vec<Entry> {
    if let Some(refused) = state.limits.still_refused(client) {
        metrics::counter!("pricefront_limited_total", "limit" => refused.limit.as_str()).increment(ids.len() as u64);
        return ids.iter().map(|_| unavailable(Reason::MissLimit, refused.retry_after_secs())).collect();
    }
    let requests: Vec<PriceRequest> = ids.iter().map(|id| PriceRequest::new(id.clone())).collect();
    let claims: Vec<(ProductId, String)> =
        requests.iter().map(|r| (r.product_id.clone(), r.request_id.to_string())).collect();
    let lookups = match state.store.lookup_or_claim_many(&claims, state.pending_ttl).await {
        Ok(lookups) => lookups,
        Err(e) => {
            tracing::warn!(error = %e, "cannot claim products in Redis; answering them unavailable");
            return ids.iter().map(|_| unavailable(Reason::Cache, state.retry_after_secs)).collect();
        }
    };
    let (mut entries, mut publish, mut release) = (Vec::with_capacity(ids.len()), Vec::new(), Vec::new());
    for (i, lookup) in lookups.into_iter().enumerate() {
        entries.push(match lookup {
            // Written between the look and the claim.
            Ok(Lookup::Hit(stored)) => {
                let stored = Arc::new(*stored);
                state.l1.hold(&ids[i], &stored);
                Entry::Hit(stored)
            }
            Ok(Lookup::AlreadyPending) => Entry::Pending,
            Ok(Lookup::Claimed) => match state.limits.miss(client).and_then(|()| state.limits.publish()) {
                Ok(()) => {
                    publish.push(i);
                    Entry::Pending
                }
                Err(refused) => {
                    metrics::counter!("pricefront_limited_total", "limit" => refused.limit.as_str()).increment(1);
                    release.push(i);
                    let reason =
                        if refused.limit == Limit::Publishes { Reason::PublishLimit } else { Reason::MissLimit };
                    unavailable(reason, refused.retry_after_secs())
                }
            },
            Err(_) => unavailable(Reason::Cache, state.retry_after_secs),
        });
    }
    if !release.is_empty() {
        tracing::debug!(%client, refused = release.len(), "claims refused by a limit; released");
        // Before answering: others may be waiting for these products.
        release_all(&state, &claims, &release).await;
    }
    let batch: Vec<PriceRequest> = publish.iter().map(|&i| requests[i].clone()).collect();
    let delivered = state.publisher.publish_many(&batch, asker.caller()).await;
    let mut failed = Vec::new();
    for (&i, delivery) in publish.iter().zip(delivered) {
        if let Err(e) = delivery {
            tracing::debug!(product_id = %ids[i], error = %e, "cannot publish the request");
            entries[i] = unavailable(Reason::Queue, state.retry_after_secs);
            failed.push(i);
        }
    }
    if failed.is_empty() {
        if !publish.is_empty() {
            tracing::info!(published = publish.len(), "requests published");
        }
    } else {
        tracing::warn!(
            published = publish.len() - failed.len(),
            failed = failed.len(),
            "cannot publish every request; released"
        );
        // In the background: the broker is in trouble, the answer must not wait on Redis too.
        let state = state.clone();
        tokio::spawn(async move { release_all(&state, &claims, &failed).await });
    }
    entries
}

/// Releases the claims at `which` (those tokens' markers only), all at once.
async fn release_all(state: &AppState, claims: &[(ProductId, String)], which: &[usize]) {
    let releases = which.iter().map(|&i| state.store.release_pending(&claims[i].0, &claims[i].1));
    for released in futures::future::join_all(releases).await {
        if let Err(e) = released {
            tracing::warn!(error = %e, "cannot release a pending marker; it expires by itself");
        }
    }
}

fn unavailable(reason: Reason, retry_after_secs: u64) -> Entry {
    Entry::Unavailable { reason, retry_after_secs }
}

/// Holds until every pending entry is final or `wait` runs out (false then). Each pending
/// product's waiter, woken, looks again as one product's would.
async fn wait_for_all(
    state: &AppState,
    ids: &[ProductId],
    entries: &mut [Entry],
    waiters: Vec<Waiter>,
    wait: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let announced = |i: usize, mut waiter: Waiter| async move {
        let at = waiter.announced().await;
        (i, at, waiter)
    };
    let mut pending: FuturesUnordered<_> = waiters
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !entries[*i].is_final())
        .map(|(i, waiter)| announced(i, waiter))
        .collect();
    loop {
        let (i, at, waiter) = tokio::select! {
            woken = pending.next() => match woken {
                Some(woken) => woken,
                None => return true,
            },
            _ = tokio::time::sleep_until(deadline) => return false,
        };
        // Bounded too: after a wake-up of everybody, looks one after another must not outlast it.
        match tokio::time::timeout_at(deadline, prices::look_again(state, &ids[i], at)).await {
            Err(_elapsed) => return false,
            Ok(Some(stored)) => entries[i] = Entry::Hit(stored),
            Ok(None) => pending.push(announced(i, waiter)),
        }
    }
}

/// The 200: the entries' bytes in one body, and the page's cache headers.
fn page(state: &AppState, ids: &[ProductId], entries: &[Entry]) -> Response {
    static PENDING: LazyLock<Vec<u8>> = LazyLock::new(|| status_only(EntryStatus::Pending));
    static NOT_FOUND: LazyLock<Vec<u8>> = LazyLock::new(|| status_only(EntryStatus::NotFound));
    let now = Instant::now();
    let size: usize = entries.iter().map(|e| if let Entry::Hit(s) = e { s.body.len() } else { 96 }).sum();
    let mut body = Vec::with_capacity(16 + size + ids.len() * 72);
    body.extend_from_slice(br#"{"results":{"#);
    let (mut max_age, mut retry_after, mut all_hits) = (u64::MAX, None::<u64>, true);
    for (n, (id, entry)) in ids.iter().zip(entries).enumerate() {
        if n > 0 {
            body.push(b',');
        }
        // A valid id needs no JSON escaping.
        body.push(b'"');
        body.extend_from_slice(id.as_str().as_bytes());
        body.extend_from_slice(b"\":");
        match entry {
            Entry::Hit(stored) => {
                max_age = max_age.min(stored.ttl_left_at(now).as_secs());
                body.extend_from_slice(if stored.status == Status::NotFound { &NOT_FOUND } else { &stored.body });
            }
            Entry::Pending => {
                all_hits = false;
                retry_after = retry_after.max(Some(state.retry_after_secs));
                body.extend_from_slice(&PENDING);
            }
            Entry::Unavailable { reason, retry_after_secs } => {
                all_hits = false;
                retry_after = retry_after.max(Some(*retry_after_secs));
                let entry = Unavailable { status: "unavailable", reason: *reason, retry_after_secs: *retry_after_secs };
                serde_json::to_writer(&mut body, &entry).expect("an entry serializes");
            }
        }
    }
    body.extend_from_slice(b"}}");
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(&X_CACHE, HeaderValue::from_static(if all_hits { "HIT" } else { "MISS" }));
    headers.insert(header::VARY, HeaderValue::from_static("Prefer"));
    match retry_after {
        Some(secs) => {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        None => {
            headers.insert(header::CACHE_CONTROL, prices::cache_control(max_age, None));
        }
    }
    response
}

fn status_only(status: EntryStatus) -> Vec<u8> {
    serde_json::to_vec(&StatusOnly { status }).expect("a status serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> Result<Vec<String>, ApiError> {
        parse_ids(Some(query), 3).map(|ids| ids.into_iter().map(|id| id.as_str().to_owned()).collect())
    }

    #[test]
    fn reads_ids_in_order_once_each_from_one_or_more_parameters() {
        assert_eq!(parse("ids=a,b,a").unwrap(), ["a", "b"]);
        assert_eq!(parse("x=1&ids=b&ids=a%2Cc&ids=b").unwrap(), ["b", "a", "c"]);
        assert_eq!(parse("ids=a,a,a,a,a,b,c").unwrap(), ["a", "b", "c"], "duplicates do not count toward the limit");
    }

    #[test]
    fn names_every_invalid_id_and_refuses_too_many_or_none() {
        match parse("ids=ok,b%20ad,,-x,ok") {
            Err(ApiError::InvalidProductIds(invalid)) => {
                let named: Vec<_> = invalid.iter().map(|(id, _)| id.as_str()).collect();
                assert_eq!(named, ["b ad", "", "-x"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse("ids=a,b,c,d"), Err(ApiError::TooManyIds { count: 4, max: 3 })));
        assert!(matches!(parse("id=a"), Err(ApiError::BadQuery(_))));
        assert!(matches!(parse_ids(None, 3), Err(ApiError::BadQuery(_))));
        assert!(matches!(parse("ids=%FF"), Err(ApiError::BadQuery(_))));
    }
}
