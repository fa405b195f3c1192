//! Refreshes before new work: an [`Inbox`] over two, taking from the first whenever it has a
//! message. If either stops delivering (its client thread died), so does this one: the worker
//! then exits non-zero to be restarted, rather than run on with half its work unseen. The consumer reads the refresh topic first, so a popular product's refresh never
//! waits behind a backlog of products asked for once (each topic has its own group member, so
//! the backlog's paused partitions never hold up the refreshes).

use std::time::Duration;

use futures::future::BoxFuture;

use super::{Inbox, Incoming};

pub struct Prioritized {
    first: Box<dyn Inbox>,
    then: Box<dyn Inbox>,
}

impl Prioritized {
    /// Takes from `first` whenever it has a message, else from `then`.
    pub fn new(first: Box<dyn Inbox>, then: Box<dyn Inbox>) -> Self {
        Self { first, then }
    }
}

impl Inbox for Prioritized {
    fn next(&mut self) -> BoxFuture<'_, Option<Incoming>> {
        Box::pin(async move {
            // Both inboxes' `next` are channel receives: dropping the one not taken loses nothing.
            tokio::select! {
                biased;
                incoming = self.first.next() => incoming,
                incoming = self.then.next() => incoming,
            }
        })
    }

    fn close(&mut self, within: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            futures::future::join(self.first.close(within), self.then.close(within)).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ProductId;
    use crate::queue::{Caller, MemoryQueue, PriceRequest, RequestQueue};

    #[tokio::test]
    async fn the_first_inbox_is_served_first_and_either_closing_ends_it() {
        let (refreshes, refresh_inbox) = MemoryQueue::new("r", 16);
        let (requests, request_inbox) = MemoryQueue::new("q", 16);
        let product = |id: &str| PriceRequest::new(ProductId::parse(id).unwrap());
        for id in ["new-1", "new-2"] {
            requests.publish(&product(id), Caller::default()).await.unwrap();
        }
        refreshes.publish(&product("hot-1"), Caller::default()).await.unwrap();
        let mut inbox = Prioritized::new(Box::new(refresh_inbox), Box::new(request_inbox));
        let key = |incoming: Option<Incoming>| String::from_utf8(incoming.unwrap().message.key.unwrap()).unwrap();
        assert_eq!(key(inbox.next().await), "hot-1");
        assert_eq!(key(inbox.next().await), "new-1");
        drop(refreshes);
        assert!(inbox.next().await.is_none(), "the refreshes stopped: so does the whole");
        drop(requests);
    }
}
