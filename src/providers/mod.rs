//! The price sources: one HTTP client per configured `[[providers]]` entry and the
//! concurrent fan-out over all of them.
//!
//! Invariant: [`PriceSources::fan_out`] returns one outcome per source, and never takes
//! longer than `consumer.provider_timeout_ms` (plus scheduling): a slow, failing or hanging
//! source becomes a [`Failure`] and does not hold up the others.

use std::time::{Duration, Instant};

use futures::future::join_all;
use rust_decimal::Decimal;
use serde::Deserialize;
use tracing::Instrument;

use crate::domain::{Currency, Failure, FailureReason, ProductId, Quote};
use crate::settings::ProviderSettings;

/// The body a price API answers with.
#[derive(Debug, Deserialize)]
struct PriceBody {
    product_id: String,
    #[serde(with = "rust_decimal::serde::str")]
    price: Decimal,
    currency: Currency,
}

#[derive(Clone, Debug)]
struct Source {
    name: String,
    url_template: String,
}

/// Every configured price API, sharing one connection pool.
#[derive(Clone)]
pub struct PriceSources {
    sources: Vec<Source>,
    http: reqwest::Client,
    timeout: Duration,
}

impl PriceSources {
    pub fn new(providers: &[ProviderSettings], timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        let sources = providers.iter().map(|p| Source { name: p.name.clone(), url_template: p.url.clone() }).collect();
        Ok(Self { sources, http, timeout })
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Asks every source at once; one outcome per source, in configuration order.
    pub async fn fan_out(&self, id: &ProductId) -> Vec<Result<Quote, Failure>> {
        join_all(self.sources.iter().map(|source| {
            let span = tracing::info_span!("provider_call", provider = %source.name, product_id = %id);
            self.ask(source, id).instrument(span)
        }))
        .await
    }

    async fn ask(&self, source: &Source, id: &ProductId) -> Result<Quote, Failure> {
        let started = Instant::now();
        let fail = |reason, detail: String| Failure { provider: source.name.clone(), reason, detail };
        // reqwest's own timeout covers the body too; this outer bound is the guarantee.
        let outcome = match tokio::time::timeout(self.timeout, self.call(source, id)).await {
            Ok(outcome) => outcome,
            Err(_) => Err((FailureReason::Timeout, format!("no answer within {} ms", self.timeout.as_millis()))),
        };
        let latency_ms = started.elapsed().as_millis() as u64;
        match outcome {
            Ok(body) => {
                tracing::debug!(latency_ms, price = %body.price, "quote");
                Ok(Quote { provider: source.name.clone(), price: body.price, currency: body.currency, latency_ms })
            }
            Err((reason, detail)) => {
                tracing::info!(latency_ms, ?reason, %detail, "provider failed");
                Err(fail(reason, detail))
            }
        }
    }

    async fn call(&self, source: &Source, id: &ProductId) -> Result<PriceBody, (FailureReason, String)> {
        let url = source.url_template.replace("{product_id}", id.as_str());
        let response = self.http.get(&url).send().await.map_err(classify)?;
        let status = response.status();
        if !status.is_success() {
            return Err((FailureReason::HttpStatus, status.to_string()));
        }
        let bytes = response.bytes().await.map_err(classify)?;
        let body: PriceBody =
            serde_json::from_slice(&bytes).map_err(|e| (FailureReason::InvalidResponse, format!("bad body: {e}")))?;
        if body.product_id != id.as_str() {
            return Err((FailureReason::InvalidResponse, format!("answered for product {:?}", body.product_id)));
        }
        if body.price <= Decimal::ZERO {
            return Err((FailureReason::InvalidResponse, format!("non-positive price {}", body.price)));
        }
        Ok(body)
    }
}

fn classify(e: reqwest::Error) -> (FailureReason, String) {
    let reason = if e.is_timeout() {
        FailureReason::Timeout
    } else if e.is_connect() {
        FailureReason::Connect
    } else {
        FailureReason::InvalidResponse
    };
    // The Display of a reqwest error omits its cause; the cause says what went wrong.
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    (reason, detail)
}
