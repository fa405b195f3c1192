//! `Prefer: wait=N` (RFC 7240): hold a miss up to N seconds (at most `producer.max_wait_secs`)
//! and answer 200 as soon as the result is written, else 202 as without it.
//!
//! A request registers its [`Waiter`] before its first look, so a result written meanwhile
//! still wakes it; woken, it looks again through L1 (so many waiters share one Redis read). At
//! most `producer.max_waiters` requests wait per process; past it, a request answers at once.
//! A client that hangs up drops its future, and with it its waiter and its place.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cache::Waiter;

/// The `wait` preference in seconds, if the request states one (the last one wins, as RFC
/// 7240 lets a server pick; an unparsable value is ignored, as any unknown preference is).
pub fn preferred_wait(headers: &HeaderMap) -> Option<u64> {
    let mut wait = None;
    for value in headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()) {
        for preference in value.split(',') {
            // `token [= word] *(; parameter)`: the parameters do not matter for `wait`.
            let preference = preference.split(';').next().unwrap_or_default().trim();
            if let Some((name, value)) = preference.split_once('=')
                && name.trim().eq_ignore_ascii_case("wait")
                && let Ok(seconds) = value.trim().trim_matches('"').parse::<u64>()
            {
                wait = Some(seconds);
            }
        }
    }
    wait
}

/// The gauge of requests held by `Prefer: wait`.
pub const WAITING: &str = "pricefront_waiting_requests";

/// One waiting request's (or event stream's) place: its permit among a bounded number, its
/// waiter (a multi-get's: one per product), and its count in `gauge`.
pub struct Place<W = Waiter> {
    pub waiter: W,
    gauge: &'static str,
    _permit: OwnedSemaphorePermit,
}

impl<W> Place<W> {
    /// A place if one is free.
    pub fn take(places: &Arc<Semaphore>, gauge: &'static str, waiter: impl FnOnce() -> W) -> Option<Place<W>> {
        let permit = places.clone().try_acquire_owned().ok()?;
        metrics::gauge!(gauge).increment(1.0);
        Some(Place { waiter: waiter(), gauge, _permit: permit })
    }
}

impl<W> Drop for Place<W> {
    fn drop(&mut self) {
        metrics::gauge!(self.gauge).decrement(1.0);
    }
}

/// The wait granted: what was asked, capped.
pub fn granted(asked: u64, max: Duration) -> Duration {
    Duration::from_secs(asked).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefer(values: &[&str]) -> Option<u64> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("prefer", v.parse().unwrap());
        }
        preferred_wait(&headers)
    }

    #[test]
    fn reads_the_wait_preference_among_others() {
        assert_eq!(prefer(&["wait=5"]), Some(5));
        assert_eq!(prefer(&["respond-async, wait=10"]), Some(10));
        assert_eq!(prefer(&["Wait = 3 ; foo=bar"]), Some(3));
        assert_eq!(prefer(&["handling=lenient", "wait=\"7\""]), Some(7));
        assert_eq!(prefer(&["respond-async"]), None);
        assert_eq!(prefer(&["wait=soon"]), None);
        assert_eq!(prefer(&["wait=-1"]), None);
        assert_eq!(prefer(&[]), None);
    }

    #[test]
    fn the_grant_is_capped() {
        assert_eq!(granted(60, Duration::from_secs(10)), Duration::from_secs(10));
        assert_eq!(granted(2, Duration::from_secs(10)), Duration::from_secs(2));
    }
}
