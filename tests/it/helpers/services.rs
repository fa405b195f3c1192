//! The producer and the consumer in process, built from settings as the binaries build them,
//! listening on port 0.

use std::time::Duration;

use pricefront::api::{self, AppState};
use pricefront::settings::Settings;
use pricefront::worker::Worker;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{RedisServer, TestEnv, get, wait_for};

impl TestEnv {
    /// Starts a producer and waits until `/readyz` says Redis and the topic are there, as a
    /// load balancer would before sending it traffic.
    pub async fn spawn_producer(&self) -> ProducerHandle {
        let producer = spawn_producer(&self.settings).await;
        producer.wait_ready(&self.http).await;
        producer
    }

    pub fn spawn_consumer(&self) -> ConsumerHandle {
        spawn_consumer(&self.settings)
    }
}

pub struct ProducerHandle {
    pub base: String,
    /// Its ops routes (`/metrics`, `/readyz` with details).
    pub ops: String,
    shutdown: CancellationToken,
    join: JoinHandle<std::io::Result<()>>,
}

impl ProducerHandle {
    pub async fn wait_ready(&self, http: &reqwest::Client) {
        let url = format!("{}/readyz", self.base);
        wait_for("producer readiness", Duration::from_secs(30), || async {
            match get(http, &url).await {
                (200, _, _) => Ok(()),
                (status, _, body) => Err(format!("{status} {body}")),
            }
        })
        .await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.join.await.unwrap().unwrap();
    }
}

pub async fn spawn_producer(settings: &Settings) -> ProducerHandle {
    let state = AppState::build(settings).expect("build producer");
    let listener = TcpListener::bind(settings.producer.listen).await.unwrap();
    let ops = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, ops_addr) = (listener.local_addr().unwrap(), ops.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(api::serve_ops(ops, state.clone(), shutdown.clone()));
    let join = tokio::spawn(api::serve(listener, state, shutdown.clone()));
    ProducerHandle { base: format!("http://{addr}"), ops: format!("http://{ops_addr}"), shutdown, join }
}

pub struct ConsumerHandle {
    shutdown: CancellationToken,
    join: JoinHandle<Result<(), pricefront::worker::QueueClosed>>,
}

impl ConsumerHandle {
    /// Graceful stop: drain, commit, leave the group.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.join.await.unwrap().expect("the consumer stopped only because it was asked to");
    }
}

pub fn spawn_consumer(settings: &Settings) -> ConsumerHandle {
    let worker = Worker::build(settings).expect("build consumer");
    let shutdown = CancellationToken::new();
    let join = tokio::spawn(worker.run(shutdown.clone()));
    ConsumerHandle { shutdown, join }
}

/// Waits until the consumer group computes a first product through the producer at `base` (a
/// fresh group takes seconds to get its first message), so a test times the miss path, not
/// the join.
pub async fn warm_up(env: &TestEnv, base: &str) {
    let url = format!("{base}/v1/prices/{}", env.product("warm-up"));
    wait_for("the consumer to compute a first product", Duration::from_secs(60), || async {
        match get(&env.http, &url).await.0 {
            200 => Ok(()),
            status => Err(status.to_string()),
        }
    })
    .await;
}

/// A producer and a consumer in process on a private `redis-server` of their own (to stop and
/// restart while they work), warmed up.
pub async fn on_private_redis(env: &TestEnv) -> (RedisServer, ProducerHandle, ConsumerHandle) {
    let (redis, settings, producer) = producer_on_private_redis(env).await;
    let consumer = spawn_consumer(&settings);
    warm_up(env, &producer.base).await;
    (redis, producer, consumer)
}

/// A private `redis-server`, the test's settings pointed at it, and a ready in-process producer
/// on them.
pub async fn producer_on_private_redis(env: &TestEnv) -> (RedisServer, Settings, ProducerHandle) {
    let redis = RedisServer::start(&[]).await;
    let mut settings = env.settings.clone();
    settings.redis.url = redis.url();
    let producer = spawn_producer(&settings).await;
    producer.wait_ready(&env.http).await;
    (redis, settings, producer)
}
