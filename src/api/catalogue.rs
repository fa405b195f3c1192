//! `GET /v1/prices?ids=a,b,c`: a catalogue page's products in one request.
//!
//! The answer is always 200, `{"results": {"<id>": <entry>, …}}`, one entry per distinct id in
//! the order asked: the comparison if it is cached, `{"status": "not_found"}` if its cached
//! result says no source sells it, `{"status": "pending"}` while it is computed, or
//! `{"status": "unavailable", "reason", "retry_after_secs"}` when it could not be looked up or
//! started (Redis or the broker failed, or a limit refused it).
//!
//! The miss path does the work, as for one product ([`super::miss::find_many`]): one L1
//! pass; one Redis round trip for everything L1 missed (on a cluster, one per hash slot, all
//! at once); one script that claims what is neither cached nor pending, each won claim costing
//! the client one miss token and the producer one publish (one a limit refuses is released
//! and answered `unavailable`); one batch of publishes. With `Prefer: wait=N`, the answer is
//! held until every entry is final or N seconds pass.
//!
//! `Cache-Control` is the smallest `max-age` among the entries, or `no-store` when any entry
//! is pending or unavailable (then `Retry-After` says when to ask again).

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub use super::miss::Reason;
use super::miss::{self, Asking, Found, Wait};
use super::prices::X_CACHE;
use super::{ApiError, AppState};
use crate::domain::{Comparison, ProductId, Status};

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

/// Look up the price comparisons of many products at once (a catalogue page).
#[utoipa::path(
    method(get, head),
    path = "/v1/prices",
    tag = "prices",
    params(
        ("ids" = String, Query, example = "sku-1,sku-2,sku-3",
            pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(,[A-Za-z0-9][A-Za-z0-9._-]{0,63}){0,99}$",
            description = "Comma-separated product ids (each `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`), 1 to `producer.max_batch_ids` (100 by default) distinct ones; duplicates are answered once. `ids` may also be repeated. Empty, or any id invalid: 400"),
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
    let peer = super::server::peer(&request.extensions);
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
    // Registered before the look, as for one product: a result written from now on wakes them.
    let asking = Asking { peer, headers };
    let mut wait = Wait::register(state, &ids, asking);
    let mut found = miss::find_many(state, &ids, asking).await;
    if let Some(wait) = &mut wait {
        wait.until_final(state, &ids, &mut found).await;
    }
    let mut response = page(state, &ids, &found);
    if let Some(wait) = wait {
        response.headers_mut().insert("preference-applied", wait.applied());
    }
    Ok(response)
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

/// The 200: the entries' bytes in one body, and the page's cache headers.
fn page(state: &AppState, ids: &[ProductId], entries: &[Found]) -> Response {
    static PENDING: LazyLock<Vec<u8>> = LazyLock::new(|| status_only(EntryStatus::Pending));
    static NOT_FOUND: LazyLock<Vec<u8>> = LazyLock::new(|| status_only(EntryStatus::NotFound));
    let now = Instant::now();
    let size: usize = entries.iter().map(|e| if let Found::Hit(s) = e { s.body.len() } else { 96 }).sum();
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
            Found::Hit(stored) => {
                max_age = max_age.min(stored.ttl_left_at(now).as_secs());
                body.extend_from_slice(if stored.status == Status::NotFound { &NOT_FOUND } else { &stored.body });
            }
            Found::Pending => {
                all_hits = false;
                retry_after = retry_after.max(Some(state.retry_after_secs));
                body.extend_from_slice(&PENDING);
            }
            Found::Unavailable(miss::Unavailable { reason, retry_after_secs, .. }) => {
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
            headers.insert(header::CACHE_CONTROL, super::timed::cache_control(max_age, None));
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
