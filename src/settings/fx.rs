//! `[fx]`: the base currency quotes are compared in, the configured rates, and the live
//! rates source.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_with::{DurationSeconds, serde_as};

use crate::domain::Currency;

/// `[fx]`: the currency quotes are compared in, and the exchange rates into it.
#[serde_as]
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FxSettings {
    /// `PRICEFRONT__FX__BASE`: the ISO 4217 currency `best` is compared in.
    pub base: Currency,
    /// `[fx.rates]` (`PRICEFRONT__FX__RATES__USD=0.92`): one unit of the key in `base`, as a
    /// decimal string. The fallback while no live rates are loaded, and for currencies the
    /// live source does not list.
    #[serde(default, deserialize_with = "rates")]
    pub rates: BTreeMap<Currency, rust_decimal::Decimal>,
    /// `PRICEFRONT__FX__URL`: the ECB daily reference-rates XML (`eurofxref-daily.xml`) to load
    /// live rates from, every `refresh_secs`; empty: the configured rates only.
    #[serde(default)]
    pub url: Option<String>,
    /// `PRICEFRONT__FX__REFRESH_SECS`: how often the live rates are loaded again.
    #[serde(rename = "refresh_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub refresh: Duration,
}

impl FxSettings {
    /// The live-rates URL, if one is set.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref().map(str::trim).filter(|url| !url.is_empty())
    }

    /// The configured rates, validated.
    pub fn configured(&self) -> Result<crate::domain::Rates, crate::domain::InvalidRates> {
        crate::domain::Rates::new(self.base, self.rates.clone())
    }
}

/// `{ USD = "0.92" }`: ISO 4217 codes (any case: environment keys arrive lower-cased) to
/// decimal strings.
fn rates<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<Currency, rust_decimal::Decimal>, D::Error> {
    use serde::de::Error as _;
    BTreeMap::<String, String>::deserialize(d)?
        .into_iter()
        .map(|(code, rate)| {
            let currency = Currency::parse(&code.to_ascii_uppercase()).map_err(D::Error::custom)?;
            let rate = rate
                .trim()
                .parse::<rust_decimal::Decimal>()
                .map_err(|_| D::Error::custom(format!("fx.rates.{currency}: {rate:?} is not a decimal number")))?;
            Ok((currency, rate))
        })
        .collect()
}

impl FxSettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        self.configured().map_err(|e| format!("fx: {e}"))?;
        if self.url().is_some() && self.refresh.is_zero() {
            return Err("fx.refresh_secs must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use crate::settings::testing::env;

    #[test]
    fn exchange_rates_come_from_the_file_and_the_environment_as_decimals() {
        let usd = Currency::parse("USD").unwrap();
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!((s.fx.base.as_str(), s.fx.rates[&usd].to_string(), s.fx.url()), ("EUR", "0.92".into(), None));
        // Env keys arrive lower-cased and values parsed as numbers: both come back as they were.
        let s = Settings::load_from(
            None,
            env(&[("PRICEFRONT__FX__RATES__USD", "0.9137"), ("PRICEFRONT__FX__RATES__JPY", "0.0061")]),
        )
        .unwrap();
        assert_eq!(s.fx.rates[&usd].to_string(), "0.9137");
        assert_eq!(s.fx.rates[&Currency::parse("JPY").unwrap()].to_string(), "0.0061");
        for (key, value) in [
            ("PRICEFRONT__FX__RATES__USD", "-1"),
            ("PRICEFRONT__FX__RATES__ZZZ", "1"),
            ("PRICEFRONT__FX__BASE", "XAU"),
            ("PRICEFRONT__FX__RATES__USD", "cheap"),
        ] {
            assert!(Settings::load_from(None, env(&[(key, value)])).is_err(), "{key}={value}");
        }
    }

    #[test]
    fn live_rates_need_a_refresh_period() {
        let pairs = [("PRICEFRONT__FX__URL", "https://rates.example/daily.xml"), ("PRICEFRONT__FX__REFRESH_SECS", "0")];
        let err = Settings::load_from(None, env(&pairs)).unwrap_err();
        assert!(err.to_string().contains("fx.refresh_secs"), "{err}");
    }
}
