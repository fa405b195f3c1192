//! What an earlier computation of a product leaves for the next: whether its result is still
//! there (a request for it is then a duplicate, unless it is a refresh), and its answers, each
//! with its own guarantee, to reuse while they last: the quotes, and the sources' "not sold
//! here" (`not_found`).
//!
//! A result holding a failure that may pass is kept briefly (`cache.partial_ttl_secs`), but its
//! answers are good for longer. Those that outlive the result are kept beside it, at
//! `{prefix}:quotes:{<id>}` (`{"quotes": [Quote…], "not_found": [Failure…]}`, expiring with the
//! last of them), written by the same store that writes the result. This module owns that
//! format.

use serde::{Deserialize, Serialize};

use crate::domain::{Comparison, Failure, FailureReason, Quote};

use super::StoredResult;

/// What is left of an earlier computation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Earlier {
    /// A result is stored now.
    pub has_result: bool,
    /// When the stored result's quotes were gathered (ms since the Unix epoch), if there is one.
    pub computed_at_ms: Option<i64>,
    /// Somebody watches the product's event stream ([`super::ProgressLog::watch`]): the
    /// computation's progress is worth logging.
    pub watched: bool,
    /// Every quote still kept (the result's and those kept beside it), one per source: the one
    /// guaranteed longest.
    pub quotes: Vec<Quote>,
    /// Every `not_found` answer still kept, likewise; a source appears in one list at most.
    pub not_found: Vec<Failure>,
}

/// The answers kept beside a result, as stored.
#[derive(Default, Deserialize, Serialize)]
struct Kept {
    #[serde(default)]
    quotes: Vec<Quote>,
    #[serde(default)]
    not_found: Vec<Failure>,
}

impl Earlier {
    /// From the stored result (if any) and the answers kept beside it (if any). An answer of the
    /// result without an `expires_at` of its own ends with the result.
    pub fn read(result: Option<&StoredResult>, kept: Option<&[u8]>) -> Self {
        let Kept { mut quotes, mut not_found } =
            kept.and_then(|bytes| serde_json::from_slice(bytes).ok()).unwrap_or_default();
        if let Some(comparison) = result.and_then(|r| r.comparison().ok()) {
            for mut quote in comparison.quotes {
                quote.expires_at.get_or_insert(comparison.expires_at);
                quotes.push(quote);
            }
            for mut failure in comparison.failures.into_iter().filter(|f| f.reason == FailureReason::NotFound) {
                failure.expires_at.get_or_insert(comparison.expires_at);
                not_found.push(failure);
            }
        }
        // One answer per source: the one guaranteed longest.
        quotes.sort_by(|a, b| {
            (&a.provider, std::cmp::Reverse(a.expires_at)).cmp(&(&b.provider, std::cmp::Reverse(b.expires_at)))
        });
        quotes.dedup_by(|later, first| later.provider == first.provider);
        not_found.sort_by(|a, b| {
            (&a.provider, std::cmp::Reverse(a.expires_at)).cmp(&(&b.provider, std::cmp::Reverse(b.expires_at)))
        });
        not_found.dedup_by(|later, first| later.provider == first.provider);
        not_found.retain(|f| {
            let quoted = quotes.iter().find(|q| q.provider == f.provider);
            quoted.is_none_or(|q| q.expires_at < f.expires_at)
        });
        quotes.retain(|q| !not_found.iter().any(|f| f.provider == q.provider));
        Self {
            has_result: result.is_some(),
            computed_at_ms: result.map(|r| r.computed_at_ms),
            watched: false,
            quotes,
            not_found,
        }
    }
}

/// The answers of `comparison` to keep beside it once it expires, as stored, and when the last
/// of them expires (ms since the epoch); `None` when none outlives the result.
pub fn outliving(comparison: &Comparison) -> Option<(Vec<u8>, i64)> {
    let outlives = |end: Option<time::OffsetDateTime>| end.is_some_and(|end| end > comparison.expires_at);
    let kept = Kept {
        quotes: comparison.quotes.iter().filter(|q| outlives(q.expires_at)).cloned().collect(),
        not_found: comparison
            .failures
            .iter()
            .filter(|f| f.reason == FailureReason::NotFound && outlives(f.expires_at))
            .cloned()
            .collect(),
    };
    let ends = kept.quotes.iter().map(|q| q.expires_at).chain(kept.not_found.iter().map(|f| f.expires_at));
    let last = ends.flatten().max()?;
    let json = serde_json::to_vec(&kept).expect("answers always serialize");
    Some((json, (last.unix_timestamp_nanos() / 1_000_000) as i64))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;
    use time::OffsetDateTime;

    use super::*;
    use crate::domain::{Currency, ProductId, TtlPolicy};

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
    fn answers_that_outlive_a_brief_result_are_kept_and_read_back() {
        let at = OffsetDateTime::now_utc();
        let id = ProductId::parse("p").unwrap();
        let timeout = Err(Failure::new("b", FailureReason::Timeout, "slow"));
        let unsold = Err(Failure::new("c", FailureReason::NotFound, "404 Not Found"));
        let partial =
            Comparison::aggregate(id.clone(), [Ok(quote("a")), timeout, unsold], at, &TTL, &Default::default());
        assert_eq!((partial.expires_at - at).whole_seconds(), 30);
        let (kept, until_ms) = outliving(&partial).expect("a's quote and c's answer outlive the result");
        assert_eq!(until_ms, ((at + Duration::from_secs(600)).unix_timestamp_nanos() / 1_000_000) as i64);
        let stored = StoredResult::decode(Bytes::from(StoredResult::encode(&partial)), SystemTime::now()).unwrap();
        let earlier = Earlier::read(Some(&stored), Some(&kept));
        assert!(earlier.has_result);
        assert_eq!(earlier.quotes.len(), 1, "one per source: {earlier:?}");
        assert_eq!(earlier.quotes[0].expires_at, Some(at + Duration::from_secs(300)));
        assert_eq!(earlier.not_found.len(), 1, "{earlier:?}");
        assert_eq!(earlier.not_found[0].expires_at, Some(at + Duration::from_secs(600)));
        let gone = Earlier::read(None, Some(&kept));
        assert_eq!(
            (gone.has_result, gone.quotes.len(), gone.not_found.len()),
            (false, 1, 1),
            "they outlive their result"
        );

        let complete = Comparison::aggregate(id, [Ok(quote("a"))], at, &TTL, &Default::default());
        assert_eq!(outliving(&complete), None, "nothing outlives a result that ends with its quotes");
        assert_eq!(Earlier::read(None, Some(b"garbage")), Earlier::default());
    }
}
