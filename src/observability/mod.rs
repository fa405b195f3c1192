//! Everything that lets an operator see the processes: logs and spans ([`logs`]), span export
//! and trace propagation across the queue ([`traces`]), and Prometheus metrics and the
//! consumer's small metrics server ([`metrics`]).
//!
//! Only mains install anything global ([`logs::init`], [`metrics::install`]); building a
//! service never does, so tests can build many in one process.

pub mod logs;
pub mod metrics;
pub mod traces;
