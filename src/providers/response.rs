//! Reading a source's answer: price, currency and product id at the configured RFC 6901 JSON
//! Pointers (`[providers.response]`), prices exact in `Decimal`, never floats.
//!
//! Every way an answer can be wrong (no price, null, zero or negative, not a number, beyond
//! the plausibility cap, below the currency's smallest coin or rounding to nothing once
//! converted, an unknown currency, another product) is a detail naming the pointer, which the
//! caller reports as `invalid_response`.
//!
//! An answer that is a list of offers (`items`, a search's listings) is read offer by offer:
//! offers that do not `match`, or are about another product, do not count, nor do offers
//! whose price cannot be read when another can. Of the rest, `select` picks the quote: the
//! cheapest once converted into the base currency, or the first. No offer at all is
//! `not_found`; only unreadable ones, `invalid_response`.

use std::str::FromStr;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::Value;

use crate::domain::{Currency, ProductId, Rates};
use crate::settings::{PriceUnit, ResponseSettings, Select};

/// Prices above this are treated as a broken source, not a quote.
const MAX_PRICE: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
/// The longest offer id kept; a longer one is dropped (the quote stands).
pub const MAX_OFFER_ID: usize = 128;
/// The longest offer URL kept; a longer one is dropped (the quote stands).
pub const MAX_OFFER_URL: usize = 2048;

/// What a source offers for a product: one quote's worth, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    pub price: Decimal,
    pub currency: Currency,
    pub offer_id: Option<String>,
    pub url: Option<String>,
}

/// Why an answer gives no quote.
#[derive(Debug, PartialEq, Eq)]
pub enum Unread {
    /// The source says, in its way, that it has no offer for the product (`not_found`).
    NoOffer(String),
    /// The answer is not what the mapping expects (`invalid_response`); the detail names where.
    Invalid(String),
}

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

    /// The offer in `answer` for `id`; among a list's, the one `select` picks, compared in the
    /// base currency of `rates`.
    pub fn read(&self, answer: &Value, id: &ProductId, rates: &Rates) -> Result<Offer, Unread> {
        let Some(items) = &self.0.items else {
            return self.read_one(answer, id, rates).map_err(Unread::Invalid);
        };
        let list = match answer.pointer(items) {
            None | Some(Value::Null) => return Err(Unread::NoOffer(format!("no offers at {items}"))),
            Some(Value::Array(list)) if list.is_empty() => {
                return Err(Unread::NoOffer(format!("no offers at {items}")));
            }
            Some(Value::Array(list)) => list,
            Some(_) => return Err(Unread::Invalid(format!("offers at {items} are not a list"))),
        };
        let mut unreadable = None;
        let mut offers = list.iter().enumerate().filter(|(_, item)| self.matches(item)).filter_map(|(i, item)| {
            match self.read_one(item, id, rates) {
                Ok(offer) => Some(offer),
                // Another product in a search's results is not an offer for this one.
                Err(e) if e.starts_with(ANOTHER_PRODUCT) => None,
                Err(e) => {
                    unreadable.get_or_insert_with(|| format!("offer {i} at {items}: {e}"));
                    None
                }
            }
        });
        let chosen = match self.0.select {
            Select::First => offers.next(),
            // Ties keep the source's order. Offers in a currency without a rate come last.
            Select::Cheapest => offers.min_by_key(|o| {
                let base = rates.rate(o.currency).map(|rate| o.price * rate);
                (base.is_none(), base, o.price)
            }),
        };
        match (chosen, unreadable) {
            (Some(offer), _) => Ok(offer),
            (None, Some(error)) => Err(Unread::Invalid(error)),
            (None, None) => Err(Unread::NoOffer(format!("none of the {} offers at {items} matches", list.len()))),
        }
    }

    /// Whether `item` has every `match` value.
    fn matches(&self, item: &Value) -> bool {
        self.0.matches.iter().all(|(pointer, wanted)| item.pointer(pointer) == Some(wanted))
    }

    /// The offer in `answer` (a whole answer, or one item of a list).
    fn read_one(&self, answer: &Value, id: &ProductId, rates: &Rates) -> Result<Offer, String> {
        let m = &self.0;
        if let Some(pointer) = &m.product_id {
            match answer.pointer(pointer) {
                Some(Value::String(found)) if found == id.as_str() => {}
                Some(Value::Number(found)) if found.to_string() == id.as_str() => {}
                Some(Value::Null) | None => return Err(format!("no product id at {pointer}")),
                Some(_) => return Err(format!("{ANOTHER_PRODUCT} (at {pointer})")),
            }
        }
        let price = self.price(answer)?;
        let currency = match m.currency.as_deref().map(|p| (p, answer.pointer(p))) {
            Some((pointer, Some(Value::String(code)))) => Currency::parse(code)
                .map_err(|_| format!("currency {:?} at {pointer} is not an ISO 4217 code", excerpt(code)))?,
            Some((pointer, Some(found))) if !found.is_null() => {
                return Err(format!("currency at {pointer} is not a string"));
            }
            Some((pointer, _)) => m.default_currency.ok_or_else(|| format!("no currency at {pointer}"))?,
            // Settings refuse a mapping with neither.
            None => m.default_currency.ok_or("no currency pointer and no default currency")?,
        };
        // Less than the smallest coin is no price (0.004 EUR), nor is one that converts to nothing.
        if let Some(dp) = currency.minor_units()
            && price < Decimal::new(1, dp)
        {
            return Err(format!("price {price} {currency} at {} is below its smallest unit", m.price));
        }
        if rates.converted(price, currency).is_some_and(|(base, _)| base.is_zero()) {
            return Err(format!("price {price} {currency} at {} is nothing in {}", m.price, rates.base()));
        }
        let offer_id = m.offer_id.as_deref().and_then(|p| answer.pointer(p)).and_then(|v| match v {
            Value::String(text) => Some(text.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        let offer_id = offer_id.filter(|id| id.len() <= MAX_OFFER_ID && !id.chars().any(char::is_control));
        let url = m.offer_url.as_deref().and_then(|p| answer.pointer(p)).and_then(Value::as_str).and_then(web_url);
        Ok(Offer { price, currency, offer_id, url })
    }

    fn price(&self, answer: &Value) -> Result<Decimal, String> {
        let pointer = &self.0.price;
        let raw = match answer.pointer(pointer) {
            None | Some(Value::Null) => return Err(format!("no price at {pointer}")),
            Some(Value::String(text)) => text.trim().to_owned(),
            // serde_json holds a fractional number as an f64: its shortest text is the number
            // as written for up to 15 significant digits, which covers prices.
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(format!("price at {pointer} is not a number")),
        };
        // Digits, one sign, one point, an exponent: nothing else (Decimal would take "1_000").
        let shown = excerpt(&raw);
        if !raw.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E')) {
            return Err(format!("price {shown:?} at {pointer} is not a number"));
        }
        let amount = Decimal::from_str(&raw)
            .or_else(|_| Decimal::from_scientific(&raw))
            .map_err(|_| format!("price {shown:?} at {pointer} is not a number"))?;
        let price = match self.0.price_unit {
            PriceUnit::Whole => Some(amount),
            PriceUnit::Cents => shift(amount, 2),
            PriceUnit::Micros => shift(amount, 6),
        }
        .ok_or_else(|| format!("price {shown:?} at {pointer} is out of range"))?;
        if price <= Decimal::ZERO || price > MAX_PRICE {
            return Err(format!("implausible price {price} at {pointer}"));
        }
        Ok(price)
    }
}

/// How [`Mapping::read_one`]'s detail starts when the offer is about another product.
const ANOTHER_PRODUCT: &str = "answered for another product";

/// A source's text in a detail: at most 32 characters of it.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(32) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// `text` if it is an `http` or `https` URL of a sane length.
fn web_url(text: &str) -> Option<String> {
    if text.len() > MAX_OFFER_URL {
        return None;
    }
    let url = reqwest::Url::parse(text).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| url.to_string())
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

    fn rates() -> Rates {
        let gbp = (Currency::parse("GBP").unwrap(), Decimal::new(117, 2));
        Rates::new(Currency::parse("EUR").unwrap(), [gbp].into()).unwrap()
    }

    /// `read`, with what is wrong as text.
    trait Read {
        fn get(&self, answer: &Value, id: &ProductId) -> Result<(Decimal, Currency), String>;
    }

    impl Read for Mapping {
        fn get(&self, answer: &Value, id: &ProductId) -> Result<(Decimal, Currency), String> {
            match self.read(answer, id, &rates()) {
                Ok(offer) => Ok((offer.price, offer.currency)),
                Err(Unread::Invalid(e) | Unread::NoOffer(e)) => Err(e),
            }
        }
    }

    #[test]
    fn ebay_style_search_with_a_decimal_string() {
        let m = mapping(json!({
            "price": "/itemSummaries/0/price/value", "currency": "/itemSummaries/0/price/currency",
            "product_id": "/itemSummaries/0/gtin"
        }));
        let answer = json!({"itemSummaries": [{"gtin": "sku-1", "price": {"value": "12.50", "currency": "EUR"}}]});
        assert_eq!(m.get(&answer, &id()).unwrap(), (Decimal::new(1250, 2), Currency::parse("EUR").unwrap()));
        let other = json!({"itemSummaries": [{"gtin": "sku-2", "price": {"value": "1", "currency": "EUR"}}]});
        assert!(m.get(&other, &id()).unwrap_err().contains("/itemSummaries/0/gtin"));
    }

    #[test]
    fn merchant_style_micros_are_exact() {
        let m = mapping(json!({
            "price": "/productAttributes/price/amountMicros",
            "currency": "/productAttributes/price/currencyCode", "price_unit": "micros"
        }));
        let answer = json!({"productAttributes": {"price": {"amountMicros": "12340000", "currencyCode": "USD"}}});
        let (price, currency) = m.get(&answer, &id()).unwrap();
        assert_eq!((price.to_string(), currency.to_string()), ("12.34".into(), "USD".into()));
        let odd = json!({"productAttributes": {"price": {"amountMicros": "1", "currencyCode": "USD"}}});
        assert!(m.get(&odd, &id()).unwrap_err().contains("below its smallest unit"), "a millionth of a dollar");
    }

    #[test]
    fn bestbuy_style_number_with_a_default_currency_and_cents() {
        let m = mapping(json!({"price": "/products/0/salePrice", "default_currency": "USD"}));
        let answer = json!({"products": [{"sku": 1, "salePrice": 199.99}]});
        assert_eq!(m.get(&answer, &id()).unwrap(), (Decimal::new(19999, 2), Currency::parse("USD").unwrap()));
        let cents = mapping(json!({"price": "/p", "default_currency": "EUR", "price_unit": "cents"}));
        assert_eq!(cents.get(&json!({"p": 1250}), &id()).unwrap().0.to_string(), "12.50");
    }

    #[test]
    fn a_currency_pointer_that_finds_nothing_falls_back_to_the_default() {
        let m = mapping(json!({"price": "/p", "currency": "/c", "default_currency": "GBP"}));
        assert_eq!(m.get(&json!({"p": "3"}), &id()).unwrap().1.to_string(), "GBP");
        assert_eq!(m.get(&json!({"p": "3", "c": null}), &id()).unwrap().1.to_string(), "GBP");
        assert!(m.get(&json!({"p": "3", "c": "euro"}), &id()).unwrap_err().contains("/c"));
        let strict = mapping(json!({"price": "/p", "currency": "/c"}));
        assert_eq!(strict.get(&json!({"p": "3"}), &id()).unwrap_err(), "no currency at /c");
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
            let err = m.get(&bad, &id()).unwrap_err();
            assert!(err.contains("at /p"), "{bad}: {err}");
        }
        assert_eq!(m.get(&json!({"p": "1e2"}), &id()).unwrap().0, Decimal::new(100, 0));
    }

    #[test]
    fn a_price_below_the_smallest_coin_is_no_price() {
        let eur = mapping(json!({"price": "/p", "default_currency": "EUR"}));
        let err = eur.get(&json!({"p": "0.004"}), &id()).unwrap_err();
        assert_eq!(err, "price 0.004 EUR at /p is below its smallest unit");
        assert!(eur.get(&json!({"p": "0.01"}), &id()).is_ok(), "one cent is a price");
        let jpy = mapping(json!({"price": "/p", "default_currency": "JPY"}));
        assert!(jpy.get(&json!({"p": "0.5"}), &id()).is_err(), "yen have no fraction");
        let jpy_rate = (Currency::parse("JPY").unwrap(), Decimal::new(4, 3));
        let rates = Rates::new(Currency::parse("EUR").unwrap(), [jpy_rate].into()).unwrap();
        match jpy.read(&json!({"p": "1"}), &id(), &rates) {
            Err(Unread::Invalid(e)) => assert_eq!(e, "price 1 JPY at /p is nothing in EUR"),
            other => panic!("{other:?}"),
        }
        assert!(jpy.read(&json!({"p": "2"}), &id(), &rates).is_ok(), "2 JPY is 0.008, shown 0.01 EUR");
    }

    #[test]
    fn not_found_statuses() {
        let m = mapping(json!({"price": "/p", "default_currency": "EUR", "not_found": [404, 410]}));
        let neither = mapping(json!({"price": "/p"}));
        assert!(neither.get(&json!({"p": "1"}), &id()).is_err(), "no panic without settings validation");
        assert!(m.is_not_found(StatusCode::NOT_FOUND) && m.is_not_found(StatusCode::GONE));
        assert!(!m.is_not_found(StatusCode::SERVICE_UNAVAILABLE));
    }

    /// eBay Browse's search: listings in relevance order, new and used, several currencies.
    fn listings() -> Value {
        json!({"total": 5, "itemSummaries": [
            {"itemId": "v1|1|0", "condition": "USED", "gtin": "sku-1", "itemWebUrl": "https://www.ebay.example/itm/1",
                "price": {"value": "40.00", "currency": "EUR"}},
            {"itemId": "v1|2|0", "condition": "NEW", "gtin": "sku-1", "itemWebUrl": "https://www.ebay.example/itm/2",
                "price": {"value": "54.10", "currency": "EUR"}},
            {"itemId": "v1|3|0", "condition": "NEW", "gtin": "sku-1", "itemWebUrl": "javascript:alert(1)",
                "price": {"value": "44.00", "currency": "GBP"}},
            {"itemId": "v1|4|0", "condition": "NEW", "gtin": "sku-2", "price": {"value": "1.00", "currency": "EUR"}},
            {"itemId": "v1|5|0", "condition": "NEW", "gtin": "sku-1", "itemWebUrl": "https://www.ebay.example/itm/5",
                "price": {"value": "49.95", "currency": "EUR"}},
        ]})
    }

    fn search(extra: Value) -> Mapping {
        let mut settings = json!({"items": "/itemSummaries", "price": "/price/value", "currency": "/price/currency",
            "product_id": "/gtin", "offer_id": "/itemId", "offer_url": "/itemWebUrl"});
        settings.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        mapping(settings)
    }

    #[test]
    fn the_cheapest_matching_offer_in_the_base_currency_is_the_quote() {
        let new = search(json!({"match": {"/condition": "NEW"}}));
        let offer = new.read(&listings(), &id(), &rates()).unwrap();
        // 44.00 GBP is 51.48 EUR: nominally the cheapest new one, yet not once converted; the
        // 1.00 one is another product's.
        assert_eq!((offer.price.to_string(), offer.offer_id.as_deref()), ("49.95".into(), Some("v1|5|0")));
        assert_eq!(offer.url.as_deref(), Some("https://www.ebay.example/itm/5"));
        let any = search(json!({})).read(&listings(), &id(), &rates()).unwrap();
        assert_eq!(any.price.to_string(), "40.00", "without match, the used one is cheapest");
        let first = search(json!({"match": {"/condition": "NEW"}, "select": "first"}));
        assert_eq!(first.read(&listings(), &id(), &rates()).unwrap().price.to_string(), "54.10");
        let gbp = search(json!({"match": {"/itemId": "v1|3|0"}})).read(&listings(), &id(), &rates()).unwrap();
        assert_eq!((gbp.currency.as_str(), gbp.url), ("GBP", None), "only http and https URLs are kept");
    }

    #[test]
    fn no_offer_is_not_found_and_only_unreadable_ones_are_invalid() {
        let m = search(json!({"match": {"/condition": "NEW"}}));
        for nothing in [json!({"total": 0}), json!({"itemSummaries": []}), json!({"itemSummaries": null})] {
            assert!(matches!(m.read(&nothing, &id(), &rates()), Err(Unread::NoOffer(_))), "{nothing}");
        }
        let used_only = json!({"itemSummaries": [{"condition": "USED", "gtin": "sku-1", "price": {"value": "1", "currency": "EUR"}}]});
        assert_eq!(
            m.read(&used_only, &id(), &rates()),
            Err(Unread::NoOffer("none of the 1 offers at /itemSummaries matches".into()))
        );
        let broken = json!({"itemSummaries": [
            {"condition": "NEW", "gtin": "sku-1", "price": {"value": "cheap", "currency": "EUR"}},
            {"condition": "NEW", "gtin": "sku-1", "price": {"value": "3.00", "currency": "EUR"}}]});
        assert_eq!(m.read(&broken, &id(), &rates()).unwrap().price.to_string(), "3.00", "one bad offer is skipped");
        let all_broken = json!({"itemSummaries": [{"condition": "NEW", "gtin": "sku-1", "price": {"value": "cheap"}}]});
        let Err(Unread::Invalid(detail)) = m.read(&all_broken, &id(), &rates()) else { panic!("invalid") };
        assert!(detail.starts_with("offer 0 at /itemSummaries: price \"cheap\""), "{detail}");
        assert!(matches!(m.read(&json!({"itemSummaries": {}}), &id(), &rates()), Err(Unread::Invalid(_))));
    }

    #[test]
    fn a_sources_values_are_bounded_in_what_we_keep() {
        let long = "x".repeat(10_000);
        let m = mapping(json!({"price": "/p", "default_currency": "EUR", "offer_id": "/id", "offer_url": "/u"}));
        let answer = json!({"p": "2", "id": long, "u": format!("https://h/{long}")});
        let offer = m.read(&answer, &id(), &rates()).unwrap();
        assert_eq!((offer.offer_id, offer.url), (None, None), "too long to keep, yet the quote stands");
        let Err(Unread::Invalid(detail)) = m.read(&json!({"p": long}), &id(), &rates()) else { panic!() };
        assert!(detail.len() < 100, "{detail}");
        let numeric = m.read(&json!({"p": "2", "id": 42}), &id(), &rates()).unwrap();
        assert_eq!(numeric.offer_id.as_deref(), Some("42"));
    }
}
