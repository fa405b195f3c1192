//! Waiting for a result to be written: [`Ready`], one registry per process of the products
//! somebody waits on, woken by the announcement every stored result makes
//! (`PUBLISH {prefix}:ready:<id>`, see [`super::Keys::ready_channel`]), and fed the progress
//! the consumer announces while it computes (`{prefix}:progress:<id>`, see [`super::progress`]).
//!
//! - **One subscription per process,** however many wait or watch: [`subscribe`] keeps a
//!   single `PSUBSCRIBE {prefix}:ready:*` connection (on a cluster, to any node: `PUBLISH`
//!   reaches every node; when one fails, the next seed node is tried, so a failover does not
//!   end the announcements) and wakes the waiters of each announced product. Its state is
//!   [`Ready::subscription`], which readiness reports. It adds
//!   `{prefix}:progress:*` on the same connection once somebody in the process watches progress
//!   ([`Ready::watcher`]), so a producer nobody streams from is not sent every source's answer.
//!   In the standalone demo the in-memory store announces directly.
//! - **Register first, then look:** a [`Waiter`] is registered before the caller looks the
//!   product up, so a result written between the look and the wait still wakes it.
//! - **Nothing is missed across a reconnect:** whenever the subscription (re)starts, or starts
//!   relaying progress, every waiter is woken to look again (a watcher also rereads the
//!   product's progress log). Wake-ups may therefore be spurious; a waiter looks, and waits
//!   again if there is still nothing.
//! - **A waiter costs nothing once gone:** dropping it (the client hung up) unregisters it; the
//!   product's entry goes with its last waiter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::{Notify, broadcast, watch};

use super::Keys;
use super::progress::Progress;
use crate::domain::ProductId;

/// Live progress events buffered per product for its slowest watcher; one who falls further
/// behind is told so ([`Wake::Missed`]) and rereads the log.
const PROGRESS_BUFFER: usize = 64;

/// The products waited on in this process. Cheap to clone.
#[derive(Clone, Default)]
pub struct Ready {
    products: Arc<Mutex<HashMap<ProductId, Product>>>,
    /// Somebody watches progress: the subscription should relay it.
    progress_wanted: Arc<(AtomicBool, Notify)>,
    /// The subscription's state: `None` until one is started, then up or why not.
    subscription: Arc<Mutex<Option<Result<(), String>>>>,
}

struct Product {
    /// When it was last announced (set on each announcement).
    announced: watch::Sender<Instant>,
    /// Live progress, made for the first watcher (a plain waiter needs none).
    progress: Option<broadcast::Sender<Progress>>,
    waiters: usize,
}

impl Ready {
    /// Registers interest in `id`: the returned waiter wakes on the next announcement.
    pub fn waiter(&self, id: &ProductId) -> Waiter {
        self.register(id, false)
    }

    /// Registers interest in `id` and its live progress: the returned waiter also yields each
    /// progress event announced from now on.
    pub fn watcher(&self, id: &ProductId) -> Waiter {
        let (wanted, notify) = &*self.progress_wanted;
        if !wanted.swap(true, Ordering::AcqRel) {
            notify.notify_one();
        }
        self.register(id, true)
    }

    fn register(&self, id: &ProductId, progress: bool) -> Waiter {
        let mut products = self.products.lock().expect("ready lock");
        let product = products.entry(id.clone()).or_insert_with(|| Product {
            announced: watch::Sender::new(Instant::now()),
            progress: None,
            waiters: 0,
        });
        product.waiters += 1;
        let mut announced = product.announced.subscribe();
        announced.mark_unchanged();
        let progress =
            progress.then(|| product.progress.get_or_insert_with(|| broadcast::channel(PROGRESS_BUFFER).0).subscribe());
        Waiter { announced, progress, id: id.clone(), ready: self.clone() }
    }

    /// Hands a progress event to `id`'s watchers, if any.
    pub fn progress(&self, id: &ProductId, event: Progress) {
        if let Some(sender) = self.products.lock().expect("ready lock").get(id).and_then(|p| p.progress.as_ref()) {
            // No receiver left: the watchers are going; nothing to hand it to.
            let _ = sender.send(event);
        }
    }

    /// Whether somebody in this process has watched progress (the subscription relays it).
    fn progress_wanted(&self) -> bool {
        self.progress_wanted.0.load(Ordering::Acquire)
    }

    /// Wakes `id`'s waiters, if any.
    pub fn announce(&self, id: &ProductId) {
        if let Some(product) = self.products.lock().expect("ready lock").get(id) {
            product.announced.send_replace(Instant::now());
        }
    }

    /// Wakes every waiter (announcements may have been missed).
    pub fn announce_all(&self) {
        for product in self.products.lock().expect("ready lock").values() {
            product.announced.send_replace(Instant::now());
        }
    }

    /// The subscription's state: `None` while none is started (nobody has waited, or the
    /// store announces directly), else whether it is up, or why not.
    pub fn subscription(&self) -> Option<Result<(), String>> {
        self.subscription.lock().expect("ready lock").clone()
    }

    fn subscribed(&self, state: Result<(), String>) {
        *self.subscription.lock().expect("ready lock") = Some(state);
    }

    /// How many requests wait now.
    pub fn waiting(&self) -> usize {
        self.products.lock().expect("ready lock").values().map(|p| p.waiters).sum()
    }
}

/// One request's interest in one product; unregisters on drop.
pub struct Waiter {
    announced: watch::Receiver<Instant>,
    /// A watcher's live progress.
    progress: Option<broadcast::Receiver<Progress>>,
    id: ProductId,
    ready: Ready,
}

/// What woke a watcher.
#[derive(Debug)]
pub enum Wake {
    /// A result was announced (or everybody is told to look again), at this instant: look,
    /// with a read that starts after it (one started earlier may not see the result).
    Announced(Instant),
    /// A source's outcome, live.
    Progress(Progress),
    /// Live events were dropped for this watcher (it fell behind): reread the log.
    Missed,
}

impl Waiter {
    /// Until the product is announced (or everybody is told to look again); when that was.
    pub async fn announced(&mut self) -> Instant {
        // The sender lives as long as this waiter is registered.
        let _ = self.announced.changed().await;
        *self.announced.borrow_and_update()
    }

    /// Until the next announcement or, for a watcher, the next progress event. Progress comes
    /// first when both are there, so a watcher relays the sources' answers before the result.
    pub async fn next(&mut self) -> Wake {
        let Some(progress) = &mut self.progress else {
            return Wake::Announced(self.announced().await);
        };
        tokio::select! {
            biased;
            event = progress.recv() => match event {
                Ok(event) => Wake::Progress(event),
                // Closed cannot happen while this watcher is registered (its product keeps
                // the sender); either way, rereading is right.
                Err(_) => Wake::Missed,
            },
            _ = self.announced.changed() => Wake::Announced(*self.announced.borrow_and_update()),
        }
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
/// How often a quiet subscription is asked to answer a `PING`: a connection whose peer is gone
/// without a word (a node partitioned away, a host that lost power) never ends by itself, and
/// announcements would stop without anybody noticing.
const LIVENESS_EVERY: Duration = Duration::from_secs(5);

/// Keeps one subscription to `{prefix}:ready:*` (and `{prefix}:progress:*` once somebody
/// watches progress) through one of `clients` (each with the address errors name), feeding
/// `ready`, until the process ends. When the subscription cannot be made or ends, the next
/// client is tried (on a cluster: another seed node, so one node's failure does not end the
/// announcements). `connect_timeout` bounds each attempt.
pub async fn subscribe(clients: Vec<(redis::Client, String)>, keys: Keys, ready: Ready, connect_timeout: Duration) {
    let (ready_prefix, progress_prefix) = (keys.ready_channels(), keys.progress_channels());
    let (ready_pattern, progress_pattern) = (format!("{ready_prefix}*"), format!("{progress_prefix}*"));
    let bound = connect_timeout * 2;
    ready.subscribed(Err("subscribing".into()));
    for (client, address) in clients.iter().cycle() {
        let connected = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.psubscribe(&ready_pattern).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(bound, connected).await {
            Ok(Ok(pubsub)) => {
                tracing::debug!(pattern = %ready_pattern, %address, "subscribed to result announcements");
                ready.subscribed(Ok(()));
                // Whatever was announced while we were not listening: look again.
                ready.announce_all();
                let (mut sink, mut messages) = pubsub.split();
                let mut relaying = false;
                let mut liveness =
                    tokio::time::interval_at(tokio::time::Instant::now() + LIVENESS_EVERY, LIVENESS_EVERY);
                liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    if !relaying && ready.progress_wanted() {
                        match tokio::time::timeout(bound, sink.psubscribe(&progress_pattern)).await {
                            Ok(Ok(())) => {
                                tracing::debug!(pattern = %progress_pattern, "subscribed to progress");
                                relaying = true;
                                // Watchers that read the log before this: read it again.
                                ready.announce_all();
                            }
                            _ => break,
                        }
                    }
                    let message = tokio::select! {
                        message = messages.next() => message,
                        _ = ready.progress_wanted.1.notified(), if !relaying => continue,
                        _ = liveness.tick() => {
                            match tokio::time::timeout(bound, sink.ping::<redis::Value>()).await {
                                Ok(Ok(_)) => continue,
                                Ok(Err(e)) => tracing::warn!(%address, error = %e, "the announcement subscription failed its PING"),
                                Err(_) => tracing::warn!(%address, "the announcement subscription did not answer its PING in {bound:?}"),
                            }
                            break;
                        }
                    };
                    let Some(message) = message else { break };
                    let channel = message.get_channel_name();
                    if let Some(Ok(id)) = channel.strip_prefix(&ready_prefix).map(ProductId::parse) {
                        ready.announce(&id);
                    } else if let Some(Ok(id)) = channel.strip_prefix(&progress_prefix).map(ProductId::parse) {
                        match Progress::from_message(message.get_payload_bytes()) {
                            Some(event) => ready.progress(&id, event),
                            None => tracing::debug!(%channel, "not a progress event; ignored"),
                        }
                    }
                }
                ready.subscribed(Err(format!("the subscription through {address} ended")));
                tracing::warn!(%address, "the announcement subscription ended; subscribing again");
            }
            Ok(Err(e)) => {
                ready.subscribed(Err(format!("cannot subscribe through {address}: {e}")));
                tracing::debug!(error = %e, %address, "cannot subscribe to result announcements yet");
            }
            Err(_) => {
                ready.subscribed(Err(format!("subscribing through {address} timed out")));
                tracing::debug!(%address, "subscribing to result announcements timed out");
            }
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

    fn event(provider: &str, seq: u64) -> Progress {
        let data = format!(r#"{{"provider":"{provider}"}}"#);
        Progress::decode(super::super::progress::ProgressId { ms: 0, seq }, b"quote", data.as_bytes()).unwrap()
    }

    #[tokio::test]
    async fn a_watcher_gets_progress_before_the_announcement_and_a_waiter_none() {
        let ready = Ready::default();
        let mut waiter = ready.waiter(&id("a"));
        let mut watcher = ready.watcher(&id("a"));
        ready.progress(&id("a"), event("x", 1));
        ready.progress(&id("b"), event("y", 2));
        ready.announce(&id("a"));
        let wake = tokio::time::timeout(Duration::from_secs(5), watcher.next()).await.unwrap();
        assert!(matches!(wake, Wake::Progress(e) if e.provider == "x"));
        let wake = tokio::time::timeout(Duration::from_secs(5), watcher.next()).await.unwrap();
        assert!(matches!(wake, Wake::Announced(_)), "{wake:?}");
        let wake = tokio::time::timeout(Duration::from_secs(5), waiter.next()).await.unwrap();
        assert!(matches!(wake, Wake::Announced(_)), "{wake:?}");
        assert!(ready.progress_wanted());
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_told_to_reread() {
        let ready = Ready::default();
        let mut watcher = ready.watcher(&id("a"));
        for seq in 0..(PROGRESS_BUFFER as u64 + 5) {
            ready.progress(&id("a"), event("x", seq));
        }
        assert!(matches!(watcher.next().await, Wake::Missed));
        assert!(matches!(watcher.next().await, Wake::Progress(_)), "then the buffered ones");
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
