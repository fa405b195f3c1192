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
//! A pause is also kept on its own for every source, quota or not ([`Quotas::pause`],
//! [`Quotas::paused`]), so the whole fleet learns of it: each consumer looks at most every
//! [`PAUSE_CHECK`] per source, so a pause reaches the fleet within that, at a bounded cost
//! (a few reads a second per source, however many calls).
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

/// How often a consumer looks whether the fleet paused a source.
pub const PAUSE_CHECK: Duration = Duration::from_millis(250);
/// The longest a quota's tolerance (its burst's worth of intervals) may be: beyond it, the
/// arithmetic leaves the range a Lua number holds exactly.
pub const MAX_TOLERANCE: Duration = Duration::from_secs(30 * 86_400);

/// Where the fleet's limiters live.
pub trait Quotas: Send + Sync + 'static {
    /// A turn for a call to `source` that can wait at most `max_wait` for it; never before a
    /// pause of the source ends.
    fn take<'a>(
        &'a self,
        source: &'a str,
        quota: &'a QuotaSettings,
        max_wait: Duration,
    ) -> BoxFuture<'a, Result<Turn, Unavailable>>;

    /// No call to `source` for the next `pause` (the source said `Retry-After`), from anyone;
    /// with a quota, the calls after it resume at its pace.
    fn pause<'a>(
        &'a self,
        source: &'a str,
        quota: Option<&'a QuotaSettings>,
        pause: Duration,
    ) -> BoxFuture<'a, Result<(), Unavailable>>;

    /// How much of a pause of `source` is left, if one is on.
    fn paused<'a>(&'a self, source: &'a str) -> BoxFuture<'a, Result<Option<Duration>, Unavailable>>;
}

/// GCRA over microseconds on some clock; see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    pub interval_us: u64,
    pub tolerance_us: u64,
}

impl Gcra {
    /// The limiter of `quota` (settings bound it: see [`MAX_TOLERANCE`]; beyond, it saturates).
    pub fn of(quota: &QuotaSettings) -> Self {
        let interval_us = (quota.interval().as_micros() as u64).max(1);
        let tolerance_us = interval_us.saturating_mul(u64::from(quota.burst.max(1) - 1));
        Self { interval_us, tolerance_us: tolerance_us.min(MAX_TOLERANCE.as_micros() as u64) }
    }

    /// The turn of a call at `now` that waits at most `max_wait_us`, given the stored TAT
    /// (`None`: no call lately) and the end of a pause (`None`: none), and the TAT to store if
    /// a turn was taken.
    pub fn take(&self, tat: Option<u64>, paused_until: Option<u64>, now: u64, max_wait_us: u64) -> (Turn, Option<u64>) {
        let tat = tat.unwrap_or(now).max(now);
        let earliest = (tat - self.tolerance_us.min(tat)).max(paused_until.unwrap_or(0));
        let wait = earliest.saturating_sub(now);
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
    /// Each source's pause end.
    pauses: Mutex<HashMap<String, u64>>,
}

impl Default for LocalQuotas {
    fn default() -> Self {
        Self { epoch: Instant::now(), tats: Mutex::default(), pauses: Mutex::default() }
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
        let paused_until = self.pauses.lock().expect("pause lock").get(source).copied();
        let mut tats = self.tats.lock().expect("quota lock");
        let (turn, next) =
            Gcra::of(quota).take(tats.get(source).copied(), paused_until, now, max_wait.as_micros() as u64);
        if let Some(next) = next {
            tats.insert(source.to_owned(), next);
        }
        Box::pin(async move { Ok(turn) })
    }

    fn pause<'a>(
        &'a self,
        source: &'a str,
        quota: Option<&'a QuotaSettings>,
        pause: Duration,
    ) -> BoxFuture<'a, Result<(), Unavailable>> {
        let now = self.now();
        let until = now + pause.as_micros() as u64;
        let mut pauses = self.pauses.lock().expect("pause lock");
        let end = pauses.entry(source.to_owned()).or_insert(until);
        *end = (*end).max(until);
        if let Some(quota) = quota {
            let mut tats = self.tats.lock().expect("quota lock");
            let next = Gcra::of(quota).pause(tats.get(source).copied(), now, pause.as_micros() as u64);
            tats.insert(source.to_owned(), next);
        }
        Box::pin(async { Ok(()) })
    }

    fn paused<'a>(&'a self, source: &'a str) -> BoxFuture<'a, Result<Option<Duration>, Unavailable>> {
        let now = self.now();
        let left = self.pauses.lock().expect("pause lock").get(source).and_then(|end| end.checked_sub(now));
        Box::pin(async move { Ok(left.filter(|us| *us > 0).map(Duration::from_micros)) })
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
            let (turn, next) = g.take(tat, None, now, 1_000 * MS);
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
        let (first, tat) = g.take(None, None, now, 0);
        assert_eq!(first, Turn::Go(Duration::ZERO));
        let (second, none) = g.take(tat, None, now, 500 * MS);
        assert_eq!((second, none), (Turn::Refused(Duration::from_secs(1)), None));
        let (third, _) = g.take(tat, None, now + 600 * MS, 500 * MS);
        assert_eq!(third, Turn::Go(Duration::from_millis(400)), "the refusal cost nobody a turn");
    }

    #[test]
    fn a_pause_holds_every_turn_then_calls_resume_at_the_pace() {
        let g = gcra(10.0, 3);
        let now = 1_000_000;
        let tat = g.pause(None, now, 2_000 * MS);
        assert_eq!(g.take(Some(tat), None, now, 1_000 * MS).0, Turn::Refused(Duration::from_secs(2)));
        assert_eq!(g.take(Some(tat), None, now, 3_000 * MS).0, Turn::Go(Duration::from_secs(2)));
        let after = now + 2_000 * MS;
        let (first, tat) = g.take(Some(tat), None, after, 0);
        assert_eq!(first, Turn::Go(Duration::ZERO), "one turn when the pause ends");
        assert_eq!(g.take(tat, None, after, 0).0, Turn::Refused(Duration::from_millis(100)), "then one per interval");
        let later = after + 1_000 * MS;
        assert_eq!(g.take(tat, None, later, 0).0, Turn::Go(Duration::ZERO), "and the burst refills");
        assert_eq!(g.pause(Some(u64::MAX / 2), now, 1), u64::MAX / 2, "a pause never shortens a later TAT");
    }

    #[test]
    fn a_pause_on_its_own_holds_turns_too() {
        let g = gcra(10.0, 3);
        let now = 1_000_000;
        let until = now + 500 * MS;
        assert_eq!(g.take(None, Some(until), now, 100 * MS).0, Turn::Refused(Duration::from_millis(500)));
        assert_eq!(g.take(None, Some(until), now, 600 * MS).0, Turn::Go(Duration::from_millis(500)));
        assert_eq!(g.take(None, Some(now - 1), now, 0).0, Turn::Go(Duration::ZERO), "a pause that ended");
        let huge = Gcra::of(&QuotaSettings { per_second: 1.0 / 86_400.0, burst: u32::MAX });
        assert_eq!(huge.tolerance_us, MAX_TOLERANCE.as_micros() as u64, "bounded, never overflowing");
    }

    #[test]
    fn a_slow_quota_is_exact() {
        let g = gcra(5000.0 / 86_400.0, 10);
        assert_eq!(g.interval_us, 17_280_000, "5,000 a day: one every 17.28 s");
    }
}
