//! `GET /v1/prices/{product_id}/events`: watch a comparison being computed, as Server-Sent
//! Events (`text/event-stream`, which a browser's `EventSource` reads).
//!
//! - `event: quote` / `event: failure`: one per source, `data` the quote's or the failure's
//!   JSON, `id` its place in the product's progress log. A reconnecting `EventSource` sends the
//!   last id back as `Last-Event-ID`, and what it had is not sent again.
//! - `event: result`: the final comparison, the body `GET /v1/prices/{id}` answers; then the
//!   stream ends. A cached product gets this one event.
//!
//! The order of work is `Prefer: wait`'s: register a watcher, look (a miss claims and
//! publishes exactly as `GET` does, within the same limits, which answer as they do there),
//! read the product's progress log (a late joiner gets what was gathered), then relay live
//! events. Every source appears once: the stream keeps one event per provider, and a source it
//! has not shown when the result comes (progress is best effort) is shown from the result,
//! before it.
//!
//! Bounds: at most `producer.max_streams` open per process (past it, 503) and
//! `producer.max_streams_per_client` per client (past it, 429), each open at most
//! `producer.max_stream_secs` without a result (then it ends; an `EventSource` reconnects and
//! joins again); a comment every 15 s keeps proxies from closing an idle one. A stream costs no
//! Redis connection (live events come through the process's one subscription), and a client
//! that hangs up drops its stream and its place at once.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;
use tracing::Instrument;

use super::miss::{self, Asking, Found};
use super::prices;
use super::wait::{Full, Place};
use super::{ApiError, AppState};
use crate::cache::{Progress, ProgressId, StoredResult, Wake};
use crate::domain::ProductId;

/// The gauge of open event streams.
pub const OPEN_STREAMS: &str = "pricefront_open_streams";

/// One event of a stream, as an `EventSource` sees it (the document's schema of each event;
/// the stream itself is `text/event-stream`).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct StreamEvent {
    /// What it is: a source's `quote` or `failure`, or the `result`.
    pub event: EventKind,
    /// JSON: a `Quote`, a `Failure`, or the `Comparison` (the body of `GET /v1/prices/{product_id}`).
    #[schema(content_media_type = "application/json")]
    pub data: String,
    /// Its place in the product's progress log (`<ms>-<seq>`); quotes and failures relayed live
    /// or read from the log carry one, the result and what the result fills in do not.
    #[schema(pattern = r"^[0-9]+-[0-9]+$")]
    pub id: Option<String>,
}

/// The kinds of events a stream sends (the document's: the stream writes them itself).
#[allow(dead_code)]
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Quote,
    Failure,
    Result,
}

/// Watch one product's comparison: each source's quote or failure as it comes, then the result.
#[utoipa::path(
    get,
    path = "/v1/prices/{product_id}/events",
    tag = "prices",
    params(
        ("product_id" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description = "The product to compare"),
        ("last-event-id" = Option<String>, Header, example = "1764612000000-3",
            description = "Sent by a reconnecting EventSource: the events up to this id are not sent again"),
    ),
    responses(
        (status = 200, content_type = "text/event-stream", body = StreamEvent,
            description = "Server-Sent Events, one per line group:\n\n\
- `event: quote`, `id: <log id>`, `data:` a `Quote` (JSON): a source answered;\n\
- `event: failure`, `id: <log id>`, `data:` a `Failure` (JSON): a source failed;\n\
- `event: result`, `data:` the `Comparison` (JSON), exactly the body of `GET /v1/prices/{product_id}`; then the stream ends.\n\n\
Every source appears once, as a quote or a failure, before the result. A cached product gets the `result` event alone. \
A comment line (`:`) comes every 15 s while nothing else does. Without a result within `producer.max_stream_secs` the stream ends with no `result`; connect again.",
            headers(
                ("x-cache" = String, description = "HIT when the result was cached, else MISS"),
                ("cache-control" = String, description = "no-store"),
            )),
        (status = 400, description = "Invalid product id", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "This client caused too many misses (cold products), or holds `producer.max_streams_per_client` streams already", body = super::problem::Problem,
            content_type = "application/problem+json", headers(("retry-after" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Redis or the broker is unavailable, or this producer has `producer.max_streams` streams open",
            body = super::problem::Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn price_events(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
) -> Result<Response, Response> {
    // A stream is long and rare: worth a span for whatever it logs.
    let span = prices::current_or(|| {
        super::request_span(&axum::http::Method::GET, "/v1/prices/{product_id}/events", &headers)
    });
    let peer = super::server::peer(&extensions);
    open(state, path, headers, peer).instrument(span.clone()).await.map_err(|error| {
        // Converted under the span, so a 5xx's cause is logged with it.
        let _entered = span.enter();
        error.into_response()
    })
}

async fn open(
    state: AppState,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    peer: Option<SocketAddr>,
) -> Result<Response, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::BadPath(e.body_text()))?;
    let id = ProductId::parse(&raw)?;
    tracing::Span::current().record("product_id", id.as_str());
    // Registered before the first look: whatever is logged or written from now on reaches it.
    let client = state.limits.client(peer, &headers);
    let place = match state.stream_places.take(client, || state.store.watcher(&id)) {
        Ok(place) => place,
        Err(full) => {
            let retry_after_secs = state.retry_after_secs;
            return Err(match full {
                Full::All => {
                    metrics::counter!("pricefront_streams_total", "outcome" => "refused").increment(1);
                    ApiError::TooManyStreams { retry_after_secs }
                }
                Full::Client => {
                    metrics::counter!("pricefront_streams_total", "outcome" => "refused_client").increment(1);
                    ApiError::TooManyClientStreams { retry_after_secs }
                }
            });
        }
    };
    let seen_up_to = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(ProgressId::parse);
    // Before the look, so a computation this look starts (or one starting meanwhile) logs its
    // progress: a computation nobody watches logs none. Without it the stream still gets the
    // result, with every source in it.
    if let Err(e) = state.store.watch(&id, state.max_stream).await {
        tracing::debug!(error = %e, "cannot mark the product watched; its progress may not be logged");
    }
    let found = miss::find(&state, &id, Asking { peer, headers: &headers }, Some(std::time::Instant::now())).await;
    let deadline = Instant::now() + state.max_stream;
    let mut stream = Stream {
        state,
        id,
        place,
        seen_up_to,
        shown: HashSet::new(),
        queue: VecDeque::new(),
        deadline,
        read_log: true,
        outcome: None,
    };
    let x_cache = match found {
        Found::Hit(stored) => {
            stream.finish(&stored, false);
            "HIT"
        }
        Found::Pending => "MISS",
        Found::Unavailable(unavailable) => return Err(unavailable.into()),
    };
    let events = futures::stream::unfold(stream, |mut stream| async move {
        stream.next().await.map(|event| (Ok::<_, Infallible>(event), stream))
    });
    let mut response = Sse::new(events).keep_alive(KeepAlive::default()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(&prices::X_CACHE, HeaderValue::from_static(x_cache));
    // A buffering proxy (nginx) would hold the events back until the stream ends.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// One open stream: what it has shown, what it is about to send, and how it ends.
struct Stream {
    state: AppState,
    id: ProductId,
    place: Place,
    /// The client had the events up to here (`Last-Event-ID`).
    seen_up_to: Option<ProgressId>,
    /// Providers already shown (or that the client had).
    shown: HashSet<String>,
    queue: VecDeque<Event>,
    deadline: Instant,
    /// The progress log is to be read (at the start, and after live events may have been missed).
    read_log: bool,
    /// How it ended; `None` while open (dropped open: the client hung up).
    outcome: Option<&'static str>,
}

impl Stream {
    /// The next event to send, or `None` when the stream is over.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if self.outcome.is_some() {
                return None;
            }
            if std::mem::take(&mut self.read_log) {
                match self.state.store.progress_log(&self.id).await {
                    Ok(events) => events.into_iter().for_each(|event| self.show(event)),
                    // Live events still come, and the result shows every source.
                    Err(e) => tracing::debug!(error = %e, "cannot read the progress log"),
                }
                continue;
            }
            tokio::select! {
                wake = self.place.waiter.next() => match wake {
                    Wake::Progress(event) => self.show(event),
                    Wake::Missed => self.read_log = true,
                    Wake::Announced(at) => match miss::look_again(&self.state, &self.id, at).await {
                        Some(stored) => self.finish(&stored, true),
                        // Told to look again (a resubscription): events may have been missed.
                        None => self.read_log = true,
                    },
                },
                _ = tokio::time::sleep_until(self.deadline) => self.outcome = Some("timeout"),
            }
        }
    }

    /// Queues `event` unless its provider was shown already or the client had it.
    fn show(&mut self, event: Progress) {
        let had = self.seen_up_to.is_some_and(|seen| event.id <= seen);
        if !self.shown.insert(event.provider.clone()) || had {
            return;
        }
        let Some(data) = event.data_str() else { return };
        self.queue.push_back(Event::default().event(event.kind.as_str()).id(event.id.to_string()).data(data));
    }

    /// Queues the result, after the sources not shown yet (if `catch_up`, taken from the
    /// result); the stream ends.
    fn finish(&mut self, stored: &StoredResult, catch_up: bool) {
        // The quotes are inside the JSON: parsed only to catch up.
        let comparison = if catch_up { stored.comparison().ok() } else { None };
        let (quotes, failures) = comparison.as_ref().map_or((&[][..], &[][..]), |c| (&c.quotes[..], &c.failures[..]));
        for quote in quotes {
            if self.shown.insert(quote.provider.clone()) {
                let data = serde_json::to_string(quote).expect("a Quote always serializes");
                self.queue.push_back(Event::default().event("quote").data(data));
            }
        }
        for failure in failures {
            if self.shown.insert(failure.provider.clone()) {
                let data = serde_json::to_string(failure).expect("a Failure always serializes");
                self.queue.push_back(Event::default().event("failure").data(data));
            }
        }
        // The stored bytes are the comparison's JSON (they parsed as one): UTF-8.
        let body = String::from_utf8_lossy(&stored.body);
        self.queue.push_back(Event::default().event("result").data(body));
        self.outcome = Some("result");
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or("closed");
        metrics::counter!("pricefront_streams_total", "outcome" => outcome).increment(1);
    }
}
