//! What an earlier computation of a product leaves for the next: whether its result is still
//! there (a request for it is then a duplicate, unless it is a refresh), and its quotes, each
//! with its own guarantee, to reuse while they last.
//!
//! A result holding a failure that may pass is kept briefly (`cache.partial_ttl_secs`), but its
//! quotes are good for longer. Those that outlive the result are kept beside it, at
//! `{prefix}:quotes:{<id>}` (a JSON list of quotes, expiring with the last of them), written by
//! the same store that writes the result. This module owns that format.

use crate::domain::{Comparison, Quote};

use super::StoredResult;

/// What is left of an earlier computation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Earlier {
    /// A result is stored now.
    pub has_result: bool,
    /// Every quote still kept (the result's and those kept beside it), one per source: the one
    /// guaranteed longest.
    pub quotes: Vec<Quote>,
}

impl Earlier {
    /// From the stored result (if any) and the quotes kept beside it (if any). A quote of the
    /// result without an `expires_at` of its own ends with the result.
    pub fn read(result: Option<&StoredResult>, kept: Option<&[u8]>) -> Self {
        let mut quotes: Vec<Quote> = kept.and_then(|bytes| serde_json::from_slice(bytes).ok()).unwrap_or_default();
        if let Some(comparison) = result.and_then(|r| r.comparison().ok()) {
            for mut quote in comparison.quotes {
                quote.expires_at.get_or_insert(comparison.expires_at);
                quotes.push(quote);
            }
        }
        // One per source: the longest guaranteed.
        quotes.sort_by(|a, b| {
            (&a.provider, std::cmp::Reverse(a.expires_at)).cmp(&(&b.provider, std::cmp::Reverse(b.expires_at)))
        });
        quotes.dedup_by(|later, first| later.provider == first.provider);
        Self { has_result: result.is_some(), quotes }
    }
}

/// The quotes of `comparison` to keep beside it once it expires, as stored, and when the last
/// of them expires (ms since the epoch); `None` when none outlives the result.
pub fn outliving(comparison: &Comparison) -> Option<(Vec<u8>, i64)> {
    let outlive: Vec<&Quote> =
        comparison.quotes.iter().filter(|q| q.expires_at.is_some_and(|end| end > comparison.expires_at)).collect();
    let last = outlive.iter().filter_map(|q| q.expires_at).max()?;
    let json = serde_json::to_vec(&outlive).expect("quotes always serialize");
    Some((json, (last.unix_timestamp_nanos() / 1_000_000) as i64))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;
    use time::OffsetDateTime;

    use super::*;
    use crate::domain::{Currency, Failure, FailureReason, ProductId, TtlPolicy};

    fn quote(provider: &str) -> Quote {
        Quote::new(provider, rust_decimal::Decimal::new(100, 2), Currency::parse("EUR").unwrap(), 1)
    }

    const TTL: TtlPolicy = TtlPolicy {
        answered: Duration::from_secs(300),
        transient: Duration::from_secs(30),
        failed: Duration::from_secs(30),
        not_found: Duration::from_secs(600),
    };

    #[test]
    fn quotes_that_outlive_a_brief_result_are_kept_and_read_back() {
        let at = OffsetDateTime::now_utc();
        let id = ProductId::parse("p").unwrap();
        let timeout = Err(Failure::new("b", FailureReason::Timeout, "slow"));
        let partial = Comparison::aggregate(id.clone(), [Ok(quote("a")), timeout], at, &TTL, &Default::default());
        assert_eq!((partial.expires_at - at).whole_seconds(), 30);
        let (kept, until_ms) = outliving(&partial).expect("a's quote outlives the result");
        assert_eq!(until_ms, ((at + Duration::from_secs(300)).unix_timestamp_nanos() / 1_000_000) as i64);
        let stored = StoredResult::decode(Bytes::from(StoredResult::encode(&partial)), SystemTime::now()).unwrap();
        let earlier = Earlier::read(Some(&stored), Some(&kept));
        assert!(earlier.has_result);
        assert_eq!(earlier.quotes.len(), 1, "one per source: {earlier:?}");
        assert_eq!(earlier.quotes[0].expires_at, Some(at + Duration::from_secs(300)));
        let gone = Earlier::read(None, Some(&kept));
        assert_eq!((gone.has_result, gone.quotes.len()), (false, 1), "the quote outlives its result");

        let complete = Comparison::aggregate(id, [Ok(quote("a"))], at, &TTL, &Default::default());
        assert_eq!(outliving(&complete), None, "nothing outlives a result that ends with its quotes");
        assert_eq!(Earlier::read(None, Some(b"garbage")), Earlier::default());
    }
}
