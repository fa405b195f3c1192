//! Refresh ahead: a popular product never goes cold. A hit served in the last
//! `cache.refresh_ahead` fraction of its result's guarantee window (default 0.2) starts a
//! background refresh; the client gets its answer at once.
//!
//! - **One refresh per product across producers:** the refresh claims the pending marker
//!   (`SET NX PX`), as a miss does; only its winner publishes a request marked `refresh`, which
//!   the consumer computes although a result exists, overwriting it (no gap).
//! - **It costs the asker:** a won refresh claim draws one token from the miss budget of the
//!   client whose hit started it (`producer.miss_rate_per_client`), and one publish; a client
//!   without tokens starts none (the claim is released, and another client's hit may try).
//!   So a client cannot keep any number of products hot for free; popular products stay warm
//!   because many clients ask for them.
//! - **Cheap on the hit path:** a hit outside the window costs one clock read;
//!   inside it, only the first hit per result in this process tries to claim (a local memo of
//!   the `expires_at` it tried to replace), so a hot product costs Redis one `SET NX` per
//!   producer per window.
//! - **Never worse:** a refresh whose sources all fail is not stored over a good result (the
//!   store keeps the old one; see `cache::StoreOutcome::Kept`).
//! - A product nobody asks for in its window is simply left to expire.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::AppState;
use crate::cache::StoredResult;
use crate::domain::ProductId;
use crate::queue::{Caller, PriceRequest};

/// When a hit should start a refresh.
pub struct RefreshAhead {
    /// The refresh window, in thousandths of a guarantee (integer math on the hit path).
    permille: u32,
    /// Products this process tried to refresh lately, with the `expires_at` (ms) of the result
    /// it tried to replace: one try per result.
    tried: moka::sync::Cache<ProductId, i64>,
}

impl RefreshAhead {
    pub fn new(fraction: f64, pending_ttl: Duration, max_entries: u64) -> Self {
        Self {
            permille: (fraction * 1000.0).round() as u32,
            tried: moka::sync::Cache::builder().max_capacity(max_entries).time_to_live(pending_ttl).build(),
        }
    }

    /// The refresh window of `stored`: the last `fraction` of its guarantee, in which a hit
    /// refreshes it (and a cache may serve it stale while revalidating).
    fn window(&self, stored: &StoredResult) -> Duration {
        stored.window() * self.permille / 1000
    }

    /// The refresh window in whole seconds; `None` when refreshing ahead is off.
    pub fn window_secs(&self, stored: &StoredResult) -> Option<u64> {
        (self.permille > 0).then(|| self.window(stored).as_secs())
    }

    /// Whether this process tried to refresh `id` lately (within `pending_ttl`): it is popular,
    /// whatever became of that refresh.
    pub fn tried_lately(&self, id: &ProductId) -> bool {
        self.tried.contains_key(id)
    }

    /// Forgets that a refresh of `id` was tried (it was refused by a limit): the next hit may
    /// try again.
    pub fn forget(&self, id: &ProductId) {
        self.tried.invalidate(id);
    }

    /// Whether serving `stored` (the result for `id`) at `now` should start a refresh: at most
    /// once per result in this process. Outside the window it costs a subtraction.
    pub fn due(&self, id: &str, stored: &StoredResult, now: Instant) -> bool {
        if self.permille == 0 || stored.ttl_left_at(now) > self.window(stored) {
            return false;
        }
        // Two hits racing here both try; the marker lets one through.
        if self.tried.get(id) == Some(stored.expires_at_ms) {
            return false;
        }
        let Ok(id) = ProductId::parse(id) else { return false };
        self.tried.insert(id, stored.expires_at_ms);
        true
    }
}

/// Starts refreshing `id` in the background (see [`refresh`]), at `client`'s cost.
pub fn start(state: &AppState, id: &str, client: IpAddr) {
    if let Ok(id) = ProductId::parse(id) {
        tokio::spawn(refresh(state.clone(), id, client).instrument(tracing::Span::current()));
    }
}

/// Claims the marker and publishes a refresh of `id`, within `client`'s miss budget and the
/// producer's publishes; in the background, after a hit.
pub async fn refresh(state: AppState, id: ProductId, client: IpAddr) {
    let refused = |state: &AppState, limit: &'static str| {
        tracing::debug!(product_id = %id, %client, limit, "refresh refused by a limit");
        metrics::counter!("pricefront_refreshes_total", "stage" => "refused").increment(1);
        metrics::counter!("pricefront_limited_total", "limit" => limit).increment(1);
        state.refresh.forget(&id);
    };
    // A client already refused costs no Redis round trip.
    if let Some(still) = state.limits.still_refused(client) {
        refused(&state, still.limit.as_str());
        return;
    }
    let request = PriceRequest::refresh(id.clone());
    let token = request.request_id.to_string();
    match state.store.claim_pending(&id, &token, state.hold).await {
        Ok(true) => {}
        // Another producer refreshes it, or a request for it is pending anyway.
        Ok(false) => return,
        Err(e) => {
            tracing::debug!(product_id = %id, error = %e, "cannot claim a refresh");
            if e.is_unreachable() {
                // The claim may have been made and its answer lost.
                tokio::spawn(super::miss::release_when_back(state.clone(), vec![(id.clone(), token)]));
            }
            return;
        }
    }
    if let Err(limited) = state.limits.miss(client).and_then(|()| state.limits.publish()) {
        refused(&state, limited.limit.as_str());
        release(&state, &id, token).await;
        return;
    }
    super::miss::enqueued(&state, std::slice::from_ref(&id)).await;
    let published = state.publisher.publish(&request, Caller::default()).await.map(drop).map_err(|e| e.to_string());
    if published.is_err() {
        super::miss::dequeued(&state, vec![id.clone()]);
    }
    match published {
        Ok(()) => {
            tracing::debug!(product_id = %id, "refresh published");
            metrics::counter!("pricefront_refreshes_total", "stage" => "published").increment(1);
        }
        Err(e) => {
            tracing::info!(product_id = %id, error = %e, "refresh not published; the result expires as it would have");
            release(&state, &id, token).await;
        }
    }
}

/// Releases the refresh's marker; if Redis does not answer, as soon as it does.
async fn release(state: &AppState, id: &ProductId, token: String) {
    match state.store.release_pending(id, &token).await {
        Ok(_) => {}
        Err(e) if e.is_unreachable() => {
            tokio::spawn(super::miss::release_when_back(state.clone(), vec![(id.clone(), token)]));
        }
        Err(e) => tracing::debug!(error = %e, "cannot release the refresh marker; it expires by itself"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use bytes::Bytes;
    use time::OffsetDateTime;

    use super::*;
    use crate::domain::{Comparison, TtlPolicy};

    fn stored(window: Duration, left: Duration) -> StoredResult {
        let now = OffsetDateTime::now_utc();
        let policy = TtlPolicy { answered: window, transient: window, failed: window, not_found: window };
        let computed_at = now - (window - left);
        let comparison =
            Comparison::aggregate(ProductId::parse("p").unwrap(), [], computed_at, &policy, &Default::default());
        StoredResult::decode(Bytes::from(StoredResult::encode(&comparison)), SystemTime::now()).unwrap()
    }

    #[test]
    fn due_in_the_last_fraction_of_the_window_once_per_result() {
        let refresh = RefreshAhead::new(0.2, Duration::from_secs(30), 100);
        let early = stored(Duration::from_secs(100), Duration::from_secs(50));
        let now = Instant::now;
        assert!(!refresh.due("p", &early, now()), "half the window left");
        let late = stored(Duration::from_secs(100), Duration::from_secs(10));
        assert!(refresh.due("p", &late, now()), "a tenth left");
        assert!(!refresh.due("p", &late, now()), "tried already for this result");
        let next = stored(Duration::from_secs(100), Duration::from_secs(5));
        assert!(refresh.due("p", &next, now()), "a newer result (another expires_at) is tried again");
        assert_eq!(refresh.window_secs(&next), Some(20));
        let off = RefreshAhead::new(0.0, Duration::from_secs(30), 100);
        assert!(!off.due("p", &stored(Duration::from_secs(100), Duration::from_secs(1)), now()));
        assert_eq!(off.window_secs(&next), None);
    }
}
