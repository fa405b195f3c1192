//! The Redis key scheme. Keys are only ever built from a validated [`ProductId`].
//!
//! The product id is a hash tag (`{id}`, literal braces): a product's result, pending marker
//! and progress log share one hash slot, which a Lua script touching them needs on Redis
//! Cluster. The scheme is the same in every mode, so moving to a cluster changes no key. The
//! ready and progress channels are not keys (pub/sub channels are not hashed), so they carry
//! no tag.

use crate::domain::ProductId;

/// Builds `{prefix}:result:{<id>}`, `{prefix}:pending:{<id>}`, `{prefix}:progress:{<id>}`,
/// `{prefix}:watched:{<id>}`, `{prefix}:quotes:{<id>}`, the channels `{prefix}:ready:<id>` and `{prefix}:progress:<id>`,
/// a source's quota `{prefix}:quota:{<source>}` and pause `{prefix}:pause:{<source>}`, and the
/// fleet's backlog `{prefix}:backlog:{fleet}` and count of finished requests
/// `{prefix}:finished:{fleet}`, and a product's queued request `{prefix}:queued:{<id>}`.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// `prefix` holds no braces (checked at load), so the id is the only hash tag.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}:{kind}:{<name>}`, built without `format!` (the Redis hit path builds one per
    /// request; `format!` cost it about 1,000 instructions, this a fifth of that).
    fn tagged(&self, kind: &str, name: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + kind.len() + name.len() + 4);
        for part in [self.prefix.as_str(), ":", kind, ":{", name, "}"] {
            key.push_str(part);
        }
        key
    }

    /// The cached comparison, stored until its guarantee's end.
    pub fn result(&self, id: &ProductId) -> String {
        self.tagged("result", id.as_str())
    }

    /// The "being computed" marker, claimed with `SET NX PX` by exactly one producer.
    pub fn pending(&self, id: &ProductId) -> String {
        self.tagged("pending", id.as_str())
    }

    /// The pub/sub channel announced when a result is written: [`Self::ready_channels`] and the id.
    pub fn ready_channel(&self, id: &ProductId) -> String {
        self.ready_channels() + id.as_str()
    }

    /// What every result announcement's channel starts with, `{prefix}:ready:` (the id, untagged,
    /// follows): the one place the channel's name is spelled.
    pub fn ready_channels(&self) -> String {
        format!("{}:ready:", self.prefix)
    }

    /// The computation's progress log (a Redis Stream), one event per source's outcome.
    pub fn progress(&self, id: &ProductId) -> String {
        self.tagged("progress", id.as_str())
    }

    /// Set while somebody watches the product's event stream: a computation logs its progress
    /// only then (nobody else reads it).
    pub fn watched(&self, id: &ProductId) -> String {
        self.tagged("watched", id.as_str())
    }

    /// Quotes that outlive their result (a result kept briefly for a failure that may pass),
    /// for the next computation to reuse; each quote carries its own guarantee.
    pub fn quotes(&self, id: &ProductId) -> String {
        self.tagged("quotes", id.as_str())
    }

    /// Set while a request for the product is published and not yet finished, holding the
    /// token of its claim: no other request for it is published meanwhile, however long the
    /// queue is (up to `cache.queued_ttl_secs`).
    pub fn queued(&self, id: &ProductId) -> String {
        self.tagged("queued", id.as_str())
    }

    /// The fleet's backlog: a sorted set of the products whose requests are published and not
    /// yet finished, scored by when they were published (ms since the Unix epoch). Tagged
    /// `{fleet}` like [`Self::finished`], so both are in one slot.
    pub fn backlog(&self) -> String {
        self.tagged("backlog", "fleet")
    }

    /// Each consumer's capacity report (a hash: member → `<requests per second> <ms since the
    /// Unix epoch>`), for admission control.
    pub fn consumers(&self) -> String {
        self.tagged("consumers", "fleet")
    }

    /// How many requests the fleet's consumers have finished, ever: its rate is their
    /// throughput.
    pub fn finished(&self) -> String {
        self.tagged("finished", "fleet")
    }

    /// A source's quota limiter (its GCRA arrival time), shared by the fleet. The source's name
    /// (`[A-Za-z0-9_-]`, checked at load) is its hash tag.
    pub fn quota(&self, source: &str) -> String {
        self.tagged("quota", source)
    }

    /// A source's pause (its `Retry-After`), for the whole fleet: it lives as long as the pause.
    pub fn pause(&self, source: &str) -> String {
        self.tagged("pause", source)
    }

    /// The pub/sub channel each progress event is announced on, with the event:
    /// [`Self::progress_channels`] and the id.
    pub fn progress_channel(&self, id: &ProductId) -> String {
        self.progress_channels() + id.as_str()
    }

    /// What every progress channel starts with, `{prefix}:progress:` (the id, untagged, follows).
    pub fn progress_channels(&self) -> String {
        format!("{}:progress:", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme() {
        let keys = Keys::new("pf");
        let id = ProductId::parse("sku-1").unwrap();
        assert_eq!(keys.result(&id), "pf:result:{sku-1}");
        assert_eq!(keys.pending(&id), "pf:pending:{sku-1}");
        assert_eq!(keys.ready_channel(&id), "pf:ready:sku-1");
        assert_eq!(keys.progress(&id), "pf:progress:{sku-1}");
        assert_eq!(keys.progress_channel(&id), "pf:progress:sku-1");
        assert_eq!(keys.quotes(&id), "pf:quotes:{sku-1}");
        assert_eq!(keys.quota("ebay"), "pf:quota:{ebay}");
        assert_eq!(keys.pause("ebay"), "pf:pause:{ebay}");
        assert_eq!(keys.queued(&id), "pf:queued:{sku-1}");
        assert_eq!(keys.backlog(), "pf:backlog:{fleet}");
        assert_eq!(keys.finished(), "pf:finished:{fleet}");
        assert_eq!(keys.consumers(), "pf:consumers:{fleet}");
    }

    /// Redis Cluster hashes only what is inside the first `{…}`: both keys hash the id alone.
    #[test]
    fn a_products_keys_share_a_hash_tag() {
        fn tag(key: &str) -> &str {
            let open = key.find('{').unwrap();
            let close = open + key[open..].find('}').unwrap();
            &key[open + 1..close]
        }
        let keys = Keys::new("pricefront");
        let id = ProductId::parse("A.b_c-9").unwrap();
        assert_eq!(tag(&keys.result(&id)), "A.b_c-9");
        assert_eq!(tag(&keys.pending(&id)), "A.b_c-9");
        assert_eq!(tag(&keys.progress(&id)), "A.b_c-9");
        assert_eq!(tag(&keys.quotes(&id)), "A.b_c-9");
        assert_eq!(tag(&keys.queued(&id)), "A.b_c-9");
    }
}
