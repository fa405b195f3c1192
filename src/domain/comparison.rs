//! The price comparison: quotes and failures from every source, aggregated into one
//! result with a status and a best offer.
//!
//! Invariants of a [`Comparison`] built by [`Comparison::aggregate`]: `quotes` are sorted
//! by price ascending (ties by provider name), `best` is the first quote, `status` follows
//! from how many sources answered, and `expires_at` is `computed_at` (when the quotes were
//! gathered) plus the status's TTL. A result is never served after its `expires_at`.

use std::time::Duration;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Currency, ProductId};

/// One source's price for a product.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Quote {
    pub provider: String,
    /// Serialized as a decimal string ("123.45"), never as a float.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, pattern = r"^-?[0-9]+(\.[0-9]+)?$", example = "12.40")]
    pub price: Decimal,
    #[schema(value_type = String, pattern = "^[A-Z]{3}$", example = "EUR")]
    pub currency: Currency,
    pub latency_ms: u64,
}

/// Why a source gave no quote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// No complete answer within the provider timeout.
    Timeout,
    /// The source answered with a non-2xx status.
    HttpStatus,
    /// The source answered 2xx with a body that is not a valid quote.
    InvalidResponse,
    /// The source could not be reached (refused, DNS, reset).
    Connect,
    /// The source failed repeatedly and is being skipped for a cool-down.
    CircuitOpen,
    /// The source answered that it does not sell the product (a status in its `not_found`).
    NotFound,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Timeout => "timeout",
            FailureReason::HttpStatus => "http_status",
            FailureReason::InvalidResponse => "invalid_response",
            FailureReason::Connect => "connect",
            FailureReason::CircuitOpen => "circuit_open",
            FailureReason::NotFound => "not_found",
        }
    }
}

/// One source's failure, with a human-readable detail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Failure {
    pub provider: String,
    pub reason: FailureReason,
    pub detail: String,
}

/// How many sources answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every source quoted, or said it does not sell the product.
    Complete,
    /// Some sources quoted, some failed.
    Partial,
    /// No source quoted, and at least one failed.
    Failed,
    /// Every source said it does not sell the product.
    NotFound,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Complete => "complete",
            Status::Partial => "partial",
            Status::Failed => "failed",
            Status::NotFound => "not_found",
        }
    }

    /// The status named `s` (as [`Status::as_str`] names it).
    pub fn parse(s: &str) -> Option<Self> {
        [Status::Complete, Status::Partial, Status::Failed, Status::NotFound].into_iter().find(|st| st.as_str() == s)
    }
}

/// How long a result is guaranteed, by status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlPolicy {
    /// The price guarantee window for `complete` and `partial` results.
    pub answered: Duration,
    /// A `failed` result lives briefly, so the sources are asked again soon but not hammered.
    pub failed: Duration,
    /// A `not_found` result lives long, so unknown products stop costing calls.
    pub not_found: Duration,
}

impl TtlPolicy {
    pub fn for_status(&self, status: Status) -> Duration {
        match status {
            Status::Failed => self.failed,
            Status::NotFound => self.not_found,
            Status::Complete | Status::Partial => self.answered,
        }
    }
}

/// The aggregated answer for one product.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Comparison {
    #[schema(value_type = String, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", example = "sku-123")]
    pub product_id: ProductId,
    pub status: Status,
    /// The cheapest quote; null when no source answered.
    pub best: Option<Quote>,
    /// Every answer, by price ascending (ties by provider).
    pub quotes: Vec<Quote>,
    pub failures: Vec<Failure>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub computed_at: OffsetDateTime,
    /// End of the price guarantee: the result is served until then.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
}

impl Comparison {
    /// Builds the comparison from every source's outcome.
    pub fn aggregate(
        product_id: ProductId,
        outcomes: impl IntoIterator<Item = Result<Quote, Failure>>,
        computed_at: OffsetDateTime,
        ttl: &TtlPolicy,
    ) -> Self {
        let (mut quotes, mut failures) = (Vec::new(), Vec::new());
        for outcome in outcomes {
            match outcome {
                Ok(quote) => quotes.push(quote),
                Err(failure) => failures.push(failure),
            }
        }
        quotes.sort_by(|a, b| a.price.cmp(&b.price).then_with(|| a.provider.cmp(&b.provider)));
        failures.sort_by(|a, b| a.provider.cmp(&b.provider));
        // "Does not sell it" is an answer: it does not make a result partial.
        let failed = failures.iter().any(|f| f.reason != FailureReason::NotFound);
        let status = match (quotes.is_empty(), failed) {
            (true, false) if !failures.is_empty() => Status::NotFound,
            (true, _) => Status::Failed,
            (false, false) => Status::Complete,
            (false, true) => Status::Partial,
        };
        let ttl = ttl.for_status(status);
        Self {
            product_id,
            status,
            best: quotes.first().cloned(),
            quotes,
            failures,
            computed_at,
            expires_at: computed_at + ttl,
        }
    }

    /// How much of the price guarantee is left at `now` (zero once it has passed).
    pub fn guarantee_left(&self, now: OffsetDateTime) -> Duration {
        (self.expires_at - now).try_into().unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn quote(provider: &str, price: &str) -> Result<Quote, Failure> {
        Ok(Quote {
            provider: provider.into(),
            price: Decimal::from_str(price).unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            latency_ms: 5,
        })
    }

    fn failure(provider: &str) -> Result<Quote, Failure> {
        Err(Failure { provider: provider.into(), reason: FailureReason::Timeout, detail: "2000 ms".into() })
    }

    const TTL: TtlPolicy = TtlPolicy {
        answered: Duration::from_secs(300),
        failed: Duration::from_secs(30),
        not_found: Duration::from_secs(600),
    };

    fn not_found(provider: &str) -> Result<Quote, Failure> {
        Err(Failure { provider: provider.into(), reason: FailureReason::NotFound, detail: "404 Not Found".into() })
    }

    fn ttl_secs(c: &Comparison) -> i64 {
        (c.expires_at - c.computed_at).whole_seconds()
    }

    fn aggregate(outcomes: Vec<Result<Quote, Failure>>) -> Comparison {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        Comparison::aggregate(ProductId::parse("p1").unwrap(), outcomes, at, &TTL)
    }

    #[test]
    fn all_answered_is_complete_sorted_with_cheapest_best() {
        let c = aggregate(vec![quote("b", "20.00"), quote("a", "9.99"), quote("c", "100"), quote("d", "9.99")]);
        assert_eq!(c.status, Status::Complete);
        let order: Vec<_> = c.quotes.iter().map(|q| q.provider.as_str()).collect();
        assert_eq!(order, ["a", "d", "b", "c"]);
        assert_eq!(c.best.as_ref().unwrap().provider, "a");
        assert_eq!(ttl_secs(&c), 300);
    }

    #[test]
    fn some_failed_is_partial() {
        let c = aggregate(vec![failure("x"), quote("a", "1.00")]);
        assert_eq!(c.status, Status::Partial);
        assert_eq!(c.failures.len(), 1);
        assert_eq!(ttl_secs(&c), 300);
    }

    #[test]
    fn none_answered_is_failed_with_short_ttl_and_no_best() {
        let c = aggregate(vec![failure("x"), failure("y")]);
        assert_eq!(c.status, Status::Failed);
        assert!(c.best.is_none());
        assert_eq!(ttl_secs(&c), 30);
    }

    #[test]
    fn not_found_everywhere_is_not_found_and_long_lived() {
        let c = aggregate(vec![not_found("x"), not_found("y")]);
        assert_eq!(c.status, Status::NotFound);
        assert!(c.best.is_none());
        assert_eq!(ttl_secs(&c), 600);
    }

    #[test]
    fn not_found_beside_quotes_is_still_complete_and_beside_failures_is_failed() {
        let c = aggregate(vec![not_found("x"), quote("a", "3.00")]);
        assert_eq!((c.status, c.failures.len()), (Status::Complete, 1));
        let c = aggregate(vec![not_found("x"), quote("a", "3.00"), failure("t")]);
        assert_eq!(c.status, Status::Partial);
        let c = aggregate(vec![not_found("x"), failure("t")]);
        assert_eq!((c.status, ttl_secs(&c)), (Status::Failed, 30));
        let c = aggregate(vec![]);
        assert_eq!(c.status, Status::Failed, "no source at all");
    }

    #[test]
    fn guarantee_left_counts_down_to_zero() {
        let c = aggregate(vec![quote("a", "1.00")]);
        assert_eq!(c.guarantee_left(c.computed_at), Duration::from_secs(300));
        assert_eq!(c.guarantee_left(c.computed_at + Duration::from_secs(299)), Duration::from_secs(1));
        assert_eq!(c.guarantee_left(c.expires_at + Duration::from_secs(1)), Duration::ZERO);
    }

    #[test]
    fn json_shape_uses_decimal_strings_and_snake_case() {
        let c = aggregate(vec![quote("a", "12.50"), failure("x")]);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["status"], "partial");
        assert_eq!(v["best"]["price"], "12.50");
        assert_eq!(v["quotes"][0]["currency"], "EUR");
        assert_eq!(v["failures"][0]["reason"], "timeout");
        assert_eq!(v["computed_at"], "2023-11-14T22:13:20Z");
        let back: Comparison = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
    }
}
