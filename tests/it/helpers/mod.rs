//! Test harness: every test gets its own Redis key prefix, topic, DLQ topic and consumer
//! group, its own mock price APIs on port 0, and spawns the real services (in-process on
//! port 0, or as processes where a test must kill one) against the real Redis and broker.
//!
//! Layout, one concern a file (the test files import everything from here):
//! - `env`: [`TestEnv`] and its builder: one test's names, settings, config file and mock.
//! - `services`: the producer and consumer in process, on port 0.
//! - `processes`: the real binaries as child processes (port 0, read back from their logs).
//! - `servers`: a private `redis-server` or tansu broker, for a test to stop and restart.
//! - `kafka`: raw produce to and read from topics, counting messages by key.
//! - `results`: results in Redis, read through the library's own key scheme and format.
//! - `http`: GETs and their headers.

use std::future::Future;
use std::time::{Duration, Instant};

mod env;
mod http;
mod kafka;
mod processes;
mod results;
mod servers;
mod services;

pub use self::env::{TestEnv, TestEnvBuilder, computed_twice, env, product_id, provider, service_account_key};
pub use self::http::{get, max_age, request_all};
pub use self::kafka::{dead_letter_for, key_of, message_on};
pub use self::processes::{ConsumerProcess, wait_all_assigned};
pub use self::results::{
    guarantee_left_ms, guarantee_window, missing_results, result_json, wait_all_results, wait_all_results_in,
};
pub use self::servers::{Broker, RedisServer};
pub use self::services::{on_private_redis, producer_on_private_redis, spawn_consumer, spawn_producer, warm_up};

pub fn brokers() -> String {
    through_the_script();
    std::env::var("PRICEFRONT__KAFKA__BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn redis_url() -> String {
    through_the_script();
    std::env::var("PRICEFRONT__REDIS__URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Plain `cargo test` has no services: say so, rather than time out against whatever answers
/// on the default ports.
fn through_the_script() {
    if std::env::var_os("PRICEFRONT_TEST_TANSU").is_none() {
        panic!(
            "the integration suite needs the Redis and broker that scripts/test.sh starts and names; \
             run `scripts/test.sh` (all of it) or `scripts/test.sh --test it -- <filter>`. \
             `cargo test --lib --bins` runs the unit tests alone"
        );
    }
}

/// Polls `check` until it yields `Ok`, or fails after `deadline` with the last thing seen.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let seen = match check().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if started.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}; last seen: {seen}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port free a moment ago: bound, released and returned, so another process may take it
/// before the caller uses it. Only for what cannot bind port 0 and say what it got (a private
/// `redis-server` or broker, a server restarted on the same port), or for a port that nothing
/// must answer on; the binaries bind port 0 instead (see `processes`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
