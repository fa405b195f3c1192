//! L2: results and pending markers in Redis, through one multiplexed [`Connection`] (one
//! server or a cluster). Each script touches one product's keys only, which share a hash slot
//! ([`Keys`]), so the same scripts run on a cluster.
//!
//! Every call is bounded by `redis.timeout_ms` so an unreachable Redis costs a caller a
//! known, short wait and an [`Error`], never a hang. The connection is made lazily, so a
//! process starts (and reports not-ready) while Redis is down.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use redis::cluster_routing::Slot;
use redis::{AsyncCommands, Script};

use super::connection::Connection;
use super::earlier::{self, Earlier};
use super::progress::{MAX_EVENTS, Progress, ProgressId};
use super::ready::{self, Ready, Waiter};
use super::stored::{self, StoredResult};
use super::{
    Announcements, Backlog, BacklogState, CAPACITY_FRESH, Error, Hold, Keys, ProgressLog, ResultStore, StoreOutcome,
};
use crate::domain::{Comparison, Failure, ProductId, Quote};
use crate::settings::RedisSettings;

/// What a look (without a claim) found.
#[derive(Debug)]
pub enum Peek {
    Hit(Box<StoredResult>),
    /// No result; somebody's request for it is pending.
    Pending,
    /// No result, and no request pending.
    Absent,
}

/// What the miss path found.
#[derive(Debug)]
pub enum Lookup {
    Hit(Box<StoredResult>),
    /// No result; this caller now owns the pending marker and must publish (or release it).
    Claimed,
    /// No result; somebody else's request is already pending.
    AlreadyPending,
}

/// A product whose request is still queued is not claimed again, however long the queue: its
/// marker is set again (to the queued request's token) and it is pending. A won claim marks the
/// product queued too, until its request finishes (or `queued_ttl`).
/// KEYS: result, pending, queued; ARGV: token, pending TTL in ms, queued TTL in ms.
const LOOKUP_OR_CLAIM: &str = r"
local body = redis.call('GET', KEYS[1])
if body then
  return {1, body}
end
local queued = redis.call('GET', KEYS[3])
if queued then
  redis.call('SET', KEYS[2], queued, 'NX', 'PX', ARGV[2])
  return {0, false}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[3])
  return {2, false}
end
return {0, false}";

/// [`LOOKUP_OR_CLAIM`] for several products at once, each as that script would (one hash slot
/// on a cluster: the caller groups them).
/// KEYS: result, pending and queued of each product in turn; ARGV: pending TTL in ms, queued
/// TTL in ms, then each product's token. Returns each product's outcome and body, flattened.
const LOOKUP_OR_CLAIM_MANY: &str = r"
local out = {}
for i = 1, #KEYS / 3 do
  local result, pending, queued, token = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i], ARGV[i + 2]
  local body = redis.call('GET', result)
  out[2 * i - 1] = 0
  out[2 * i] = false
  if body then
    out[2 * i - 1] = 1
    out[2 * i] = body
  else
    local held = redis.call('GET', queued)
    if held then
      redis.call('SET', pending, held, 'NX', 'PX', ARGV[1])
    elseif redis.call('SET', pending, token, 'NX', 'PX', ARGV[1]) then
      redis.call('SET', queued, token, 'PX', ARGV[2])
      out[2 * i - 1] = 2
    end
  end
end
return out";

/// A refresh's claim: the marker, unless a request for the product is queued; a won claim marks
/// it queued too. KEYS: pending, queued; ARGV: token, pending TTL in ms, queued TTL in ms.
const CLAIM: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
  return 1
end
return 0";

/// Writes a result to expire at its guarantee's end (absolute, on Redis's clock), clears the
/// marker and announces it; or, if the guarantee has passed already (the write waited), writes
/// nothing and releases the marker if the token still owns it, so the product is computed
/// again. One script: a write that waited in a stalled Redis is judged when it runs. A `failed`
/// result does not replace one that is not (a refresh whose sources all failed): 2.
/// The progress log goes in every case: its computation is over. The rules are
/// [`StoreOutcome::judge`]'s, in the same order; the stored header is read by
/// [`stored::LUA_HEADER`]'s `pf_header`, prepended when the script is made.
/// The quotes that outlive the result are kept beside it until their own end (`''` when none
/// do: an older list goes).
/// A result computed later than this one is never replaced by it: 3, the marker released.
/// The product stops being queued if this request's claim queued it.
/// KEYS: result, pending, progress, quotes, queued; ARGV: body, expires_at in ms since the
/// epoch, token, channel, status, kept quotes, their end in ms since the epoch, computed_at in
/// ms.
const STORE_UNTIL: &str = r"
redis.call('DEL', KEYS[3])
if redis.call('GET', KEYS[5]) == ARGV[3] then
  redis.call('DEL', KEYS[5])
end
local function release()
  if redis.call('GET', KEYS[2]) == ARGV[3] then
    redis.call('DEL', KEYS[2])
  end
end
local now = redis.call('TIME')
if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) >= tonumber(ARGV[2]) then
  release()
  return 0
end
local old = redis.call('GET', KEYS[1])
if old then
  local computed, status = pf_header(old)
  if computed and computed > tonumber(ARGV[8]) then
    release()
    return 3
  end
  if ARGV[5] == 'failed' and status and status ~= 'failed' then
    release()
    return 2
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
if ARGV[6] ~= '' then
  redis.call('SET', KEYS[4], ARGV[6], 'PXAT', ARGV[7])
else
  redis.call('DEL', KEYS[4])
end
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1";

/// Appends one event to the progress log, which expires with the marker, and announces it with
/// the event (`<id> <kind> <data>`, see `Progress::message`).
/// KEYS: progress, pending; ARGV: kind, data, most events kept, ms to keep without a marker,
/// channel.
const PROGRESS: &str = r"
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'kind', ARGV[1], 'data', ARGV[2])
local ttl = redis.call('PTTL', KEYS[2])
if ttl <= 0 then
  ttl = tonumber(ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PUBLISH', ARGV[5], id .. ' ' .. ARGV[1] .. ' ' .. ARGV[2])
return id";

/// Deletes the pending marker, and the queued mark, each only if it still holds our token, so a
/// producer whose claim expired never releases somebody else's. Whether the marker went.
/// KEYS: pending, queued; ARGV: token.
const RELEASE_IF_OWNER: &str = r"
local released = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  released = redis.call('DEL', KEYS[1])
end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
return released";

#[derive(Clone)]
pub struct RedisStore {
    conn: Connection,
    /// Waiters in this process, fed by one subscription started with the first waiter.
    ready: Ready,
    announcements: Vec<(redis::Client, String)>,
    subscribed: Arc<OnceLock<()>>,
    keys: Keys,
    timeout: Duration,
    /// Where Redis is, for errors.
    at: super::Address,
    lookup_or_claim: Script,
    lookup_or_claim_many: Script,
    release_if_owner: Script,
    claim: Script,
    store_until: Script,
    progress: Script,
}

impl RedisStore {
    /// Builds the client without connecting; the first command connects.
    pub fn connect_lazy(settings: &RedisSettings) -> Result<Self, Error> {
        let conn = Connection::lazy(settings)?;
        let announcements = Connection::pubsub_clients(settings)?;
        Ok(Self {
            conn,
            ready: Ready::default(),
            announcements,
            subscribed: Arc::default(),
            keys: Keys::new(settings.key_prefix.clone()),
            timeout: settings.timeout,
            at: Connection::address(settings),
            lookup_or_claim: Script::new(LOOKUP_OR_CLAIM),
            lookup_or_claim_many: Script::new(LOOKUP_OR_CLAIM_MANY),
            release_if_owner: Script::new(RELEASE_IF_OWNER),
            claim: Script::new(CLAIM),
            store_until: Script::new(&format!("{}{STORE_UNTIL}", stored::LUA_HEADER)),
            progress: Script::new(PROGRESS),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The fleet's quota limiters, in this Redis.
    pub fn quotas(&self) -> super::RedisQuotas {
        super::RedisQuotas::new(self.conn.clone(), self.keys.clone(), self.timeout, self.at.clone())
    }

    async fn bounded<T>(&self, op: impl Future<Output = redis::RedisResult<T>>) -> Result<T, Error> {
        // Reconnect back-off happens inside the manager; twice the per-call bound covers
        // one connect plus one response.
        match tokio::time::timeout(self.timeout * 2, op).await {
            Ok(result) => result.map_err(|source| Error::Redis { at: self.at.clone(), source }),
            Err(_) => Err(Error::Timeout { at: self.at.clone(), after: self.timeout * 2 }),
        }
    }
}

fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}

/// A result read at `key`.
fn stored(key: String, value: Vec<u8>) -> Result<StoredResult, Error> {
    StoredResult::decode(Bytes::from(value), SystemTime::now()).map_err(|source| Error::Corrupt { key, source })
}

#[async_trait::async_trait]
impl ResultStore for RedisStore {
    /// The result if there is one (a plain `GET`: a hit costs Redis nothing more), else whether
    /// a request for it is pending (`EXISTS`).
    async fn lookup(&self, id: &ProductId) -> Result<Peek, Error> {
        let key = self.keys.result(id);
        let mut conn = self.conn.clone();
        let value: Option<Vec<u8>> = self.bounded(conn.get(&key)).await?;
        if let Some(value) = value {
            return Ok(Peek::Hit(Box::new(stored(key, value)?)));
        }
        let held: i64 = self.bounded(conn.exists(&[self.keys.pending(id), self.keys.queued(id)])).await?;
        Ok(if held > 0 { Peek::Pending } else { Peek::Absent })
    }

    /// The miss path's one round trip: the result and its TTL if there is one, else an attempt
    /// to claim the pending marker. One script, so no result can be written between the read
    /// and the claim (which would publish work that is already done).
    async fn lookup_or_claim(&self, id: &ProductId, token: &str, hold: Hold) -> Result<Lookup, Error> {
        let key = self.keys.result(id);
        let mut conn = self.conn.clone();
        let mut invocation = self.lookup_or_claim.key(&key);
        invocation.key(self.keys.pending(id)).key(self.keys.queued(id)).arg(token);
        invocation.arg(hold.pending.as_millis() as u64).arg(hold.queued.as_millis() as u64);
        let (outcome, body): (i64, Option<Vec<u8>>) = self.bounded(invocation.invoke_async(&mut conn)).await?;
        match (outcome, body) {
            (1, Some(body)) => Ok(Lookup::Hit(Box::new(stored(key, body)?))),
            (2, _) => Ok(Lookup::Claimed),
            _ => Ok(Lookup::AlreadyPending),
        }
    }

    /// [`Self::lookup`] for many: one pipeline of `GET` + `EXISTS` per product (per hash slot on
    /// a cluster, all at once).
    async fn lookup_many(&self, ids: &[ProductId]) -> Result<Vec<Result<Peek, Error>>, Error> {
        let found = self
            .per_slot(
                ids,
                |id| id,
                |group| async move {
                    let mut pipe = redis::pipe();
                    for &i in &group {
                        let id = &ids[i];
                        pipe.get(self.keys.result(id)).exists(&[self.keys.pending(id), self.keys.queued(id)]);
                    }
                    pipe.query_async::<Vec<(Option<Vec<u8>>, i64)>>(&mut self.conn.clone()).await
                },
            )
            .await?;
        Ok(ids
            .iter()
            .zip(found)
            .map(|(id, found)| match found? {
                (Some(value), _) => stored(self.keys.result(id), value).map(|s| Peek::Hit(Box::new(s))),
                (None, held) if held > 0 => Ok(Peek::Pending),
                (None, _) => Ok(Peek::Absent),
            })
            .collect())
    }

    /// [`Self::lookup_or_claim`] for many: one script for all (one per hash slot on a cluster,
    /// all at once). On a cluster a slot whose script fails fails its products alone: the
    /// others' claims stand, and are theirs to publish.
    async fn lookup_or_claim_many(
        &self,
        claims: &[(ProductId, String)],
        hold: Hold,
    ) -> Result<Vec<Result<Lookup, Error>>, Error> {
        let outcomes = self
            .per_slot(
                claims,
                |(id, _)| id,
                |group| async move {
                    let mut invocation = self.lookup_or_claim_many.prepare_invoke();
                    invocation.arg(hold.pending.as_millis() as u64).arg(hold.queued.as_millis() as u64);
                    for &i in &group {
                        let (id, token) = &claims[i];
                        invocation
                            .key(self.keys.result(id))
                            .key(self.keys.pending(id))
                            .key(self.keys.queued(id))
                            .arg(token);
                    }
                    let values: Vec<redis::Value> = invocation.invoke_async(&mut self.conn.clone()).await?;
                    values
                        .chunks_exact(2)
                        .map(|pair| {
                            let outcome: i64 = redis::from_redis_value_ref(&pair[0])?;
                            let body: Option<Vec<u8>> = redis::from_redis_value_ref(&pair[1])?;
                            Ok((outcome, body))
                        })
                        .collect::<redis::RedisResult<Vec<_>>>()
                },
            )
            .await?;
        Ok(claims
            .iter()
            .zip(outcomes)
            .map(|((id, _), outcome)| match outcome? {
                (1, Some(body)) => stored(self.keys.result(id), body).map(|s| Lookup::Hit(Box::new(s))),
                (2, _) => Ok(Lookup::Claimed),
                _ => Ok(Lookup::AlreadyPending),
            })
            .collect())
    }

    /// Claims the pending marker alone ([`CLAIM`]); true if this caller now owns it.
    async fn claim_pending(&self, id: &ProductId, token: &str, hold: Hold) -> Result<bool, Error> {
        let mut conn = self.conn.clone();
        let mut invocation = self.claim.key(self.keys.pending(id));
        invocation.key(self.keys.queued(id)).arg(token);
        invocation.arg(hold.pending.as_millis() as u64).arg(hold.queued.as_millis() as u64);
        Ok(self.bounded(invocation.invoke_async::<i64>(&mut conn)).await? == 1)
    }

    /// Releases the marker if `token` still owns it; whether it did.
    async fn release_pending(&self, id: &ProductId, token: &str) -> Result<bool, Error> {
        let mut conn = self.conn.clone();
        let mut invocation = self.release_if_owner.key(self.keys.pending(id));
        invocation.key(self.keys.queued(id)).arg(token);
        self.bounded(invocation.invoke_async::<i64>(&mut conn)).await.map(|deleted| deleted > 0)
    }

    /// Deletes a result (one found corrupt, so it is computed again).
    async fn delete_result(&self, id: &ProductId) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        self.bounded(conn.del::<_, i64>(self.keys.result(id))).await.map(drop)
    }

    /// Writes the result until its `expires_at`, clears the marker and announces it; or, if
    /// the guarantee has passed by the time Redis runs the write, releases `token`'s marker.
    async fn store(&self, comparison: &Comparison, token: &str) -> Result<StoreOutcome, Error> {
        let id = &comparison.product_id;
        let body = StoredResult::encode(comparison);
        let expires_at_ms = comparison.expires_at.unix_timestamp_nanos() / 1_000_000;
        let mut conn = self.conn.clone();
        let (kept, kept_until_ms) = earlier::outliving(comparison).unwrap_or_default();
        let mut invocation = self.store_until.key(self.keys.result(id));
        invocation
            .key(self.keys.pending(id))
            .key(self.keys.progress(id))
            .key(self.keys.quotes(id))
            .key(self.keys.queued(id))
            .arg(body)
            .arg(expires_at_ms.to_string())
            .arg(token)
            .arg(self.keys.ready_channel(id))
            .arg(comparison.status.as_str())
            .arg(kept)
            .arg(kept_until_ms.to_string())
            .arg((comparison.computed_at.unix_timestamp_nanos() / 1_000_000).to_string());
        match self.bounded(invocation.invoke_async::<i64>(&mut conn)).await? {
            1 => Ok(StoreOutcome::Stored),
            2 => Ok(StoreOutcome::Kept),
            3 => Ok(StoreOutcome::Superseded),
            _ => Ok(StoreOutcome::Expired),
        }
    }

    /// The result, the quotes kept beside it and whether anybody watches, in one round trip
    /// (they share a hash slot).
    async fn earlier(&self, id: &ProductId) -> Result<Earlier, Error> {
        let key = self.keys.result(id);
        let mut pipe = redis::pipe();
        pipe.get(&key).get(self.keys.quotes(id)).exists(self.keys.watched(id));
        let (result, kept, watched): (Option<Vec<u8>>, Option<Vec<u8>>, bool) =
            self.bounded(pipe.query_async(&mut self.conn.clone())).await?;
        let result = match result.map(|value| stored(key, value)).transpose() {
            Ok(result) => result,
            // The miss path deletes a corrupt result; here it is no result.
            Err(e) => {
                tracing::warn!(error = %e, "an earlier result is not readable; computing from scratch");
                None
            }
        };
        Ok(Earlier { watched, ..Earlier::read(result.as_ref(), kept.as_deref()) })
    }

    /// Readiness: Redis answers. A cluster must also say its state is `ok` (a node answers
    /// `PING` while the cluster refuses every key because a master is lost).
    async fn ping(&self) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        if !matches!(self.conn, Connection::Cluster(_)) {
            return self.bounded(redis::cmd("PING").query_async::<String>(&mut conn)).await.map(drop);
        }
        let info: String = self.bounded(redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn)).await?;
        if info.lines().any(|line| line.trim() == "cluster_state:ok") {
            Ok(())
        } else {
            let down = (redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown), "cluster_state is not ok");
            Err(Error::Redis { at: self.at.clone(), source: down.into() })
        }
    }

    async fn clock(&self) -> Result<Option<SystemTime>, Error> {
        let (secs, micros): (u64, u64) = self.bounded(redis::cmd("TIME").query_async(&mut self.conn.clone())).await?;
        Ok(Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros)))
    }
}

#[async_trait::async_trait]
impl ProgressLog for RedisStore {
    /// `SET {prefix}:watched:{<id>} 1 PX ttl`.
    async fn watch(&self, id: &ProductId, ttl: Duration) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        let mut set = redis::cmd("SET");
        set.arg(self.keys.watched(id)).arg(1).arg("PX").arg(ttl.as_millis().max(1) as u64);
        self.bounded(set.query_async::<()>(&mut conn)).await
    }

    /// Appends one source's outcome to the progress log and announces it (one script).
    async fn progress(&self, id: &ProductId, outcome: &Result<Quote, Failure>, ttl: Duration) -> Result<(), Error> {
        let (kind, data) = Progress::encode(outcome);
        let mut conn = self.conn.clone();
        let mut invocation = self.progress.key(self.keys.progress(id));
        invocation
            .key(self.keys.pending(id))
            .arg(kind.as_str())
            .arg(data)
            .arg(MAX_EVENTS)
            .arg(ttl.as_millis() as u64)
            .arg(self.keys.progress_channel(id));
        self.bounded(invocation.invoke_async::<String>(&mut conn)).await.map(drop)
    }

    /// The progress log, oldest first; entries that are not events are skipped.
    async fn progress_log(&self, id: &ProductId) -> Result<Vec<Progress>, Error> {
        let mut conn = self.conn.clone();
        let mut range = redis::cmd("XRANGE");
        range.arg(self.keys.progress(id)).arg("-").arg("+").arg("COUNT").arg(MAX_EVENTS);
        let entries: Vec<(String, Vec<Vec<u8>>)> = self.bounded(range.query_async(&mut conn)).await?;
        Ok(entries
            .into_iter()
            .filter_map(|(entry_id, fields)| {
                let field = |name: &[u8]| fields.chunks_exact(2).find(|kv| kv[0] == name).map(|kv| kv[1].as_slice());
                Progress::decode(ProgressId::parse(&entry_id)?, field(b"kind")?, field(b"data")?)
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl Backlog for RedisStore {
    async fn enqueued(&self, ids: &[ProductId], at: SystemTime) -> Result<(), Error> {
        let at_ms = epoch_ms(at);
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(self.keys.backlog());
        for id in ids {
            zadd.arg(at_ms).arg(id.as_str());
        }
        self.bounded(zadd.query_async::<i64>(&mut self.conn.clone())).await.map(drop)
    }

    async fn dequeued(&self, ids: &[ProductId]) -> Result<(), Error> {
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(self.keys.backlog());
        for id in ids {
            zrem.arg(id.as_str());
        }
        self.bounded(zrem.query_async::<i64>(&mut self.conn.clone())).await.map(drop)
    }

    async fn finished(&self, id: &ProductId) -> Result<(), Error> {
        let mut pipe = redis::pipe();
        pipe.zrem(self.keys.backlog(), id.as_str()).ignore().incr(self.keys.finished(), 1).ignore();
        self.bounded(pipe.query_async::<()>(&mut self.conn.clone())).await
    }

    async fn report_capacity(&self, member: &str, per_sec: f64, now: SystemTime) -> Result<(), Error> {
        let report = format!("{per_sec} {}", epoch_ms(now));
        let mut conn = self.conn.clone();
        self.bounded(conn.hset::<_, _, _, i64>(self.keys.consumers(), member, report)).await.map(drop)
    }

    async fn leave(&self, member: &str) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        self.bounded(conn.hdel::<_, _, i64>(self.keys.consumers(), member)).await.map(drop)
    }

    async fn backlog(&self, now: SystemTime, horizon: Duration) -> Result<BacklogState, Error> {
        let now_ms = epoch_ms(now);
        let oldest_kept = epoch_ms(now.checked_sub(horizon).unwrap_or(SystemTime::UNIX_EPOCH));
        let backlog = self.keys.backlog();
        let mut pipe = redis::pipe();
        pipe.cmd("ZREMRANGEBYSCORE").arg(&backlog).arg("-inf").arg(format!("({oldest_kept}")).ignore();
        pipe.zcard(&backlog).zrange_withscores(&backlog, 0, 0).get(self.keys.finished()).hgetall(self.keys.consumers());
        let (outstanding, oldest, finished, reports): (u64, Vec<(String, f64)>, Option<u64>, Vec<(String, String)>) =
            self.bounded(pipe.query_async(&mut self.conn.clone())).await?;
        let oldest = oldest.first().map(|(_, at)| Duration::from_millis((now_ms - *at as i64).max(0) as u64));
        let (mut capacity_per_sec, mut consumers, mut gone) = (0.0, 0, Vec::new());
        for (member, report) in reports {
            match report
                .split_once(' ')
                .and_then(|(rate, at)| Some((rate.parse::<f64>().ok()?, at.parse::<i64>().ok()?)))
            {
                Some((rate, at)) if now_ms - at <= CAPACITY_FRESH.as_millis() as i64 => {
                    capacity_per_sec += rate;
                    consumers += 1;
                }
                // Long silent (killed without leaving): forgotten.
                Some((_, at)) if now_ms - at <= 10 * CAPACITY_FRESH.as_millis() as i64 => {}
                _ => gone.push(member),
            }
        }
        if !gone.is_empty() {
            let mut conn = self.conn.clone();
            self.bounded(conn.hdel::<_, _, i64>(self.keys.consumers(), gone)).await?;
        }
        Ok(BacklogState { outstanding, oldest, finished: finished.unwrap_or(0), capacity_per_sec, consumers })
    }
}

impl Announcements for RedisStore {
    fn waiter(&self, id: &ProductId) -> Waiter {
        self.subscribe();
        self.ready.waiter(id)
    }

    fn watcher(&self, id: &ProductId) -> Waiter {
        self.subscribe();
        self.ready.watcher(id)
    }

    fn announcements(&self) -> Option<Result<(), String>> {
        self.subscribed.get().and_then(|()| self.ready.subscription())
    }
}

impl RedisStore {
    /// Runs `run` once per group of [`Self::by_slot`], all at once, each bounded by the Redis
    /// timeout; `run` answers one value per index of its group. Each item gets its group's
    /// value or its group's error; the call fails only if every group did.
    async fn per_slot<T, R, F, Fut>(
        &self,
        items: &[T],
        id: impl Fn(&T) -> &ProductId,
        run: F,
    ) -> Result<Vec<Result<R, Error>>, Error>
    where
        F: Fn(Vec<usize>) -> Fut,
        Fut: Future<Output = redis::RedisResult<Vec<R>>>,
    {
        let groups = self.by_slot(items, id);
        let answers = futures::future::join_all(groups.iter().map(|group| self.bounded(run(group.clone())))).await;
        let mut out: Vec<Option<Result<R, Error>>> = items.iter().map(|_| None).collect();
        let (mut answered, mut first_error) = (false, None);
        for (group, answer) in groups.into_iter().zip(answers) {
            let answer = answer.and_then(|values| match values.len() == group.len() {
                true => Ok(values),
                false => Err(Error::Redis {
                    at: self.at.clone(),
                    source: redis::RedisError::from((
                        redis::ErrorKind::Parse,
                        "wrong number of answers",
                        format!("{} for {} products", values.len(), group.len()),
                    )),
                }),
            });
            match answer {
                Ok(values) => {
                    answered = true;
                    for (i, value) in group.into_iter().zip(values) {
                        out[i] = Some(Ok(value));
                    }
                }
                Err(e) => {
                    for &i in &group {
                        out[i] = Some(Err(e.duplicate()));
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if !answered => Err(e),
            _ => Ok(out.into_iter().map(|item| item.expect("every item is in one group")).collect()),
        }
    }

    /// Indexes into `items`, grouped so that one group's keys may go in one pipeline or script:
    /// all of them on one server; by hash slot (of the product id, the keys' hash tag) on a
    /// cluster.
    fn by_slot<T>(&self, items: &[T], id: impl Fn(&T) -> &ProductId) -> Vec<Vec<usize>> {
        if !matches!(self.conn, Connection::Cluster(_)) {
            return vec![(0..items.len()).collect()];
        }
        let mut groups: std::collections::HashMap<Slot, Vec<usize>> = Default::default();
        for (i, item) in items.iter().enumerate() {
            // The id is the keys' hash tag: its slot is theirs.
            groups.entry(Slot::for_key(id(item).as_str())).or_default().push(i);
        }
        groups.into_values().collect()
    }

    /// Starts this process's one subscription, with the first waiter (a consumer never needs
    /// one); until it is up, a waiter is woken when it is, to look again.
    fn subscribe(&self) {
        self.subscribed.get_or_init(|| {
            let subscription =
                ready::subscribe(self.announcements.clone(), self.keys.clone(), self.ready.clone(), self.timeout);
            tokio::spawn(subscription);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_products_keys_share_the_slot_of_its_id() {
        // `CLUSTER KEYSLOT foo` and `CLUSTER KEYSLOT somekey`.
        let keys = Keys::new("pf");
        for (id, slot) in [("foo", 12182), ("somekey", 11058)] {
            let id = ProductId::parse(id).unwrap();
            let slot = Slot::new(slot).unwrap();
            for key in [keys.result(&id), keys.pending(&id), keys.progress(&id), keys.quotes(&id)] {
                assert_eq!(Slot::for_key(&key), slot, "{key}");
            }
            assert_eq!(Slot::for_key(id.as_str()), slot);
        }
    }
}
