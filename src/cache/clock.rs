//! Watching our clock against Redis's. Guarantees are absolute times: a result is stored to
//! expire at its `expires_at` by Redis's clock, and judged servable by this process's. When
//! the two disagree, results live shorter than their guarantee (Redis ahead) or are held past
//! it (Redis behind). Every [`CHECK_EVERY`] each process reads Redis's `TIME` and logs a
//! warning when they differ by more than [`TOLERANCE`], either way; the gauge
//! `pricefront_clock_skew_seconds` is Redis's clock minus ours.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::ResultStore;

/// How often the clocks are compared.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);
/// A disagreement worth a warning.
pub const TOLERANCE: Duration = Duration::from_secs(1);

/// Redis's clock minus ours, in seconds (the round trip's midpoint taken as the moment Redis
/// read its clock), or `None` when Redis cannot say.
pub async fn skew(store: &dyn ResultStore) -> Option<f64> {
    let before = SystemTime::now();
    let theirs = store.clock().await.ok()??;
    let after = SystemTime::now();
    let ours = before + after.duration_since(before).unwrap_or_default() / 2;
    Some(match theirs.duration_since(ours) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(behind) => -behind.duration().as_secs_f64(),
    })
}

/// Compares the clocks now and every [`CHECK_EVERY`] until `shutdown`.
pub fn spawn_watch(store: Arc<dyn ResultStore>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(CHECK_EVERY);
        while tokio::select! { _ = every.tick() => true, _ = shutdown.cancelled() => false } {
            let Some(skew) = skew(&*store).await else { continue };
            metrics::gauge!("pricefront_clock_skew_seconds").set(skew);
            let by_ms = (skew.abs() * 1000.0) as u64;
            if skew > TOLERANCE.as_secs_f64() {
                tracing::warn!(
                    by_ms,
                    "Redis's clock is ahead of this process's: results are stored for less than their guarantee, or not at all; sync the clocks"
                );
            } else if skew < -TOLERANCE.as_secs_f64() {
                tracing::warn!(
                    by_ms,
                    "Redis's clock is behind this process's: results stay in Redis past their guarantee; sync the clocks"
                );
            }
        }
    });
}
