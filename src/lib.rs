//! pricefront: a cache-fronted price comparison engine.
//!
//! A shop asks `GET /v1/prices/{product_id}`; the producer answers from cache (moka, then
//! Redis) or publishes one request to Kafka and answers 202. Consumers in one group fan out
//! to every price API, aggregate, and write the result to Redis with a TTL.
//!
//! # Layout
//! - [`settings`]: typed, layered configuration (defaults, `PRICEFRONT_CONFIG`, env).
//! - [`telemetry`]: tracing subscriber setup.
//! - [`observability`]: the Prometheus recorder and `/metrics`.
//! - [`shutdown`]: SIGINT/SIGTERM as a cancellation token.
//! - [`domain`]: `ProductId`, `Currency`, `Quote`, `Comparison`; validated, no I/O.
//! - [`cache`]: L1 moka + L2 Redis, key scheme, pending markers.
//! - [`queue`]: message envelope, publisher, group consumer, offset tracking, topics.
//! - [`providers`]: price API clients and the concurrent fan-out.
//! - [`api`]: the producer's HTTP router and errors as problem+json.
//! - [`worker`]: the consumer's consume-process-store loop.
//! - [`mock`]: simulated price APIs for local runs and tests.
//! - [`standalone`]: everything in one process on the in-memory queue and store (demos).
//!
//! Dependencies point downward: `api` and `worker` use `cache`, `queue`, `providers` and
//! `domain`; `domain` uses nothing of ours.

pub mod api;
pub mod cache;
pub mod domain;
pub mod mock;
pub mod observability;
pub mod providers;
pub mod queue;
pub mod settings;
pub mod shutdown;
pub mod standalone;
pub mod telemetry;
pub mod worker;
