//! Currency codes. Prices themselves are `rust_decimal::Decimal`: no floats anywhere.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An ISO 4217 currency code (the `iso_currency` crate's list), which also knows its minor units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(iso_currency::Currency);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an ISO 4217 currency code")]
pub struct InvalidCurrency(pub String);

impl Currency {
    /// The currency whose ISO 4217 code is `raw` (three upper-case letters, e.g. `EUR`).
    pub fn parse(raw: &str) -> Result<Self, InvalidCurrency> {
        iso_currency::Currency::from_code(raw).map(Self).ok_or_else(|| InvalidCurrency(raw.to_owned()))
    }

    pub fn as_str(&self) -> &'static str {
        self.0.code()
    }

    /// Digits after the decimal point of its minor unit (EUR 2, JPY 0, BHD 3); `None` for codes
    /// that have none (gold, `XXX`).
    pub fn minor_units(&self) -> Option<u32> {
        self.0.exponent().map(u32::from)
    }
}

impl TryFrom<String> for Currency {
    type Error = InvalidCurrency;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> Self {
        c.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iso_4217_codes_only() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        for bad in ["", "eur", "EURO", "E1R", "€", "ABC", "QQQ"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn knows_minor_units() {
        let units = |code| Currency::parse(code).unwrap().minor_units();
        assert_eq!((units("EUR"), units("JPY"), units("BHD"), units("XAU")), (Some(2), Some(0), Some(3), None));
    }
}
