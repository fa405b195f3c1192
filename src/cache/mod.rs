//! Two cache levels: L1 in-process ([`L1`]: quick_cache, and single-flight loads) and L2 behind [`ResultStore`]: Redis
//! ([`RedisStore`]) in production, or [`MemoryStore`] in the standalone demo. Plus how Redis is
//! reached ([`Connection`]: one server or a cluster, TLS, ACL users), the key scheme ([`Keys`],
//! hash-tagged by product), the pending markers that stop duplicate work, waiting for a
//! result to be written ([`Ready`]: one announcement subscription per process), and each
//! computation's progress ([`Progress`]: one event per source, logged and announced).

pub mod clock;
mod connection;
mod earlier;
mod flight;
mod keys;
mod l1;
mod memory;
mod progress;
mod quota;
mod ready;
mod store;
mod stored;

pub use connection::Connection;
pub use earlier::Earlier;
pub use flight::Flights;
pub use keys::Keys;
pub use l1::{Entry, L1};
pub use memory::MemoryStore;
pub use progress::{MAX_EVENTS, Progress, ProgressId, ProgressKind};
pub use quota::RedisQuotas;
pub use ready::{Ready, Waiter, Wake};
pub use store::{Lookup, Peek, RedisStore};
pub use stored::{Malformed, StoredResult, etag_listed};

use std::time::Duration;

use crate::domain::{Comparison, Failure, ProductId, Quote, Status};

/// The shared store (L2), in its three roles: results and their pending markers
/// ([`ResultStore`]), each computation's progress ([`ProgressLog`]), and waiting for what is
/// announced ([`Announcements`]). Redis ([`RedisStore`]) in production, [`MemoryStore`] in the
/// standalone demo; one contract suite (`tests/it/stores.rs`) runs against both.
pub trait Store: ResultStore + ProgressLog + Announcements + Backlog {}

impl<T: ResultStore + ProgressLog + Announcements + Backlog> Store for T {}

/// How long a won claim holds its product: its pending marker (`cache.pending_ttl_secs`: after
/// it, waiters and event streams stop waiting for this computation) and its queued mark
/// (`cache.queued_ttl_secs`: while it lasts, no other request for the product is published,
/// however long the queue; it goes when the request finishes).
#[derive(Clone, Copy, Debug)]
pub struct Hold {
    pub pending: Duration,
    pub queued: Duration,
}

/// Results and their pending markers. Implementations keep the pending-marker semantics:
/// claims are exclusive, and a marker is released only by the token that claimed it.
#[async_trait::async_trait]
pub trait ResultStore: Send + Sync + 'static {
    /// The result if there is one, else whether a request for it is pending.
    async fn lookup(&self, id: &ProductId) -> Result<Peek, Error>;
    /// The result if there is one, else an attempt to claim the pending marker, atomically. A
    /// product whose request is still queued is pending, not claimed: its marker is set again.
    async fn lookup_or_claim(&self, id: &ProductId, token: &str, hold: Hold) -> Result<Lookup, Error>;
    /// Deletes a result (one found corrupt, so it is computed again).
    async fn delete_result(&self, id: &ProductId) -> Result<(), Error>;
    /// What an earlier computation left: whether a result is stored, and its quotes (those
    /// kept past a brief result's end too), for a new computation to reuse; and whether
    /// anybody watches the product ([`ProgressLog::watch`]).
    async fn earlier(&self, id: &ProductId) -> Result<Earlier, Error>;
    /// Claims the pending marker alone (a refresh: the result exists); true if this caller
    /// now owns it; never while a request for it is queued.
    async fn claim_pending(&self, id: &ProductId, token: &str, hold: Hold) -> Result<bool, Error>;
    /// Releases the marker, and the queued mark, if `token` still owns them; whether the marker
    /// went.
    async fn release_pending(&self, id: &ProductId, token: &str) -> Result<bool, Error>;
    /// Writes the result to live until its `expires_at` (never longer), keeps its quotes that
    /// outlive it until their own end (see [`Earlier`]), clears the marker and the progress
    /// log, and announces it. If the guarantee has passed by the time the write happens, or a
    /// result computed later is there, or the result is `failed` and a better one is still
    /// there, writes nothing and releases the marker if `token` still owns it
    /// ([`StoreOutcome::judge`] says which).
    async fn store(&self, comparison: &Comparison, token: &str) -> Result<StoreOutcome, Error>;
    async fn ping(&self) -> Result<(), Error>;
    /// The store's clock, which judges expiry (`None`: it has none of its own, it is ours).
    async fn clock(&self) -> Result<Option<std::time::SystemTime>, Error> {
        Ok(None)
    }

    /// [`ResultStore::lookup`] for many products in one round trip (on a cluster, one per hash
    /// slot, concurrently), in `ids`' order. The outer error is Redis failing for all of them;
    /// a product's own is its lookup's (a value that is not a result: [`Error::Corrupt`]; on a
    /// cluster, its slot's failure). By default, one lookup after another.
    async fn lookup_many(&self, ids: &[ProductId]) -> Result<Vec<Result<Peek, Error>>, Error> {
        let mut peeks = Vec::with_capacity(ids.len());
        for id in ids {
            peeks.push(self.lookup(id).await);
        }
        Ok(peeks)
    }

    /// [`ResultStore::lookup_or_claim`] for many products (each with its own token) in one
    /// round trip (on a cluster, one per hash slot, concurrently), in `claims`' order; errors
    /// as for [`ResultStore::lookup_many`]. A product whose claim failed is not claimed; the
    /// others' claims stand. By default, one claim after another.
    async fn lookup_or_claim_many(
        &self,
        claims: &[(ProductId, String)],
        hold: Hold,
    ) -> Result<Vec<Result<Lookup, Error>>, Error> {
        let mut lookups = Vec::with_capacity(claims.len());
        for (id, token) in claims {
            lookups.push(self.lookup_or_claim(id, token, hold).await);
        }
        Ok(lookups)
    }
}

/// Each computation's progress, for event streams: one event per source, logged and announced.
/// Nobody but an event stream reads it, so a computation nobody watches logs none.
#[async_trait::async_trait]
pub trait ProgressLog: Send + Sync + 'static {
    /// Says for `ttl` that somebody watches `id`'s event stream, so a computation that starts
    /// meanwhile logs its progress ([`ProgressLog::progress`]).
    async fn watch(&self, id: &ProductId, ttl: Duration) -> Result<(), Error>;
    /// Appends one source's outcome to `id`'s progress log and announces it. The log expires
    /// with the pending marker (after `ttl` when there is none), holds at most about
    /// [`MAX_EVENTS`], and is deleted when the result is stored.
    async fn progress(&self, id: &ProductId, outcome: &Result<Quote, Failure>, ttl: Duration) -> Result<(), Error>;
    /// `id`'s progress log so far, oldest first.
    async fn progress_log(&self, id: &ProductId) -> Result<Vec<Progress>, Error>;
}

/// The fleet's backlog: the requests published and not yet finished, and how many the consumers
/// finish. The producers' admission control reads it (`api::admission`); it is a count, not a
/// queue: the broker holds the requests.
#[async_trait::async_trait]
pub trait Backlog: Send + Sync + 'static {
    /// `ids`' requests are being published at `at`: each counts as outstanding from then (a
    /// product counted already takes the new time: its earlier request was lost, or it would
    /// not be published again).
    async fn enqueued(&self, ids: &[ProductId], at: std::time::SystemTime) -> Result<(), Error>;
    /// `ids`' requests were not published after all.
    async fn dequeued(&self, ids: &[ProductId]) -> Result<(), Error>;
    /// A consumer is done with a request for `id` (whatever became of it): it is no longer
    /// outstanding, and one more is finished.
    async fn finished(&self, id: &ProductId) -> Result<(), Error>;
    /// Consumer `member` can finish about `per_sec` requests a second (its in-flight bound over
    /// its mean time per request), as of `now`; reported every second or so.
    async fn report_capacity(&self, member: &str, per_sec: f64, now: std::time::SystemTime) -> Result<(), Error>;
    /// Consumer `member` is leaving: its capacity goes with it.
    async fn leave(&self, member: &str) -> Result<(), Error>;
    /// The backlog at `now`. Requests outstanding for longer than `horizon` are dropped from it
    /// first: their queued marks are gone too, so they count as lost. The capacity is the sum of
    /// the consumers' reports no older than [`CAPACITY_FRESH`].
    async fn backlog(&self, now: std::time::SystemTime, horizon: Duration) -> Result<BacklogState, Error>;
}

/// A consumer's capacity report counts this long; one that stops reporting (killed) drops out
/// of the fleet's capacity after it.
pub const CAPACITY_FRESH: Duration = Duration::from_secs(5);

/// What [`Backlog::backlog`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BacklogState {
    /// Requests published and not yet finished.
    pub outstanding: u64,
    /// How long the oldest of them has been outstanding.
    pub oldest: Option<Duration>,
    /// Requests the fleet finished, ever (a counter: its rate is the fleet's throughput).
    pub finished: u64,
    /// What the consumers reporting now can finish, requests per second (0: none reports).
    pub capacity_per_sec: f64,
    /// How many consumers report now.
    pub consumers: u64,
}

/// Waiting for what the store announces: a stored result, a progress event.
pub trait Announcements: Send + Sync + 'static {
    /// Registers interest in `id`'s next stored result (see [`Ready`]): register, then look,
    /// then wait on the waiter.
    fn waiter(&self, id: &ProductId) -> Waiter;
    /// A waiter that also yields `id`'s progress events announced from now on: register, then
    /// look, then read [`ProgressLog::progress_log`], then follow the watcher.
    fn watcher(&self, id: &ProductId) -> Waiter;
    /// The state of what feeds waiters (an announcement subscription), for readiness: `None`
    /// when there is none to watch (none started yet, or a store that announces directly).
    fn announcements(&self) -> Option<Result<(), String>> {
        None
    }
}
impl Error {
    /// Whether the configuration is at fault (exit status 2 at start-up).
    pub fn is_configuration(&self) -> bool {
        matches!(self, Error::Config(_))
    }

    /// The same error for another item of a batch that failed as one (a Redis error or a
    /// timeout; the others are never a whole batch's, and keep only their message).
    pub fn duplicate(&self) -> Self {
        match self {
            Error::Redis { at, source } => Error::Redis { at: at.clone(), source: source.clone() },
            Error::Timeout { at, after } => Error::Timeout { at: at.clone(), after: *after },
            other => Error::Redis {
                at: "?".into(),
                source: redis::RedisError::from((redis::ErrorKind::Client, "batch failed", other.to_string())),
            },
        }
    }
}

/// What became of a result handed to [`ResultStore::store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Stored until its `expires_at`; the marker is cleared and the result announced.
    Stored,
    /// Its guarantee passed before the write: nothing stored, the marker released.
    Expired,
    /// It is `failed` and a result that is not still exists (a refresh whose sources all
    /// failed): the existing one stays until it expires, the marker is released.
    Kept,
    /// A result computed later is stored (this computation was slow, or redelivered): the
    /// newer one stays, the marker is released.
    Superseded,
}

impl StoreOutcome {
    /// The store's rules, in the order they apply, for a result computed at `computed_at_ms`
    /// that expires at `expires_at_ms` (ms since the Unix epoch), written at `now_ms` over
    /// `old` (the stored result's `computed_at_ms` and status, if there is one). The memory
    /// store applies them through this; Redis applies the same rules inside `STORE_UNTIL`
    /// (`store.rs`), and the contract suite holds both to them.
    pub fn judge(
        now_ms: i64,
        computed_at_ms: i64,
        expires_at_ms: i64,
        status: Status,
        old: Option<(i64, Status)>,
    ) -> Self {
        if now_ms >= expires_at_ms {
            return StoreOutcome::Expired;
        }
        match old {
            Some((old_computed, _)) if old_computed > computed_at_ms => StoreOutcome::Superseded,
            Some((_, old_status)) if status == Status::Failed && old_status != Status::Failed => StoreOutcome::Kept,
            _ => StoreOutcome::Stored,
        }
    }
}

/// Where Redis is, as errors name it: the configured URL (or a cluster's first seed node),
/// its password redacted.
pub type Address = std::sync::Arc<str>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Redis at {at}: {source}")]
    Redis { at: Address, source: redis::RedisError },
    #[error("Redis at {at} did not answer within {after:?}")]
    Timeout { at: Address, after: Duration },
    /// The Redis settings cannot work (a variable a URL needs is unset, a certificate file
    /// is unreadable): a configuration error.
    #[error("{0}")]
    Config(String),
    #[error("stored value at {key} is not a result")]
    Corrupt {
        key: String,
        #[source]
        source: Malformed,
    },
}

impl Error {
    /// True when Redis could not be reached or did not answer (worth waiting out); false when
    /// it answered with an error (retrying the same thing will likely fail the same way).
    pub fn is_unreachable(&self) -> bool {
        match self {
            Error::Timeout { .. } => true,
            // A cluster that lost a master, or is moving slots, is waited out the same way.
            // So is a server still loading its data, or one that lost its ACL users in a
            // restart: the infrastructure's trouble, not the request's.
            Error::Redis { source: e, .. } => {
                use redis::{ErrorKind, ServerErrorKind};
                e.is_io_error()
                    || e.is_connection_refusal()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || e.is_cluster_error()
                    || matches!(
                        e.kind(),
                        ErrorKind::ClusterConnectionNotFound
                            | ErrorKind::AuthenticationFailed
                            | ErrorKind::Server(ServerErrorKind::MasterDown | ServerErrorKind::BusyLoading)
                    )
            }
            Error::Corrupt { .. } | Error::Config(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_rules_apply_in_order() {
        use Status::{Complete, Failed};
        let judge = |now, computed, status, old| StoreOutcome::judge(now, computed, 2_000, status, old);
        // Past its guarantee nothing is stored, whatever is there.
        assert_eq!(judge(2_000, 1_000, Complete, None), StoreOutcome::Expired);
        assert_eq!(judge(2_500, 1_000, Complete, Some((900, Failed))), StoreOutcome::Expired);
        // The newest computation wins; a tie goes to the write.
        assert_eq!(judge(1_500, 1_000, Complete, Some((1_001, Complete))), StoreOutcome::Superseded);
        assert_eq!(judge(1_500, 1_000, Complete, Some((1_000, Complete))), StoreOutcome::Stored);
        // A failure never replaces what is not one, but replaces a failure, or nothing.
        assert_eq!(judge(1_500, 1_000, Failed, Some((900, Complete))), StoreOutcome::Kept);
        assert_eq!(judge(1_500, 1_000, Failed, Some((900, Failed))), StoreOutcome::Stored);
        assert_eq!(judge(1_500, 1_000, Failed, None), StoreOutcome::Stored);
        // Newest-wins comes first: an older failure over a newer answer is superseded, not kept.
        assert_eq!(judge(1_500, 1_000, Failed, Some((1_200, Complete))), StoreOutcome::Superseded);
    }
}
