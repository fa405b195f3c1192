//! Zero-setup mode: producer, consumer and mock price APIs in one process, with the
//! in-process queue ([`MemoryQueue`]) and the in-memory store ([`MemoryStore`]) in place of
//! Kafka and Redis. The HTTP API ([`api::router`]) and the consume loop ([`Worker`]) are the
//! production ones.
//!
//! For trying and for demos: nothing survives the process, and one process is the whole
//! system. Production runs the `producer` and `consumer` binaries on Kafka and Redis.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::cache::MemoryStore;
use crate::mock::Mock;
use crate::providers::LocalQuotas;
use crate::queue::MemoryQueue;
use crate::settings::Settings;
use crate::worker::{self, Worker};

/// Requests the in-process queue holds before publishing answers 503.
const QUEUE_CAPACITY: usize = 10_000;

/// The whole system, built and ready to run.
pub struct Standalone {
    state: AppState,
    worker: Worker,
    mock: Mock,
}

impl Standalone {
    /// Builds everything; fails on a configuration that cannot run (mock faults, a source's
    /// missing environment variable) before anything is bound.
    pub fn build(settings: &Settings) -> Result<Self, Error> {
        let mock = Mock::new(&settings.mock.providers)?;
        let store = Arc::new(MemoryStore::new(settings.cache.l1_max_entries));
        let (queue, inbox) = MemoryQueue::new(&settings.kafka.topic, QUEUE_CAPACITY);
        let queue = Arc::new(queue);
        let state = AppState::with(settings, store.clone(), queue.clone());
        // One process is the whole fleet: its quotas are kept here.
        let quotas = Arc::new(LocalQuotas::default());
        let worker = Worker::with(settings, store, quotas, queue, Box::new(inbox))?;
        Ok(Self { state, worker, mock })
    }

    /// Runs everything until `shutdown`: the API on `api_listener`, the ops routes (`/metrics`,
    /// readiness with details) on `ops_listener` if given, the mock price APIs on
    /// `mock_listener` (the configured `[[providers]]` should point at it), and the consume loop.
    pub async fn run(
        self,
        api_listener: TcpListener,
        ops_listener: Option<TcpListener>,
        mock_listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let mock = tokio::spawn(crate::mock::serve(mock_listener, self.mock, shutdown.clone()));
        if let Some(ops) = ops_listener {
            tokio::spawn(api::serve_ops(ops, self.state.clone(), shutdown.clone()));
        }
        let api = tokio::spawn(api::serve(api_listener, self.state, shutdown.clone()));
        let consumed = self.worker.run(shutdown.clone()).await;
        shutdown.cancel();
        api.await.expect("api task does not panic")?;
        mock.await.expect("mock task does not panic")?;
        Ok(consumed?)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Mock(#[from] crate::mock::InvalidMock),
    #[error(transparent)]
    Worker(#[from] worker::BuildError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Consume(#[from] worker::QueueClosed),
}

impl Error {
    /// The configuration cannot work: exit status 2.
    pub fn is_configuration(&self) -> bool {
        match self {
            Error::Mock(_) => true,
            Error::Worker(e) => e.is_configuration(),
            Error::Io(_) | Error::Consume(_) => false,
        }
    }
}
