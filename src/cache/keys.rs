//! The Redis key scheme. Keys are only ever built from a validated [`ProductId`].

use crate::domain::ProductId;

/// Builds `{prefix}:result:{id}`, `{prefix}:pending:{id}` and `{prefix}:ready:{id}`.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// The cached comparison, stored with the price-guarantee TTL.
    pub fn result(&self, id: &ProductId) -> String {
        format!("{}:result:{id}", self.prefix)
    }

    /// The "being computed" marker, claimed with `SET NX PX` by exactly one producer.
    pub fn pending(&self, id: &ProductId) -> String {
        format!("{}:pending:{id}", self.prefix)
    }

    /// The pub/sub channel announced when a result is written.
    pub fn ready_channel(&self, id: &ProductId) -> String {
        format!("{}:ready:{id}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme() {
        let keys = Keys::new("pf");
        let id = ProductId::parse("sku-1").unwrap();
        assert_eq!(keys.result(&id), "pf:result:sku-1");
        assert_eq!(keys.pending(&id), "pf:pending:sku-1");
        assert_eq!(keys.ready_channel(&id), "pf:ready:sku-1");
    }
}
