//! Zero-setup mode: producer, consumer and mock price APIs in one process, with the
//! in-process partitioned queue ([`MemoryQueue`]) and the in-memory store ([`MemoryStore`])
//! in place of Kafka and Redis. The HTTP API ([`api::router`]) and the message processing
//! ([`Processor`]) are the production ones.
//!
//! For trying and for demos: nothing survives the process, and one process is the whole
//! system. Production runs the `producer` and `consumer` binaries on Kafka and Redis.

use std::sync::Arc;

use rdkafka::message::OwnedMessage;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::api::{self, AppState};
use crate::cache::MemoryStore;
use crate::mock;
use crate::queue::MemoryQueue;
use crate::settings::Settings;
use crate::worker::Processor;

/// Messages each in-process partition holds before publishing answers 503.
const PARTITION_CAPACITY: usize = 10_000;

/// Runs everything until `shutdown`: the API on `api_listener`, the mock price APIs on
/// `mock_listener` (the configured `[[providers]]` should point at it), and one consume
/// loop per partition.
pub async fn run(
    settings: &Settings,
    api_listener: TcpListener,
    mock_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let store = Arc::new(MemoryStore::new(settings.cache.l1_max_entries));
    let (queue, partitions) =
        MemoryQueue::new(&settings.kafka.topic, settings.kafka.partitions as usize, PARTITION_CAPACITY);
    let queue = Arc::new(queue);
    let state = AppState::with(settings, store.clone(), queue.clone());
    let processor = Arc::new(Processor::new(settings, store, queue)?);

    let (mock_providers, mock_shutdown) = (settings.mock.providers.clone(), shutdown.clone());
    let mock = tokio::spawn(async move { mock::serve(mock_listener, &mock_providers, mock_shutdown).await });
    let api = tokio::spawn(api::serve(api_listener, state, shutdown.clone()));

    let permits = Arc::new(Semaphore::new(settings.consumer.max_in_flight));
    let tasks = TaskTracker::new();
    let loops: Vec<_> = partitions
        .into_iter()
        .map(|rx| tokio::spawn(consume(rx, processor.clone(), permits.clone(), tasks.clone(), shutdown.clone())))
        .collect();
    for consume_loop in loops {
        consume_loop.await.expect("consume loop does not panic");
    }
    tasks.close();
    if tokio::time::timeout(settings.consumer.drain_timeout, tasks.wait()).await.is_err() {
        tracing::warn!(unfinished = tasks.len(), "drain timed out; in-memory requests are lost");
    }
    api.await.expect("api task does not panic")?;
    mock.await.expect("mock task does not panic")?;
    Ok(())
}

async fn consume(
    mut partition: mpsc::Receiver<OwnedMessage>,
    processor: Arc<Processor>,
    permits: Arc<Semaphore>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    use rdkafka::Message;
    loop {
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            permit = permits.clone().acquire_owned() => permit.expect("semaphore is never closed"),
        };
        let message = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            message = partition.recv() => match message {
                Some(message) => message,
                None => return,
            },
        };
        let span = tracing::info_span!(
            "message",
            partition = message.partition(),
            offset = message.offset(),
            product_id = tracing::field::Empty,
            request_id = tracing::field::Empty,
            traceparent = tracing::field::Empty,
        );
        let (processor, shutdown) = (processor.clone(), shutdown.clone());
        tasks.spawn(
            async move {
                processor.handle(&message, &shutdown).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
