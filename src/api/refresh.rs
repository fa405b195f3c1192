//! Refresh ahead: a popular product never goes cold. A hit served in the last
//! `cache.refresh_ahead` fraction of its result's guarantee window (default 0.2) starts a
//! background refresh; the client gets its answer at once.
//!
//! - **One refresh per product across producers:** the refresh claims the pending marker
//!   (`SET NX PX`), as a miss does; only its winner publishes a request marked `refresh`, which
//!   the consumer computes although a result exists, overwriting it (no gap).
//! - **Cheap on the hit path:** a hit outside the window costs one comparison of instants;
//!   inside it, only the first hit per result in this process tries to claim (a local memo of
//!   the `expires_at` it tried to replace), so a hot product costs Redis one `SET NX` per
//!   producer per window.
//! - **Never worse:** a refresh whose sources all fail is not stored over a good result (the
//!   store keeps the old one; see `cache::StoreOutcome::Kept`).
//! - A product nobody asks for in its window is simply left to expire.

use std::time::Duration;

use time::OffsetDateTime;

use super::AppState;
use crate::cache::StoredResult;
use crate::domain::ProductId;
use crate::queue::PriceRequest;

/// When a hit should start a refresh.
pub struct RefreshAhead {
    fraction: f64,
    /// Products this process tried to refresh lately, with the `expires_at` of the result it
    /// tried to replace: one try per result.
    tried: moka::sync::Cache<ProductId, OffsetDateTime>,
}

impl RefreshAhead {
    pub fn new(fraction: f64, pending_ttl: Duration, max_entries: u64) -> Self {
        Self {
            fraction,
            tried: moka::sync::Cache::builder().max_capacity(max_entries).time_to_live(pending_ttl).build(),
        }
    }

    /// Whether serving `stored` now should start a refresh (at most once per product per
    /// pending lifetime in this process).
    pub fn due(&self, stored: &StoredResult, now: OffsetDateTime) -> bool {
        if self.fraction <= 0.0 {
            return false;
        }
        let comparison = &stored.comparison;
        let window = (comparison.expires_at - comparison.computed_at).as_seconds_f64();
        let left = comparison.guarantee_left(now).min(stored.ttl_left()).as_secs_f64();
        if left > window * self.fraction {
            return false;
        }
        // Two hits racing here both try; the marker lets one through.
        if self.tried.get(&comparison.product_id) == Some(comparison.expires_at) {
            return false;
        }
        self.tried.insert(comparison.product_id.clone(), comparison.expires_at);
        true
    }
}

/// Claims the marker and publishes a refresh of `id`; in the background, after a hit.
pub async fn refresh(state: AppState, id: ProductId) {
    let request = PriceRequest::refresh(id.clone());
    let token = request.request_id.to_string();
    match state.store.claim_pending(&id, &token, state.pending_ttl).await {
        Ok(true) => {}
        // Another producer refreshes it, or a request for it is pending anyway.
        Ok(false) => return,
        Err(e) => {
            tracing::debug!(product_id = %id, error = %e, "cannot claim a refresh");
            return;
        }
    }
    let published = match state.limits.publish() {
        Ok(()) => state.publisher.publish(&request, None).await.map(drop).map_err(|e| e.to_string()),
        Err(refused) => Err(refused.to_string()),
    };
    match published {
        Ok(()) => {
            tracing::debug!(product_id = %id, "refresh published");
            metrics::counter!("pricefront_refreshes_total", "stage" => "published").increment(1);
        }
        Err(e) => {
            tracing::info!(product_id = %id, error = %e, "refresh not published; the result expires as it would have");
            if let Err(e) = state.store.release_pending(&id, &token).await {
                tracing::debug!(error = %e, "cannot release the refresh marker; it expires by itself");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;

    use super::*;
    use crate::domain::{Comparison, TtlPolicy};

    fn stored(window: Duration, left: Duration) -> (StoredResult, OffsetDateTime) {
        let now = OffsetDateTime::now_utc();
        let policy = TtlPolicy { answered: window, failed: window, not_found: window };
        let computed_at = now - (window - left);
        let comparison = Comparison::aggregate(ProductId::parse("p").unwrap(), [], computed_at, &policy);
        (StoredResult { comparison, body: Bytes::new(), expires: Instant::now() + left }, now)
    }

    #[test]
    fn due_in_the_last_fraction_of_the_window_once_per_result() {
        let refresh = RefreshAhead::new(0.2, Duration::from_secs(30), 100);
        let (early, now) = stored(Duration::from_secs(100), Duration::from_secs(50));
        assert!(!refresh.due(&early, now), "half the window left");
        let (late, now) = stored(Duration::from_secs(100), Duration::from_secs(10));
        assert!(refresh.due(&late, now), "a tenth left");
        assert!(!refresh.due(&late, now), "tried already for this result");
        let (next, now) = stored(Duration::from_secs(100), Duration::from_secs(5));
        assert!(refresh.due(&next, now), "a newer result (another expires_at) is tried again");
        let off = RefreshAhead::new(0.0, Duration::from_secs(30), 100);
        assert!(!off.due(&stored(Duration::from_secs(100), Duration::from_secs(1)).0, OffsetDateTime::now_utc()));
    }
}
