//! Simulated external price APIs, one process serving every `[[mock.providers]]` entry,
//! so the whole system runs and is tested on one machine with no internet.
//!
//! - `GET` or `POST /{provider}/…`: a quote for the product named in the request, in the
//!   provider's `shape` (flat `{"product_id", "price", "currency"}`, eBay-, Merchant-API- or
//!   Best-Buy-style), the price deterministic per (provider, product) and believable: one base
//!   price per product, each source within ±15 % of it ([`price_for`]). The product id is taken
//!   from the query (`gtin`, `upc`, `sku`, `id`, `product_id`), else from a JSON body (`ids[0]`,
//!   `id`, `product_id`), else from the last path segment (`…/prices/{id}`, or `products(upc={id})`),
//!   so a real API's URL works with its host swapped for the mock's.
//!   - 401 without the `require_header`, 404 for ids starting with `not_found_prefix` (the
//!     `ebay` shape: 200 with no listings, as eBay answers);
//!   - with `[mock.providers.auth]`, 401 without a bearer token it issued and that has not
//!     expired (`token_ttl_secs`); with `[mock.providers.quota]`, 429 with `Retry-After` past
//!     its rate;
//!   - faults as configured: latency ± jitter, `error_rate` (503), `hang_rate` (no answer
//!     until the client gives up).
//!   - The `ebay` shape lists several offers, in relevance order and not by price: a used one
//!     cheapest, then new ones; the cheapest new one in the source's currency is [`price_for`],
//!     and one in a dearer currency is nominally cheaper but not once converted. `limit` in the
//!     query keeps the first `limit`.
//! - `POST /{provider}/…/token` (with `[mock.providers.auth]`): an OAuth 2.0 token endpoint,
//!   for the client credentials grant (HTTP Basic or in the form) with the configured
//!   credentials, or the JWT bearer grant with an assertion signed by the configured service
//!   account's key (`iss` its `client_email`, `aud` its `token_uri`).
//! - `DELETE /_tokens/{provider}`: forgets every token it issued (as a source that revokes
//!   them), so the next call with one is answered 401.
//! - `GET /fx/eurofxref-daily.xml`: [`ECB_RATES`] in the ECB's daily reference-rates format,
//!   dated today, for `fx.url`.
//! - `GET /_stats`: calls per provider and per product; per provider, token requests, 401s for
//!   want of a valid token, and 429s. Per-product counts are kept for at
//!   most [`STATS_MAX_PRODUCTS`] products per provider, each until it is idle for
//!   [`STATS_IDLE`], so a long run does not grow without limit.
//! - `PUT /_faults/{provider}`: change any of `latency_ms`, `jitter_ms`, `error_rate`,
//!   `hang_rate` at run time (204).
//!
//! The mock validates its own faults, from configuration ([`Mock::new`]) and at run time alike.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, put};
use axum::{Json, Router};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::domain::{Currency, ProductId};
use crate::providers::{Gcra, Turn};
use crate::settings::{MockAuthSettings, MockProviderSettings, MockShape, PriceUnit, QuotaSettings};

/// Largest latency or jitter accepted, so delays stay meaningful and arithmetic cannot overflow.
pub const MAX_DELAY_MS: u64 = 60_000;
/// Products whose call counts one provider keeps.
pub const STATS_MAX_PRODUCTS: u64 = 10_000;
/// A product's call count is forgotten after this long without a call.
pub const STATS_IDLE: Duration = Duration::from_secs(600);
/// What `GET /fx/eurofxref-daily.xml` serves: units of each currency one euro buys.
pub const ECB_RATES: [(&str, &str); 5] =
    [("USD", "1.0876"), ("JPY", "163.45"), ("GBP", "0.85540"), ("CHF", "0.9421"), ("SEK", "11.4385")];
/// Where the mock serves them.
pub const ECB_PATH: &str = "/fx/eurofxref-daily.xml";

/// Longest a hanging call is held, so a client without a timeout is not held forever.
const MAX_HANG: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
struct Faults {
    latency_ms: u64,
    jitter_ms: u64,
    error_rate: f64,
    hang_rate: f64,
}

impl Faults {
    fn validate(&self) -> Result<(), String> {
        let rate_ok = |r: f64| (0.0..=1.0).contains(&r);
        if !rate_ok(self.error_rate) || !rate_ok(self.hang_rate) || self.error_rate + self.hang_rate > 1.0 {
            return Err("error_rate and hang_rate must be in [0, 1] and sum to at most 1".into());
        }
        if self.latency_ms > MAX_DELAY_MS || self.jitter_ms > MAX_DELAY_MS {
            return Err(format!("latency_ms and jitter_ms must be at most {MAX_DELAY_MS}"));
        }
        Ok(())
    }
}

/// A `[[mock.providers]]` entry the mock cannot run.
#[derive(Debug, thiserror::Error)]
#[error("mock.providers.{provider}: {problem}")]
pub struct InvalidMock {
    provider: String,
    problem: String,
}

/// Body of `PUT /_faults/{provider}`: every field optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsPatch {
    latency_ms: Option<u64>,
    jitter_ms: Option<u64>,
    error_rate: Option<f64>,
    hang_rate: Option<f64>,
}

/// A mock source's token endpoint and the tokens it issued.
struct Issuer {
    client: Option<(String, String)>,
    /// The service account whose assertions it takes: its key, `client_email` and `token_uri`.
    service_account: Option<(jsonwebtoken::DecodingKey, String, String)>,
    ttl: Duration,
    /// Tokens issued and not yet expired.
    tokens: moka::sync::Cache<String, ()>,
    requests: AtomicU64,
    /// Calls answered 401 for want of a valid token.
    refused: AtomicU64,
}

/// A mock source's own rate limit.
struct Limit {
    gcra: Gcra,
    retry_after_secs: u64,
    epoch: std::time::Instant,
    tat: Mutex<Option<u64>>,
    refused: AtomicU64,
}

impl Limit {
    /// Whether a call now is within the limit (a turn is taken if so).
    fn admit(&self) -> bool {
        let now = self.epoch.elapsed().as_micros() as u64;
        let mut tat = self.tat.lock().expect("limit lock");
        match self.gcra.take(*tat, None, now, 0) {
            (Turn::Go(_), next) => {
                *tat = next;
                true
            }
            (Turn::Refused(_), _) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

struct Provider {
    currency: Currency,
    shape: MockShape,
    unit: PriceUnit,
    /// (lower-case name, value)
    require_header: Option<(String, String)>,
    not_found_prefix: Option<String>,
    issuer: Option<Issuer>,
    limit: Option<Limit>,
    faults: Mutex<Faults>,
    calls: AtomicU64,
    /// Bounded: see the module doc.
    by_product: moka::sync::Cache<String, Arc<AtomicU64>>,
}

impl Provider {
    fn count(&self, product: &ProductId) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.by_product.get_with_by_ref(product.as_str(), Arc::default).fetch_add(1, Ordering::Relaxed);
    }
}

/// The simulated price APIs, validated and ready to serve.
#[derive(Clone)]
pub struct Mock {
    providers: Arc<HashMap<String, Provider>>,
}

impl Mock {
    pub fn new(providers: &[MockProviderSettings]) -> Result<Self, InvalidMock> {
        let mut built = HashMap::new();
        for p in providers {
            let faults = Faults {
                latency_ms: p.latency_ms,
                jitter_ms: p.jitter_ms,
                error_rate: p.error_rate,
                hang_rate: p.hang_rate,
            };
            let invalid = |problem: String| InvalidMock { provider: p.name.clone(), problem };
            faults.validate().map_err(invalid)?;
            let require_header = match &p.require_header {
                None => None,
                Some(line) => match line.split_once(':') {
                    Some((name, value)) if !name.trim().is_empty() => {
                        Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
                    }
                    _ => return Err(invalid(format!("require_header {line:?} is not \"Name: value\""))),
                },
            };
            let by_product =
                moka::sync::Cache::builder().max_capacity(STATS_MAX_PRODUCTS).time_to_idle(STATS_IDLE).build();
            let issuer = p.auth.as_ref().map(issuer).transpose().map_err(invalid)?;
            let limit = p.quota.map(|q| Limit {
                gcra: Gcra::of(&QuotaSettings { per_second: q.per_second, burst: q.burst }),
                retry_after_secs: q.retry_after_secs,
                epoch: std::time::Instant::now(),
                tat: Mutex::new(None),
                refused: AtomicU64::new(0),
            });
            let provider = Provider {
                currency: p.currency,
                shape: p.shape,
                unit: p.price_unit.unwrap_or(if p.shape == MockShape::Merchant {
                    PriceUnit::Micros
                } else {
                    PriceUnit::Whole
                }),
                require_header,
                not_found_prefix: p.not_found_prefix.clone(),
                issuer,
                limit,
                faults: Mutex::new(faults),
                calls: AtomicU64::new(0),
                by_product,
            };
            built.insert(p.name.clone(), provider);
        }
        Ok(Self { providers: Arc::new(built) })
    }

    /// The mock's router; `shutdown` also ends hanging calls.
    pub fn router(&self, shutdown: CancellationToken) -> Router {
        Router::new()
            .route(ECB_PATH, get(ecb_rates))
            .route("/{provider}/{*rest}", any(price))
            .route("/_stats", get(stats))
            .route("/_faults/{provider}", put(set_faults))
            .route("/_tokens/{provider}", axum::routing::delete(revoke_tokens))
            .with_state(MockState { providers: self.providers.clone(), shutdown })
    }
}

#[derive(Clone)]
struct MockState {
    providers: Arc<HashMap<String, Provider>>,
    shutdown: CancellationToken,
}

/// Serves the mock on `listener` until `shutdown` fires.
pub async fn serve(listener: TcpListener, mock: Mock, shutdown: CancellationToken) -> std::io::Result<()> {
    let app = mock.router(shutdown.clone());
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

async fn ecb_rates() -> Response {
    let today = time::OffsetDateTime::now_utc().date().to_string();
    ([("content-type", "text/xml")], crate::fx::ecb::render(&today, &ECB_RATES)).into_response()
}

/// How far one source's price strays from the product's base price: ±15 %.
const SOURCE_SPREAD_PER_100K: i64 = 15_000;
/// Base prices in euros run from this …
const BASE_PRICE_MIN_EUR: f64 = 5.0;
/// … to this, spread evenly on a log scale (as shop prices are: as many products under 30 €
/// as between 30 € and 200 €).
const BASE_PRICE_MAX_EUR: f64 = 2_000.0;

/// The price a provider quotes for a product, in `currency`: stable across runs and processes,
/// and believable as a comparison. Each product has one base price in euros (from
/// [`BASE_PRICE_MIN_EUR`] to [`BASE_PRICE_MAX_EUR`]); each source quotes it within ±15 %,
/// converted at [`ECB_RATES`] (a currency not listed there is taken at par) and rounded to the
/// currency's minor units.
pub fn price_for(provider: &str, product: &str, currency: Currency) -> Decimal {
    let base = base_price_eur(product);
    // 0.85000 ..= 1.15000, from the (provider, product) pair.
    let spread = (spread_hash([provider.as_bytes(), b"/", product.as_bytes()])
        % (2 * SOURCE_SPREAD_PER_100K as u64 + 1)) as i64
        - SOURCE_SPREAD_PER_100K;
    let factor = Decimal::ONE + Decimal::new(spread, 5);
    let rate = ECB_RATES
        .iter()
        .find(|(code, _)| *code == currency.as_str())
        .map_or(Decimal::ONE, |(_, rate)| rate.parse().expect("ECB_RATES are decimals"));
    let dp = currency.minor_units().unwrap_or(2);
    let price = (base * factor * rate).round_dp_with_strategy(dp, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    // Never free: at least one minor unit.
    price.max(Decimal::new(1, dp))
}

/// The product's base price in euros, to the cent.
fn base_price_eur(product: &str) -> Decimal {
    let unit = (spread_hash([product.as_bytes()]) % 1_000_000) as f64 / 1_000_000.0;
    let euros = BASE_PRICE_MIN_EUR * (BASE_PRICE_MAX_EUR / BASE_PRICE_MIN_EUR).powf(unit);
    // Cents from the float, then exact decimals from there on.
    Decimal::new((euros * 100.0).round() as i64, 2)
}

/// The parts' xxh3 hash (the crate the result tags use): stable across runs and processes, and
/// good enough to spread prices; not for security.
fn spread_hash<const N: usize>(parts: [&[u8]; N]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.digest()
}

fn problem(status: StatusCode, detail: impl Into<String>) -> Response {
    let body = json!({"type": "about:blank", "title": status.canonical_reason(), "status": status.as_u16(), "detail": detail.into()});
    (status, [("content-type", "application/problem+json")], body.to_string()).into_response()
}

async fn price(
    State(state): State<MockState>,
    Path((provider, rest)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(p) = state.providers.get(&provider) else {
        return problem(StatusCode::NOT_FOUND, format!("no provider named {provider:?}"));
    };
    if let Some(issuer) = &p.issuer
        && method == axum::http::Method::POST
        && rest.ends_with("token")
    {
        return issue_token(issuer, &headers, &body);
    }
    let Some(raw) = requested_id(&query, &body, &rest) else {
        return problem(StatusCode::BAD_REQUEST, "no product id in the query, the body or the path");
    };
    let product = match ProductId::parse(&raw) {
        Ok(id) => id,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e.to_string()),
    };
    p.count(&product);
    if let Some((name, value)) = &p.require_header
        && headers.get(name.as_str()).and_then(|v| v.to_str().ok()) != Some(value.as_str())
    {
        return problem(StatusCode::UNAUTHORIZED, format!("missing or wrong {name} header"));
    }
    if let Some(issuer) = &p.issuer {
        let token = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if !token.is_some_and(|t| issuer.tokens.contains_key(t)) {
            issuer.refused.fetch_add(1, Ordering::Relaxed);
            return problem(StatusCode::UNAUTHORIZED, "no valid bearer token");
        }
    }
    if let Some(limit) = &p.limit
        && !limit.admit()
    {
        let mut answer = problem(StatusCode::TOO_MANY_REQUESTS, "over the quota");
        if limit.retry_after_secs > 0 {
            answer.headers_mut().insert("retry-after", limit.retry_after_secs.into());
        }
        return answer;
    }
    if p.not_found_prefix.as_deref().is_some_and(|prefix| product.as_str().starts_with(prefix)) {
        if p.shape == MockShape::Ebay {
            return Json(json!({"href": format!("search?gtin={product}"), "total": 0, "limit": 50, "offset": 0}))
                .into_response();
        }
        return problem(StatusCode::NOT_FOUND, format!("{provider} does not sell {product}"));
    }
    let faults = *p.faults.lock().expect("faults lock");
    let roll = fastrand::f64();
    if roll < faults.error_rate + faults.hang_rate && roll >= faults.error_rate {
        wait_or_shutdown(tokio::time::sleep(MAX_HANG), &state.shutdown).await;
        return problem(StatusCode::SERVICE_UNAVAILABLE, "hung");
    }
    let jitter =
        if faults.jitter_ms == 0 { 0 } else { fastrand::i64(-(faults.jitter_ms as i64)..=faults.jitter_ms as i64) };
    let latency = Duration::from_millis((faults.latency_ms as i64 + jitter).max(0) as u64);
    wait_or_shutdown(tokio::time::sleep(latency), &state.shutdown).await;
    if roll < faults.error_rate {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "simulated outage");
    }
    let limit = query.get("limit").and_then(|l| l.parse::<usize>().ok());
    Json(answer(p, &provider, &product, limit)).into_response()
}

/// A service account's key, as the mock's `key_file` holds it.
#[derive(Deserialize)]
struct ServiceAccountKey {
    client_email: String,
    private_key: String,
    token_uri: String,
}

fn issuer(auth: &MockAuthSettings) -> Result<Issuer, String> {
    let client = match (&auth.client_id, &auth.client_secret) {
        (Some(id), Some(secret)) => Some((id.clone(), secret.expose().to_owned())),
        (None, None) => None,
        _ => return Err("auth: client_id and client_secret go together".into()),
    };
    let service_account = match &auth.key_file {
        None => None,
        Some(path) => {
            let text = std::fs::read(path).map_err(|e| format!("auth.key_file {path:?}: {e}"))?;
            let key: ServiceAccountKey =
                serde_json::from_slice(&text).map_err(|e| format!("auth.key_file {path:?}: {e}"))?;
            let private = jsonwebtoken::EncodingKey::from_rsa_pem(key.private_key.as_bytes())
                .map_err(|e| format!("auth.key_file {path:?}: {e}"))?;
            let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&private, jsonwebtoken::Algorithm::RS256)
                .map_err(|e| format!("auth.key_file {path:?}: {e}"))?;
            let public =
                jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|e| format!("auth.key_file {path:?}: {e}"))?;
            Some((public, key.client_email, key.token_uri))
        }
    };
    if client.is_none() && service_account.is_none() {
        return Err("auth: set client_id and client_secret, or key_file".into());
    }
    let ttl = Duration::from_secs(auth.token_ttl_secs.clamp(1, 86_400));
    Ok(Issuer {
        client,
        service_account,
        ttl,
        tokens: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(ttl).build(),
        requests: AtomicU64::new(0),
        refused: AtomicU64::new(0),
    })
}

/// The token endpoint (RFC 6749 §4.4 and RFC 7523), answering as RFC 6749 §5 says.
fn issue_token(issuer: &Issuer, headers: &HeaderMap, body: &[u8]) -> Response {
    use base64::Engine as _;
    issuer.requests.fetch_add(1, Ordering::Relaxed);
    let refuse = |status: StatusCode, error: &str| (status, Json(json!({"error": error}))).into_response();
    let Ok(form) = serde_urlencoded::from_bytes::<HashMap<String, String>>(body) else {
        return refuse(StatusCode::BAD_REQUEST, "invalid_request");
    };
    let granted = match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {
            let basic = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Basic "))
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|pair| pair.split_once(':').map(|(id, secret)| (id.to_owned(), secret.to_owned())));
            let posted = form.get("client_id").cloned().zip(form.get("client_secret").cloned());
            let presented = basic.or(posted);
            issuer.client.is_some() && presented == issuer.client
        }
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
            let Some((key, email, token_uri)) = &issuer.service_account else {
                return refuse(StatusCode::BAD_REQUEST, "unsupported_grant_type");
            };
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
            validation.set_audience(&[token_uri]);
            validation.set_issuer(&[email]);
            let assertion = form.get("assertion").map(String::as_str).unwrap_or_default();
            match jsonwebtoken::decode::<serde_json::Value>(assertion, key, &validation) {
                Ok(_) => true,
                Err(_) => return refuse(StatusCode::BAD_REQUEST, "invalid_grant"),
            }
        }
        _ => return refuse(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    };
    if !granted {
        return refuse(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let token = uuid::Uuid::new_v4().simple().to_string();
    issuer.tokens.insert(token.clone(), ());
    Json(json!({"access_token": token, "expires_in": issuer.ttl.as_secs(), "token_type": "Bearer"})).into_response()
}

async fn revoke_tokens(State(state): State<MockState>, Path(provider): Path<String>) -> Response {
    match state.providers.get(&provider).and_then(|p| p.issuer.as_ref()) {
        Some(issuer) => {
            issuer.tokens.invalidate_all();
            StatusCode::NO_CONTENT.into_response()
        }
        None => problem(StatusCode::NOT_FOUND, format!("no provider named {provider:?} with auth")),
    }
}

/// The product a request asks about; see the module doc.
fn requested_id(query: &HashMap<String, String>, body: &[u8], path: &str) -> Option<String> {
    const QUERY: [&str; 5] = ["gtin", "upc", "sku", "id", "product_id"];
    if let Some(id) = QUERY.iter().find_map(|k| query.get(*k)) {
        return Some(id.clone());
    }
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        let found = ["/ids/0", "/id", "/product_id"].iter().find_map(|p| json.pointer(p)?.as_str().map(str::to_owned));
        if found.is_some() {
            return found;
        }
    }
    let last = path.rsplit('/').next().filter(|s| !s.is_empty())?;
    // Best Buy's `products(upc=123)`.
    match last.split_once('=') {
        Some((_, value)) if last.ends_with(')') => Some(value.trim_end_matches(')').to_owned()),
        _ => Some(last.to_owned()),
    }
}

/// A price as the provider writes it, in its unit.
fn amount(p: &Provider, price: Decimal) -> String {
    match p.unit {
        PriceUnit::Whole => price.to_string(),
        PriceUnit::Cents => (price * Decimal::from(100)).normalize().to_string(),
        PriceUnit::Micros => (price * Decimal::from(1_000_000)).normalize().to_string(),
    }
}

/// The quote in the provider's shape and unit; `limit` keeps the first listings of a search.
fn answer(p: &Provider, provider: &str, product: &ProductId, limit: Option<usize>) -> serde_json::Value {
    let currency = p.currency.as_str();
    let price = price_for(provider, product.as_str(), p.currency);
    let text = amount(p, price);
    // A JSON number from the exact text: serde_json keeps its shortest form.
    let number = || text.parse::<f64>().map(|n| json!(n)).expect("a price is a number");
    let id = product.as_str();
    match p.shape {
        MockShape::Flat if p.unit == PriceUnit::Cents => {
            json!({"product_id": id, "price": number(), "currency": currency})
        }
        MockShape::Flat => json!({"product_id": id, "price": text, "currency": currency}),
        MockShape::Ebay => {
            let mut items = listings(p, provider, product);
            items.truncate(limit.unwrap_or(usize::MAX).max(1));
            json!({"total": items.len(), "itemSummaries": items})
        }
        MockShape::Merchant => json!({
            "name": format!("accounts/1/products/{id}"),
            "productAttributes": {"gtin": [id], "title": format!("Product {id}"), "price": {"amountMicros": text, "currencyCode": currency}}
        }),
        MockShape::Bestbuy => {
            json!({"from": 1, "to": 1, "total": 1, "products": [{"sku": id, "upc": id, "salePrice": number()}]})
        }
    }
}

/// An eBay search's listings for `product`, in relevance order (see the module doc): the
/// cheapest new one in the source's currency is [`price_for`].
fn listings(p: &Provider, provider: &str, product: &ProductId) -> Vec<serde_json::Value> {
    let id = product.as_str();
    let price = price_for(provider, id, p.currency);
    let dp = p.currency.minor_units().unwrap_or(2);
    let times = |price: Decimal, per_cent: i64| {
        (price * Decimal::new(per_cent, 2))
            .round_dp_with_strategy(dp, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
    };
    let seq = (xxhash_rust::xxh3::xxh3_64(format!("{provider}/{id}").as_bytes()) % 1_000_000_000) as u64;
    let listing = |n: u64, condition: &str, price: Decimal, currency: Currency| {
        let item = seq * 10 + n;
        json!({
            "itemId": format!("v1|{item}|0"),
            "title": format!("Product {id}"),
            "gtin": id,
            "condition": condition,
            "conditionId": if condition == "New" { "1000" } else { "3000" },
            "itemWebUrl": format!("https://www.ebay.example/itm/{item}"),
            "price": {"value": amount(p, price), "currency": currency.as_str()},
        })
    };
    let mut items =
        vec![listing(1, "Used", times(price, 80), p.currency), listing(2, "New", times(price, 110), p.currency)];
    // Worth more than the source's currency: nominally cheaper, dearer once converted.
    let gbp = Currency::parse("GBP").expect("GBP is ISO 4217");
    if p.currency != gbp {
        let in_gbp = price_for(provider, id, gbp);
        items.push(listing(3, "New", (in_gbp * Decimal::new(105, 2)).round_dp(2), gbp));
    }
    items.push(listing(4, "New", price, p.currency));
    items
}

async fn wait_or_shutdown(wait: impl Future<Output = ()>, shutdown: &CancellationToken) {
    tokio::select! {
        _ = wait => {}
        _ = shutdown.cancelled() => {}
    }
}

async fn stats(State(state): State<MockState>) -> Response {
    let mut providers = serde_json::Map::new();
    for (name, p) in state.providers.iter() {
        let by_product: BTreeMap<String, u64> =
            p.by_product.iter().map(|(product, n)| ((*product).clone(), n.load(Ordering::Relaxed))).collect();
        let tokens = p.issuer.as_ref().map_or(0, |i| i.requests.load(Ordering::Relaxed));
        let unauthorized = p.issuer.as_ref().map_or(0, |i| i.refused.load(Ordering::Relaxed));
        let rate_limited = p.limit.as_ref().map_or(0, |l| l.refused.load(Ordering::Relaxed));
        providers.insert(
            name.clone(),
            json!({"calls": p.calls.load(Ordering::Relaxed), "by_product": by_product,
                "token_requests": tokens, "unauthorized": unauthorized, "rate_limited": rate_limited}),
        );
    }
    Json(json!({ "providers": providers })).into_response()
}

async fn set_faults(State(state): State<MockState>, Path(provider): Path<String>, body: axum::body::Bytes) -> Response {
    let Some(p) = state.providers.get(&provider) else {
        return problem(StatusCode::NOT_FOUND, format!("no provider named {provider:?}"));
    };
    let patch: FaultsPatch = match serde_json::from_slice(&body) {
        Ok(patch) => patch,
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("invalid faults: {e}")),
    };
    let mut faults = p.faults.lock().expect("faults lock");
    let next = Faults {
        latency_ms: patch.latency_ms.unwrap_or(faults.latency_ms),
        jitter_ms: patch.jitter_ms.unwrap_or(faults.jitter_ms),
        error_rate: patch.error_rate.unwrap_or(faults.error_rate),
        hang_rate: patch.hang_rate.unwrap_or(faults.hang_rate),
    };
    if let Err(problem_text) = next.validate() {
        return problem(StatusCode::BAD_REQUEST, problem_text);
    }
    *faults = next;
    tracing::info!(%provider, ?next, "faults changed");
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn settings() -> Vec<MockProviderSettings> {
        vec![MockProviderSettings::new("acme", 0, Currency::parse("EUR").unwrap())]
    }

    async fn call(app: &Router, method: &str, uri: &str, body: &str) -> (StatusCode, serde_json::Value) {
        let req = Request::builder().method(method).uri(uri).body(Body::from(body.to_owned())).unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    #[test]
    fn prices_are_deterministic_and_believable() {
        assert_eq!(price_for("acme", "p1", eur()), price_for("acme", "p1", eur()));
        assert_ne!(price_for("acme", "p1", eur()), price_for("other", "p1", eur()));
        let sources = ["acme", "bestbuyish", "cheapo", "dealhub", "everyshop", "fastmart"];
        let (mut cheap, mut dear) = (0, 0);
        for i in 0..2000 {
            let product = format!("sku-{i}");
            let base = base_price_eur(&product);
            assert!(base >= Decimal::new(500, 2) && base <= Decimal::new(200_000, 2), "{base}");
            cheap += usize::from(base < Decimal::from(30));
            dear += usize::from(base > Decimal::from(500));
            for source in sources {
                let price = price_for(source, &product, eur());
                assert!(
                    price >= base * Decimal::new(85, 2) - Decimal::new(1, 2),
                    "{source} {product}: {price} vs {base}"
                );
                assert!(
                    price <= base * Decimal::new(115, 2) + Decimal::new(1, 2),
                    "{source} {product}: {price} vs {base}"
                );
                assert_eq!(price.scale(), 2, "{price}");
            }
        }
        // Spread over the range, not bunched: roughly a third under 30 €, a sixth over 500 €.
        assert!((500..900).contains(&cheap) && (250..500).contains(&dear), "{cheap} cheap, {dear} dear");
    }

    #[test]
    fn prices_in_other_currencies_follow_the_ecb_rates() {
        let code = |c| Currency::parse(c).unwrap();
        let (usd, jpy, aud) = (code("USD"), code("JPY"), code("AUD"));
        for i in 0..200 {
            let product = format!("p{i}");
            let in_eur = price_for("acme", &product, eur());
            let in_usd = price_for("acme", &product, usd);
            // Each price is rounded to the cent from the same exact one: they differ from the
            // rate by at most half a cent on each side, the euro's half cent scaled by the rate.
            let (rate, half_cent) = (Decimal::new(10876, 4), Decimal::new(5, 3));
            let bound = half_cent + half_cent * rate;
            assert!((in_usd - in_eur * rate).abs() <= bound, "{in_usd} vs {in_eur}");
            assert_eq!(price_for("acme", &product, jpy).scale(), 0, "yen have no minor units");
            assert_eq!(price_for("acme", &product, aud), in_eur, "not in ECB_RATES: at par");
        }
    }

    #[tokio::test]
    async fn quotes_counts_and_takes_faults() {
        let app = Mock::new(&settings()).unwrap().router(CancellationToken::new());
        let (status, body) = call(&app, "GET", "/acme/prices/p1", "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["price"], price_for("acme", "p1", eur()).to_string());
        assert_eq!(body["currency"], "EUR");
        assert_eq!(call(&app, "GET", "/nobody/prices/p1", "").await.0, StatusCode::NOT_FOUND);

        assert_eq!(call(&app, "PUT", "/_faults/acme", r#"{"error_rate": 1.0}"#).await.0, StatusCode::NO_CONTENT);
        assert_eq!(call(&app, "GET", "/acme/prices/p1", "").await.0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(call(&app, "PUT", "/_faults/acme", r#"{"error_rate": 1.5}"#).await.0, StatusCode::BAD_REQUEST);
        assert_eq!(call(&app, "PUT", "/_faults/acme", r#"{"eror_rate": 1}"#).await.0, StatusCode::BAD_REQUEST);
        let huge = r#"{"jitter_ms": 18446744073709551615}"#;
        assert_eq!(call(&app, "PUT", "/_faults/acme", huge).await.0, StatusCode::BAD_REQUEST);
        assert_eq!(call(&app, "PUT", "/_faults/nobody", r#"{}"#).await.0, StatusCode::NOT_FOUND);

        let (_, stats) = call(&app, "GET", "/_stats", "").await;
        assert_eq!(stats["providers"]["acme"]["calls"], 2);
        assert_eq!(stats["providers"]["acme"]["by_product"]["p1"], 2);
    }

    #[test]
    fn invalid_faults_in_configuration_are_refused() {
        let mut bad = settings();
        bad[0].error_rate = 0.7;
        bad[0].hang_rate = 0.5;
        let err = Mock::new(&bad).err().unwrap().to_string();
        assert!(err.starts_with("mock.providers.acme:"), "{err}");
        let mut bad = settings();
        bad[0].latency_ms = MAX_DELAY_MS + 1;
        assert!(Mock::new(&bad).is_err());
    }

    #[test]
    fn per_product_counts_are_bounded() {
        let mock = Mock::new(&settings()).unwrap();
        let acme = &mock.providers["acme"];
        let extra = 1_000;
        for i in 0..STATS_MAX_PRODUCTS + extra {
            acme.count(&ProductId::parse(&format!("p{i}")).unwrap());
        }
        acme.by_product.run_pending_tasks();
        assert!(acme.by_product.entry_count() <= STATS_MAX_PRODUCTS, "{}", acme.by_product.entry_count());
        assert_eq!(acme.calls.load(Ordering::Relaxed), STATS_MAX_PRODUCTS + extra);
    }
}
