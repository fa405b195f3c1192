//! `[consumer]`: a consumer's concurrency, its provider-call and shutdown bounds, and its
//! metrics listener.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde_with::{DurationMilliSeconds, serde_as};

#[serde_as]
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSettings {
    /// `PRICEFRONT__CONSUMER__METRICS_LISTEN`: where the consumer serves `/metrics`.
    pub metrics_listen: SocketAddr,
    /// `PRICEFRONT__CONSUMER__MAX_IN_FLIGHT`: messages processed concurrently per consumer.
    pub max_in_flight: usize,
    /// `PRICEFRONT__CONSUMER__PROVIDER_TIMEOUT_MS`: bound on one provider call.
    #[serde(rename = "provider_timeout_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub provider_timeout: Duration,
    /// `PRICEFRONT__CONSUMER__MAX_ATTEMPTS`: tries before a message whose processing keeps
    /// failing (Redis answering with an error) goes to the DLQ. An unreachable Redis is waited out instead.
    pub max_attempts: u32,
    /// `PRICEFRONT__CONSUMER__DRAIN_TIMEOUT_MS`: bound on finishing in-flight work at shutdown.
    #[serde(rename = "drain_timeout_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub drain_timeout: Duration,
}

impl ConsumerSettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.max_in_flight == 0 || self.max_attempts == 0 {
            return Err("consumer.max_in_flight and consumer.max_attempts must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::Settings;
    use crate::settings::testing::env;

    #[test]
    fn work_needs_at_least_one_slot_and_one_attempt() {
        for key in ["PRICEFRONT__CONSUMER__MAX_IN_FLIGHT", "PRICEFRONT__CONSUMER__MAX_ATTEMPTS"] {
            let err = Settings::load_from(None, env(&[(key, "0")])).unwrap_err();
            assert!(err.to_string().contains("consumer.max_in_flight and consumer.max_attempts"), "{key}: {err}");
        }
    }
}
