//! pricefront: a cache-fronted price comparison engine.
//!
//! A shop asks `GET /v1/prices/{product_id}`; the producer answers from cache (L1 in
//! process, then Redis) or publishes one request to Kafka and answers 202. Consumers in one group fan out
//! to every price API, aggregate, and write the result to Redis until its price guarantee
//! ends (`expires_at`, an absolute expiry).
//!
//! # Layout
//! - [`settings`]: typed, layered configuration (defaults, `PRICEFRONT_CONFIG`, env), one file
//!   per section with its own rules, `${NAME}` templates, the rules for librdkafka options
//!   (refused, redacted), secrets in one redacting wrapper.
//! - [`observability`]: logs and spans, OTLP span export and `traceparent` across the queue,
//!   the Prometheus recorder and `/metrics`.
//! - [`shutdown`]: SIGINT/SIGTERM as a cancellation token, and the exit status a main returns
//!   (2 for an invalid configuration).
//! - [`domain`]: `ProductId`, `Currency` (ISO 4217), `Quote`, `Comparison`, exchange `Rates`;
//!   validated, no I/O.
//! - [`fx`]: the rates a consumer converts with: configured, overlaid by the ECB's daily XML.
//! - [`cache`]: L1 in process (quick_cache, single-flight loads, background re-reads) + L2
//!   Redis (one server or a cluster, TLS, ACL users), results behind a one-line header, the
//!   hash-tagged key scheme, pending markers, waiting for a result to be announced, each
//!   computation's progress, quotes kept past a brief result for the next computation, the
//!   fleet's quota limiters. The store is a trait per role (results and markers, progress,
//!   announcements), held by one contract suite in both implementations.
//! - [`queue`]: message envelope, each Kafka client's configuration, publisher (refreshes to a
//!   topic of their own), the Kafka group member on its own thread, refreshes served before new
//!   work, the acknowledgement that alone moves offsets, topics, listing and replaying dead
//!   letters; the in-memory queue.
//! - [`providers`]: price API clients (request templates with credentials from the
//!   environment, tokens that renew themselves, JSON Pointer response mapping with offer lists,
//!   not-found, quotas and `Retry-After`, a breaker that counts only what says a source is
//!   unwell) and the concurrent fan-out.
//! - [`api`]: the producer's HTTP router (the price route's hits dispatched past it), the hit
//!   path and its time-dependent headers, HTTP caching (ETag, 304), catalogue
//!   pages (many products in one request), event streams (SSE), one miss path for all three
//!   (look, claim, the limits on misses, publish, `Prefer: wait`), admission control (new
//!   products shed past what the consumers compute in time), refresh ahead, per-route metrics, errors as problem+json, `X-Request-Id` on every
//!   answer (handed on to the consumer with a miss); the comparison widget; the HTTP/1.1 server
//!   with the public port's limits (header-read and idle timeouts, a connection cap) and the
//!   ops port (`/metrics`, health with details)
//!   and the demo page (files from `web/`, compiled in) and CORS for pages on other origins.
//! - [`worker`]: the consume-process-store loop, written once for every queue.
//! - [`mock`]: simulated price APIs for local runs and tests.
//! - [`standalone`]: everything in one process on the in-memory queue and store (demos).
//!
//! Dependencies point downward: `api` and `worker` use `cache`, `queue`, `providers` and
//! `domain` (`worker` also `fx`); `domain` uses nothing of ours; `settings` uses only `domain`.
//! `cache` implements one port of `providers` (`Quotas`, kept in Redis), the way `queue`
//! implements the worker's inbox: `providers` owns the rule, `cache` the storage.

/// Every binary allocates through mimalloc: the hit path allocates a few small buffers per
/// request, and glibc's allocator was a tenth of its profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod api;
pub mod cache;
pub mod domain;
pub mod fx;
pub mod mock;
pub mod observability;
pub mod providers;
pub mod queue;
pub mod settings;
pub mod shutdown;
pub mod standalone;
pub mod worker;
