//! The miss path, written once for one product and for many: look (L1, then one Redis read),
//! claim the pending marker of what is neither cached nor pending, take the per-client and
//! per-producer limits, publish, release what was not published, and wait for results when
//! asked to. The handlers (`prices`, `catalogue`, `events`) only turn its answers into HTTP.
//!
//! 1. **Look:** L1, else one Redis read per product (a page: one per hash slot), which also
//!    says whether a request is pending (then [`Found::Pending`], costing nothing). Concurrent
//!    looks at one product in this process share one read (L1's single flight). A hit is never
//!    limited; a hit in its refresh window starts a refresh ([`super::refresh`]).
//! 2. **Claim:** one script looks again and claims the markers (`SET NX PX`) of what is still
//!    absent. Only a won claim costs the client one of its `producer.miss_rate_per_client`
//!    tokens and the producer one of its `max_publish_rate` publishes; a claim a limit refuses
//!    is released before the answer (others may wait for that product). A client over its
//!    limit is refused before it reaches Redis until its next token is due. One product's
//!    concurrent claimants in this process share one claim. The claim runs in a task of its
//!    own, so a client that hangs up cannot leave a claimed marker with no message behind it.
//! 3. **Publish:** the won claims, as one batch; a claim whose publish failed is released in
//!    the background (the broker is in trouble: the answer must not wait on Redis too).
//! 4. **Wait**, with `Prefer: wait=N` ([`Wait`]): waiters are registered before the first
//!    look, so a result written meanwhile still wakes them; woken, they look again through L1.
//!
//! What could not be done is a [`Found::Unavailable`] with its [`Reason`]: one product's
//! route answers it as an error (429 or 503), a page as that entry.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tracing::Instrument;

use super::limits::{Limit, Refused};
use super::problem::ApiError;
use super::refresh;
use super::wait::{self, Place};
use super::{AppState, prices::current_or};
use crate::cache::{self, Entry, Lookup, Peek, StoredResult, Waiter};
use crate::domain::ProductId;
use crate::observability::metrics::LazyCounter;
use crate::observability::traces;
use crate::queue::{Caller, PriceRequest};

/// Which level answered a look (`pricefront_cache_lookups_total{tier}`).
pub(super) static HITS_L1: LazyCounter =
    LazyCounter::new(|| metrics::counter!("pricefront_cache_lookups_total", "tier" => "l1"));
pub(super) static HITS_L2: LazyCounter =
    LazyCounter::new(|| metrics::counter!("pricefront_cache_lookups_total", "tier" => "l2"));
pub(super) static MISSES: LazyCounter =
    LazyCounter::new(|| metrics::counter!("pricefront_cache_lookups_total", "tier" => "miss"));

/// What the miss path found for one product.
#[derive(Clone, Debug)]
pub enum Found {
    Hit(Arc<StoredResult>),
    /// Being computed: somebody's request was pending, or this one was just published.
    Pending,
    /// It could not be looked up or started now.
    Unavailable(Unavailable),
}

impl Found {
    /// Whether waiting cannot change it.
    pub fn is_final(&self) -> bool {
        !matches!(self, Found::Pending)
    }
}

/// Why a product could not be looked up or started, and when to ask again.
#[derive(Clone, Debug)]
pub struct Unavailable {
    pub reason: Reason,
    pub retry_after_secs: u64,
    /// What failed (Redis, the broker), for the log; none for a limit.
    pub cause: Option<Cause>,
}

/// Why a product is unavailable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
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
    /// The consumers' backlog would not be computed within `cache.pending_ttl_secs`: new
    /// products are shed until it is (see `admission`).
    Backlog,
}

/// A failure shared by every product (and caller) it befell, with its cause chain.
#[derive(Clone, Debug)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl Unavailable {
    fn cache(error: impl Into<Cause>, retry_after_secs: u64) -> Self {
        Self { reason: Reason::Cache, retry_after_secs, cause: Some(error.into()) }
    }

    fn refused(refused: Refused) -> Self {
        let reason = match refused.limit {
            Limit::ClientMisses => Reason::MissLimit,
            Limit::Publishes => Reason::PublishLimit,
        };
        Self { reason, retry_after_secs: refused.retry_after_secs(), cause: None }
    }
}

impl From<Arc<cache::Error>> for Cause {
    fn from(e: Arc<cache::Error>) -> Self {
        Cause(e)
    }
}

impl From<cache::Error> for Cause {
    fn from(e: cache::Error) -> Self {
        Cause(Arc::new(e))
    }
}

impl From<crate::queue::Error> for Cause {
    fn from(e: crate::queue::Error) -> Self {
        Cause(Arc::new(e))
    }
}

/// One product's route answers an unavailable product as an error.
impl From<Unavailable> for ApiError {
    fn from(u: Unavailable) -> Self {
        let retry_after_secs = u.retry_after_secs;
        match u.reason {
            Reason::MissLimit => ApiError::TooManyMisses { retry_after_secs },
            Reason::PublishLimit | Reason::Backlog => ApiError::Overloaded { retry_after_secs },
            Reason::Cache | Reason::Queue => ApiError::Unavailable {
                what: if u.reason == Reason::Cache { "cache" } else { "queue" },
                retry_after_secs,
                cause: match u.cause {
                    Some(cause) => anyhow::Error::new(cause),
                    None => anyhow::anyhow!("unavailable"),
                },
            },
        }
    }
}

/// Who asks: the connection's peer and the request's headers, read only on a miss (a hit
/// pays nothing for them).
#[derive(Clone, Copy)]
pub struct Asking<'a> {
    pub peer: Option<SocketAddr>,
    pub headers: &'a HeaderMap,
}

/// Who asked for a miss, as the message tells the consumer: owned, for the claim's task.
#[derive(Clone, Debug)]
pub(super) struct Asker {
    /// Whose budget a won claim spends (see `limits`).
    pub(super) client: IpAddr,
    /// The request span's context when spans are exported (the consumer's span becomes its
    /// child), else the caller's valid traceparent as it came.
    pub(super) traceparent: Option<String>,
    /// The request's `X-Request-Id`.
    pub(super) request_id: Option<String>,
}

impl Asker {
    fn of(state: &AppState, asking: Asking<'_>) -> Self {
        let incoming = asking.headers.get("traceparent").and_then(|v| v.to_str().ok());
        Self {
            client: state.limits.client(asking.peer, asking.headers),
            traceparent: traces::traceparent_of(&tracing::Span::current(), incoming),
            request_id: super::request_id::of(asking.headers).map(str::to_owned),
        }
    }

    fn caller(&self) -> Caller<'_> {
        Caller { traceparent: self.traceparent.as_deref(), request_id: self.request_id.as_deref() }
    }

    /// The span a claim logs under (what it published, what refused it).
    fn span(&self, name: &'static str, products: &[ProductId]) -> tracing::Span {
        current_or(|| {
            let (request_id, traceparent) = (self.request_id.as_deref(), self.traceparent.as_deref());
            match (name, products) {
                ("miss", [id]) => tracing::info_span!(
                    "miss",
                    product_id = %id,
                    request_id,
                    traceparent,
                    message_id = tracing::field::Empty
                ),
                _ => tracing::info_span!("misses", products = products.len(), request_id, traceparent),
            }
        })
    }
}

/// One product: a hit, or a claim and publish within the limits. `registered`: when the
/// caller registered a waiter, if it did. Its look then never joins a read that started
/// earlier: that read may have missed a result written just before the waiter could hear
/// the announcement, and the waiter would wait for nothing.
pub async fn find(state: &AppState, id: &ProductId, asking: Asking<'_>, registered: Option<Instant>) -> Found {
    let (entry, loaded) = match state.l1.get_or_load_since(id, registered, lookup(state.clone(), id.clone())).await {
        Ok(found) => found,
        Err(e) => return Found::Unavailable(Unavailable::cache(e, state.retry_after_secs)),
    };
    match entry {
        Entry::Hit(stored) => {
            // A hit this request did not load came from L1 (a live entry, or a load it waited on).
            if loaded { &HITS_L2 } else { &HITS_L1 }.increment(1);
            served(state, id, &stored, Instant::now(), asking);
            return Found::Hit(stored);
        }
        Entry::Pending => {
            // Being computed: asking again costs nothing and claims nothing.
            MISSES.increment(1);
            return Found::Pending;
        }
        Entry::Miss => MISSES.increment(1),
    }
    let asker = Asker::of(state, asking);
    claim_shared(state, id, asker).await
}

/// Many products (a page): L1, then one Redis read for the rest, then one claim for what is
/// neither cached nor pending. One entry per id, in order.
pub async fn find_many(state: &AppState, ids: &[ProductId], asking: Asking<'_>) -> Vec<Found> {
    let now = Instant::now();
    let mut found: Vec<Option<Found>> = Vec::with_capacity(ids.len());
    let mut missed = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        match state.l1.look(id.as_str(), now) {
            Some((stored, reload)) => {
                if reload {
                    reload_l1(state, id.as_str());
                }
                served(state, id, &stored, now, asking);
                found.push(Some(Found::Hit(stored)));
            }
            None => {
                found.push(None);
                missed.push(i);
            }
        }
    }
    // Counted once per page: a counter bumped per id is a contended atomic 100 times.
    HITS_L1.increment((ids.len() - missed.len()) as u64);
    if !missed.is_empty() {
        let absent = look_in_store(state, ids, &missed, &mut found, asking).await;
        if !absent.is_empty() {
            let asker = Asker::of(state, asking);
            let wanted: Vec<ProductId> = absent.iter().map(|&i| ids[i].clone()).collect();
            let span = asker.span("misses", &wanted);
            let claiming = tokio::spawn(claim(state.clone(), wanted, asker).instrument(span));
            let claimed = claiming.await.expect("claim task does not panic");
            for (i, entry) in absent.into_iter().zip(claimed) {
                found[i] = Some(entry);
            }
        }
    }
    found.into_iter().map(|entry| entry.expect("every product has an entry")).collect()
}

/// A hit's bookkeeping: a refresh ahead if it is due, at the asker's cost.
fn served(state: &AppState, id: &ProductId, stored: &StoredResult, now: Instant, asking: Asking<'_>) {
    if state.refresh.due(id.as_str(), stored, now) {
        refresh::start(state, id.as_str(), state.limits.client(asking.peer, asking.headers));
    }
}

/// Stage 1 for the products L1 missed (`missed`, indexes into `ids`), in one round trip: fills
/// their entries, except the absent ones, which it returns for claiming.
async fn look_in_store(
    state: &AppState,
    ids: &[ProductId],
    missed: &[usize],
    found: &mut [Option<Found>],
    asking: Asking<'_>,
) -> Vec<usize> {
    let wanted: Vec<ProductId> = missed.iter().map(|&i| ids[i].clone()).collect();
    let peeks = match state.store.lookup_many(&wanted).await {
        Ok(peeks) => peeks,
        Err(e) => {
            tracing::warn!(error = %e, products = wanted.len(), "cannot look products up in Redis; answering them unavailable");
            let cause = Cause::from(e);
            for &i in missed {
                let unavailable = Unavailable {
                    reason: Reason::Cache,
                    retry_after_secs: state.retry_after_secs,
                    cause: Some(cause.clone()),
                };
                found[i] = Some(Found::Unavailable(unavailable));
            }
            return Vec::new();
        }
    };
    let (mut absent, mut hits, mut misses) = (Vec::new(), 0, 0);
    for (&i, peek) in missed.iter().zip(peeks) {
        found[i] = match settle(state, &ids[i], peek).await {
            Ok(Entry::Hit(stored)) => {
                hits += 1;
                state.l1.hold(&ids[i], &stored);
                served(state, &ids[i], &stored, Instant::now(), asking);
                Some(Found::Hit(stored))
            }
            Ok(Entry::Pending) => {
                misses += 1;
                Some(Found::Pending)
            }
            Ok(Entry::Miss) => {
                misses += 1;
                absent.push(i);
                None
            }
            Err(e) => Some(Found::Unavailable(Unavailable::cache(e, state.retry_after_secs))),
        };
    }
    HITS_L2.increment(hits);
    MISSES.increment(misses);
    absent
}

/// Claims one product with whoever in this process claims it now. If the one whose claim was
/// shared is over its limit, the others try again on their own budget.
async fn claim_shared(state: &AppState, id: &ProductId, asker: Asker) -> Found {
    const TRIES: usize = 3;
    let span = asker.span("miss", std::slice::from_ref(id));
    for _ in 0..TRIES {
        // A task of its own (the flights spawn it): a client that hangs up does not cut it short.
        let work = {
            let (state, id, asker) = (state.clone(), id.clone(), asker.clone());
            async move { claim(state, vec![id], asker).await.pop().expect("one product, one entry") }
                .instrument(span.clone())
        };
        let (found, ours) = state.claims.run_detached(id, work).await;
        match &found {
            Found::Unavailable(Unavailable { reason: Reason::MissLimit, .. }) if !ours => continue,
            _ => return found,
        }
    }
    Found::Unavailable(Unavailable {
        reason: Reason::PublishLimit,
        retry_after_secs: state.retry_after_secs,
        cause: None,
    })
}

/// Stages 2 and 3 for products neither cached nor pending (one, or a page's): admission
/// control sheds what the consumers would not compute in time, one script claims the rest, the
/// limits take their share, the won claims are published as one batch, and what was claimed
/// but not published is released. Their entries, in order.
async fn claim(state: AppState, ids: Vec<ProductId>, asker: Asker) -> Vec<Found> {
    let client = asker.client;
    if let Some(refused) = state.limits.still_refused(client) {
        metrics::counter!("pricefront_limited_total", "limit" => refused.limit.as_str()).increment(ids.len() as u64);
        tracing::debug!(%client, "claim refused: the client is over its miss limit");
        return ids.iter().map(|_| Found::Unavailable(Unavailable::refused(refused))).collect();
    }
    // A product this producer tried to refresh lately is popular, not new (its refresh failed
    // or was refused, and its result ended): never shed.
    let new: Vec<bool> = ids.iter().map(|id| !state.refresh.tried_lately(id)).collect();
    let reserved = new.iter().filter(|&&new| new).count();
    if reserved > 0
        && let Err(retry_after_secs) = state.admission.admit(reserved)
    {
        // Shed at the door: nothing claimed, nothing published, nothing for a client to wait on.
        metrics::counter!("pricefront_limited_total", "limit" => "backlog").increment(reserved as u64);
        tracing::debug!(products = reserved, retry_after_secs, "new products shed: the backlog is full");
        let shed = Found::Unavailable(Unavailable { reason: Reason::Backlog, retry_after_secs, cause: None });
        let popular: Vec<ProductId> =
            ids.iter().zip(&new).filter(|(_, new)| !**new).map(|(id, _)| id.clone()).collect();
        let mut claimed = match popular.is_empty() {
            true => Vec::new(),
            false => claim_admitted(state, popular, asker).await.0,
        }
        .into_iter();
        return new.iter().map(|&new| if new { shed.clone() } else { claimed.next().expect("one each") }).collect();
    }
    let (found, published) = claim_admitted(state.clone(), ids, asker).await;
    // What was published stays reserved until the next read of the backlog counts it; the rest
    // goes back.
    state.admission.unreserve(reserved - reserved.min(published));
    found
}

/// [`claim`] past admission control; also how many requests it published.
async fn claim_admitted(state: AppState, ids: Vec<ProductId>, asker: Asker) -> (Vec<Found>, usize) {
    let client = asker.client;
    let requests: Vec<PriceRequest> = ids.iter().map(|id| PriceRequest::new(id.clone())).collect();
    if let [request] = requests.as_slice() {
        tracing::Span::current().record("message_id", request.request_id.to_string().as_str());
    }
    let claims: Vec<(ProductId, String)> =
        requests.iter().map(|r| (r.product_id.clone(), r.request_id.to_string())).collect();
    let lookups = match state.store.lookup_or_claim_many(&claims, state.hold).await {
        Ok(lookups) => lookups,
        Err(e) => {
            tracing::warn!(error = %e, products = ids.len(), "cannot claim in Redis; answering unavailable");
            if e.is_unreachable() {
                // The script may have run and its answer been lost: markers nobody will publish
                // for. Ours are released as soon as Redis answers again.
                tokio::spawn(release_when_back(state.clone(), claims.clone()));
            }
            let cause = Cause::from(e);
            let unavailable =
                Unavailable { reason: Reason::Cache, retry_after_secs: state.retry_after_secs, cause: Some(cause) };
            return (ids.iter().map(|_| Found::Unavailable(unavailable.clone())).collect(), 0);
        }
    };
    let (mut found, mut publish, mut release) = (Vec::with_capacity(ids.len()), Vec::new(), Vec::new());
    let mut lost = Vec::new();
    for (i, lookup) in lookups.into_iter().enumerate() {
        found.push(match lookup {
            // Written between the look and the claim.
            Ok(Lookup::Hit(stored)) => {
                let stored = Arc::new(*stored);
                state.l1.hold(&ids[i], &stored);
                Found::Hit(stored)
            }
            Ok(Lookup::AlreadyPending) => {
                tracing::debug!(product_id = %ids[i], "already pending");
                Found::Pending
            }
            Ok(Lookup::Claimed) => match state.limits.miss(client).and_then(|()| state.limits.publish()) {
                Ok(()) => {
                    publish.push(i);
                    Found::Pending
                }
                Err(refused) => {
                    metrics::counter!("pricefront_limited_total", "limit" => refused.limit.as_str()).increment(1);
                    release.push(i);
                    Found::Unavailable(Unavailable::refused(refused))
                }
            },
            Err(e) => {
                // One node of a cluster did not answer: its claims may have been made.
                if e.is_unreachable() {
                    lost.push(claims[i].clone());
                }
                Found::Unavailable(Unavailable::cache(e, state.retry_after_secs))
            }
        });
    }
    if !lost.is_empty() {
        tracing::warn!(products = lost.len(), "Redis did not answer some claims; releasing them when it does");
        tokio::spawn(release_when_back(state.clone(), lost));
    }
    if !release.is_empty() {
        tracing::debug!(%client, refused = release.len(), "claims refused by a limit; released");
        // Before answering: others may be waiting for these products.
        release_all(&state, &claims, &release).await;
    }
    if publish.is_empty() {
        return (found, 0);
    }
    let batch: Vec<PriceRequest> = publish.iter().map(|&i| requests[i].clone()).collect();
    let published: Vec<ProductId> = batch.iter().map(|r| r.product_id.clone()).collect();
    enqueued(&state, &published).await;
    let delivered = state.publisher.publish_many(&batch, asker.caller()).await;
    let (mut failed, mut first_error) = (Vec::new(), None);
    for (&i, delivery) in publish.iter().zip(delivered) {
        match delivery {
            Ok(delivery) if ids.len() == 1 => {
                tracing::info!(partition = delivery.partition, offset = delivery.offset, "request published");
            }
            Ok(_) => {}
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e.to_string());
                }
                let unavailable = Unavailable {
                    reason: Reason::Queue,
                    retry_after_secs: state.retry_after_secs,
                    cause: Some(e.into()),
                };
                found[i] = Found::Unavailable(unavailable);
                failed.push(i);
            }
        }
    }
    if let Some(error) = first_error {
        // One line for the page: a broker in trouble fails them all alike.
        tracing::warn!(failed = failed.len(), first = %ids[failed[0]], %error, "cannot publish requests; released");
    }
    if ids.len() > 1 && failed.len() < publish.len() {
        tracing::info!(published = publish.len() - failed.len(), failed = failed.len(), "requests published");
    }
    let published = publish.len() - failed.len();
    if !failed.is_empty() {
        dequeued(&state, failed.iter().map(|&i| ids[i].clone()).collect());
        // In the background: the broker is in trouble, the answer must not wait on Redis too.
        let state = state.clone();
        tokio::spawn(async move { release_all(&state, &claims, &failed).await });
    }
    (found, published)
}

/// Counts `ids` into the fleet's backlog before their requests are published (so a consumer's
/// count out always comes after). Best effort: a backlog that misses one only under-counts.
pub(super) async fn enqueued(state: &AppState, ids: &[ProductId]) {
    if let Err(e) = state.store.enqueued(ids, std::time::SystemTime::now()).await {
        tracing::debug!(error = %e, products = ids.len(), "cannot count requests into the backlog");
    }
}

/// Counts `ids` out of the backlog again (their publish failed), in the background.
pub(super) fn dequeued(state: &AppState, ids: Vec<ProductId>) {
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = state.store.dequeued(&ids).await {
            tracing::debug!(error = %e, products = ids.len(), "cannot count requests out of the backlog");
        }
    });
}

/// Releases the claims at `which` (those tokens' markers only), all at once; those Redis
/// could not be asked to release are released as soon as it answers again.
async fn release_all(state: &AppState, claims: &[(ProductId, String)], which: &[usize]) {
    let releases = which.iter().map(|&i| state.store.release_pending(&claims[i].0, &claims[i].1));
    let mut again = Vec::new();
    for (&i, released) in which.iter().zip(futures::future::join_all(releases).await) {
        match released {
            Ok(_) => {}
            Err(e) if e.is_unreachable() => again.push(claims[i].clone()),
            Err(e) => tracing::warn!(error = %e, "cannot release a pending marker; it expires by itself"),
        }
    }
    if !again.is_empty() {
        tokio::spawn(release_when_back(state.clone(), again));
    }
}

/// First and longest wait between two tries of [`release_when_back`].
const RELEASE_FIRST: Duration = Duration::from_millis(100);
const RELEASE_MAX: Duration = Duration::from_secs(2);

/// Releases `claims` (each only if its token still holds the marker: safe whether or not the
/// claim was made) as soon as Redis answers, trying with back-off until it does or the markers
/// would have expired anyway (`cache.queued_ttl_secs`, the queued mark's life). A claim whose
/// answer was lost therefore holds its product for about as long as Redis was away, not for the
/// whole TTL.
pub(super) async fn release_when_back(state: AppState, mut claims: Vec<(ProductId, String)>) {
    let give_up = tokio::time::Instant::now() + state.hold.queued;
    let mut delay = RELEASE_FIRST;
    while !claims.is_empty() && tokio::time::Instant::now() < give_up {
        tokio::time::sleep(delay).await;
        let releases = claims.iter().map(|(id, token)| state.store.release_pending(id, token));
        let outcomes = futures::future::join_all(releases).await;
        let mut kept = Vec::new();
        for (claim, outcome) in claims.into_iter().zip(outcomes) {
            match outcome {
                Ok(true) => {
                    metrics::counter!("pricefront_claims_released_late_total").increment(1);
                    tracing::info!(product_id = %claim.0, "released a claim whose answer was lost");
                }
                // The claim was never made, or its marker is gone already.
                Ok(false) => {}
                Err(e) if e.is_unreachable() => kept.push(claim),
                Err(e) => {
                    tracing::warn!(product_id = %claim.0, error = %e, "cannot release a pending marker; it expires by itself")
                }
            }
        }
        claims = kept;
        delay = (delay * 2).min(RELEASE_MAX);
    }
}

/// The load behind L1: the result if Redis has it, else whether it is pending. A corrupt one
/// is deleted (and is a miss).
async fn lookup(state: AppState, id: ProductId) -> Result<Entry, cache::Error> {
    let peek = state.store.lookup(&id).await;
    settle(&state, &id, peek).await
}

/// What a look at `id` in the store found, as an entry: a corrupt value is deleted (and is a
/// miss).
async fn settle(state: &AppState, id: &ProductId, peek: Result<Peek, cache::Error>) -> Result<Entry, cache::Error> {
    match peek {
        Ok(Peek::Hit(stored)) => Ok(Entry::Hit(Arc::new(*stored))),
        Ok(Peek::Pending) => Ok(Entry::Pending),
        Ok(Peek::Absent) => Ok(Entry::Miss),
        Err(cache::Error::Corrupt { key, source }) => {
            tracing::warn!(%key, error = %source, "cached result is not a comparison; deleting it");
            state.store.delete_result(id).await?;
            Ok(Entry::Miss)
        }
        Err(e) => Err(e),
    }
}

/// Reads `id` from Redis again in the background, for L1 (see `cache::L1::look`).
pub fn reload_l1(state: &AppState, raw: &str) {
    let Ok(id) = ProductId::parse(raw) else { return };
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = state.l1.reload(&id, lookup(state.clone(), id.clone())).await {
            tracing::debug!(product_id = %id, error = %e, "cannot reload a held result; it ends with its life");
        }
    });
}

/// A woken waiter's look: the result if it is there now. Waiters woken by one announcement
/// (at `announced`) share this read, but never join one that started before it, which may
/// not see the result; Redis trouble is "not yet" (the waiter's deadline bounds it).
pub async fn look_again(state: &AppState, id: &ProductId, announced: Instant) -> Option<Arc<StoredResult>> {
    match state.l1.get_or_load_since(id, Some(announced), lookup(state.clone(), id.clone())).await {
        Ok((Entry::Hit(stored), _)) => Some(stored),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(error = %e, "cannot look again while waiting");
            None
        }
    }
}

/// A request's `Prefer: wait=N`, granted: its place among `producer.max_waiters`, and a
/// waiter per product registered before the first look (see [`wait`]).
pub struct Wait {
    granted: Duration,
    place: Place<Vec<Waiter>>,
    /// When the waiters were registered.
    pub registered: Instant,
}

impl Wait {
    /// The wait the request asks for, if any, capped at `producer.max_wait_secs`, with its
    /// place and waiters for `ids`; `None` when none is asked or no place is free, in all or for
    /// this client (then the request answers as it would without it).
    pub fn register(state: &AppState, ids: &[ProductId], asking: Asking<'_>) -> Option<Self> {
        let granted = wait::preferred_wait(asking.headers).map(|asked| wait::granted(asked, state.max_wait))?;
        if granted.is_zero() {
            return None;
        }
        let client = state.limits.client(asking.peer, asking.headers);
        let waiters = || ids.iter().map(|id| state.store.waiter(id)).collect::<Vec<_>>();
        let place = match state.wait_places.take(client, waiters) {
            Ok(place) => place,
            Err(full) => {
                let outcome = if full == wait::Full::Client { "refused_client" } else { "refused" };
                metrics::counter!("pricefront_waits_total", "outcome" => outcome).increment(1);
                return None;
            }
        };
        Some(Self { granted, place, registered: Instant::now() })
    }

    /// `Preference-Applied: wait=N`.
    pub fn applied(&self) -> HeaderValue {
        HeaderValue::from_str(&format!("wait={}", self.granted.as_secs())).expect("ascii")
    }

    /// Holds until every entry of `found` (one per id, as registered) is final or the wait runs
    /// out. Each pending product's waiter, woken, looks again. Counted in
    /// `pricefront_waits_total` when anything was pending.
    pub async fn until_final(&mut self, state: &AppState, ids: &[ProductId], found: &mut [Found]) {
        if found.iter().all(Found::is_final) {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.granted;
        let outcome = if until_final(state, ids, found, std::mem::take(&mut self.place.waiter), deadline).await {
            "result"
        } else {
            "timeout"
        };
        metrics::counter!("pricefront_waits_total", "outcome" => outcome).increment(1);
    }
}

async fn until_final(
    state: &AppState,
    ids: &[ProductId],
    found: &mut [Found],
    waiters: Vec<Waiter>,
    deadline: tokio::time::Instant,
) -> bool {
    let announced = |i: usize, mut waiter: Waiter| async move {
        let at = waiter.announced().await;
        (i, at, waiter)
    };
    let mut pending: FuturesUnordered<_> = waiters
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !found[*i].is_final())
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
        match tokio::time::timeout_at(deadline, look_again(state, &ids[i], at)).await {
            Err(_elapsed) => return false,
            Ok(Some(stored)) => found[i] = Found::Hit(stored),
            Ok(None) => pending.push(announced(i, waiter)),
        }
    }
}
