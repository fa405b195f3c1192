//! Processing one message: decode, skip duplicates, fan out (logging each source's outcome as
//! progress for watchers), aggregate, store; or send an undecodable message to the DLQ.
//!
//! A computation starts from what the earlier one left ([`crate::cache::Earlier`]): a quote
//! (or a source's "not sold here") still good beyond [`Processor::reuse_margin`] is reused and
//! its source not asked, so recomputing a result kept briefly for a failure asks only the
//! sources that failed (and a refresh, those whose quotes end within the refresh window). A
//! source that fails keeps its earlier quote while that is still guaranteed, so a refresh never
//! makes a result worse; a refresh that learnt nothing new is not stored. The result expires
//! with its oldest quote.
//!
//! A message counts as settled only when its outcome is durable: result in Redis (or judged
//! too late to store, its marker released), or the message in the DLQ. Unreachable
//! dependencies are waited out with back-off until they answer or shutdown begins; an
//! unsettled message is then redelivered, never skipped. Redis answering with an error is
//! tried `consumer.max_attempts` times, then the message goes to the DLQ. The DLQ itself is
//! tried until it takes the message, whatever it answers: nothing is dropped.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Health;
use crate::cache::{Store, StoreOutcome};
use crate::domain::{Comparison, Failure, FailureReason, ProductId, Quote, Rates, TtlPolicy};
use crate::fx::Fx;
use crate::providers::{PriceSources, Quotas};
use crate::queue::envelope::CALLER_HEADERS;
use crate::queue::{Headers, Message, PriceRequest, RequestQueue, dlq};
use crate::settings::Settings;

/// Disagreement between our clock and Redis's that is worth a warning.
const CLOCK_SKEW_WARNING: Duration = Duration::from_secs(1);
/// First and longest wait between two tries of an unavailable dependency.
/// The gauge that is 1 while the DLQ cannot be written (and the loop takes no new messages).
pub const DLQ_BLOCKED: &str = "pricefront_dlq_blocked";

const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Counters since start, logged at shutdown.
#[derive(Debug, Default)]
pub struct Counters {
    pub computed: AtomicU64,
    /// Results whose guarantee passed before they could be stored (so they were not).
    pub expired: AtomicU64,
    pub duplicates: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub retries: AtomicU64,
}

/// Why processing a message stopped without an outcome.
enum Stop {
    /// Shutdown began; the message is left for redelivery.
    Shutdown,
    /// It kept failing; the message goes to the DLQ with this error.
    GaveUp(String),
}

/// How a failed try is retried.
enum Failed {
    /// The dependency could not be reached or did not answer: waited out, however long.
    Unreachable,
    /// It answered with an error: counts toward `max_attempts`.
    Refused,
}

pub struct Processor {
    pub store: Arc<dyn Store>,
    pub sources: PriceSources,
    pub dead_letters: Arc<dyn RequestQueue>,
    pub dlq_topic: String,
    pub ttl: TtlPolicy,
    pub counters: Counters,
    /// How long a request takes here, on average: the consumer's capacity follows from it.
    pub service: ServiceTime,
    pub redis_health: Health,
    /// Whether the DLQ takes messages (`pricefront_dlq_blocked`).
    pub dlq_health: Health,
    /// Tries before a message whose processing keeps failing goes to the DLQ.
    pub max_attempts: u32,
    /// How long a progress log lives when its marker is gone (`cache.pending_ttl_secs`).
    pub progress_ttl: Duration,
    /// How long the result waits for the progress log to catch up (two Redis round trips).
    pub progress_flush: Duration,
    /// The exchange rates quotes are converted with.
    pub fx: Fx,
    /// A quote guaranteed beyond this is reused rather than asked for again: at least
    /// `cache.partial_ttl_secs`, and at least the refresh-ahead window (`cache.refresh_ahead` of
    /// `cache.ttl_secs`), so a refresh asks again for the quotes about to end.
    pub reuse_margin: Duration,
}

impl Processor {
    /// A processor over `store`, asking the configured sources within the quotas kept in
    /// `quotas`, dead-lettering to `dead_letters`.
    pub fn new(
        settings: &Settings,
        store: Arc<dyn Store>,
        quotas: Arc<dyn Quotas>,
        dead_letters: Arc<dyn RequestQueue>,
    ) -> Result<Self, crate::providers::BuildError> {
        Ok(Self {
            store,
            sources: PriceSources::new(&settings.providers, settings.consumer.provider_timeout)?.with_quotas(quotas),
            dead_letters,
            dlq_topic: settings.kafka.dlq_topic.clone(),
            ttl: settings.cache.ttl_policy(),
            counters: Counters::default(),
            service: ServiceTime::default(),
            redis_health: Health::new("Redis", None),
            dlq_health: Health::new("the DLQ", Some(DLQ_BLOCKED)),
            max_attempts: settings.consumer.max_attempts,
            progress_ttl: settings.cache.pending_ttl,
            progress_flush: settings.redis.timeout * 2,
            fx: Fx::new(&settings.fx),
            reuse_margin: settings.cache.partial_ttl.max(settings.cache.ttl.mul_f64(settings.cache.refresh_ahead)),
        })
    }

    /// Handles one message; true when its outcome is durable (so it may be acknowledged).
    pub async fn handle(&self, message: &Message, shutdown: &CancellationToken) -> bool {
        let request = match PriceRequest::decode(message.payload.as_deref()) {
            Ok(request) => request,
            Err(error) => return self.dead_letter(message, error.kind(), &error.to_string(), shutdown).await,
        };
        let started = std::time::Instant::now();
        match self.compute(&request, shutdown).await {
            Ok(asked) => {
                // Only what asked the sources says how long a request takes (a skipped duplicate
                // takes a millisecond, and would make this consumer look a thousand times faster).
                if asked {
                    self.service.record(started.elapsed());
                }
                self.finished(&request).await;
                true
            }
            Err(Stop::Shutdown) => {
                metrics::counter!("pricefront_messages_total", "outcome" => "unfinished").increment(1);
                false
            }
            Err(Stop::GaveUp(error)) => self.give_up(message, "processing_failed", &error, shutdown).await,
        }
    }

    /// A message that cannot be computed (its processing failed, or panicked): its claim is
    /// released, so its product is not held queued until `cache.queued_ttl_secs`; it goes to the
    /// DLQ ([`Self::dead_letter`]); and it is counted out of the backlog once the DLQ has it.
    pub async fn give_up(&self, message: &Message, kind: &str, error: &str, shutdown: &CancellationToken) -> bool {
        let request = PriceRequest::decode(message.payload.as_deref()).ok();
        if let Some(request) = &request
            && let Err(e) = self.store.release_pending(&request.product_id, &request.request_id.to_string()).await
        {
            tracing::warn!(error = %e, "cannot release the claim of a dead letter; it expires by itself");
        }
        let durable = self.dead_letter(message, kind, error, shutdown).await;
        if let (true, Some(request)) = (durable, &request) {
            self.finished(request).await;
        }
        durable
    }

    /// Counts `request` out of the fleet's backlog, whatever became of it; best effort (the
    /// backlog drops what it misses after `cache.queued_ttl_secs`).
    async fn finished(&self, request: &PriceRequest) {
        if let Err(e) = self.store.finished(&request.product_id).await {
            tracing::warn!(error = %e, "cannot count the request finished (the backlog drops it after cache.queued_ttl_secs)");
        }
    }

    /// Sends the message to the DLQ, unchanged, with why (`kind`, `error`) in its headers;
    /// true once the DLQ has it. Until then it tries again with back-off, whatever the broker
    /// answers (the topic deleted, not writable, unreachable), and the loop takes no new
    /// messages ([`Processor::dlq_health`]); false if shutdown comes first (the message is then
    /// redelivered). The offset never moves past a message that is neither done nor here.
    pub async fn dead_letter(&self, message: &Message, kind: &str, error: &str, shutdown: &CancellationToken) -> bool {
        tracing::warn!(%error, reason = kind, "sending the message to the DLQ");
        let headers = dead_letter_headers(message, kind, error);
        let (key, payload) =
            (message.key.as_deref().unwrap_or_default(), message.payload.as_deref().unwrap_or_default());
        let send = || self.dead_letters.send(&self.dlq_topic, key, payload, &headers);
        // Never given up: an operator fixes the DLQ (alerted by DLQ_BLOCKED), and nothing is lost.
        let classify = |_: &crate::queue::Error| Failed::Unreachable;
        match self.retry("dead-letter the message", shutdown, Some(&self.dlq_health), send, classify).await {
            Ok(_) => {
                self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("pricefront_messages_total", "outcome" => "dead_lettered").increment(1);
                true
            }
            Err(Stop::Shutdown | Stop::GaveUp(_)) => {
                metrics::counter!("pricefront_messages_total", "outcome" => "unfinished").increment(1);
                false
            }
        }
    }

    /// Computes and stores `request`'s product; whether it asked the sources (a duplicate or a
    /// late refresh does not).
    async fn compute(&self, request: &PriceRequest, shutdown: &CancellationToken) -> Result<bool, Stop> {
        let span = tracing::Span::current();
        span.record("product_id", request.product_id.as_str());
        span.record("message_id", tracing::field::display(request.request_id));
        let id = &request.product_id;
        // The producer claimed the pending marker with the request id.
        let token = request.request_id.to_string();
        let health = Some(&self.redis_health);
        let redis_error =
            |e: &crate::cache::Error| if e.is_unreachable() { Failed::Unreachable } else { Failed::Refused };
        // A refresh is asked for while the result still exists; anything else finding one is a
        // duplicate.
        let earlier = || self.store.earlier(id);
        let earlier = self.retry("look at the earlier result", shutdown, health, earlier, redis_error).await?;
        // A refresh is late if a result computed since it was asked for is there already.
        let late_refresh = request.refresh
            && earlier
                .computed_at_ms
                .is_some_and(|at| i128::from(at) * 1_000_000 >= request.requested_at.unix_timestamp_nanos());
        if (!request.refresh && earlier.has_result) || late_refresh {
            tracing::info!(refresh = request.refresh, "fresh result exists; skipping duplicate");
            // A marker this request claimed would otherwise hold off new requests until it expires.
            if let Err(e) = self.store.release_pending(id, &token).await {
                tracing::debug!(error = %e, "cannot release the pending marker");
            }
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("pricefront_messages_total", "outcome" => "duplicate").increment(1);
            return Ok(false);
        }
        // One set of rates for the whole computation: its progress and its result agree.
        let rates = self.fx.current();
        let started = OffsetDateTime::now_utc();
        // Quotes of configured sources only: a source taken out of the configuration is gone.
        let configured: Vec<&str> = self.sources.names().collect();
        let earlier_quotes: Vec<Quote> =
            earlier.quotes.into_iter().filter(|q| configured.contains(&q.provider.as_str())).collect();
        // Answers still good beyond the margin: their sources are not asked again.
        let reused: Vec<Result<Quote, Failure>> = earlier_quotes
            .iter()
            .filter(|q| q.guaranteed_beyond(started, self.reuse_margin))
            .cloned()
            .map(Ok)
            .chain(
                earlier
                    .not_found
                    .into_iter()
                    .filter(|f| {
                        configured.contains(&f.provider.as_str()) && f.not_found_beyond(started, self.reuse_margin)
                    })
                    .map(Err),
            )
            .collect();
        let answered = |name: &str| reused.iter().any(|o| provider(o) == name);
        let ask = |name: &str| !answered(name);
        // Progress is logged only for a product somebody watches (an event stream marked it
        // before this computation began): nobody else reads it. A refresh has no watchers: the
        // result they would wait for is already there.
        let fresh = if request.refresh || !earlier.watched {
            self.sources.fan_out_to(id, &rates, ask, |_| {}).await
        } else {
            self.fan_out_logging_progress(id, &rates, &reused, ask).await
        };
        let gathered = OffsetDateTime::now_utc();
        // A refresh that learnt nothing new (no quote, no "not sold here") leaves the earlier
        // result as it is.
        let news = |o: &Result<Quote, Failure>| {
            o.as_ref().is_ok() || o.as_ref().is_err_and(|f| f.reason == FailureReason::NotFound)
        };
        if request.refresh && !fresh.iter().any(news) {
            tracing::warn!(
                failures = fresh.len(),
                "no source answered the refresh; the previous result stays until it expires"
            );
            if let Err(e) = self.store.release_pending(id, &token).await {
                tracing::debug!(error = %e, "cannot release the refresh marker; it expires by itself");
            }
            self.counters.computed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("pricefront_refreshes_total", "stage" => "discarded").increment(1);
            return Ok(true);
        }
        let mut kept = 0;
        let fresh = fresh.into_iter().map(|outcome| match outcome {
            // "Not sold here" is news: the earlier quote goes.
            Err(failure) if failure.reason != FailureReason::NotFound => {
                match earlier_quotes.iter().find(|q| q.provider == failure.provider && q.guaranteed_beyond(gathered, Duration::ZERO)) {
                    Some(quote) => {
                        kept += 1;
                        tracing::info!(provider = %failure.provider, reason = failure.reason.as_str(), "the source failed; its earlier quote stands while it is guaranteed");
                        Ok(quote.clone())
                    }
                    None => Err(failure),
                }
            }
            other => other,
        });
        let reused_count = reused.len() as u64;
        let outcomes: Vec<Result<Quote, Failure>> = reused.into_iter().chain(fresh).collect();
        if reused_count > 0 {
            metrics::counter!("pricefront_quotes_reused_total", "why" => "guaranteed").increment(reused_count);
        }
        if kept > 0 {
            metrics::counter!("pricefront_quotes_reused_total", "why" => "source_failed").increment(kept);
        }
        // computed_at: when the quotes were gathered; a new quote's guarantee runs from there.
        let comparison = Comparison::aggregate(id.clone(), outcomes, gathered, &self.ttl, &rates);
        let store = || self.store.store(&comparison, &token);
        let outcome = self.retry("store the result", shutdown, health, store, redis_error).await?;
        let waited_ms = (OffsetDateTime::now_utc() - request.requested_at).whole_milliseconds() as i64;
        match outcome {
            StoreOutcome::Stored => {
                tracing::info!(
                    status = comparison.status.as_str(),
                    quotes = comparison.quotes.len(),
                    reused = reused_count + kept,
                    failures = comparison.failures.len(),
                    guaranteed_s = comparison.guarantee_left(OffsetDateTime::now_utc()).as_secs(),
                    since_request_ms = waited_ms,
                    "result stored"
                );
                self.counters.computed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("pricefront_messages_total", "outcome" => "computed", "status" => comparison.status.as_str())
                    .increment(1);
                if request.refresh {
                    metrics::counter!("pricefront_refreshes_total", "stage" => "done").increment(1);
                    // From the refresh's publish to its store: how far ahead a refresh must start.
                    metrics::histogram!("pricefront_refresh_seconds").record(waited_ms.max(0) as f64 / 1000.0);
                }
                // From the producer's publish to the result stored (two hosts' clocks).
                metrics::histogram!("pricefront_miss_to_result_seconds", "status" => comparison.status.as_str())
                    .record(waited_ms.max(0) as f64 / 1000.0);
            }
            StoreOutcome::Kept => {
                tracing::warn!(
                    failures = comparison.failures.len(),
                    "every source failed the refresh; the previous result stays until it expires"
                );
                self.counters.computed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("pricefront_refreshes_total", "stage" => "discarded").increment(1);
            }
            StoreOutcome::Superseded => {
                tracing::info!(
                    since_request_ms = waited_ms,
                    "a result computed later is stored already; this one is dropped"
                );
                self.counters.computed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("pricefront_messages_total", "outcome" => "superseded").increment(1);
            }
            StoreOutcome::Expired => {
                let left_by_our_clock = comparison.guarantee_left(OffsetDateTime::now_utc());
                tracing::warn!(
                    expires_at = %comparison.expires_at,
                    since_request_ms = waited_ms,
                    "the price guarantee passed before the result could be stored; not stored, the marker released"
                );
                // Redis judges expiry by its own clock: if ours says there was plenty left, they
                // disagree (`cache::clock` watches the clocks both ways all the time).
                if left_by_our_clock > CLOCK_SKEW_WARNING {
                    tracing::warn!(
                        left_by_our_clock_ms = left_by_our_clock.as_millis() as u64,
                        "Redis's clock is ahead of this consumer's: results are stored for less than their guarantee, or not at all; sync the clocks"
                    );
                }
                self.counters.expired.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("pricefront_messages_total", "outcome" => "expired").increment(1);
            }
        }
        Ok(true)
    }

    /// Fans out to the sources `ask` names, logging each source's outcome as progress the
    /// moment it is known, in order, through one writer (the `reused` quotes first). The result
    /// waits for the log to catch up (at most `progress_flush`), so a watcher sees every source's
    /// answer before the result. Progress is best effort: a watcher who missed it gets it from
    /// the result.
    async fn fan_out_logging_progress(
        &self,
        id: &ProductId,
        rates: &Rates,
        reused: &[Result<Quote, Failure>],
        ask: impl Fn(&str) -> bool,
    ) -> Vec<Result<Quote, Failure>> {
        // Unbounded, yet bounded: one outcome per source.
        let (outcomes_tx, mut outcomes_rx) = mpsc::unbounded_channel::<Result<Quote, Failure>>();
        let (store, product, ttl) = (self.store.clone(), id.clone(), self.progress_ttl);
        let writer = tokio::spawn(
            async move {
                while let Some(outcome) = outcomes_rx.recv().await {
                    let written = store.progress(&product, &outcome, ttl).await;
                    let label = if written.is_ok() { "logged" } else { "failed" };
                    metrics::counter!("pricefront_progress_events_total", "outcome" => label).increment(1);
                    if let Err(e) = written {
                        tracing::debug!(error = %e, "cannot log progress; watchers get the result alone");
                        if e.is_unreachable() {
                            break;
                        }
                    }
                }
            }
            .instrument(tracing::Span::current()),
        );
        // Logged as the result will show them: converted.
        let log = |outcome: &Result<Quote, Failure>| {
            let mut outcome = outcome.clone();
            if let Ok(quote) = &mut outcome {
                rates.convert(quote);
            }
            // The writer gave up (Redis unreachable): nothing more to log.
            let _ = outcomes_tx.send(outcome);
        };
        reused.iter().for_each(log);
        let outcomes = self.sources.fan_out_to(id, rates, ask, log).await;
        drop(outcomes_tx);
        let abort = writer.abort_handle();
        if tokio::time::timeout(self.progress_flush, writer).await.is_err() {
            abort.abort();
        }
        outcomes
    }

    /// Runs `op` until it succeeds or shutdown begins; fails for good after `max_attempts`
    /// answered errors. Unreachable failures are waited out with jittered exponential
    /// back-off, and reported to `health` when given.
    async fn retry<T, E, F, Fut>(
        &self,
        what: &str,
        shutdown: &CancellationToken,
        health: Option<&Health>,
        mut op: F,
        classify: impl Fn(&E) -> Failed,
    ) -> Result<T, Stop>
    where
        E: Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(RETRY_FIRST)
            .with_max_delay(RETRY_MAX)
            .with_jitter()
            .without_max_times()
            .build();
        let mut refusals = 0;
        loop {
            let error = match op().await {
                Ok(value) => {
                    health.inspect(|h| h.report(true));
                    return Ok(value);
                }
                Err(error) => error,
            };
            match classify(&error) {
                Failed::Unreachable => {
                    health.inspect(|h| h.report(false));
                }
                Failed::Refused => {
                    refusals += 1;
                    if refusals >= self.max_attempts {
                        return Err(Stop::GaveUp(format!("cannot {what} after {refusals} attempts: {error}")));
                    }
                }
            }
            let delay = backoff.next().unwrap_or(RETRY_MAX);
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot {what}; retrying");
            tokio::select! {
                _ = shutdown.cancelled() => return Err(Stop::Shutdown),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// Which source an outcome is about.
fn provider(outcome: &Result<Quote, Failure>) -> &str {
    match outcome {
        Ok(quote) => &quote.provider,
        Err(failure) => &failure.provider,
    }
}

/// The original message's place and why it failed, as `dlq.*` headers.
fn dead_letter_headers(message: &Message, kind: &str, error: &str) -> Headers {
    let failed_at = OffsetDateTime::now_utc().format(&Rfc3339).expect("format now");
    // The caller's, kept for a replay (which keeps them too).
    message
        .headers
        .kept(&CALLER_HEADERS)
        .with(dlq::REASON, kind)
        .with(dlq::ERROR, error)
        .with(dlq::SOURCE_TOPIC, &message.origin.topic)
        .with(dlq::SOURCE_PARTITION, message.origin.partition.to_string())
        .with(dlq::SOURCE_OFFSET, message.origin.offset.to_string())
        .with(dlq::FAILED_AT, failed_at)
}

/// The mean time a request takes (an exponentially weighted mean over about the last
/// [`ServiceTime::WEIGHT`]⁻¹ requests).
#[derive(Default)]
pub struct ServiceTime(std::sync::Mutex<Option<f64>>);

impl ServiceTime {
    const WEIGHT: f64 = 0.05;

    pub fn record(&self, took: Duration) {
        let mut mean = self.0.lock().expect("service time lock");
        let took = took.as_secs_f64();
        *mean = Some(mean.map_or(took, |mean| mean + Self::WEIGHT * (took - mean)));
    }

    /// The mean, once a request was timed.
    pub fn mean(&self) -> Option<Duration> {
        self.0.lock().expect("service time lock").map(Duration::from_secs_f64)
    }
}
