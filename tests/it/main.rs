//! Integration suite: real Redis and a real Kafka-protocol broker over the network.
//! Start them with `scripts/test.sh` (which then runs this suite).

mod helpers;

mod chaos;
mod dlq;
mod edge;
mod group;
mod metrics;
mod openapi;
mod pipeline;
mod promises;
mod providers;
mod sources;
mod stampede;
mod standalone;
