//! The price sources: one client per configured `[[providers]]` entry, each behind a
//! bulkhead, a bounded retry and a circuit breaker, and the concurrent fan-out over all.
//! How a source is asked is its [`Request`] (method, URL, headers, body, with `${NAME}`
//! read from the environment at build time); how its answer is read, its [`Mapping`]
//! (JSON Pointers, offer lists, price unit, default currency, not-found statuses); its
//! credentials, an [`Auth`] that renews itself; its quota, a limiter the fleet shares
//! ([`Quotas`]).
//!
//! One call: a bulkhead slot, the breaker's permit, a token (`[providers.auth]`), a turn
//! (the source's own pause after a `Retry-After`, then the fleet's quota), the request. A 401
//! with a token renews it and repeats the call once.
//!
//! What a failure says about the source's health decides whether it counts against its
//! breaker: a timeout, a connection error or a 5xx does; an answer about this product (a 4xx,
//! `not_found`, `invalid_response`) or about our pace (`rate_limited`) does not, nor does a
//! failure before the source was called (`auth_failed`, a quota with no turn in time). So
//! unknown products or a quota cannot take a source away from everybody.
//!
//! A `429`, or a `503` with `Retry-After`, is `rate_limited`: its `Retry-After` (seconds or an
//! HTTP date; 1 s when absent, at most [`MAX_PAUSE`]) pauses every call to the source from this
//! consumer, and from the whole fleet when the source has a quota (the pause is kept in its
//! limiter).
//!
//! Invariant: [`PriceSources::fan_out`] returns one outcome per source asked and never takes
//! longer than `consumer.provider_timeout_ms` (plus scheduling): retries, waits for a
//! bulkhead slot, a token or a turn, and back-offs all spend the same per-source budget, never
//! extend it. A slow, failing or hanging source becomes a [`Failure`] and does not hold up the
//! others.

mod auth;
mod breaker;
mod quota;
mod request;
mod response;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::future::join_all;
use reqwest::StatusCode;
use tracing::Instrument;

pub use auth::{Auth, AuthError, FAILURE_HOLD};
pub use breaker::{Breaker, Permit};
pub use quota::{Gcra, LocalQuotas, MAX_TOLERANCE, PAUSE_CHECK, Quotas, Turn, Unavailable};
pub use request::{ConfigError, Request};
pub use response::{Mapping, Offer, Unread};

use crate::domain::{Failure, FailureReason, ProductId, Quote, Rates};
use crate::settings::{ProviderSettings, QuotaSettings};

/// Largest response body read from a price API.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest a source's `Retry-After` pauses it.
pub const MAX_PAUSE: Duration = Duration::from_secs(3600);
/// The pause after a 429 that gives no `Retry-After`.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(1);
/// A call (or a retry) is only worth starting with at least this much budget left.
const MIN_ATTEMPT: Duration = Duration::from_millis(20);
/// A turn (quota or pause) is only worth waiting for if it leaves the call at least this share
/// of the budget (a quarter).
const CALL_SHARE: u32 = 4;
const CIRCUIT_OPEN: &str = "skipped: circuit open after repeated failures";

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
    http_status: Option<u16>,
    /// The source asked for no calls for this long (`Retry-After`).
    pause: Option<Duration>,
    /// Whether the source was called (a failure before the call says nothing of its health).
    called: bool,
}

impl AttemptError {
    fn new(reason: FailureReason, detail: impl Into<String>) -> Self {
        let retryable = matches!(reason, FailureReason::Timeout | FailureReason::Connect);
        Self { reason, detail: detail.into(), retryable, http_status: None, pause: None, called: true }
    }

    /// A failure before the source was called.
    fn before_call(reason: FailureReason, detail: impl Into<String>) -> Self {
        Self { called: false, ..Self::new(reason, detail) }
    }

    fn status(reason: FailureReason, status: StatusCode, detail: impl Into<String>) -> Self {
        Self { http_status: Some(status.as_u16()), ..Self::new(reason, detail) }
    }

    /// What it says about the source's health, for its breaker: `None` if it says nothing.
    fn healthy(&self) -> Option<bool> {
        if !self.called {
            return None;
        }
        let failing = matches!(self.reason, FailureReason::Timeout | FailureReason::Connect)
            || (self.reason == FailureReason::HttpStatus && self.http_status.is_some_and(|s| s >= 500));
        Some(!failing)
    }
}

struct Source {
    name: String,
    request: Request,
    mapping: Mapping,
    attempt_timeout: Option<Duration>,
    retries: u32,
    retry_backoff: Duration,
    bulkhead: tokio::sync::Semaphore,
    breaker: Breaker,
    auth: Option<Arc<Auth>>,
    quota: Option<QuotaSettings>,
    /// No call before this (the source's `Retry-After`, heard here or by the fleet).
    paused_until: Mutex<Option<Instant>>,
    /// When this consumer last looked whether the fleet paused the source.
    pause_checked: Mutex<Option<Instant>>,
}

impl Source {
    fn paused_until(&self) -> Option<Instant> {
        *self.paused_until.lock().expect("pause lock")
    }
}

/// Every configured price API, sharing one connection pool.
#[derive(Clone)]
pub struct PriceSources {
    sources: Arc<Vec<Source>>,
    http: reqwest::Client,
    timeout: Duration,
    quotas: Arc<dyn Quotas>,
}

impl PriceSources {
    /// The sources, with `${NAME}` read from the process environment; quotas kept by this
    /// process alone until [`Self::with_quotas`] shares them.
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
            .enumerate()
            .map(|(i, p)| {
                let label = ProviderSettings::label(i, &p.name);
                let auth =
                    p.auth.as_ref().map(|a| Auth::new(&p.name, &label, a, http.clone(), timeout, env)).transpose()?;
                Ok(Source {
                    name: p.name.clone(),
                    request: Request::new(p, &label, env)?,
                    mapping: Mapping::new(p.response()),
                    attempt_timeout: p.attempt_timeout,
                    retries: p.retries,
                    retry_backoff: p.retry_backoff,
                    bulkhead: tokio::sync::Semaphore::new(p.max_concurrency),
                    breaker: Breaker::new(p.breaker_failures, p.breaker_cooldown),
                    auth,
                    quota: p.quota,
                    paused_until: Mutex::new(None),
                    pause_checked: Mutex::new(None),
                })
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Self { sources: Arc::new(sources), http, timeout, quotas: Arc::new(LocalQuotas::default()) })
    }

    /// Keeps the sources' quotas (and the pauses their `Retry-After`s ask for) in `quotas`,
    /// shared with every consumer that uses the same.
    pub fn with_quotas(mut self, quotas: Arc<dyn Quotas>) -> Self {
        self.quotas = quotas;
        self
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The sources' names, in configuration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().map(|s| s.name.as_str())
    }

    /// Asks every source at once; one outcome per source, in configuration order. A list of
    /// offers is compared in the base currency of `rates`.
    pub async fn fan_out(&self, id: &ProductId, rates: &Rates) -> Vec<Result<Quote, Failure>> {
        self.fan_out_to(id, rates, |_| true, |_| {}).await
    }

    /// Asks the sources `ask` names at once, handing each outcome to `report` the moment it
    /// is known; one outcome per source asked, in configuration order.
    pub async fn fan_out_to(
        &self,
        id: &ProductId,
        rates: &Rates,
        ask: impl Fn(&str) -> bool,
        report: impl Fn(&Result<Quote, Failure>),
    ) -> Vec<Result<Quote, Failure>> {
        let report = &report;
        join_all(self.sources.iter().filter(|source| ask(&source.name)).map(|source| {
            let span = tracing::info_span!(
                "provider_call",
                otel.kind = "client",
                provider = %source.name,
                product_id = %id,
                outcome = tracing::field::Empty,
                latency_ms = tracing::field::Empty,
            );
            async move {
                let outcome = self.ask(source, id, rates).await;
                report(&outcome);
                outcome
            }
            .instrument(span)
        }))
        .await
    }

    async fn ask(&self, source: &Source, id: &ProductId, rates: &Rates) -> Result<Quote, Failure> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + self.timeout);
        let outcome = self.ask_within(source, id, rates, deadline).await;
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
            Ok(offer) => {
                tracing::debug!(latency_ms, price = %offer.price, "quote");
                let mut quote = Quote::new(source.name.clone(), offer.price, offer.currency, latency_ms);
                quote.offer_id = offer.offer_id;
                quote.url = offer.url;
                Ok(quote)
            }
            Err(e) => {
                tracing::info!(latency_ms, reason = e.reason.as_str(), detail = %e.detail, "provider failed");
                let mut failure = Failure::new(source.name.clone(), e.reason, e.detail);
                failure.http_status = e.http_status;
                Err(failure)
            }
        }
    }

    /// Bulkhead, then attempts through the breaker with jittered back-off, all before `deadline`.
    async fn ask_within(
        &self,
        source: &Source,
        id: &ProductId,
        rates: &Rates,
        deadline: tokio::time::Instant,
    ) -> Result<Offer, AttemptError> {
        let budget_ms = self.timeout.as_millis();
        let no_slot =
            || AttemptError::before_call(FailureReason::Timeout, format!("no free call slot within {budget_ms} ms"));
        let _slot = tokio::time::timeout_at(deadline, source.bulkhead.acquire())
            .await
            .map_err(|_| no_slot())?
            .expect("bulkhead is never closed");
        // A slot freed at the very end of the budget is no use: don't send a doomed call.
        if deadline.saturating_duration_since(tokio::time::Instant::now()) < MIN_ATTEMPT {
            return Err(no_slot());
        }
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(source.retry_backoff)
            .with_jitter()
            .with_max_times(source.retries as usize)
            .build();
        let mut attempts = 0;
        loop {
            // Without taking its one probe: a call about to be refused spends no token or turn.
            if source.breaker.would_refuse(Instant::now()) {
                return Err(AttemptError::before_call(FailureReason::CircuitOpen, CIRCUIT_OPEN));
            }
            attempts += 1;
            let outcome = self.attempt(source, id, rates, deadline).await;
            let mut error = match outcome {
                Ok(offer) => return Ok(offer),
                Err(e) => e,
            };
            if let Some(pause) = error.pause {
                self.pause(source, pause).await;
                // Worth another attempt only if the pause ends while a call still fits.
                error.retryable = tokio::time::Instant::now() + pause < self.latest_turn(deadline);
            }
            let now = tokio::time::Instant::now();
            let delay = backoff.next().filter(|d| now + *d + MIN_ATTEMPT < deadline);
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

    /// One attempt: a token, a turn, the breaker's permit, the call (its outcome told to the
    /// breaker); a 401 with a token renews it and calls once more.
    async fn attempt(
        &self,
        source: &Source,
        id: &ProductId,
        rates: &Rates,
        deadline: tokio::time::Instant,
    ) -> Result<Offer, AttemptError> {
        let mut renewed = false;
        loop {
            let token = match &source.auth {
                Some(auth) => Some(
                    auth.token(deadline)
                        .await
                        .map_err(|e| AttemptError::before_call(FailureReason::AuthFailed, e.0))?,
                ),
                None => None,
            };
            self.turn(source, deadline).await?;
            // Taken last, so nothing before the call can leave a half-open breaker's probe unused.
            if source.breaker.try_acquire(Instant::now()) == Permit::Refused {
                return Err(AttemptError::before_call(FailureReason::CircuitOpen, CIRCUIT_OPEN));
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let budget = source.attempt_timeout.map_or(left, |t| t.min(left));
            let outcome = match tokio::time::timeout(budget, self.call(source, id, rates, token.as_deref())).await {
                Ok(outcome) => outcome,
                Err(_) => Err(AttemptError::new(
                    FailureReason::Timeout,
                    format!("no answer within {} ms", budget.as_millis()),
                )),
            };
            let healthy = match &outcome {
                Ok(_) => true,
                Err(e) => e.healthy().unwrap_or(true),
            };
            if source.breaker.record(healthy, Instant::now()) {
                tracing::warn!(provider = %source.name, "circuit opened");
            }
            match (outcome, &token, &source.auth) {
                (Err(e), Some(token), Some(auth)) if e.http_status == Some(401) => {
                    auth.refused(token);
                    if renewed {
                        return Err(AttemptError {
                            reason: FailureReason::AuthFailed,
                            detail: "the source refused a token fresh from its token endpoint: 401 Unauthorized".into(),
                            ..e
                        });
                    }
                    tracing::info!(provider = %source.name, "the source refused its token; renewing it");
                    renewed = true;
                }
                (outcome, _, _) => return outcome,
            }
        }
    }

    /// The latest a call may start (a turn waited for): a quarter of the budget left
    /// ([`CALL_SHARE`]).
    fn latest_turn(&self, deadline: tokio::time::Instant) -> tokio::time::Instant {
        let reserve = (self.timeout / CALL_SHARE).max(MIN_ATTEMPT);
        deadline.checked_sub(reserve).unwrap_or(deadline)
    }

    /// Waits for this source's turn: its pause (`Retry-After`, its own or the fleet's), then
    /// its quota, then its pause again if one began meanwhile; refused (`rate_limited`) when the
    /// turn would come after [`Self::latest_turn`].
    async fn turn(&self, source: &Source, deadline: tokio::time::Instant) -> Result<(), AttemptError> {
        let latest = self.latest_turn(deadline);
        let started = tokio::time::Instant::now();
        let paused = self.wait_out_pause(source, latest).await?;
        let Some(quota) = &source.quota else {
            if paused {
                metrics::histogram!("pricefront_provider_quota_wait_seconds", "provider" => source.name.clone())
                    .record(started.elapsed().as_secs_f64());
            }
            return Ok(());
        };
        let max_wait = latest.saturating_duration_since(tokio::time::Instant::now());
        match self.quotas.take(&source.name, quota, max_wait).await {
            Ok(Turn::Go(wait)) => {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                    // A 429 heard while this turn waited holds it too.
                    self.wait_out_pause(source, latest).await?;
                }
                metrics::histogram!("pricefront_provider_quota_wait_seconds", "provider" => source.name.clone())
                    .record(started.elapsed().as_secs_f64());
                Ok(())
            }
            Ok(Turn::Refused(next)) => Err(AttemptError::before_call(
                FailureReason::RateLimited,
                format!("the quota's next turn is in {} ms, past this call's budget", next.as_millis()),
            )),
            Err(e) => Err(AttemptError::before_call(FailureReason::RateLimited, e.to_string())),
        }
    }

    /// Waits until the source's pause ends (true if it waited), or refuses if it ends after
    /// `latest`. Looks whether the fleet paused it at most every [`PAUSE_CHECK`].
    async fn wait_out_pause(&self, source: &Source, latest: tokio::time::Instant) -> Result<bool, AttemptError> {
        let due = {
            let mut checked = source.pause_checked.lock().expect("pause lock");
            let due = checked.is_none_or(|at| at.elapsed() >= PAUSE_CHECK);
            if due {
                *checked = Some(Instant::now());
            }
            due
        };
        if due {
            match self.quotas.paused(&source.name).await {
                Ok(Some(left)) => {
                    self.paused_until(source, left);
                }
                Ok(None) => {}
                // A pause nobody can read is one this call does not know of; the source says so again.
                Err(e) => {
                    tracing::debug!(provider = %source.name, error = %e, "cannot look whether the fleet paused the source")
                }
            }
        }
        let now = tokio::time::Instant::now();
        let Some(until) = source.paused_until().map(tokio::time::Instant::from_std).filter(|until| *until > now) else {
            return Ok(false);
        };
        if until > latest {
            let detail = format!("paused by the source's Retry-After for {} ms more", (until - now).as_millis());
            return Err(AttemptError::before_call(FailureReason::RateLimited, detail));
        }
        tokio::time::sleep_until(until).await;
        Ok(true)
    }

    /// Holds this consumer's calls to `source` for `pause` from now (unless held longer); true
    /// if that extended the hold.
    fn paused_until(&self, source: &Source, pause: Duration) -> bool {
        let until = Instant::now() + pause.min(MAX_PAUSE);
        let mut paused = source.paused_until.lock().expect("pause lock");
        let extended = paused.is_none_or(|current| current < until);
        if extended {
            *paused = Some(until);
        }
        extended
    }

    /// Stops calls to `source` for `pause` (its `Retry-After`): from this consumer, and, through
    /// the quotas' store, from the fleet (with a quota, its calls then resume at its pace).
    async fn pause(&self, source: &Source, pause: Duration) {
        let pause = pause.min(MAX_PAUSE);
        if !self.paused_until(source, pause) {
            return;
        }
        tracing::warn!(provider = %source.name, pause_ms = pause.as_millis() as u64, "the source asked for fewer calls (429 or Retry-After); pausing calls to it");
        metrics::counter!("pricefront_provider_pauses_total", "provider" => source.name.clone()).increment(1);
        if let Err(e) = self.quotas.pause(&source.name, source.quota.as_ref(), pause).await {
            tracing::warn!(provider = %source.name, error = %e, "cannot pause the fleet's calls; this consumer pauses alone");
        }
    }

    async fn call(
        &self,
        source: &Source,
        id: &ProductId,
        rates: &Rates,
        token: Option<&auth::Token>,
    ) -> Result<Offer, AttemptError> {
        let mut request = source.request.build(&self.http, id);
        if let Some(token) = token {
            request = request.header(reqwest::header::AUTHORIZATION, token.header());
        }
        let mut response = request.send().await.map_err(classify)?;
        let status = response.status();
        if source.mapping.is_not_found(status) {
            return Err(AttemptError::status(FailureReason::NotFound, status, status.to_string()));
        }
        let retry_after = retry_after(response.headers(), SystemTime::now());
        if status == StatusCode::TOO_MANY_REQUESTS
            || (status == StatusCode::SERVICE_UNAVAILABLE && retry_after.is_some())
        {
            let pause = retry_after.unwrap_or(DEFAULT_PAUSE);
            let detail = match retry_after {
                Some(after) => format!("{status}, Retry-After {} s", after.as_secs_f64().ceil() as u64),
                None => status.to_string(),
            };
            // Worth another attempt if the pause ends within the budget (the turn waits it out).
            return Err(AttemptError {
                retryable: true,
                pause: Some(pause),
                ..AttemptError::status(FailureReason::RateLimited, status, detail)
            });
        }
        if !status.is_success() {
            let mut e = AttemptError::status(FailureReason::HttpStatus, status, status.to_string());
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
        // An answer that breaks off is the connection's fault, not the source's content.
        while let Some(chunk) = response.chunk().await.map_err(broke_off)? {
            if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(too_big());
            }
            bytes.extend_from_slice(&chunk);
        }
        let invalid = |detail: String| AttemptError::new(FailureReason::InvalidResponse, detail);
        let answer: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("body is not JSON (line {}, column {})", e.line(), e.column())))?;
        source.mapping.read(&answer, id, rates).map_err(|unread| match unread {
            Unread::Invalid(detail) => invalid(detail),
            Unread::NoOffer(detail) => AttemptError::new(FailureReason::NotFound, detail),
        })
    }
}

/// How long `Retry-After` (RFC 9110 §10.2.3: delay-seconds or an HTTP-date) asks to wait, seen
/// at `now`; `None` without a readable one.
pub fn retry_after(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(text.parse::<u64>().unwrap_or(u64::MAX).min(MAX_PAUSE.as_secs())));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A body that broke off: a timeout, or the connection's failure.
fn broke_off(e: reqwest::Error) -> AttemptError {
    let e = e.without_url();
    let reason = if e.is_timeout() { FailureReason::Timeout } else { FailureReason::Connect };
    AttemptError::new(reason, format!("the answer broke off: {}", chain(&e)))
}

/// An error and its causes, `: `-separated (a reqwest error's Display omits its cause).
fn chain(e: &dyn std::error::Error) -> String {
    let mut detail = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    detail
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
    AttemptError::new(reason, chain(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let after = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
            retry_after(&headers, now)
        };
        assert_eq!(after("2"), Some(Duration::from_secs(2)));
        assert_eq!(after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(after("99999999999999999999999"), Some(MAX_PAUSE));
        // Wed, 21 Oct 2015 07:28:00 GMT is 1445412480.
        assert_eq!(after("Wed, 21 Oct 2015 07:28:30 GMT"), Some(Duration::from_secs(30)));
        assert_eq!(after("Wed, 21 Oct 2015 07:27:00 GMT"), Some(Duration::ZERO), "a date passed: no wait");
        assert_eq!(after("-1"), None);
        assert_eq!(after("soon"), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn only_failures_that_say_a_source_is_unwell_count_against_its_breaker() {
        let failing = |reason, status: Option<u16>| {
            let mut e = AttemptError::new(reason, "d");
            e.http_status = status;
            e.healthy()
        };
        assert_eq!(failing(FailureReason::Timeout, None), Some(false));
        assert_eq!(failing(FailureReason::Connect, None), Some(false));
        assert_eq!(failing(FailureReason::HttpStatus, Some(500)), Some(false));
        for (reason, status) in [
            (FailureReason::HttpStatus, Some(400)),
            (FailureReason::HttpStatus, Some(404)),
            (FailureReason::NotFound, Some(404)),
            (FailureReason::NotFound, None),
            (FailureReason::InvalidResponse, None),
            (FailureReason::RateLimited, Some(429)),
            (FailureReason::AuthFailed, Some(401)),
        ] {
            assert_eq!(failing(reason, status), Some(true), "{reason:?} {status:?}");
        }
        assert_eq!(AttemptError::before_call(FailureReason::AuthFailed, "token endpoint down").healthy(), None);
        assert_eq!(AttemptError::before_call(FailureReason::RateLimited, "no turn").healthy(), None);
    }
}
