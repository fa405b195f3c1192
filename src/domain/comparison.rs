//! The price comparison: quotes and failures from every source, aggregated into one
//! result with a status and a best offer.
//!
//! Invariants of a [`Comparison`] built by [`Comparison::aggregate`]: every quote is converted
//! into the base currency where a rate is known ([`Rates`]); `quotes` are sorted by that
//! `base_price` ascending (ties by provider name), the ones with none last; `best` is the
//! cheapest quote with a `base_price`; `fx_missing` names the currencies that had no rate;
//! `status` follows from how many sources answered.
//!
//! Every quote has its own guarantee (when it was quoted plus `cache.ttl_secs`), so a quote can
//! outlive the result it first appeared in and be reused by the next. A result's `expires_at`
//! is the earliest of its quotes' (a result with no quote: `computed_at` plus the status's
//! TTL), and no later than `computed_at` plus `cache.partial_ttl_secs` while a failure that may
//! pass ([`Failure::is_transient`]) is in it. A quote's own `expires_at` is written only where
//! it outlives the result's. A result is never served after its `expires_at`.

use std::time::Duration;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Currency, ProductId, Rates};

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
    /// The price in the comparison's `base_currency`, rounded to its minor units; absent when
    /// this currency has no exchange rate (the quote is then not compared).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rust_decimal::serde::str_option")]
    #[schema(value_type = Option<String>, pattern = r"^-?[0-9]+(\.[0-9]+)?$", example = "11.41")]
    pub base_price: Option<Decimal>,
    /// The rate used: one unit of `currency` in `base_currency`; absent with `base_price`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rust_decimal::serde::str_option")]
    #[schema(value_type = Option<String>, pattern = r"^[0-9]+(\.[0-9]+)?$", example = "0.92")]
    pub fx_rate: Option<Decimal>,
    /// The source's own id of the offer (a listing), when its mapping names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "v1|110554|0")]
    pub offer_id: Option<String>,
    /// Where the offer can be bought: an `http` or `https` URL from the source, when its
    /// mapping names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "https://www.ebay.de/itm/110554")]
    pub url: Option<String>,
    /// The end of this quote's own guarantee (when the source quoted it plus `cache.ttl_secs`),
    /// when it outlives the result's: absent, the result's `expires_at` is the quote's too.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
}

impl Quote {
    /// A quote as a source gave it, not yet converted ([`Rates::convert`]) and with no
    /// guarantee yet ([`Comparison::aggregate`] gives it one).
    pub fn new(provider: impl Into<String>, price: Decimal, currency: Currency, latency_ms: u64) -> Self {
        Self {
            provider: provider.into(),
            price,
            currency,
            latency_ms,
            base_price: None,
            fx_rate: None,
            offer_id: None,
            url: None,
            expires_at: None,
        }
    }

    /// Whether it is still guaranteed at `now` with at least `margin` to spare. A quote whose
    /// guarantee is not filled in (see [`crate::cache::Earlier`]) is never reused.
    pub fn guaranteed_beyond(&self, now: OffsetDateTime, margin: Duration) -> bool {
        self.expires_at.is_some_and(|end| end - now > margin)
    }
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
    /// The source answered that it does not sell the product (a status in its `not_found`, or
    /// an offer list with no offer that matches).
    NotFound,
    /// The source's quota: it answered 429 (or 503 with `Retry-After`), or the quota the
    /// fleet keeps for it (`[providers.quota]`) had no turn within the call's budget.
    RateLimited,
    /// No credential for the source: its token endpoint failed, or the source refused a token
    /// fresh from it.
    AuthFailed,
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
            FailureReason::RateLimited => "rate_limited",
            FailureReason::AuthFailed => "auth_failed",
        }
    }

    /// Every reason, as `as_str` names them (metric labels, documentation).
    pub const ALL: [FailureReason; 8] = [
        FailureReason::Timeout,
        FailureReason::HttpStatus,
        FailureReason::InvalidResponse,
        FailureReason::Connect,
        FailureReason::CircuitOpen,
        FailureReason::NotFound,
        FailureReason::RateLimited,
        FailureReason::AuthFailed,
    ];
}

/// One source's failure, with a human-readable detail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Failure {
    pub provider: String,
    pub reason: FailureReason,
    pub detail: String,
    /// The status the source answered with, for `http_status` and `rate_limited`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 503)]
    pub http_status: Option<u16>,
    /// For `not_found` (an answer, kept `cache.not_found_ttl_secs` from when it was given), when
    /// it outlives the result's `expires_at`: absent, the result's is this answer's too.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
}

/// The longest failure detail kept, in bytes: a result's size stays bounded whatever a
/// source or its connection says.
pub const MAX_DETAIL: usize = 256;

impl Failure {
    /// A failure whose detail is cut to at most [`MAX_DETAIL`] bytes (at a character boundary,
    /// ending in `…`).
    pub fn new(provider: impl Into<String>, reason: FailureReason, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        if detail.len() > MAX_DETAIL {
            let mut end = MAX_DETAIL - '…'.len_utf8();
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
            detail.push('…');
        }
        Self { provider: provider.into(), reason, detail, http_status: None, expires_at: None }
    }

    /// Whether it is an answer ("not sold here") still good at `now` with `margin` to spare.
    pub fn not_found_beyond(&self, now: OffsetDateTime, margin: Duration) -> bool {
        self.reason == FailureReason::NotFound && self.expires_at.is_some_and(|end| end - now > margin)
    }

    /// Whether it may pass by itself soon: a timeout, a connection error, a 5xx, the source's
    /// quota, its credentials, an open circuit. A result holding one is kept at most
    /// `cache.partial_ttl_secs`. A 4xx, an answer we cannot read and "not sold here" are the
    /// source's considered answer for this product, and are kept as long as the result.
    pub fn is_transient(&self) -> bool {
        match self.reason {
            FailureReason::Timeout
            | FailureReason::Connect
            | FailureReason::RateLimited
            | FailureReason::AuthFailed
            | FailureReason::CircuitOpen => true,
            FailureReason::HttpStatus => self.http_status.is_none_or(|status| status >= 500),
            FailureReason::InvalidResponse | FailureReason::NotFound => false,
        }
    }
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
    /// The price guarantee window of a quote (and so of `complete` and `partial` results).
    pub answered: Duration,
    /// The longest a result holding a failure that may pass is kept.
    pub transient: Duration,
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
    /// The cheapest quote in the base currency; null when no source answered in a currency
    /// with an exchange rate.
    pub best: Option<Quote>,
    /// Every answer, by `base_price` ascending (ties by provider), those without one last.
    pub quotes: Vec<Quote>,
    pub failures: Vec<Failure>,
    /// The currency `base_price` and `best` are in (`fx.base`). Absent only in results stored
    /// before currencies were converted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = "^[A-Z]{3}$", example = "EUR")]
    pub base_currency: Option<Currency>,
    /// Currencies quoted that have no exchange rate: their quotes are listed but not compared.
    #[serde(default)]
    #[schema(value_type = Vec<String>, example = json!([]))]
    pub fx_missing: Vec<Currency>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub computed_at: OffsetDateTime,
    /// End of the price guarantee: the result is served until then.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
}

impl Comparison {
    /// Builds the comparison from every source's outcome, converting each quote with `fx`.
    /// A quote without a guarantee of its own (one just quoted) gets `computed_at` plus
    /// `ttl.answered`, a `not_found` answer `computed_at` plus `ttl.not_found`; one that has one
    /// (reused from an earlier result) keeps it.
    pub fn aggregate(
        product_id: ProductId,
        outcomes: impl IntoIterator<Item = Result<Quote, Failure>>,
        computed_at: OffsetDateTime,
        ttl: &TtlPolicy,
        fx: &Rates,
    ) -> Self {
        let (mut quotes, mut failures) = (Vec::new(), Vec::new());
        for outcome in outcomes {
            match outcome {
                Ok(mut quote) => {
                    fx.convert(&mut quote);
                    quote.expires_at.get_or_insert(computed_at + ttl.answered);
                    quotes.push(quote);
                }
                Err(mut failure) => {
                    if failure.reason == FailureReason::NotFound {
                        failure.expires_at.get_or_insert(computed_at + ttl.not_found);
                    }
                    failures.push(failure);
                }
            }
        }
        // Compared in the base currency; what cannot be converted goes last (by its own price).
        quotes.sort_by(|a, b| {
            (a.base_price.is_none(), a.base_price, a.price, &a.provider).cmp(&(
                b.base_price.is_none(),
                b.base_price,
                b.price,
                &b.provider,
            ))
        });
        let mut fx_missing: Vec<Currency> =
            quotes.iter().filter(|q| q.base_price.is_none()).map(|q| q.currency).collect();
        fx_missing.sort();
        fx_missing.dedup();
        failures.sort_by(|a, b| a.provider.cmp(&b.provider));
        // "Does not sell it" is an answer: it does not make a result partial.
        let failed = failures.iter().any(|f| f.reason != FailureReason::NotFound);
        let status = match (quotes.is_empty(), failed) {
            (true, false) if !failures.is_empty() => Status::NotFound,
            (true, _) => Status::Failed,
            (false, false) => Status::Complete,
            (false, true) => Status::Partial,
        };
        let mut expires_at = match quotes.iter().filter_map(|q| q.expires_at).min() {
            Some(oldest) => oldest,
            None => computed_at + ttl.for_status(status),
        };
        if failures.iter().any(Failure::is_transient) {
            expires_at = expires_at.min(computed_at + ttl.transient);
        }
        // An answer that ends with the result says nothing of its own (the common case: every
        // quote fresh, the result complete), so the result stays as small as it was.
        for end in quotes.iter_mut().map(|q| &mut q.expires_at).chain(failures.iter_mut().map(|f| &mut f.expires_at)) {
            if *end == Some(expires_at) {
                *end = None;
            }
        }
        Self {
            product_id,
            status,
            best: quotes.first().filter(|q| q.base_price.is_some()).cloned(),
            quotes,
            failures,
            base_currency: Some(fx.base()),
            fx_missing,
            computed_at,
            expires_at,
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
        priced(provider, price, "EUR")
    }

    fn priced(provider: &str, price: &str, currency: &str) -> Result<Quote, Failure> {
        Ok(Quote::new(provider, Decimal::from_str(price).unwrap(), Currency::parse(currency).unwrap(), 5))
    }

    fn fx() -> Rates {
        let usd = (Currency::parse("USD").unwrap(), Decimal::from_str("0.92").unwrap());
        Rates::new(Currency::parse("EUR").unwrap(), [usd].into()).unwrap()
    }

    fn failure(provider: &str) -> Result<Quote, Failure> {
        Err(Failure::new(provider, FailureReason::Timeout, "2000 ms"))
    }

    const TTL: TtlPolicy = TtlPolicy {
        answered: Duration::from_secs(300),
        transient: Duration::from_secs(20),
        failed: Duration::from_secs(30),
        not_found: Duration::from_secs(600),
    };

    fn not_found(provider: &str) -> Result<Quote, Failure> {
        Err(Failure::new(provider, FailureReason::NotFound, "404 Not Found"))
    }

    fn ttl_secs(c: &Comparison) -> i64 {
        (c.expires_at - c.computed_at).whole_seconds()
    }

    fn aggregate(outcomes: Vec<Result<Quote, Failure>>) -> Comparison {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        Comparison::aggregate(ProductId::parse("p1").unwrap(), outcomes, at, &TTL, &fx())
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
    fn some_failed_is_partial_and_kept_briefly_while_the_failure_may_pass() {
        let c = aggregate(vec![failure("x"), quote("a", "1.00")]);
        assert_eq!(c.status, Status::Partial);
        assert_eq!(c.failures.len(), 1);
        assert_eq!(ttl_secs(&c), 20, "a timeout may pass: kept for the transient TTL");
        let quote_ends = c.quotes[0].expires_at.unwrap() - c.computed_at;
        assert_eq!(quote_ends.whole_seconds(), 300, "the quote keeps its own guarantee");
    }

    #[test]
    fn a_failure_says_at_most_a_few_hundred_bytes() {
        let long = Failure::new("x", FailureReason::InvalidResponse, "é".repeat(1000));
        assert!(long.detail.len() <= MAX_DETAIL && long.detail.ends_with('…'), "{}", long.detail.len());
        assert_eq!(Failure::new("x", FailureReason::Timeout, "short").detail, "short");
    }

    #[test]
    fn only_failures_that_may_pass_shorten_a_result() {
        let with = |reason, status: Option<u16>| {
            let mut f = Failure::new("x", reason, "d");
            f.http_status = status;
            ttl_secs(&aggregate(vec![Err(f), quote("a", "1.00")]))
        };
        for (reason, status) in [
            (FailureReason::Timeout, None),
            (FailureReason::Connect, None),
            (FailureReason::HttpStatus, Some(503)),
            (FailureReason::RateLimited, Some(429)),
            (FailureReason::AuthFailed, None),
            (FailureReason::CircuitOpen, None),
        ] {
            assert_eq!(with(reason, status), 20, "{reason:?} {status:?}");
        }
        for (reason, status) in [
            (FailureReason::HttpStatus, Some(400)),
            (FailureReason::InvalidResponse, None),
            (FailureReason::NotFound, None),
        ] {
            assert_eq!(with(reason, status), 300, "{reason:?} {status:?}");
        }
    }

    #[test]
    fn a_result_expires_with_its_oldest_quote() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let mut reused = quote("old", "2.00").unwrap();
        reused.expires_at = Some(at + Duration::from_secs(120));
        let c = aggregate(vec![Ok(reused), quote("new", "3.00")]);
        assert_eq!((c.status, ttl_secs(&c)), (Status::Complete, 120));
        let ends: Vec<_> = c.quotes.iter().map(|q| q.expires_at.map(|end| (end - at).whole_seconds())).collect();
        assert_eq!(ends, [None, Some(300)], "the oldest ends with the result; the other keeps its own");
        assert!(c.quotes[1].guaranteed_beyond(at, Duration::from_secs(299)));
        assert!(!c.quotes[1].guaranteed_beyond(at, Duration::from_secs(300)));
        let fresh = aggregate(vec![quote("a", "1.00"), quote("b", "2.00")]);
        assert!(fresh.quotes.iter().all(|q| q.expires_at.is_none()), "all end with the result: nothing to say");
        assert!(
            !Quote::new("p", Decimal::ONE, Currency::parse("EUR").unwrap(), 1).guaranteed_beyond(at, Duration::ZERO)
        );
    }

    #[test]
    fn none_answered_is_failed_with_short_ttl_and_no_best() {
        let c = aggregate(vec![failure("x"), failure("y")]);
        assert_eq!(c.status, Status::Failed);
        assert!(c.best.is_none());
        assert_eq!(ttl_secs(&c), 20, "the shorter of failed_ttl and the transient TTL");
        let mut bad = Failure::new("x", FailureReason::InvalidResponse, "garbage");
        bad.http_status = None;
        assert_eq!(ttl_secs(&aggregate(vec![Err(bad)])), 30, "failed_ttl");
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
        assert_eq!((c.status, ttl_secs(&c)), (Status::Failed, 20), "failed, and the timeout may pass");
        let c = aggregate(vec![]);
        assert_eq!(c.status, Status::Failed, "no source at all");
    }

    #[test]
    fn compares_in_the_base_currency_and_lists_the_unconvertible_last() {
        // 10.50 USD = 9.66 EUR: nominally dearer than 10.00 EUR, yet the cheapest.
        let c = aggregate(vec![quote("eur", "10.00"), priced("usd", "10.50", "USD"), priced("gbp", "1.00", "GBP")]);
        let order: Vec<_> = c.quotes.iter().map(|q| q.provider.as_str()).collect();
        assert_eq!(order, ["usd", "eur", "gbp"]);
        let best = c.best.as_ref().unwrap();
        assert_eq!((best.provider.as_str(), best.base_price.unwrap().to_string()), ("usd", "9.66".into()));
        assert_eq!(c.fx_missing, [Currency::parse("GBP").unwrap()]);
        assert_eq!(c.base_currency, Currency::parse("EUR").ok());
        assert_eq!(c.status, Status::Complete, "a missing rate is not a failure");
        let only_gbp = aggregate(vec![priced("gbp", "1.00", "GBP")]);
        assert!(only_gbp.best.is_none(), "nothing to compare in the base currency");
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
        assert_eq!(v["quotes"][0]["expires_at"], "2023-11-14T22:18:20Z");
        assert!(
            v["quotes"][0].get("url").is_none() && v["failures"][0].get("http_status").is_none(),
            "absent, not null"
        );
        assert_eq!((v["best"]["base_price"].as_str(), v["best"]["fx_rate"].as_str()), (Some("12.50"), Some("1")));
        assert_eq!((v["base_currency"].as_str(), v["fx_missing"].as_array().map(Vec::len)), (Some("EUR"), Some(0)));
        let back: Comparison = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn a_result_stored_before_conversion_still_reads() {
        let old = serde_json::json!({
            "product_id": "p1", "status": "complete", "failures": [],
            "best": {"provider": "a", "price": "1.00", "currency": "EUR", "latency_ms": 3},
            "quotes": [{"provider": "a", "price": "1.00", "currency": "EUR", "latency_ms": 3}],
            "computed_at": "2023-11-14T22:13:20Z", "expires_at": "2023-11-14T22:18:20Z",
        });
        let c: Comparison = serde_json::from_value(old).unwrap();
        assert_eq!((c.base_currency, c.fx_missing.len(), c.quotes[0].base_price), (None, 0, None));
    }
}
