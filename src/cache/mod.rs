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

use futures::future::BoxFuture;

use crate::domain::{Comparison, Failure, ProductId, Quote};

/// The shared result store (L2): what the API and the worker need of it, and nothing more.
/// Implementations keep the pending-marker semantics: claims are exclusive, and a marker is
/// released only by the token that claimed it.
pub trait ResultStore: Send + Sync + 'static {
    /// The result if there is one, else whether a request for it is pending.
    fn lookup<'a>(&'a self, id: &'a ProductId) -> BoxFuture<'a, Result<Peek, Error>>;
    /// The result if there is one, else an attempt to claim the pending marker, atomically.
    fn lookup_or_claim<'a>(
        &'a self,
        id: &'a ProductId,
        token: &'a str,
        pending_ttl: Duration,
    ) -> BoxFuture<'a, Result<Lookup, Error>>;
    fn delete_result<'a>(&'a self, id: &'a ProductId) -> BoxFuture<'a, Result<(), Error>>;
    /// What an earlier computation left: whether a result is stored, and its quotes (those
    /// kept past a brief result's end too), for a new computation to reuse; and whether
    /// anybody watches the product ([`ResultStore::watch`]).
    fn earlier<'a>(&'a self, id: &'a ProductId) -> BoxFuture<'a, Result<Earlier, Error>>;
    /// Says for `ttl` that somebody watches `id`'s event stream, so a computation that starts
    /// meanwhile logs its progress ([`ResultStore::progress`]). Nobody else reads progress:
    /// a computation nobody watches logs none.
    fn watch<'a>(&'a self, id: &'a ProductId, ttl: Duration) -> BoxFuture<'a, Result<(), Error>>;
    /// Claims the pending marker alone (a refresh: the result exists); true if this caller
    /// now owns it.
    fn claim_pending<'a>(
        &'a self,
        id: &'a ProductId,
        token: &'a str,
        pending_ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>>;
    /// Releases the marker if `token` still owns it; whether it did.
    fn release_pending<'a>(&'a self, id: &'a ProductId, token: &'a str) -> BoxFuture<'a, Result<bool, Error>>;
    /// Writes the result to live until its `expires_at` (never longer), keeps its quotes that
    /// outlive it until their own end (see [`Earlier`]), clears the marker and the progress
    /// log, and announces it. If the guarantee has passed by the time the write happens, or a
    /// result computed later is there, or the result is `failed` and a better one is still
    /// there, writes nothing and releases the marker if `token` still owns it.
    fn store<'a>(&'a self, comparison: &'a Comparison, token: &'a str) -> BoxFuture<'a, Result<StoreOutcome, Error>>;
    fn ping(&self) -> BoxFuture<'_, Result<(), Error>>;
    /// The store's clock, which judges expiry (`None`: it has none of its own, it is ours).
    fn clock(&self) -> BoxFuture<'_, Result<Option<std::time::SystemTime>, Error>> {
        Box::pin(async { Ok(None) })
    }
    /// Registers interest in `id`'s next stored result (see [`Ready`]): register, then look,
    /// then wait on the waiter.
    fn waiter(&self, id: &ProductId) -> Waiter;
    /// A waiter that also yields `id`'s progress events announced from now on: register, then
    /// look, then read [`ResultStore::progress_log`], then follow the watcher.
    fn watcher(&self, id: &ProductId) -> Waiter;
    /// The state of what feeds waiters (an announcement subscription), for readiness: `None`
    /// when there is none to watch (none started yet, or a store that announces directly).
    fn announcements(&self) -> Option<Result<(), String>> {
        None
    }
    /// Appends one source's outcome to `id`'s progress log and announces it. The log expires
    /// with the pending marker (after `ttl` when there is none), holds at most about
    /// [`MAX_EVENTS`], and is deleted when the result is stored.
    fn progress<'a>(
        &'a self,
        id: &'a ProductId,
        outcome: &'a Result<Quote, Failure>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), Error>>;
    /// `id`'s progress log so far, oldest first.
    fn progress_log<'a>(&'a self, id: &'a ProductId) -> BoxFuture<'a, Result<Vec<Progress>, Error>>;

    /// [`ResultStore::lookup`] for many products in one round trip (on a cluster, one per hash
    /// slot, concurrently), in `ids`' order. The outer error is Redis failing for all of them;
    /// a product's own is its lookup's (a value that is not a result: [`Error::Corrupt`]; on a
    /// cluster, its slot's failure). By default, one lookup after another.
    fn lookup_many<'a>(&'a self, ids: &'a [ProductId]) -> BoxFuture<'a, Result<Vec<Result<Peek, Error>>, Error>> {
        Box::pin(async move {
            let mut peeks = Vec::with_capacity(ids.len());
            for id in ids {
                peeks.push(self.lookup(id).await);
            }
            Ok(peeks)
        })
    }

    /// [`ResultStore::lookup_or_claim`] for many products (each with its own token) in one
    /// round trip (on a cluster, one per hash slot, concurrently), in `claims`' order; errors
    /// as for [`ResultStore::lookup_many`]. A product whose claim failed is not claimed; the
    /// others' claims stand. By default, one claim after another.
    fn lookup_or_claim_many<'a>(
        &'a self,
        claims: &'a [(ProductId, String)],
        pending_ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<Result<Lookup, Error>>, Error>> {
        Box::pin(async move {
            let mut lookups = Vec::with_capacity(claims.len());
            for (id, token) in claims {
                lookups.push(self.lookup_or_claim(id, token, pending_ttl).await);
            }
            Ok(lookups)
        })
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
