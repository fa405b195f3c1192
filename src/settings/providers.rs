//! `[[providers]]`: the price sources a consumer asks, how to ask them
//! ([`ProviderSettings`]), how to read their answers ([`ResponseSettings`]), how their calls get
//! credentials ([`AuthSettings`]) and the quota the fleet keeps for them ([`QuotaSettings`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use serde_with::{DurationMilliSeconds, serde_as};

use super::{Secret, template};
use crate::domain::Currency;

/// One price source: how to ask it, how to read its answer, and how it is protected. Only
/// `name` and `url` are required. `url`, `headers` and `body` are templates: `{product_id}`
/// is the requested id (percent-encoded in `url`, JSON-escaped in `body`) and `${NAME}` the
/// environment variable NAME, read when the consumer starts (see `providers::Request`).
#[serde_as]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub method: HttpMethod,
    /// POST only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Where the answer keeps price, currency and product id. Without it: `{"product_id",
    /// "price", "currency"}` ([`ResponseSettings::flat`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponseSettings>,
    /// `[providers.auth]`: a bearer token for every call, fetched and renewed by the consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSettings>,
    /// `[providers.quota]`: the most calls the whole fleet makes to this source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaSettings>,
    /// Bound on one attempt; the whole call (retries included) stays within
    /// `consumer.provider_timeout_ms`. Default: that whole budget (so a hang is not retried).
    #[serde(rename = "attempt_timeout_ms", default)]
    #[serde_as(as = "Option<DurationMilliSeconds<u64>>")]
    pub attempt_timeout: Option<Duration>,
    /// Extra attempts after a retryable failure (connect, timeout, 502/503/504), made only
    /// while the time budget allows.
    #[serde(default = "defaults::retries")]
    pub retries: u32,
    /// First back-off before a retry; doubles with jitter.
    #[serde(rename = "retry_backoff_ms", default = "defaults::retry_backoff")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub retry_backoff: Duration,
    /// Bulkhead: most calls in flight to this provider from one consumer.
    #[serde(default = "defaults::max_concurrency")]
    pub max_concurrency: usize,
    /// Consecutive failed attempts that open the circuit.
    #[serde(default = "defaults::breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open circuit refuses calls before one probe is let through.
    #[serde(rename = "breaker_cooldown_ms", default = "defaults::breaker_cooldown")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub breaker_cooldown: Duration,
}

impl ProviderSettings {
    /// A GET source of the flat shape with the default protection.
    pub fn new(name: &str, url: &str) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            method: HttpMethod::Get,
            body: None,
            headers: BTreeMap::new(),
            response: None,
            auth: None,
            quota: None,
            attempt_timeout: None,
            retries: defaults::retries(),
            retry_backoff: defaults::retry_backoff(),
            max_concurrency: defaults::max_concurrency(),
            breaker_failures: defaults::breaker_failures(),
            breaker_cooldown: defaults::breaker_cooldown(),
        }
    }

    /// How messages name it: `providers[1] (ebay)`, its place in the list and its name.
    pub fn label(index: usize, name: &str) -> String {
        format!("providers[{index}] ({name})")
    }

    pub(super) fn validate(&self, provider_timeout: Duration) -> Result<(), String> {
        let in_body = self.body.as_deref().is_some_and(|b| b.contains("{product_id}"));
        if !self.url.contains("{product_id}") && !in_body {
            return Err("url (or body) must contain {product_id}".into());
        }
        let templates = std::iter::once(("url", self.url.as_str()))
            .chain(self.body.as_deref().map(|b| ("body", b)))
            .chain(self.headers.values().map(|v| ("headers", v.as_str())));
        for (field, text) in templates {
            template::variables(text).map_err(|e| format!("{field}: {e}"))?;
        }
        let sample = template::expand(&self.url.replace("{product_id}", "x"), |_| Some("x".into())).unwrap_or_default();
        if reqwest::Url::parse(&sample).is_err() {
            return Err(format!("url {:?} is not a valid URL", self.url));
        }
        if self.body.is_some() && self.method != HttpMethod::Post {
            return Err("body is for method = \"POST\" only".into());
        }
        for name in self.headers.keys() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(format!("headers: {name:?} is not a header name"));
            }
        }
        if let Some(response) = &self.response {
            response.validate().map_err(|e| format!("response: {e}"))?;
        }
        if let Some(auth) = &self.auth {
            auth.validate().map_err(|e| format!("auth: {e}"))?;
        }
        if let Some(quota) = &self.quota {
            quota.validate().map_err(|e| format!("quota: {e}"))?;
        }
        if self.max_concurrency == 0 || self.breaker_failures == 0 {
            return Err("max_concurrency and breaker_failures must be at least 1".into());
        }
        if self.attempt_timeout.is_some_and(|t| t.is_zero() || t > provider_timeout) {
            return Err("attempt_timeout_ms must be positive and at most consumer.provider_timeout_ms".into());
        }
        Ok(())
    }

    /// The response mapping in force: the configured one, or the flat shape.
    pub fn response(&self) -> ResponseSettings {
        self.response.clone().unwrap_or_else(ResponseSettings::flat)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Get,
    Post,
}

/// `[providers.response]`: RFC 6901 JSON Pointers into a source's answer.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseSettings {
    /// The price: a JSON string or number, in `price_unit`s.
    pub price: String,
    /// The ISO 4217 currency; when absent, or pointing at nothing, `default_currency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_currency: Option<Currency>,
    #[serde(default)]
    pub price_unit: PriceUnit,
    /// When set, the value there must equal the requested id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<String>,
    /// 4xx statuses meaning "this source does not sell it": `not_found`, not a failure.
    #[serde(default)]
    pub not_found: Vec<u16>,
    /// A list of offers (a search's listings): every other pointer is then relative to one
    /// offer, and the source's quote is the offer `select` picks among those that `match`.
    /// A list that is absent or empty, or with no offer that matches, is `not_found`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<String>,
    /// `{ "/conditionId" = "1000" }`: only offers whose values at these pointers equal these JSON
    /// scalars count (`items` only).
    #[serde(default, rename = "match", skip_serializing_if = "BTreeMap::is_empty")]
    pub matches: BTreeMap<String, serde_json::Value>,
    /// Which matching offer is the quote (`items` only): the cheapest in `fx.base` (default),
    /// or the first as listed.
    #[serde(default)]
    pub select: Select,
    /// The source's id of the offer: the quote's `offer_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<String>,
    /// Where to buy the offer: the quote's `url`, kept when it is an `http` or `https` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_url: Option<String>,
}

/// Which of a list's matching offers is a source's quote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Select {
    /// The lowest price once converted into `fx.base` (offers in a currency without a rate
    /// come after those with one).
    #[default]
    Cheapest,
    /// The first in the source's order (its relevance, say).
    First,
}

impl ResponseSettings {
    fn validate(&self) -> Result<(), String> {
        let pointers = [
            ("price", Some(&self.price)),
            ("currency", self.currency.as_ref()),
            ("product_id", self.product_id.as_ref()),
            ("items", self.items.as_ref()),
            ("offer_id", self.offer_id.as_ref()),
            ("offer_url", self.offer_url.as_ref()),
        ];
        for (field, pointer) in pointers {
            if let Some(p) = pointer {
                json_pointer(p).map_err(|e| format!("{field} = {p:?} {e}"))?;
            }
        }
        for (pointer, value) in &self.matches {
            json_pointer(pointer).map_err(|e| format!("match: {pointer:?} {e}"))?;
            if value.is_object() || value.is_array() {
                return Err(format!("match: {pointer:?} = {value}: only a string, number, boolean or null compares"));
            }
        }
        if self.items.is_none() && (!self.matches.is_empty() || self.select != Select::Cheapest) {
            return Err("match and select choose among offers: set items (a pointer to the list) too".into());
        }
        if self.currency.is_none() && self.default_currency.is_none() {
            return Err("set currency (a pointer) or default_currency".into());
        }
        // A 5xx is the source failing: cached as "not sold here" it would hide an outage.
        if let Some(status) = self.not_found.iter().find(|s| !(400..=499).contains(*s)) {
            return Err(format!("not_found status {status} is not a 4xx status"));
        }
        Ok(())
    }

    /// The shape our mock speaks by default: `{"product_id", "price", "currency"}`.
    pub fn flat() -> Self {
        Self {
            price: "/price".into(),
            currency: Some("/currency".into()),
            default_currency: None,
            price_unit: PriceUnit::Whole,
            product_id: Some("/product_id".into()),
            not_found: Vec::new(),
            items: None,
            matches: BTreeMap::new(),
            select: Select::Cheapest,
            offer_id: None,
            offer_url: None,
        }
    }
}

/// What one unit of a source's price is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PriceUnit {
    #[default]
    Whole,
    /// Hundredths.
    Cents,
    /// Millionths (Google's `amountMicros`).
    Micros,
}

mod defaults {
    use std::time::Duration;

    pub fn retries() -> u32 {
        1
    }
    pub fn retry_backoff() -> Duration {
        Duration::from_millis(50)
    }
    pub fn max_concurrency() -> usize {
        64
    }
    pub fn breaker_failures() -> u32 {
        5
    }
    pub fn breaker_cooldown() -> Duration {
        Duration::from_secs(10)
    }
    pub fn burst() -> u32 {
        1
    }
}

/// Checks an RFC 6901 JSON Pointer: empty (the whole document), or `/`-separated reference
/// tokens in which `~` only starts `~0` (a `~`) or `~1` (a `/`).
pub fn json_pointer(pointer: &str) -> Result<(), String> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err("is not a JSON Pointer (it must start with /)".into());
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err("is not a JSON Pointer (~ must be followed by 0 or 1: ~0 is ~, ~1 is /)".into());
        }
    }
    Ok(())
}

/// `[providers.auth]`: how a source's calls get their bearer token. Each consumer fetches one
/// per source, shares it between all its calls, and renews it before it expires.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthSettings {
    /// RFC 6749 §4.4, the client credentials grant (eBay's application tokens).
    Oauth2ClientCredentials {
        /// The token endpoint, e.g. `https://api.ebay.com/identity/v1/oauth2/token`.
        token_url: String,
        /// May be `${NAME}`.
        client_id: String,
        /// May be `${NAME}`; shown as `<redacted>`.
        client_secret: Secret,
        /// Sent as `scope` when set (space-separated scopes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
        /// How the client authenticates to the token endpoint.
        #[serde(default)]
        client_auth: ClientAuth,
    },
    /// RFC 7523, a JWT signed with a service account's key (Google's service accounts).
    JwtBearer {
        /// The service account's JSON key (`client_email`, `private_key`, `token_uri`); read
        /// when the consumer starts. May be `${NAME}`.
        key_file: String,
        /// The scopes asked for (space-separated).
        scope: String,
    },
}

/// How a client credentials grant sends `client_id` and `client_secret`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// HTTP Basic (RFC 6749 §2.3.1's preferred way).
    #[default]
    Basic,
    /// In the form body.
    Post,
}

impl AuthSettings {
    fn validate(&self) -> Result<(), String> {
        match self {
            AuthSettings::Oauth2ClientCredentials { token_url, client_id, client_secret, scope, .. } => {
                for (field, text) in [("token_url", token_url.as_str()), ("client_id", client_id)] {
                    template::variables(text).map_err(|e| format!("{field}: {e}"))?;
                }
                // Its error would quote the value: the secret itself.
                if template::variables(client_secret.expose()).is_err() {
                    return Err("client_secret: a ${ that is not a ${NAME} variable (not shown: it is a secret)".into());
                }
                if let Some(scope) = scope {
                    template::variables(scope).map_err(|e| format!("scope: {e}"))?;
                }
                http_url("token_url", token_url)
            }
            AuthSettings::JwtBearer { key_file, scope } => {
                template::variables(key_file).map_err(|e| format!("key_file: {e}"))?;
                if scope.trim().is_empty() {
                    return Err("scope must name at least one scope".into());
                }
                Ok(())
            }
        }
    }
}

/// `url`, its variables given a placeholder, is an `http` or `https` URL.
fn http_url(field: &str, url: &str) -> Result<(), String> {
    let sample = template::expand(url, |_| Some("x".into())).unwrap_or_default();
    match reqwest::Url::parse(&sample) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(()),
        _ => Err(format!("{field} {url:?} is not an http or https URL")),
    }
}

/// `[providers.quota]`: calls to this source by every consumer together stay within
/// `per_second` on average, `burst` at once (one limiter in Redis per source).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSettings {
    /// Calls per second; may be a fraction (5,000 a day is `0.0578`).
    pub per_second: f64,
    /// Calls that may go at once after a quiet spell.
    #[serde(default = "defaults::burst")]
    pub burst: u32,
}

impl QuotaSettings {
    fn validate(&self) -> Result<(), String> {
        // One call a day at the least, so the limiter's arithmetic stays in range.
        if !self.per_second.is_finite() || self.per_second < 1.0 / 86_400.0 || self.per_second > 1_000_000.0 {
            return Err(format!("per_second ({}) must be between 1/86400 and 1000000", self.per_second));
        }
        if self.burst == 0 {
            return Err("burst must be at least 1".into());
        }
        // A burst's worth of intervals: the limiter keeps times within this.
        if self.interval().as_secs_f64() * f64::from(self.burst - 1) > 30.0 * 86_400.0 {
            return Err(format!("burst ({}) at per_second ({}) spans more than 30 days", self.burst, self.per_second));
        }
        Ok(())
    }

    /// The time between two calls at the average rate.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::testing::{env, with_provider};
    use crate::settings::{REDACTED, Settings};

    #[test]
    fn a_real_api_source_loads_with_its_mapping() {
        let s = with_provider(
            r#"url = "https://api.example.com/search?gtin={product_id}&limit=1"
headers = { Authorization = "Bearer ${EBAY_TOKEN}", "X-Marketplace" = "EBAY_DE" }
[providers.response]
price = "/itemSummaries/0/price/value"
currency = "/itemSummaries/0/price/currency"
default_currency = "USD"
price_unit = "micros"
product_id = "/itemSummaries/0/gtin"
not_found = [404]
"#,
        )
        .unwrap();
        let p = &s.providers[0];
        assert_eq!(p.headers.len(), 2);
        let r = p.response();
        assert_eq!((r.price_unit, r.not_found.as_slice()), (PriceUnit::Micros, &[404][..]));
        assert_eq!(ProviderSettings::new("y", "http://h/{product_id}").response(), ResponseSettings::flat());
    }

    #[test]
    fn bad_sources_fail_at_load_naming_the_problem() {
        let cases = [
            ("url = \"https://h/no-id\"", "{product_id}"),
            ("url = \"https://h/{product_id}\"\nbody = \"{}\"", "body is for method = \"POST\" only"),
            ("url = \"https://h/{product_id}?k=${BAD-NAME}\"", "not a variable name"),
            ("url = \"https://h/{product_id}\"\nheaders = { \"Bad Name\" = \"v\" }", "header name"),
            (
                "url = \"https://h/{product_id}\"\n[providers.response]\nprice = \"items.0\"\ndefault_currency = \"EUR\"",
                "JSON Pointer",
            ),
            ("url = \"https://h/{product_id}\"\n[providers.response]\nprice = \"/p\"", "default_currency"),
            (
                "url = \"https://h/{product_id}\"\n[providers.response]\nprice = \"/p\"\ndefault_currency = \"EUR\"\nnot_found = [503]",
                "not a 4xx status",
            ),
            ("url = \"https://h/{product_id}\"\nmethod = \"PUT\"", "PUT"),
        ];
        for (toml, expected) in cases {
            let err = format!("{:#}", anyhow::Error::new(with_provider(toml).unwrap_err()));
            assert!(err.contains(expected), "{toml}: {err}");
        }
        let post = "url = \"https://h/q\"\nmethod = \"POST\"\nbody = '{\"ids\": [\"{product_id}\"]}'";
        assert!(with_provider(post).is_ok(), "the id may be in the body only");
    }

    #[test]
    fn marketplace_sources_load_with_auth_offers_and_a_quota() {
        let s = with_provider(
            r#"url = "https://api.example.com/search?gtin={product_id}"
[providers.auth]
kind = "oauth2_client_credentials"
token_url = "https://api.example.com/identity/v1/oauth2/token"
client_id = "${EBAY_CLIENT_ID}"
client_secret = "s3cret-literal"
scope = "https://api.ebay.com/oauth/api_scope"
[providers.quota]
per_second = 0.5
burst = 3
[providers.response]
items = "/itemSummaries"
match = { "/conditionId" = "1000", "/buyingOptions~10" = true }
select = "first"
price = "/price/value"
currency = "/price/currency"
offer_id = "/itemId"
offer_url = "/itemWebUrl"
"#,
        )
        .unwrap();
        let p = &s.providers[0];
        let r = p.response();
        assert_eq!(r.items.as_deref(), Some("/itemSummaries"));
        assert_eq!(r.select, Select::First);
        // Keys keep their case: they are pointers into a source's answer.
        assert_eq!(r.matches["/conditionId"], serde_json::json!("1000"));
        assert_eq!(r.matches["/buyingOptions~10"], serde_json::json!(true));
        assert_eq!(p.quota.unwrap().burst, 3);
        assert!(matches!(p.auth, Some(AuthSettings::Oauth2ClientCredentials { client_auth: ClientAuth::Basic, .. })));
        assert!(!format!("{s:?}").contains("s3cret-literal"), "Debug redacts the client secret");
        let shown = serde_json::to_string(p).unwrap();
        assert!(!shown.contains("s3cret-literal") && shown.contains(REDACTED), "{shown}");
    }

    #[test]
    fn a_bad_source_is_named_by_place_and_name() {
        let path = std::env::temp_dir().join(format!("pricefront-bad-{}.toml", uuid::Uuid::new_v4()));
        let quota = "[[providers]]\nname = \"fine\"\nurl = \"http://h/{product_id}\"\n[[providers]]\nname = \"quota\"\nurl = \"http://h/{product_id}\"\n[providers.quota]\nper_second = 0\n";
        std::fs::write(&path, quota).unwrap();
        let err = Settings::load_from(Some(&path), env(&[])).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains("providers[1] (quota): quota: per_second (0) must be"), "{err}");
        for (toml, expected) in [
            (
                "url = \"http://h/{product_id}\"\n[providers.response]\nprice = \"/a~2b\"\ndefault_currency = \"EUR\"",
                "~ must be followed by 0 or 1",
            ),
            (
                "url = \"http://h/{product_id}\"\n[providers.response]\nprice = \"/p\"\ndefault_currency = \"EUR\"\nmatch = { \"/c\" = \"NEW\" }",
                "set items",
            ),
            (
                "url = \"http://h/{product_id}\"\n[providers.response]\nitems = \"/i\"\nprice = \"/p\"\ndefault_currency = \"EUR\"\nmatch = { \"/c\" = [1] }",
                "only a string",
            ),
            (
                "url = \"http://h/{product_id}\"\n[providers.auth]\nkind = \"oauth2_client_credentials\"\ntoken_url = \"ftp://h\"\nclient_id = \"a\"\nclient_secret = \"b\"",
                "token_url",
            ),
            (
                "url = \"http://h/{product_id}\"\n[providers.auth]\nkind = \"jwt_bearer\"\nkey_file = \"k.json\"\nscope = \"s\"\nextra = 1",
                "extra",
            ),
            ("url = \"http://h/{product_id}\"\n[providers.auth]\nkind = \"basic\"", "basic"),
        ] {
            let err = format!("{:#}", anyhow::Error::new(with_provider(toml).unwrap_err()));
            assert!(err.contains(expected), "{toml}: {err}");
        }
        let leaky = "url = \"http://h/{product_id}\"\n[providers.auth]\nkind = \"oauth2_client_credentials\"\ntoken_url = \"http://h/t\"\nclient_id = \"a\"\nclient_secret = \"p${ss-w0rd\"";
        let err = format!("{:#}", anyhow::Error::new(with_provider(leaky).unwrap_err()));
        assert!(err.contains("client_secret") && !err.contains("w0rd"), "{err}");
        assert!(json_pointer("/a~0b~1c").is_ok() && json_pointer("").is_ok());
        assert!(json_pointer("/a~").is_err() && json_pointer("a").is_err());
    }
}
