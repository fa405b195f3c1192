//! The exchange rates a consumer converts quotes with: `[fx]`'s configured rates, overlaid by
//! live ones loaded from `fx.url` (the ECB's daily XML, [`ecb`]) at start and every
//! `fx.refresh_secs`.
//!
//! Each computation takes one snapshot ([`Fx::current`]), so its progress events and its result
//! use the same rates. A load that fails keeps the last good rates;
//! `pricefront_fx_rates_age_seconds` (seconds since live rates last loaded, or since start
//! while none have) then grows, and `pricefront_fx_refreshes_total{outcome}` counts each try.

pub mod ecb;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::domain::{Currency, Rates};
use crate::settings::FxSettings;

/// How often the rates' age is reported.
const AGE_EVERY: Duration = Duration::from_secs(5);
/// Bound on one load of the live rates.
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The rates in use; cheap to clone.
#[derive(Clone)]
pub struct Fx {
    configured: Arc<Rates>,
    current: Arc<RwLock<Arc<Rates>>>,
    /// When live rates last loaded (the process start until they first do).
    loaded_at: Arc<RwLock<Instant>>,
    url: Option<String>,
    refresh: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot fetch: {0}")]
    Fetch(#[from] reqwest::Error),
    #[error("answered {0}")]
    Status(reqwest::StatusCode),
    #[error(transparent)]
    Invalid(#[from] ecb::Invalid),
    #[error("the document has no rate for the base currency {0}")]
    NoBase(Currency),
}

impl Fx {
    /// The configured rates (validated with the settings); nothing is loaded yet.
    pub fn new(settings: &FxSettings) -> Self {
        let configured = Arc::new(settings.configured().expect("fx settings are validated at load"));
        Self {
            current: Arc::new(RwLock::new(configured.clone())),
            configured,
            loaded_at: Arc::new(RwLock::new(Instant::now())),
            url: settings.url().map(str::to_owned),
            refresh: settings.refresh,
        }
    }

    /// The rates to convert one computation with.
    pub fn current(&self) -> Arc<Rates> {
        self.current.read().expect("fx lock").clone()
    }

    /// With a URL: loads the live rates now and every `refresh_secs` until `shutdown`, and
    /// reports their age. Without one, does nothing.
    pub fn spawn_refresh(&self, shutdown: CancellationToken) {
        let Some(url) = self.url.clone() else { return };
        let this = self.clone();
        tokio::spawn(async move {
            let http = match reqwest::Client::builder().timeout(LOAD_TIMEOUT).build() {
                Ok(http) => http,
                Err(e) => {
                    return tracing::error!(error = %e, "cannot build the HTTP client for fx.url; configured rates only");
                }
            };
            let mut refresh = tokio::time::interval(this.refresh);
            let mut age = tokio::time::interval(AGE_EVERY);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = refresh.tick() => this.refresh_from(&http, &url).await,
                    _ = age.tick() => {}
                }
                let age = this.loaded_at.read().expect("fx lock").elapsed();
                metrics::gauge!("pricefront_fx_rates_age_seconds").set(age.as_secs_f64());
            }
        });
    }

    async fn refresh_from(&self, http: &reqwest::Client, url: &str) {
        match self.load(http, url).await {
            Ok((date, rates)) => {
                tracing::info!(
                    date = date.as_deref().unwrap_or("?"),
                    currencies = rates.all().len(),
                    "exchange rates loaded"
                );
                *self.current.write().expect("fx lock") = Arc::new(rates);
                *self.loaded_at.write().expect("fx lock") = Instant::now();
                metrics::counter!("pricefront_fx_refreshes_total", "outcome" => "ok").increment(1);
            }
            Err(e) => {
                let age = self.loaded_at.read().expect("fx lock").elapsed();
                tracing::warn!(error = %e, rates_age_secs = age.as_secs(), "cannot load exchange rates; keeping the last good ones");
                metrics::counter!("pricefront_fx_refreshes_total", "outcome" => "failed").increment(1);
            }
        }
    }

    /// The live rates over the configured ones, and the day they are for.
    async fn load(&self, http: &reqwest::Client, url: &str) -> Result<(Option<String>, Rates), LoadError> {
        let answer = http.get(url).send().await?;
        if !answer.status().is_success() {
            return Err(LoadError::Status(answer.status()));
        }
        let daily = ecb::parse(&answer.text().await?)?;
        let base = self.configured.base();
        let euro = Currency::parse("EUR").expect("EUR is ISO 4217");
        let live = Rates::from_quoted(base, euro, &daily.per_euro).ok_or(LoadError::NoBase(base))?;
        Ok((daily.date, self.configured.overlaid(&live)))
    }
}
