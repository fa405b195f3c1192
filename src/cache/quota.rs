//! The fleet's quotas in Redis: one GCRA limiter per source (`providers::Gcra`'s rule, in one
//! Lua script per call on Redis's clock), at `{prefix}:quota:{<source>}`, and each source's
//! pause at `{prefix}:pause:{<source>}` (a key that lives as long as the pause; the two share
//! the source's hash slot). Every consumer asks the same keys, so adding consumers never breaks
//! a source's quota, and a `Retry-After` one consumer hears pauses them all.

use std::time::Duration;

use futures::future::BoxFuture;
use redis::Script;

use super::{Connection, Keys};
use crate::providers::{Gcra, Quotas, Turn, Unavailable};
use crate::settings::QuotaSettings;

/// A call's turn: `providers::Gcra::take`, never before the source's pause ends. The quota key
/// lives as long as its arrival time matters.
/// KEYS: quota, pause; ARGV: interval µs, tolerance µs, most µs the call can wait.
/// Returns {1, wait µs} (taken) or {0, µs until the next turn} (refused).
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local earliest = tat - tonumber(ARGV[2])
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 and now + paused * 1000 > earliest then
  earliest = now + paused * 1000
end
local wait = earliest - now
if wait < 0 then wait = 0 end
if wait > tonumber(ARGV[3]) then
  return {0, wait}
end
local next = tat + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000) + 1000)
return {1, wait}";

/// A pause: the pause key lives as long as the longest pause asked for; with a quota
/// (tolerance µs given), `providers::Gcra::pause` too.
/// KEYS: quota, pause; ARGV: pause ms, tolerance µs or ''.
const PAUSE: &str = r"
local pause = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[2]) < pause then
  redis.call('SET', KEYS[2], '1', 'PX', pause)
end
if ARGV[2] == '' then
  return 1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local target = now + pause * 1000 + tonumber(ARGV[2])
if target > tat then
  redis.call('SET', KEYS[1], string.format('%.0f', target), 'PX', math.ceil((target - now) / 1000) + 1000)
end
return 1";

/// The fleet's limiters, in the Redis the results are in.
#[derive(Clone)]
pub struct RedisQuotas {
    conn: Connection,
    keys: Keys,
    timeout: Duration,
    at: super::Address,
    take: Script,
    pause: Script,
}

impl RedisQuotas {
    pub(super) fn new(conn: Connection, keys: Keys, timeout: Duration, at: super::Address) -> Self {
        Self { conn, keys, timeout, at, take: Script::new(TAKE), pause: Script::new(PAUSE) }
    }

    async fn bounded<T>(&self, op: impl Future<Output = redis::RedisResult<T>>) -> Result<T, Unavailable> {
        match tokio::time::timeout(self.timeout * 2, op).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(Unavailable(format!("Redis at {}: {e}", self.at))),
            Err(_) => Err(Unavailable(format!("Redis at {} did not answer within {:?}", self.at, self.timeout * 2))),
        }
    }
}

impl Quotas for RedisQuotas {
    fn take<'a>(
        &'a self,
        source: &'a str,
        quota: &'a QuotaSettings,
        max_wait: Duration,
    ) -> BoxFuture<'a, Result<Turn, Unavailable>> {
        Box::pin(async move {
            let gcra = Gcra::of(quota);
            let mut invocation = self.take.key(self.keys.quota(source));
            invocation.key(self.keys.pause(source));
            invocation.arg(gcra.interval_us).arg(gcra.tolerance_us).arg(max_wait.as_micros() as u64);
            let (taken, wait_us): (i64, i64) = self.bounded(invocation.invoke_async(&mut self.conn.clone())).await?;
            let wait = Duration::from_micros(wait_us.max(0) as u64);
            Ok(if taken == 1 { Turn::Go(wait) } else { Turn::Refused(wait) })
        })
    }

    fn pause<'a>(
        &'a self,
        source: &'a str,
        quota: Option<&'a QuotaSettings>,
        pause: Duration,
    ) -> BoxFuture<'a, Result<(), Unavailable>> {
        Box::pin(async move {
            let mut invocation = self.pause.key(self.keys.quota(source));
            invocation.key(self.keys.pause(source));
            let tolerance = quota.map(|q| Gcra::of(q).tolerance_us.to_string()).unwrap_or_default();
            invocation.arg((pause.as_millis() as u64).max(1)).arg(tolerance);
            self.bounded(invocation.invoke_async::<i64>(&mut self.conn.clone())).await.map(drop)
        })
    }

    fn paused<'a>(&'a self, source: &'a str) -> BoxFuture<'a, Result<Option<Duration>, Unavailable>> {
        Box::pin(async move {
            let mut pttl = redis::cmd("PTTL");
            pttl.arg(self.keys.pause(source));
            let left: i64 = self.bounded(pttl.query_async(&mut self.conn.clone())).await?;
            Ok((left > 0).then(|| Duration::from_millis(left as u64)))
        })
    }
}
