//! Currency codes. Prices themselves are `rust_decimal::Decimal`: no floats anywhere.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An ISO 4217-shaped currency code: exactly three ASCII upper-case letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("currency must be three upper-case letters, got {0:?}")]
pub struct InvalidCurrency(pub String);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, InvalidCurrency> {
        match raw.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Self([a, b, c])),
            _ => Err(InvalidCurrency(raw.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored.
        std::str::from_utf8(&self.0).expect("currency is ASCII")
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
    fn parses_three_upper_case_letters_only() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        for bad in ["", "eur", "EURO", "E1R", "€"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?}");
        }
    }
}
