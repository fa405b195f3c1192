//! `[cache]`: the TTL of each kind of result, the in-process L1, the in-flight marker's
//! lifetime and refresh-ahead.

use std::time::Duration;

use serde::Deserialize;
use serde_with::{DurationMilliSeconds, DurationSeconds, serde_as};

use crate::domain::TtlPolicy;

#[serde_as]
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// `PRICEFRONT__CACHE__TTL_SECS`: the price guarantee window.
    #[serde(rename = "ttl_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub ttl: Duration,
    /// `PRICEFRONT__CACHE__PARTIAL_TTL_SECS`: the longest a result is kept while it holds a
    /// failure that may pass (a timeout, a connection error, a 5xx, `rate_limited`,
    /// `auth_failed`, `circuit_open`), so the sources that failed are asked again soon.
    #[serde(rename = "partial_ttl_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub partial_ttl: Duration,
    /// `PRICEFRONT__CACHE__FAILED_TTL_SECS`: TTL of a result where no source answered.
    #[serde(rename = "failed_ttl_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub failed_ttl: Duration,
    /// `PRICEFRONT__CACHE__NOT_FOUND_TTL_SECS`: TTL of a result where every source said it
    /// does not sell the product.
    #[serde(rename = "not_found_ttl_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub not_found_ttl: Duration,
    /// `PRICEFRONT__CACHE__L1_TTL_MS`: longest an in-process entry lives.
    #[serde(rename = "l1_ttl_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub l1_ttl: Duration,
    /// `PRICEFRONT__CACHE__L1_MAX_ENTRIES`
    pub l1_max_entries: u64,
    /// `PRICEFRONT__CACHE__PENDING_TTL_SECS`: lifetime of the "being computed" marker.
    #[serde(rename = "pending_ttl_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub pending_ttl: Duration,
    /// `PRICEFRONT__CACHE__QUEUED_TTL_SECS`: the longest a published request counts as queued.
    /// While it does, no other request for its product is published (however long the queue),
    /// and it counts in the fleet's backlog; past it, it counts as lost (the broker lost it) and
    /// the product may be asked for again. At least `pending_ttl_secs`.
    #[serde(rename = "queued_ttl_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub queued_ttl: Duration,
    /// `PRICEFRONT__CACHE__REFRESH_AHEAD`: a hit served in the last this fraction of its
    /// result's guarantee window starts a background refresh (0 turns it off).
    pub refresh_ahead: f64,
}

impl CacheSettings {
    /// How long a won claim holds its product.
    pub fn hold(&self) -> crate::cache::Hold {
        crate::cache::Hold { pending: self.pending_ttl, queued: self.queued_ttl }
    }

    pub fn ttl_policy(&self) -> TtlPolicy {
        TtlPolicy {
            answered: self.ttl,
            transient: self.partial_ttl,
            failed: self.failed_ttl,
            not_found: self.not_found_ttl,
        }
    }
}

impl CacheSettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        if !(0.0..1.0).contains(&self.refresh_ahead) {
            return Err(format!("cache.refresh_ahead ({}) must be at least 0.0 and below 1.0", self.refresh_ahead));
        }
        let ttls = [self.l1_ttl, self.ttl, self.partial_ttl, self.failed_ttl, self.not_found_ttl];
        if ttls.iter().any(Duration::is_zero) {
            return Err("cache TTLs must be positive".into());
        }
        if self.queued_ttl < self.pending_ttl {
            return Err(format!(
                "cache.queued_ttl_secs ({}) must be at least cache.pending_ttl_secs ({})",
                self.queued_ttl.as_secs(),
                self.pending_ttl.as_secs()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use crate::settings::testing::env;

    #[test]
    fn durations_from_env_are_whole_units_of_their_key() {
        let pairs = [("PRICEFRONT__CACHE__L1_TTL_MS", "7"), ("PRICEFRONT__CACHE__TTL_SECS", "60")];
        let s = Settings::load_from(None, env(&pairs)).unwrap();
        assert_eq!((s.cache.l1_ttl, s.cache.ttl), (Duration::from_millis(7), Duration::from_secs(60)));
        for bad in ["abc", "-1"] {
            let err = Settings::load_from(None, env(&[("PRICEFRONT__CACHE__L1_TTL_MS", bad)])).unwrap_err();
            let err = format!("{:#}", anyhow::Error::new(err));
            assert!(err.contains("cache.l1_ttl_ms"), "{bad}: {err}");
        }
    }

    #[test]
    fn ttls_are_positive_and_refresh_ahead_a_share() {
        let err = Settings::load_from(None, env(&[("PRICEFRONT__CACHE__L1_TTL_MS", "0")])).unwrap_err();
        assert!(err.to_string().contains("cache TTLs must be positive"), "{err}");
        let err = Settings::load_from(None, env(&[("PRICEFRONT__CACHE__REFRESH_AHEAD", "1.0")])).unwrap_err();
        assert!(err.to_string().contains("cache.refresh_ahead"), "{err}");
    }
}
