//! Waiting for a result to be written: [`Ready`], one registry per process of the products
//! somebody waits on, woken by the announcement every stored result makes
//! (`PUBLISH {prefix}:ready:<id>`, see [`super::Keys::ready_channel`]).
//!
//! - **One subscription per process,** however many wait: [`subscribe`] keeps a single
//!   `PSUBSCRIBE {prefix}:ready:*` connection (on a cluster, any node: `PUBLISH` reaches every
//!   node) and wakes the waiters of each announced product. In the standalone demo the
//!   in-memory store announces directly.
//! - **Register first, then look:** a [`Waiter`] is registered before the caller looks the
//!   product up, so a result written between the look and the wait still wakes it.
//! - **Nothing is missed across a reconnect:** whenever the subscription (re)starts, every
//!   waiter is woken to look again. Wake-ups may therefore be spurious; a waiter looks, and waits
//!   again if there is still nothing.
//! - **A waiter costs nothing once gone:** dropping it (the client hung up) unregisters it; the
//!   product's entry goes with its last waiter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use crate::domain::ProductId;

/// The products waited on in this process. Cheap to clone.
#[derive(Clone, Default)]
pub struct Ready {
    products: Arc<Mutex<HashMap<ProductId, Product>>>,
}

struct Product {
    /// Bumped on each announcement.
    announced: watch::Sender<u64>,
    waiters: usize,
}

impl Ready {
    /// Registers interest in `id`: the returned waiter wakes on the next announcement.
    pub fn waiter(&self, id: &ProductId) -> Waiter {
        let mut products = self.products.lock().expect("ready lock");
        let product =
            products.entry(id.clone()).or_insert_with(|| Product { announced: watch::Sender::new(0), waiters: 0 });
        product.waiters += 1;
        let mut announced = product.announced.subscribe();
        announced.mark_unchanged();
        Waiter { announced, id: id.clone(), ready: self.clone() }
    }

    /// Wakes `id`'s waiters, if any.
    pub fn announce(&self, id: &ProductId) {
        if let Some(product) = self.products.lock().expect("ready lock").get(id) {
            product.announced.send_modify(|n| *n += 1);
        }
    }

    /// Wakes every waiter (announcements may have been missed).
    pub fn announce_all(&self) {
        for product in self.products.lock().expect("ready lock").values() {
            product.announced.send_modify(|n| *n += 1);
        }
    }

    /// How many requests wait now.
    pub fn waiting(&self) -> usize {
        self.products.lock().expect("ready lock").values().map(|p| p.waiters).sum()
    }
}

/// One request's interest in one product; unregisters on drop.
pub struct Waiter {
    announced: watch::Receiver<u64>,
    id: ProductId,
    ready: Ready,
}

impl Waiter {
    /// Until the product is announced (or everybody is told to look again).
    pub async fn announced(&mut self) {
        // The sender lives as long as this waiter is registered.
        let _ = self.announced.changed().await;
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut products = self.ready.products.lock().expect("ready lock");
        if let Some(product) = products.get_mut(&self.id) {
            product.waiters -= 1;
            if product.waiters == 0 {
                products.remove(&self.id);
            }
        }
    }
}

/// How long to wait before subscribing again after the connection failed.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(500);

/// Keeps one subscription to `{prefix}:ready:*` on the server behind `client`, feeding `ready`,
/// until the process ends; reconnects after a failure. `connect_timeout` bounds each attempt.
pub async fn subscribe(client: redis::Client, prefix: String, ready: Ready, connect_timeout: Duration) {
    let pattern = format!("{prefix}:ready:*");
    let channel_prefix = format!("{prefix}:ready:");
    loop {
        let connected = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.psubscribe(&pattern).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(connect_timeout * 2, connected).await {
            Ok(Ok(pubsub)) => {
                tracing::debug!(%pattern, "subscribed to result announcements");
                // Whatever was announced while we were not listening: look again.
                ready.announce_all();
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    let announced = message.get_channel_name().strip_prefix(&channel_prefix).map(ProductId::parse);
                    if let Some(Ok(id)) = announced {
                        ready.announce(&id);
                    }
                }
                tracing::warn!("the result announcement subscription ended; subscribing again");
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot subscribe to result announcements yet"),
            Err(_) => tracing::debug!("subscribing to result announcements timed out"),
        }
        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ProductId {
        ProductId::parse(s).unwrap()
    }

    #[tokio::test]
    async fn an_announcement_after_registering_wakes_the_waiter() {
        let ready = Ready::default();
        let mut waiter = ready.waiter(&id("a"));
        ready.announce(&id("b"));
        ready.announce(&id("a"));
        tokio::time::timeout(Duration::from_secs(5), waiter.announced()).await.expect("woken");
    }

    #[tokio::test]
    async fn other_products_do_not_wake_it() {
        let ready = Ready::default();
        let mut waiter = ready.waiter(&id("a"));
        ready.announce(&id("b"));
        assert!(tokio::time::timeout(Duration::from_millis(50), waiter.announced()).await.is_err());
        ready.announce_all();
        tokio::time::timeout(Duration::from_secs(5), waiter.announced()).await.expect("woken by announce_all");
    }

    #[test]
    fn dropping_the_last_waiter_forgets_the_product() {
        let ready = Ready::default();
        let (w1, w2) = (ready.waiter(&id("a")), ready.waiter(&id("a")));
        assert_eq!(ready.waiting(), 2);
        drop(w1);
        assert_eq!(ready.waiting(), 1);
        drop(w2);
        assert_eq!(ready.waiting(), 0);
        assert!(ready.products.lock().unwrap().is_empty());
    }
}
