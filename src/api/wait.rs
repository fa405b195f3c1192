//! `Prefer: wait=N` (RFC 7240): hold a miss up to N seconds (at most `producer.max_wait_secs`)
//! and answer 200 as soon as the result is written, else 202 as without it.
//!
//! A request registers its [`Waiter`] before its first look, so a result written meanwhile
//! still wakes it; woken, it looks again through L1 (so many waiters share one Redis read). At
//! most `producer.max_waiters` requests wait per process, and `producer.max_waiters_per_client`
//! per client; past either, a request answers at once. Event streams take their [`Place`] the
//! same way, within `max_streams` and `max_streams_per_client`. A client that hangs up drops its
//! future, and with it its waiter and its place.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
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

/// Places held by one kind of request (waits, or event streams): at most so many in all, and
/// so many per client.
pub struct Places {
    all: Arc<Semaphore>,
    per_client: usize,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
    gauge: &'static str,
}

/// Why no place was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    /// Every place of this process is taken.
    All,
    /// This client holds as many as one client may.
    Client,
}

impl Places {
    pub fn new(all: usize, per_client: usize, gauge: &'static str) -> Self {
        Self { all: Arc::new(Semaphore::new(all)), per_client, held: Arc::default(), gauge }
    }

    /// A place for `client`, with `waiter()`, if one is free in all and for it.
    pub fn take<W>(&self, client: IpAddr, waiter: impl FnOnce() -> W) -> Result<Place<W>, Full> {
        {
            let mut held = self.held.lock().expect("places lock");
            let count = held.entry(client).or_insert(0);
            if *count >= self.per_client {
                return Err(Full::Client);
            }
            *count += 1;
        }
        let slot = ClientSlot { held: self.held.clone(), client };
        let permit = self.all.clone().try_acquire_owned().map_err(|_| Full::All)?;
        metrics::gauge!(self.gauge).increment(1.0);
        Ok(Place { waiter: waiter(), gauge: self.gauge, _permit: permit, _slot: slot })
    }
}

/// One client's count of held places, given back on drop.
struct ClientSlot {
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
    client: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut held = self.held.lock().expect("places lock");
        if let Some(count) = held.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.client);
            }
        }
    }
}

/// One waiting request's (or event stream's) place: its permit among a bounded number, its
/// client's share, its waiter (a multi-get's: one per product), and its count in `gauge`.
pub struct Place<W = Waiter> {
    pub waiter: W,
    gauge: &'static str,
    _permit: OwnedSemaphorePermit,
    _slot: ClientSlot,
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
    fn places_are_bounded_in_all_and_per_client() {
        let places = Places::new(3, 2, "test_places");
        let (a, b) = (IpAddr::from([192, 0, 2, 1]), IpAddr::from([192, 0, 2, 2]));
        let a1 = places.take(a, || ()).unwrap();
        let _a2 = places.take(a, || ()).unwrap();
        assert_eq!(places.take(a, || ()).err(), Some(Full::Client));
        let _b1 = places.take(b, || ()).unwrap();
        assert_eq!(places.take(b, || ()).err(), Some(Full::All), "three in all");
        drop(a1);
        let _b2 = places.take(b, || ()).expect("a place given back is free again");
        assert_eq!(places.held.lock().unwrap()[&b], 2);
        assert_eq!(places.take(b, || ()).err(), Some(Full::Client));
    }

    #[test]
    fn the_grant_is_capped() {
        assert_eq!(granted(60, Duration::from_secs(10)), Duration::from_secs(10));
        assert_eq!(granted(2, Duration::from_secs(10)), Duration::from_secs(2));
    }
}
