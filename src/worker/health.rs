//! Whether a dependency the consume loop needs is failing: Redis (results cannot be stored)
//! or the DLQ (a message that must go there cannot). While one is, the loop takes no new
//! messages (the Kafka inbox then pauses its partitions) instead of piling up work it cannot
//! finish.
//!
//! A `watch` channel holds the state, so a waiter can never miss a recovery, whenever it
//! happens relative to the wait.

use tokio::sync::watch;

#[derive(Debug)]
pub struct Health {
    /// What it is, for logs ("Redis").
    name: &'static str,
    /// Set to 1 while failing, 0 when not, if given.
    gauge: Option<&'static str>,
    degraded: watch::Sender<bool>,
}

impl Health {
    /// A dependency, healthy until told otherwise; `gauge` names a metric that shows its state.
    pub fn new(name: &'static str, gauge: Option<&'static str>) -> Self {
        Self { name, gauge, degraded: watch::Sender::new(false) }
    }

    /// Sets its gauge to the current state (at start, once the metrics recorder is installed).
    pub fn show(&self) {
        if let Some(gauge) = self.gauge {
            metrics::gauge!(gauge).set(if self.is_degraded() { 1.0 } else { 0.0 });
        }
    }

    pub fn is_degraded(&self) -> bool {
        *self.degraded.borrow()
    }

    /// Records what the last call showed: usable or not.
    pub fn report(&self, reachable: bool) {
        let changed = self.degraded.send_if_modified(|degraded| {
            let was = std::mem::replace(degraded, !reachable);
            was != *degraded
        });
        if !changed {
            return;
        }
        if let Some(gauge) = self.gauge {
            metrics::gauge!(gauge).set(if reachable { 0.0 } else { 1.0 });
        }
        let name = self.name;
        if reachable {
            tracing::info!("{name} recovered; taking messages again");
        } else {
            tracing::warn!("{name} is failing; taking no new messages until it recovers");
        }
    }

    /// Returns once it is not (or no longer) failing.
    pub async fn healthy(&self) {
        let mut state = self.degraded.subscribe();
        // Looks at the current state first, then waits for changes: nothing slips between.
        let _ = state.wait_for(|degraded| !degraded).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_recovery_before_the_wait_is_not_missed() {
        let health = Health::new("Redis", None);
        health.report(false);
        assert!(health.is_degraded());
        health.report(true);
        tokio::time::timeout(Duration::from_secs(5), health.healthy()).await.expect("returns at once");
    }

    #[tokio::test]
    async fn a_waiter_wakes_on_recovery() {
        let health = std::sync::Arc::new(Health::new("Redis", None));
        health.report(false);
        let waiter = tokio::spawn({
            let health = health.clone();
            async move { health.healthy().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        health.report(true);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").unwrap();
    }
}
