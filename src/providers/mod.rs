//! The price sources: one client per configured `[[providers]]` entry, each behind a
//! bulkhead, a bounded retry and a circuit breaker, and the concurrent fan-out over all.
//! How a source is asked is its [`Request`] (method, URL, headers, body, with `${NAME}`
//! read from the environment at build time); how its answer is read, its [`Mapping`]
//! (JSON Pointers, price unit, default currency, not-found statuses).
//!
//! A status the source lists as `not_found` is an answer ("not sold here"): it is never
//! retried and never counts against the breaker.
//!
//! Invariant: [`PriceSources::fan_out`] returns one outcome per source and never takes
//! longer than `consumer.provider_timeout_ms` (plus scheduling): retries, waits for a
//! bulkhead slot and back-offs all spend the same per-source budget, never extend it. A slow,
//! failing or hanging source becomes a [`Failure`] and does not hold up the others.

mod breaker;
mod request;
mod response;

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::future::join_all;
use reqwest::StatusCode;
use rust_decimal::Decimal;
use tokio::sync::Semaphore;
use tracing::Instrument;

pub use breaker::{Breaker, Permit};
pub use request::{ConfigError, Request};
pub use response::Mapping;

use crate::domain::{Currency, Failure, FailureReason, ProductId, Quote};
use crate::settings::ProviderSettings;

/// Largest response body read from a price API.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A retry is only worth starting with at least this much budget left.
const MIN_ATTEMPT: Duration = Duration::from_millis(20);

/// Why the sources cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot build the HTTP client for the price sources")]
    Http(#[from] reqwest::Error),
}

/// Why one attempt failed, and whether another attempt might help.
#[derive(Debug)]
struct AttemptError {
    reason: FailureReason,
    detail: String,
    retryable: bool,
}

impl AttemptError {
    fn new(reason: FailureReason, detail: impl Into<String>) -> Self {
        let retryable = matches!(reason, FailureReason::Timeout | FailureReason::Connect);
        Self { reason, detail: detail.into(), retryable }
    }
}

struct Source {
    name: String,
    request: Request,
    mapping: Mapping,
    attempt_timeout: Option<Duration>,
    retries: u32,
    retry_backoff: Duration,
    bulkhead: Semaphore,
    breaker: Breaker,
}

/// Every configured price API, sharing one connection pool.
#[derive(Clone)]
pub struct PriceSources {
    sources: Arc<Vec<Source>>,
    http: reqwest::Client,
    timeout: Duration,
}

impl PriceSources {
    /// The sources, with `${NAME}` read from the process environment.
    pub fn new(providers: &[ProviderSettings], timeout: Duration) -> Result<Self, BuildError> {
        Self::with_env(providers, timeout, &|name| std::env::var(name).ok())
    }

    /// The sources, with `${NAME}` read from `env`.
    pub fn with_env(
        providers: &[ProviderSettings],
        timeout: Duration,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, BuildError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            // Provider URLs come from configuration only; a redirect must not move the call elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let sources = providers
            .iter()
            .map(|p| {
                Ok(Source {
                    name: p.name.clone(),
                    request: Request::new(p, env)?,
                    mapping: Mapping::new(p.response()),
                    attempt_timeout: p.attempt_timeout,
                    retries: p.retries,
                    retry_backoff: p.retry_backoff,
                    bulkhead: Semaphore::new(p.max_concurrency),
                    breaker: Breaker::new(p.breaker_failures, p.breaker_cooldown),
                })
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Self { sources: Arc::new(sources), http, timeout })
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Asks every source at once; one outcome per source, in configuration order.
    pub async fn fan_out(&self, id: &ProductId) -> Vec<Result<Quote, Failure>> {
        self.fan_out_reporting(id, |_| {}).await
    }

    /// [`PriceSources::fan_out`], handing each outcome to `report` the moment it is known.
    pub async fn fan_out_reporting(
        &self,
        id: &ProductId,
        report: impl Fn(&Result<Quote, Failure>),
    ) -> Vec<Result<Quote, Failure>> {
        let report = &report;
        join_all(self.sources.iter().map(|source| {
            let span = tracing::info_span!(
                "provider_call",
                otel.kind = "client",
                provider = %source.name,
                product_id = %id,
                outcome = tracing::field::Empty,
                latency_ms = tracing::field::Empty,
            );
            async move {
                let outcome = self.ask(source, id).await;
                report(&outcome);
                outcome
            }
            .instrument(span)
        }))
        .await
    }

    async fn ask(&self, source: &Source, id: &ProductId) -> Result<Quote, Failure> {
        let started = Instant::now();
        let outcome = self.ask_within(source, id, started + self.timeout).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let provider = source.name.clone();
        let result = match &outcome {
            Ok(_) => "ok",
            Err(e) => e.reason.as_str(),
        };
        let span = tracing::Span::current();
        span.record("outcome", result);
        span.record("latency_ms", latency_ms);
        metrics::counter!("pricefront_provider_calls_total", "provider" => provider.clone(), "outcome" => result)
            .increment(1);
        metrics::histogram!("pricefront_provider_call_duration_seconds", "provider" => provider.clone())
            .record(started.elapsed().as_secs_f64());
        let open = source.breaker.is_open(Instant::now());
        metrics::gauge!("pricefront_circuit_open", "provider" => provider).set(if open { 1.0 } else { 0.0 });
        match outcome {
            Ok((price, currency)) => {
                tracing::debug!(latency_ms, %price, "quote");
                Ok(Quote::new(source.name.clone(), price, currency, latency_ms))
            }
            Err(e) => {
                tracing::info!(latency_ms, reason = ?e.reason, detail = %e.detail, "provider failed");
                Err(Failure { provider: source.name.clone(), reason: e.reason, detail: e.detail })
            }
        }
    }

    /// Bulkhead, then attempts through the breaker with jittered back-off, all before `deadline`.
    async fn ask_within(
        &self,
        source: &Source,
        id: &ProductId,
        deadline: Instant,
    ) -> Result<(Decimal, Currency), AttemptError> {
        let budget_ms = self.timeout.as_millis();
        let no_slot = || AttemptError::new(FailureReason::Timeout, format!("no free call slot within {budget_ms} ms"));
        let _slot = tokio::time::timeout_at(deadline.into(), source.bulkhead.acquire())
            .await
            .map_err(|_| no_slot())?
            .expect("bulkhead is never closed");
        // A slot freed at the very end of the budget is no use: don't send a doomed call.
        if deadline.saturating_duration_since(Instant::now()) < MIN_ATTEMPT {
            return Err(no_slot());
        }
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(source.retry_backoff)
            .with_jitter()
            .with_max_times(source.retries as usize)
            .build();
        let mut attempts = 0;
        loop {
            if source.breaker.try_acquire(Instant::now()) == Permit::Refused {
                let detail = "skipped: circuit open after repeated failures";
                return Err(AttemptError::new(FailureReason::CircuitOpen, detail));
            }
            attempts += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt_budget = source.attempt_timeout.map_or(left, |t| t.min(left));
            let outcome = match tokio::time::timeout(attempt_budget, self.call(source, id)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(AttemptError::new(
                    FailureReason::Timeout,
                    format!("no answer within {} ms", attempt_budget.as_millis()),
                )),
            };
            // "Not sold here" is a healthy answer.
            let answered = outcome.is_ok() || outcome.as_ref().is_err_and(|e| e.reason == FailureReason::NotFound);
            if source.breaker.record(answered, Instant::now()) {
                tracing::warn!(provider = %source.name, "circuit opened");
            }
            let mut error = match outcome {
                Ok(body) => return Ok(body),
                Err(e) => e,
            };
            let delay = backoff.next().filter(|d| Instant::now() + *d + MIN_ATTEMPT < deadline);
            match delay {
                Some(delay) if error.retryable => {
                    tracing::debug!(attempt = attempts, reason = ?error.reason, delay_ms = delay.as_millis() as u64, "retrying");
                    tokio::time::sleep(delay).await;
                }
                _ => {
                    if attempts > 1 {
                        error.detail = format!("{} (after {attempts} attempts)", error.detail);
                    }
                    return Err(error);
                }
            }
        }
    }

    async fn call(&self, source: &Source, id: &ProductId) -> Result<(Decimal, Currency), AttemptError> {
        let mut response = source.request.build(&self.http, id).send().await.map_err(classify)?;
        let status = response.status();
        if source.mapping.is_not_found(status) {
            return Err(AttemptError::new(FailureReason::NotFound, status.to_string()));
        }
        if !status.is_success() {
            let mut e = AttemptError::new(FailureReason::HttpStatus, status.to_string());
            e.retryable = matches!(
                status,
                StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
            );
            return Err(e);
        }
        let too_big =
            || AttemptError::new(FailureReason::InvalidResponse, format!("body larger than {MAX_BODY_BYTES} bytes"));
        if response.content_length().is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(too_big());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(too_big());
            }
            bytes.extend_from_slice(&chunk);
        }
        let invalid = |detail: String| AttemptError::new(FailureReason::InvalidResponse, detail);
        let answer: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| invalid(format!("body is not JSON: {e}")))?;
        source.mapping.read(&answer, id).map_err(invalid)
    }
}

fn classify(e: reqwest::Error) -> AttemptError {
    // The URL may carry a credential (`?key=${API_KEY}`): never in a detail.
    let e = e.without_url();
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
    AttemptError::new(reason, detail)
}
