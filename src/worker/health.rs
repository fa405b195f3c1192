//! Whether Redis is failing. While it is, the consume loop takes no new messages (the Kafka
//! inbox then pauses its partitions) instead of piling up work that cannot be stored.
//!
//! A `watch` channel holds the state, so a waiter can never miss a recovery, whenever it
//! happens relative to the wait.

use tokio::sync::watch;

#[derive(Debug)]
pub struct RedisHealth {
    degraded: watch::Sender<bool>,
}

impl Default for RedisHealth {
    fn default() -> Self {
        Self { degraded: watch::Sender::new(false) }
    }
}

impl RedisHealth {
    pub fn is_degraded(&self) -> bool {
        *self.degraded.borrow()
    }

    /// Records what the last Redis call showed: reachable or not.
    pub fn report(&self, reachable: bool) {
        let changed = self.degraded.send_if_modified(|degraded| {
            let was = std::mem::replace(degraded, !reachable);
            was != *degraded
        });
        match (changed, reachable) {
            (true, false) => tracing::warn!("Redis is failing; taking no new messages until it recovers"),
            (true, true) => tracing::info!("Redis recovered; taking messages again"),
            _ => {}
        }
    }

    /// Returns once Redis is not (or no longer) failing.
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
        let health = RedisHealth::default();
        health.report(false);
        assert!(health.is_degraded());
        health.report(true);
        tokio::time::timeout(Duration::from_secs(5), health.healthy()).await.expect("returns at once");
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_redis_recovers() {
        let health = std::sync::Arc::new(RedisHealth::default());
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
