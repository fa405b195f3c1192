//! Reading a source's answer: price, currency and product id at the configured RFC 6901 JSON
//! Pointers (`[providers.response]`), prices exact in `Decimal`, never floats.
//!
//! Every way an answer can be wrong (no price, null, zero or negative, not a number, beyond
//! the plausibility cap, an unknown currency, another product) is a detail naming the
//! pointer, which the caller reports as `invalid_response`.

use std::str::FromStr;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::Value;

use crate::domain::{Currency, ProductId};
use crate::settings::{PriceUnit, ResponseSettings};

/// Prices above this are treated as a broken source, not a quote.
const MAX_PRICE: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);

/// Where one source keeps what we need in its answer.
#[derive(Clone, Debug)]
pub struct Mapping(ResponseSettings);

impl Mapping {
    pub fn new(settings: ResponseSettings) -> Self {
        Self(settings)
    }

    /// The status means "this source does not sell it".
    pub fn is_not_found(&self, status: StatusCode) -> bool {
        self.0.not_found.contains(&status.as_u16())
    }

    /// The quote in `answer` for `id`, or what is wrong with it.
    pub fn read(&self, answer: &Value, id: &ProductId) -> Result<(Decimal, Currency), String> {
        let m = &self.0;
        if let Some(pointer) = &m.product_id {
            match answer.pointer(pointer) {
                Some(Value::String(found)) if found == id.as_str() => {}
                Some(Value::Number(found)) if found.to_string() == id.as_str() => {}
                Some(Value::Null) | None => return Err(format!("no product id at {pointer}")),
                Some(other) => return Err(format!("answered for product {other} (at {pointer})")),
            }
        }
        let price = self.price(answer)?;
        let currency = match m.currency.as_deref().map(|p| (p, answer.pointer(p))) {
            Some((pointer, Some(Value::String(code)))) => {
                Currency::parse(code).map_err(|_| format!("currency {code:?} at {pointer} is not an ISO 4217 code"))?
            }
            Some((pointer, Some(found))) if !found.is_null() => {
                return Err(format!("currency at {pointer} is not a string: {found}"));
            }
            Some((pointer, _)) => m.default_currency.ok_or_else(|| format!("no currency at {pointer}"))?,
            // Settings refuse a mapping with neither.
            None => m.default_currency.ok_or("no currency pointer and no default currency")?,
        };
        Ok((price, currency))
    }

    fn price(&self, answer: &Value) -> Result<Decimal, String> {
        let pointer = &self.0.price;
        let raw = match answer.pointer(pointer) {
            None | Some(Value::Null) => return Err(format!("no price at {pointer}")),
            Some(Value::String(text)) => text.trim().to_owned(),
            // serde_json holds a fractional number as an f64: its shortest text is the number
            // as written for up to 15 significant digits, which covers prices.
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => return Err(format!("price at {pointer} is not a number: {other}")),
        };
        // Digits, one sign, one point, an exponent: nothing else (Decimal would take "1_000").
        if !raw.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E')) {
            return Err(format!("price {raw:?} at {pointer} is not a number"));
        }
        let amount = Decimal::from_str(&raw)
            .or_else(|_| Decimal::from_scientific(&raw))
            .map_err(|_| format!("price {raw:?} at {pointer} is not a number"))?;
        let price = match self.0.price_unit {
            PriceUnit::Whole => Some(amount),
            PriceUnit::Cents => shift(amount, 2),
            PriceUnit::Micros => shift(amount, 6),
        }
        .ok_or_else(|| format!("price {raw:?} at {pointer} is out of range"))?;
        if price <= Decimal::ZERO || price > MAX_PRICE {
            return Err(format!("implausible price {price} at {pointer}"));
        }
        Ok(price)
    }
}

/// `amount / 10^places`, exactly, shown with at least two decimals and no trailing zeros
/// beyond them (12340000 micros → 12.34).
fn shift(amount: Decimal, places: u32) -> Option<Decimal> {
    let mut shifted = amount;
    shifted.set_scale(amount.scale().checked_add(places)?).ok()?;
    let mut shown = shifted.normalize();
    if shown.scale() < 2 {
        shown.rescale(2);
    }
    Some(shown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(settings: serde_json::Value) -> Mapping {
        Mapping::new(serde_json::from_value(settings).unwrap())
    }

    fn id() -> ProductId {
        ProductId::parse("sku-1").unwrap()
    }

    #[test]
    fn ebay_style_search_with_a_decimal_string() {
        let m = mapping(json!({
            "price": "/itemSummaries/0/price/value", "currency": "/itemSummaries/0/price/currency",
            "product_id": "/itemSummaries/0/gtin"
        }));
        let answer = json!({"itemSummaries": [{"gtin": "sku-1", "price": {"value": "12.50", "currency": "EUR"}}]});
        assert_eq!(m.read(&answer, &id()).unwrap(), (Decimal::new(1250, 2), Currency::parse("EUR").unwrap()));
        let other = json!({"itemSummaries": [{"gtin": "sku-2", "price": {"value": "1", "currency": "EUR"}}]});
        assert!(m.read(&other, &id()).unwrap_err().contains("/itemSummaries/0/gtin"));
    }

    #[test]
    fn merchant_style_micros_are_exact() {
        let m = mapping(json!({
            "price": "/productAttributes/price/amountMicros",
            "currency": "/productAttributes/price/currencyCode", "price_unit": "micros"
        }));
        let answer = json!({"productAttributes": {"price": {"amountMicros": "12340000", "currencyCode": "USD"}}});
        let (price, currency) = m.read(&answer, &id()).unwrap();
        assert_eq!((price.to_string(), currency.to_string()), ("12.34".into(), "USD".into()));
        let odd = json!({"productAttributes": {"price": {"amountMicros": "1", "currencyCode": "USD"}}});
        assert_eq!(m.read(&odd, &id()).unwrap().0.to_string(), "0.000001");
    }

    #[test]
    fn bestbuy_style_number_with_a_default_currency_and_cents() {
        let m = mapping(json!({"price": "/products/0/salePrice", "default_currency": "USD"}));
        let answer = json!({"products": [{"sku": 1, "salePrice": 199.99}]});
        assert_eq!(m.read(&answer, &id()).unwrap(), (Decimal::new(19999, 2), Currency::parse("USD").unwrap()));
        let cents = mapping(json!({"price": "/p", "default_currency": "EUR", "price_unit": "cents"}));
        assert_eq!(cents.read(&json!({"p": 1250}), &id()).unwrap().0.to_string(), "12.50");
    }

    #[test]
    fn a_currency_pointer_that_finds_nothing_falls_back_to_the_default() {
        let m = mapping(json!({"price": "/p", "currency": "/c", "default_currency": "GBP"}));
        assert_eq!(m.read(&json!({"p": "3"}), &id()).unwrap().1.to_string(), "GBP");
        assert_eq!(m.read(&json!({"p": "3", "c": null}), &id()).unwrap().1.to_string(), "GBP");
        assert!(m.read(&json!({"p": "3", "c": "euro"}), &id()).unwrap_err().contains("/c"));
        let strict = mapping(json!({"price": "/p", "currency": "/c"}));
        assert_eq!(strict.read(&json!({"p": "3"}), &id()).unwrap_err(), "no currency at /c");
    }

    #[test]
    fn bad_prices_name_the_pointer() {
        let m = mapping(json!({"price": "/p", "default_currency": "EUR"}));
        for bad in [
            json!({}),
            json!({"p": null}),
            json!({"p": "-1"}),
            json!({"p": 0}),
            json!({"p": "cheap"}),
            json!({"p": true}),
            json!({"p": "2000000000"}),
            json!({"p": [1]}),
            json!({"p": "1_000"}),
            json!({"p": "1e-4294967295"}),
            json!({"p": "9e99999"}),
        ] {
            let err = m.read(&bad, &id()).unwrap_err();
            assert!(err.contains("at /p"), "{bad}: {err}");
        }
        assert_eq!(m.read(&json!({"p": "1e2"}), &id()).unwrap().0, Decimal::new(100, 0));
    }

    #[test]
    fn not_found_statuses() {
        let m = mapping(json!({"price": "/p", "default_currency": "EUR", "not_found": [404, 410]}));
        let neither = mapping(json!({"price": "/p"}));
        assert!(neither.read(&json!({"p": "1"}), &id()).is_err(), "no panic without settings validation");
        assert!(m.is_not_found(StatusCode::NOT_FOUND) && m.is_not_found(StatusCode::GONE));
        assert!(!m.is_not_found(StatusCode::SERVICE_UNAVAILABLE));
    }
}
