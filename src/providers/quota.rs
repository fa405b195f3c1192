//! Quotas the whole fleet keeps: one limiter per source (`[providers.quota]`), shared by every
//! consumer, so adding consumers never breaks a source's quota.
//!
//! The limiter is GCRA (the generic cell rate algorithm, as redis-cell and Envoy's global rate
//! limit do it): one number per source, the theoretical arrival time (TAT) of the next call.
//! A call may go at `TAT - tolerance`, where the tolerance is `(burst - 1)` intervals, and moves
//! the TAT one interval on. A turn is *reserved*: a call whose turn comes within `max_wait`
//! takes it and waits for it; one whose turn would come later takes nothing and is refused
//! (`rate_limited`), so a refused call never costs the others a turn. A source's `Retry-After`
//! pauses it: the TAT moves to the end of the pause plus the tolerance, so no turn comes
//! before it, and after it calls resume one interval apart, not in a burst, the burst
//! refilling as they go.
//!
//! [`Gcra`] is that rule, on any clock. Production keeps the TAT in Redis (`cache::RedisQuotas`,
//! the same rule in one Lua script per call, on Redis's clock); the standalone demo in this
//! process ([`LocalQuotas`]). One contract suite runs against both (`tests/it/quotas.rs`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use crate::settings::QuotaSettings;

/// What the limiter says to one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// Go after waiting this long (zero: at once); the turn is taken.
    Go(Duration),
    /// The next turn comes in this long, later than the call can wait; nothing is taken.
    Refused(Duration),
}

/// The limiter could not be asked (Redis failing): the call is not made.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the quota's limiter: {0}")]
pub struct Unavailable(pub String);

/// Where the fleet's limiters live.
pub trait Quotas: Send + Sync + 'static {
    /// A turn for a call to `source` that can wait at most `max_wait` for it.
    fn take<'a>(
        &'a self,
        source: &'a str,
        quota: &'a QuotaSettings,
        max_wait: Duration,
    ) -> BoxFuture<'a, Result<Turn, Unavailable>>;

    /// No turn for `source` for the next `pause` (the source said `Retry-After`).
    fn pause<'a>(
        &'a self,
        source: &'a str,
        quota: &'a QuotaSettings,
        pause: Duration,
    ) -> BoxFuture<'a, Result<(), Unavailable>>;
}

/// GCRA over microseconds on some clock; see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    pub interval_us: u64,
    pub tolerance_us: u64,
}

impl Gcra {
    pub fn of(quota: &QuotaSettings) -> Self {
        let interval_us = (quota.interval().as_micros() as u64).max(1);
        Self { interval_us, tolerance_us: interval_us * u64::from(quota.burst.max(1) - 1) }
    }

    /// The turn of a call at `now` that waits at most `max_wait_us`, given the stored TAT
    /// (`None`: no call lately), and the TAT to store if a turn was taken.
    pub fn take(&self, tat: Option<u64>, now: u64, max_wait_us: u64) -> (Turn, Option<u64>) {
        let tat = tat.unwrap_or(now).max(now);
        let wait = (tat - self.tolerance_us.min(tat)).saturating_sub(now);
        if wait > max_wait_us {
            return (Turn::Refused(Duration::from_micros(wait)), None);
        }
        (Turn::Go(Duration::from_micros(wait)), Some(tat + self.interval_us))
    }

    /// The TAT after a pause of `pause_us` from `now`.
    pub fn pause(&self, tat: Option<u64>, now: u64, pause_us: u64) -> u64 {
        tat.unwrap_or(now).max(now + pause_us + self.tolerance_us)
    }
}

/// The limiters of this process alone (the standalone demo; a fleet keeps them in Redis).
pub struct LocalQuotas {
    epoch: Instant,
    tats: Mutex<HashMap<String, u64>>,
}

impl Default for LocalQuotas {
    fn default() -> Self {
        Self { epoch: Instant::now(), tats: Mutex::default() }
    }
}

impl LocalQuotas {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

impl Quotas for LocalQuotas {
    fn take<'a>(
        &'a self,
        source: &'a str,
        quota: &'a QuotaSettings,
        max_wait: Duration,
    ) -> BoxFuture<'a, Result<Turn, Unavailable>> {
        let now = self.now();
        let mut tats = self.tats.lock().expect("quota lock");
        let (turn, next) = Gcra::of(quota).take(tats.get(source).copied(), now, max_wait.as_micros() as u64);
        if let Some(next) = next {
            tats.insert(source.to_owned(), next);
        }
        Box::pin(async move { Ok(turn) })
    }

    fn pause<'a>(
        &'a self,
        source: &'a str,
        quota: &'a QuotaSettings,
        pause: Duration,
    ) -> BoxFuture<'a, Result<(), Unavailable>> {
        let now = self.now();
        let mut tats = self.tats.lock().expect("quota lock");
        let next = Gcra::of(quota).pause(tats.get(source).copied(), now, pause.as_micros() as u64);
        tats.insert(source.to_owned(), next);
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1000;

    fn gcra(per_second: f64, burst: u32) -> Gcra {
        Gcra::of(&QuotaSettings { per_second, burst })
    }

    #[test]
    fn a_burst_goes_at_once_then_one_call_per_interval() {
        let g = gcra(10.0, 3);
        let (mut tat, now) = (None, 1_000_000);
        let mut waits = Vec::new();
        for _ in 0..5 {
            let (turn, next) = g.take(tat, now, 1_000 * MS);
            tat = next.or(tat);
            waits.push(turn);
        }
        let ms = |n| Turn::Go(Duration::from_millis(n));
        assert_eq!(waits, [ms(0), ms(0), ms(0), ms(100), ms(200)]);
    }

    #[test]
    fn a_turn_too_late_is_refused_and_takes_nothing() {
        let g = gcra(1.0, 1);
        let now = 5_000_000;
        let (first, tat) = g.take(None, now, 0);
        assert_eq!(first, Turn::Go(Duration::ZERO));
        let (second, none) = g.take(tat, now, 500 * MS);
        assert_eq!((second, none), (Turn::Refused(Duration::from_secs(1)), None));
        let (third, _) = g.take(tat, now + 600 * MS, 500 * MS);
        assert_eq!(third, Turn::Go(Duration::from_millis(400)), "the refusal cost nobody a turn");
    }

    #[test]
    fn a_pause_holds_every_turn_then_calls_resume_at_the_pace() {
        let g = gcra(10.0, 3);
        let now = 1_000_000;
        let tat = g.pause(None, now, 2_000 * MS);
        assert_eq!(g.take(Some(tat), now, 1_000 * MS).0, Turn::Refused(Duration::from_secs(2)));
        assert_eq!(g.take(Some(tat), now, 3_000 * MS).0, Turn::Go(Duration::from_secs(2)));
        let after = now + 2_000 * MS;
        let (first, tat) = g.take(Some(tat), after, 0);
        assert_eq!(first, Turn::Go(Duration::ZERO), "one turn when the pause ends");
        assert_eq!(g.take(tat, after, 0).0, Turn::Refused(Duration::from_millis(100)), "then one per interval");
        let later = after + 1_000 * MS;
        assert_eq!(g.take(tat, later, 0).0, Turn::Go(Duration::ZERO), "and the burst refills");
        assert_eq!(g.pause(Some(u64::MAX / 2), now, 1), u64::MAX / 2, "a pause never shortens a later TAT");
    }

    #[test]
    fn a_slow_quota_is_exact() {
        let g = gcra(5000.0 / 86_400.0, 10);
        assert_eq!(g.interval_us, 17_280_000, "5,000 a day: one every 17.28 s");
    }
}
