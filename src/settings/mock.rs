//! `[mock]`: the simulated price APIs (`mock-providers`), for local runs and the tests.
//!
//! Serializable, so a test writes a mock's configuration from these types (a client secret is
//! serialized `<redacted>`, as everywhere: a test that needs it writes it itself).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{PriceUnit, Secret};
use crate::domain::Currency;

/// The answer shapes the mock can speak (`[[mock.providers]] shape`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MockShape {
    /// `{"product_id", "price": "12.34", "currency"}`
    #[default]
    Flat,
    /// eBay Browse's search: `{"total", "itemSummaries": [{"itemId", "itemWebUrl", "condition",
    /// "price": {"value": "12.34", "currency"}}…]}`, several listings in relevance order (not
    /// price order), new and used; `{"total": 0}` for a product it does not sell.
    Ebay,
    /// `{"productAttributes": {"gtin", "price": {"amountMicros": "12340000", "currencyCode"}}}`
    Merchant,
    /// `{"products": [{"sku", "salePrice": 12.34}]}`, no currency
    Bestbuy,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MockSettings {
    /// `PRICEFRONT__MOCK__LISTEN`
    pub listen: SocketAddr,
    /// `[[mock.providers]]`
    pub providers: Vec<MockProviderSettings>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MockProviderSettings {
    pub name: String,
    pub latency_ms: u64,
    pub jitter_ms: u64,
    /// Share of calls answered 503, in [0, 1].
    pub error_rate: f64,
    /// Share of calls never answered, in [0, 1].
    pub hang_rate: f64,
    pub currency: Currency,
    #[serde(default)]
    pub shape: MockShape,
    /// The unit prices are given in; default: micros for `merchant`, whole otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_unit: Option<PriceUnit>,
    /// `"Name: value"`: calls without exactly this header are answered 401.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_header: Option<String>,
    /// Products whose id starts with this are not sold here: 404 (the `ebay` shape: 200 with
    /// no listings, as eBay answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_found_prefix: Option<String>,
    /// `[mock.providers.auth]`: calls need a bearer token this mock issued, from its token
    /// endpoint (`POST /{name}/…/token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<MockAuthSettings>,
    /// `[mock.providers.quota]`: past this rate, calls are answered 429 with `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<MockQuotaSettings>,
}

/// A mock source's token endpoint: the client credentials grant with these credentials (HTTP
/// Basic or in the body), or the JWT bearer grant with assertions signed by this service
/// account's key.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MockAuthSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Shown as `<redacted>`, as a real source's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    /// A service account's JSON key (as Google issues them): its `client_email` must sign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// How long an issued token is accepted (`expires_in`).
    #[serde(default = "default_token_ttl")]
    pub token_ttl_secs: u64,
}

fn default_token_ttl() -> u64 {
    7200
}

/// A mock source's own rate limit.
#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MockQuotaSettings {
    pub per_second: f64,
    pub burst: u32,
    /// The `Retry-After` of a 429, in seconds (0: no header).
    #[serde(default = "default_retry_after")]
    pub retry_after_secs: u64,
}

fn default_retry_after() -> u64 {
    1
}

impl MockProviderSettings {
    /// A flat-shaped mock source quoting in `currency` with no faults.
    pub fn new(name: &str, latency_ms: u64, currency: Currency) -> Self {
        Self {
            name: name.into(),
            latency_ms,
            jitter_ms: 0,
            error_rate: 0.0,
            hang_rate: 0.0,
            currency,
            shape: MockShape::Flat,
            price_unit: None,
            require_header: None,
            not_found_prefix: None,
            auth: None,
            quota: None,
        }
    }
}
