//! L2: results and pending markers in Redis, through one multiplexed `ConnectionManager`.
//!
//! Every call is bounded by `redis.timeout_ms` so an unreachable Redis costs a caller a
//! known, short wait and an [`Error`], never a hang. The connection is made lazily, so a
//! process starts (and reports not-ready) while Redis is down.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use super::{Error, Keys};
use crate::domain::{Comparison, ProductId};
use crate::settings::RedisSettings;

/// A result as read from Redis: the parsed comparison, its exact stored bytes, and when
/// its Redis TTL runs out.
#[derive(Clone, Debug)]
pub struct StoredResult {
    pub comparison: Comparison,
    pub body: Bytes,
    pub expires: Instant,
}

impl StoredResult {
    pub fn ttl_left(&self) -> Duration {
        self.expires.saturating_duration_since(Instant::now())
    }
}

/// Deletes the pending marker only if it still holds our token, so a producer whose claim
/// expired never releases somebody else's.
const RELEASE_IF_OWNER: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    keys: Keys,
    timeout: Duration,
}

impl RedisStore {
    /// Builds the client without connecting; the first command connects.
    pub fn connect_lazy(settings: &RedisSettings) -> Result<Self, Error> {
        let client = redis::Client::open(settings.url.as_str()).map_err(Error::Redis)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(Error::Redis)?;
        Ok(Self { conn, keys: Keys::new(settings.key_prefix.clone()), timeout: settings.timeout })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn bounded<T>(&self, op: impl Future<Output = redis::RedisResult<T>>) -> Result<T, Error> {
        // Reconnect back-off happens inside the manager; twice the per-call bound covers
        // one connect plus one response.
        match tokio::time::timeout(self.timeout * 2, op).await {
            Ok(result) => result.map_err(Error::Redis),
            Err(_) => Err(Error::Timeout(self.timeout * 2)),
        }
    }

    pub async fn ping(&self) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        self.bounded(redis::cmd("PING").query_async::<String>(&mut conn)).await.map(drop)
    }

    /// Reads the result and its remaining TTL in one round trip.
    pub async fn fetch(&self, id: &ProductId) -> Result<Option<StoredResult>, Error> {
        let key = self.keys.result(id);
        let mut conn = self.conn.clone();
        let (body, pttl): (Option<Vec<u8>>, i64) =
            self.bounded(redis::pipe().get(&key).pttl(&key).query_async(&mut conn)).await?;
        let Some(body) = body else { return Ok(None) };
        // -1: no TTL (someone wrote it by hand); -2: expired between GET and PTTL.
        let ttl_left = match pttl {
            ms if ms > 0 => Duration::from_millis(ms as u64),
            -2 => return Ok(None),
            _ => Duration::ZERO,
        };
        let comparison = serde_json::from_slice(&body).map_err(|e| Error::Corrupt { key, source: e })?;
        Ok(Some(StoredResult { comparison, body: Bytes::from(body), expires: Instant::now() + ttl_left }))
    }

    pub async fn has_result(&self, id: &ProductId) -> Result<bool, Error> {
        let mut conn = self.conn.clone();
        self.bounded(conn.exists(self.keys.result(id))).await
    }

    /// `SET pending token NX PX ttl`: true if this caller now owns the marker.
    pub async fn claim_pending(&self, id: &ProductId, token: &str, ttl: Duration) -> Result<bool, Error> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("SET")
            .arg(self.keys.pending(id))
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .to_owned();
        let reply: Option<String> = self.bounded(cmd.query_async(&mut conn)).await?;
        Ok(reply.is_some())
    }

    /// Releases the marker if `token` still owns it.
    pub async fn release_pending(&self, id: &ProductId, token: &str) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        let script = Script::new(RELEASE_IF_OWNER);
        let mut invocation = script.key(self.keys.pending(id));
        invocation.arg(token);
        self.bounded(invocation.invoke_async::<i64>(&mut conn)).await.map(drop)
    }

    /// Writes the result with its TTL, clears the marker and announces it, atomically.
    pub async fn store(&self, comparison: &Comparison) -> Result<(), Error> {
        let id = &comparison.product_id;
        let body = serde_json::to_vec(comparison).expect("a Comparison always serializes");
        let mut conn = self.conn.clone();
        let pipe = redis::pipe()
            .atomic()
            .set_ex(self.keys.result(id), body, comparison.ttl_secs())
            .ignore()
            .del(self.keys.pending(id))
            .ignore()
            .publish(self.keys.ready_channel(id), comparison.status.as_str())
            .ignore()
            .to_owned();
        self.bounded(pipe.query_async::<()>(&mut conn)).await
    }
}
