//! Exchange rates and converting a quote into the base currency `best` is compared in.
//!
//! A rate says what one unit of a currency is worth in the base (`USD = 0.92` with base EUR:
//! 1 USD is 0.92 EUR). A converted price is rounded to the base currency's minor units, half
//! away from zero (commercial rounding). A currency with no rate is not converted: its quotes
//! keep only their own price, and the comparison names the currency in `fx_missing`.

use std::collections::BTreeMap;

use rust_decimal::{Decimal, RoundingStrategy};

use super::{Currency, Quote};

/// Decimal places kept of a rate derived by division (a cross rate, an inverted one).
pub const DERIVED_RATE_DP: u32 = 10;

/// What one unit of each currency is worth in `base`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rates {
    base: Currency,
    /// Minor units of `base`: converted prices are rounded to these.
    base_dp: u32,
    rates: BTreeMap<Currency, Decimal>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRates {
    #[error("the base currency {0} has no minor units to round prices to")]
    NoMinorUnits(Currency),
    #[error("the rate of {0} must be positive, got {1}")]
    NotPositive(Currency, Decimal),
}

/// The euro alone (`fx.base`'s default): every other currency unconverted.
impl Default for Rates {
    fn default() -> Self {
        Self::new(Currency::parse("EUR").expect("EUR is ISO 4217"), BTreeMap::new()).expect("EUR has minor units")
    }
}

impl Rates {
    /// `rates`: one unit of each key in `base`. The base itself is always 1.
    pub fn new(base: Currency, rates: BTreeMap<Currency, Decimal>) -> Result<Self, InvalidRates> {
        let base_dp = base.minor_units().ok_or(InvalidRates::NoMinorUnits(base))?;
        if let Some((currency, rate)) = rates.iter().find(|(_, rate)| **rate <= Decimal::ZERO) {
            return Err(InvalidRates::NotPositive(*currency, *rate));
        }
        let mut rates = rates;
        rates.insert(base, Decimal::ONE);
        Ok(Self { base, base_dp, rates })
    }

    /// Rates published against one currency, `per` (the ECB's: 1 EUR = `quoted[X]` units of
    /// X), as rates into `base` (1 X = `quoted[base]` / `quoted[X]` base). `None` when `base` is
    /// neither `per` nor quoted.
    pub fn from_quoted(
        base: Currency,
        per: Currency,
        quoted: &BTreeMap<Currency, Decimal>,
    ) -> Option<BTreeMap<Currency, Decimal>> {
        let base_in_per = if base == per { Decimal::ONE } else { *quoted.get(&base)? };
        let mut rates: BTreeMap<Currency, Decimal> = quoted
            .iter()
            .filter(|(_, units)| **units > Decimal::ZERO)
            .filter_map(|(currency, units)| Some((*currency, derived(base_in_per.checked_div(*units)?))))
            .collect();
        rates.insert(per, derived(base_in_per));
        rates.remove(&base);
        Some(rates)
    }

    pub fn base(&self) -> Currency {
        self.base
    }

    /// One unit of `currency` in the base currency, if known.
    pub fn rate(&self, currency: Currency) -> Option<Decimal> {
        self.rates.get(&currency).copied()
    }

    /// Every rate, the base's own included.
    pub fn all(&self) -> &BTreeMap<Currency, Decimal> {
        &self.rates
    }

    /// These rates, with `overlay`'s taking the place of any for the same currency (live
    /// rates over the configured ones, which stay for currencies the live source lacks).
    pub fn overlaid(&self, overlay: &BTreeMap<Currency, Decimal>) -> Self {
        let mut rates = self.rates.clone();
        rates.extend(overlay.iter().filter(|(_, rate)| **rate > Decimal::ZERO).map(|(c, r)| (*c, *r)));
        rates.insert(self.base, Decimal::ONE);
        Self { base: self.base, base_dp: self.base_dp, rates }
    }

    /// `price` in `currency`, in the base currency rounded to its minor units, and the rate
    /// used; `None` when `currency` has no rate (or the product would not fit a decimal).
    pub fn converted(&self, price: Decimal, currency: Currency) -> Option<(Decimal, Decimal)> {
        let rate = self.rate(currency)?;
        let mut price =
            price.checked_mul(rate)?.round_dp_with_strategy(self.base_dp, RoundingStrategy::MidpointAwayFromZero);
        // Every minor unit shown: 10 EUR is "10.00".
        price.rescale(self.base_dp);
        Some((price, rate))
    }

    /// Sets `quote`'s `base_price` and `fx_rate` from its price, or clears both when its
    /// currency has no rate (or the product would not fit a decimal).
    pub fn convert(&self, quote: &mut Quote) {
        let converted = self.converted(quote.price, quote.currency);
        (quote.base_price, quote.fx_rate) = match converted {
            Some((price, rate)) => (Some(price), Some(rate)),
            None => (None, None),
        };
    }
}

fn derived(rate: Decimal) -> Decimal {
    rate.round_dp_with_strategy(DERIVED_RATE_DP, RoundingStrategy::MidpointNearestEven).normalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn c(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn quote(price: &str, currency: &str) -> Quote {
        Quote::new("p", d(price), c(currency), 1)
    }

    fn eur_rates() -> Rates {
        Rates::new(c("EUR"), BTreeMap::from([(c("USD"), d("0.92")), (c("JPY"), d("0.0061"))])).unwrap()
    }

    #[test]
    fn converts_and_rounds_to_the_base_minor_units_half_away_from_zero() {
        let rates = eur_rates();
        let mut q = quote("10.00", "USD");
        rates.convert(&mut q);
        assert_eq!((q.base_price, q.fx_rate), (Some(d("9.20")), Some(d("0.92"))));
        let mut q = quote("1999", "JPY");
        rates.convert(&mut q);
        assert_eq!(q.base_price, Some(d("12.19")), "12.1939 rounds down");
        let mut q = quote("0.625", "USD");
        rates.convert(&mut q);
        assert_eq!(q.base_price, Some(d("0.58")), "0.575 rounds up");
        let mut q = quote("12.40", "EUR");
        rates.convert(&mut q);
        assert_eq!((q.base_price, q.fx_rate), (Some(d("12.40")), Some(Decimal::ONE)), "the base converts at 1");
        let mut q = quote("10", "USD");
        rates.convert(&mut q);
        assert_eq!(q.base_price.unwrap().to_string(), "9.20", "every minor unit shown");
        let mut q = quote("10", "EUR");
        rates.convert(&mut q);
        assert_eq!(q.base_price.unwrap().to_string(), "10.00");
    }

    #[test]
    fn a_currency_without_a_rate_keeps_only_its_price() {
        let mut q = quote("10.00", "GBP");
        q.base_price = Some(d("1"));
        eur_rates().convert(&mut q);
        assert_eq!((q.base_price, q.fx_rate), (None, None));
    }

    #[test]
    fn refuses_a_base_without_minor_units_and_rates_that_are_not_positive() {
        assert_eq!(Rates::new(c("XAU"), BTreeMap::new()), Err(InvalidRates::NoMinorUnits(c("XAU"))));
        let zero = BTreeMap::from([(c("USD"), Decimal::ZERO)]);
        assert!(matches!(Rates::new(c("EUR"), zero), Err(InvalidRates::NotPositive(..))));
    }

    #[test]
    fn quoted_rates_are_inverted_and_crossed_through_the_currency_they_are_quoted_in() {
        let ecb = BTreeMap::from([(c("USD"), d("1.25")), (c("GBP"), d("0.8"))]);
        let into_eur = Rates::from_quoted(c("EUR"), c("EUR"), &ecb).unwrap();
        assert_eq!(into_eur, BTreeMap::from([(c("USD"), d("0.8")), (c("GBP"), d("1.25"))]));
        let into_gbp = Rates::from_quoted(c("GBP"), c("EUR"), &ecb).unwrap();
        assert_eq!(into_gbp, BTreeMap::from([(c("USD"), d("0.64")), (c("EUR"), d("0.8"))]));
        assert_eq!(Rates::from_quoted(c("CHF"), c("EUR"), &ecb), None, "the base is not quoted");
    }

    #[test]
    fn an_overlay_replaces_rates_it_has_and_keeps_the_others() {
        let live = BTreeMap::from([(c("USD"), d("0.9")), (c("EUR"), d("7"))]);
        let rates = eur_rates().overlaid(&live);
        assert_eq!((rates.rate(c("USD")), rates.rate(c("JPY"))), (Some(d("0.9")), Some(d("0.0061"))));
        assert_eq!(rates.rate(c("EUR")), Some(Decimal::ONE), "the base stays 1");
    }
}
