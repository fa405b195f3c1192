//! Integration suite: real Redis and a real Kafka-protocol broker over the network.
//! Start them with `scripts/test.sh` (which then runs this suite). The harness every test
//! uses is `helpers/` (its module doc lists its files).

mod certs;
mod helpers;
mod otlp;
mod redis_modes;
mod redis_servers;
mod refresh;
mod secure_broker;
mod sse;

mod browser;
mod catalogue;
mod chaos;
mod dlq;
mod edge;
mod events;
mod fx;
mod group;
mod hostile;
mod http_cache;
mod kafka_options;
mod marketplaces;
mod metrics;
mod openapi;
mod overload;
mod pipeline;
mod promises;
mod providers;
mod quotas;
mod request_ids;
mod sources;
mod stampede;
mod standalone;
mod stores;
mod traces;
mod wait;
mod web;
