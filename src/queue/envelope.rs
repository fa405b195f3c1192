//! The message envelope: the contract between producer and consumer.
//!
//! Value: JSON `{schema_version, request_id, product_id, requested_at}`, plus `refresh: true`
//! for a refresh ahead of expiry (absent means false); key: the product id; optional headers
//! `traceparent` and `x-request-id` (the [`Caller`]'s). Decoding tolerates unknown fields (so producers can add
//! some first) and is strict about the required ones, including the product id's format.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::ProductId;

/// The envelope version this build writes and understands.
pub const SCHEMA_VERSION: u32 = 1;
/// Kafka header carrying a W3C trace context, when the caller sent one.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Kafka header carrying the `X-Request-Id` of the HTTP request that published the message.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The [`Caller`]'s headers: a dead letter keeps them, and so does its replayed copy.
pub const CALLER_HEADERS: [&str; 2] = [TRACEPARENT_HEADER, REQUEST_ID_HEADER];

/// Who asked for a message, as far as the logs and traces care: sent as its headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Caller<'a> {
    /// A valid W3C trace context to continue.
    pub traceparent: Option<&'a str>,
    /// The `X-Request-Id` of the HTTP request that published it.
    pub request_id: Option<&'a str>,
}

impl Caller<'_> {
    pub fn headers(&self) -> super::Headers {
        let mut headers = super::Headers::new();
        if let Some(value) = self.traceparent {
            headers = headers.with(TRACEPARENT_HEADER, value);
        }
        if let Some(value) = self.request_id {
            headers = headers.with(REQUEST_ID_HEADER, value);
        }
        headers
    }
}

/// "Compute the comparison for this product."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceRequest {
    pub schema_version: u32,
    pub request_id: Uuid,
    pub product_id: ProductId,
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    /// Compute it although a result exists (it is about to expire and is still asked for).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refresh: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message has no value")]
    Empty,
    /// Shown in the message (it goes to the DLQ's `dlq.error` header), so not a source too.
    #[error("value is not a valid price request: {0}")]
    Json(serde_json::Error),
    #[error("unsupported schema_version {0} (this build understands {SCHEMA_VERSION})")]
    UnsupportedVersion(u32),
}

impl DecodeError {
    /// A short machine-readable reason, for DLQ headers and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::Json(_) => "invalid_json",
            DecodeError::UnsupportedVersion(_) => "unsupported_schema_version",
        }
    }
}

impl PriceRequest {
    pub fn new(product_id: ProductId) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            request_id: Uuid::new_v4(),
            product_id,
            requested_at: OffsetDateTime::now_utc(),
            refresh: false,
        }
    }

    /// A refresh of a result about to expire.
    pub fn refresh(product_id: ProductId) -> Self {
        Self { refresh: true, ..Self::new(product_id) }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a PriceRequest always serializes")
    }

    pub fn decode(payload: Option<&[u8]>) -> Result<Self, DecodeError> {
        let payload = payload.filter(|p| !p.is_empty()).ok_or(DecodeError::Empty)?;
        let request: PriceRequest = serde_json::from_slice(payload).map_err(DecodeError::Json)?;
        if request.schema_version != SCHEMA_VERSION {
            return Err(DecodeError::UnsupportedVersion(request.schema_version));
        }
        Ok(request)
    }
}

/// Accepts an `X-Request-Id` worth keeping: 1 to 128 characters of `A-Z a-z 0-9 - _ . : / + =
/// @` (no spaces, quotes or commas, so it is safe in a header, a log line and a URL).
pub fn valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&b))
}

/// Accepts a W3C `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`) and nothing else, so
/// no caller-controlled garbage reaches a Kafka header.
pub fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    matches!(parts.as_slice(), [v, t, p, f] if hex(v, 2) && hex(t, 32) && hex(p, 16) && hex(f, 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let req = PriceRequest::new(ProductId::parse("sku-9").unwrap());
        assert_eq!(PriceRequest::decode(Some(&req.encode())).unwrap(), req);
    }

    #[test]
    fn tolerates_unknown_fields() {
        let raw = br#"{"schema_version":1,"request_id":"67e55044-10b1-426f-9247-bb680e5fe0c8",
            "product_id":"a1","requested_at":"2026-01-02T03:04:05Z","priority":"high"}"#;
        assert_eq!(PriceRequest::decode(Some(raw)).unwrap().product_id.as_str(), "a1");
    }

    #[test]
    fn strict_about_required_fields_and_their_format() {
        let cases: [&[u8]; 6] = [
            b"not json",
            br#"{"schema_version":1,"product_id":"a1","requested_at":"2026-01-02T03:04:05Z"}"#,
            br#"{"schema_version":1,"request_id":"67e55044-10b1-426f-9247-bb680e5fe0c8","product_id":"../x","requested_at":"2026-01-02T03:04:05Z"}"#,
            br#"{"schema_version":1,"request_id":"67e55044-10b1-426f-9247-bb680e5fe0c8","product_id":"a1","requested_at":"yesterday"}"#,
            br#"{"schema_version":2,"request_id":"67e55044-10b1-426f-9247-bb680e5fe0c8","product_id":"a1","requested_at":"2026-01-02T03:04:05Z"}"#,
            b"",
        ];
        for raw in cases {
            assert!(PriceRequest::decode(Some(raw)).is_err(), "{}", String::from_utf8_lossy(raw));
        }
        assert!(matches!(PriceRequest::decode(None), Err(DecodeError::Empty)));
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = PriceRequest::decode(Some(&bytes));
        }

        #[test]
        fn decoding_mutated_envelopes_never_panics(cut in 0usize..200, byte in proptest::num::u8::ANY, at in 0usize..200) {
            let mut raw = PriceRequest::new(ProductId::parse("sku-1").unwrap()).encode();
            let at = at % raw.len();
            raw[at] = byte;
            raw.truncate(cut.max(1).min(raw.len()));
            if let Ok(request) = PriceRequest::decode(Some(&raw)) {
                proptest::prop_assert!(ProductId::parse(request.product_id.as_str()).is_ok());
            }
        }
    }

    #[test]
    fn request_id_format() {
        for kept in ["abc", "0f8fad5b-d9cb-469f-a165-70867728950e", "shop:eu/req=42+x@edge_1.a", &"a".repeat(128)] {
            assert!(valid_request_id(kept), "{kept}");
        }
        for refused in ["", "has space", "quote\"", "comma,", "\u{fc}n", "line\nbreak", &"a".repeat(129)] {
            assert!(!valid_request_id(refused), "{refused:?}");
        }
    }

    #[test]
    fn traceparent_format() {
        assert!(valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert!(!valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"));
        assert!(!valid_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
        assert!(!valid_traceparent("hello"));
    }
}
