//! Two cache levels: L1 in-process ([`L1`], moka) and L2 in Redis ([`RedisStore`]), plus the
//! key scheme ([`Keys`]) and the pending markers that stop duplicate work.

mod keys;
mod l1;
mod store;

pub use keys::Keys;
pub use l1::{Entry, L1};
pub use store::{Lookup, RedisStore, StoredResult};

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis: {0}")]
    Redis(#[source] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("stored value at {key} is not a comparison")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// True when Redis could not be reached or did not answer (worth waiting out); false when
    /// it answered with an error (retrying the same thing will likely fail the same way).
    pub fn is_unreachable(&self) -> bool {
        match self {
            Error::Timeout(_) => true,
            Error::Redis(e) => {
                e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_timeout()
            }
            Error::Corrupt { .. } => false,
        }
    }
}
