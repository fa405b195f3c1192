//! Progress of a computation: one [`Progress`] event per source as it answers or fails, so a
//! client can watch quotes arrive (`GET /v1/prices/{id}/events`).
//!
//! The consumer appends each event to the product's log, `{prefix}:progress:{<id>}` (a Redis
//! Stream capped at [`MAX_EVENTS`], expiring with the pending marker, deleted when the result is
//! stored) and announces it on `{prefix}:progress:<id>`, with the event in the message. A
//! producer reads the log for a watcher that joins late and relays the announcements live,
//! through its one subscription ([`super::Ready`]). Only a product somebody watches is logged:
//! an event stream marks it first (`{prefix}:watched:{<id>}`, [`super::ProgressLog::watch`]),
//! and the consumer reads the mark with the earlier result.
//!
//! Events are at-least-once (a redelivered request is computed again and appends again), so a
//! reader keeps one event per provider. An event's id orders it in its log.

use bytes::Bytes;

use crate::domain::{Failure, Quote};

/// The most events one product's log keeps (Redis trims it to about this many).
pub const MAX_EVENTS: usize = 256;

/// What one source's outcome was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressKind {
    Quote,
    Failure,
}

impl ProgressKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProgressKind::Quote => "quote",
            ProgressKind::Failure => "failure",
        }
    }

    fn parse(s: &[u8]) -> Option<Self> {
        match s {
            b"quote" => Some(ProgressKind::Quote),
            b"failure" => Some(ProgressKind::Failure),
            _ => None,
        }
    }
}

/// Where an event sits in its product's log: a Redis Stream id (`<ms>-<seq>`), or a counter
/// in the in-memory store (`0-<n>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProgressId {
    pub ms: u64,
    pub seq: u64,
}

impl ProgressId {
    /// Parses `<ms>-<seq>`; anything else is `None` (a client's `Last-Event-ID` is input).
    pub fn parse(s: &str) -> Option<Self> {
        let (ms, seq) = s.split_once('-')?;
        let digits = |d: &str| !d.is_empty() && d.len() <= 20 && d.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(Self { ms: ms.parse().ok()?, seq: seq.parse().ok()? })
    }
}

impl std::fmt::Display for ProgressId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One source's outcome, as the consumer recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub id: ProgressId,
    pub kind: ProgressKind,
    /// Which source it is about (one event per source is what a reader keeps).
    pub provider: String,
    /// The quote's or the failure's JSON, as in the comparison.
    pub data: Bytes,
}

impl Progress {
    /// The kind and JSON of one outcome, as the consumer records it.
    pub fn encode(outcome: &Result<Quote, Failure>) -> (ProgressKind, Vec<u8>) {
        match outcome {
            Ok(quote) => (ProgressKind::Quote, serde_json::to_vec(quote).expect("a Quote always serializes")),
            Err(failure) => (ProgressKind::Failure, serde_json::to_vec(failure).expect("a Failure always serializes")),
        }
    }

    /// An event from its id, kind and JSON; `None` if they are not what a consumer writes.
    pub fn decode(id: ProgressId, kind: &[u8], data: &[u8]) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct About {
            provider: String,
        }
        let kind = ProgressKind::parse(kind)?;
        let about: About = serde_json::from_slice(data).ok()?;
        Some(Self { id, kind, provider: about.provider, data: Bytes::copy_from_slice(data) })
    }

    /// The announcement's message: `<id> <kind> <json>`.
    pub fn message(id: &str, kind: ProgressKind, data: &[u8]) -> Vec<u8> {
        let mut message = Vec::with_capacity(id.len() + data.len() + 10);
        message.extend_from_slice(id.as_bytes());
        message.push(b' ');
        message.extend_from_slice(kind.as_str().as_bytes());
        message.push(b' ');
        message.extend_from_slice(data);
        message
    }

    /// Reads an announcement's message (see [`Progress::message`]).
    pub fn from_message(message: &[u8]) -> Option<Self> {
        let mut parts = message.splitn(3, |&b| b == b' ');
        let id = ProgressId::parse(std::str::from_utf8(parts.next()?).ok()?)?;
        let kind = parts.next()?;
        Self::decode(id, kind, parts.next()?)
    }

    /// The JSON as text (the consumer writes it with serde_json: always UTF-8).
    pub fn data_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.data).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Currency, FailureReason};

    #[test]
    fn ids_parse_strictly_and_order_by_time_then_sequence() {
        let a = ProgressId::parse("1700000000000-0").unwrap();
        let b = ProgressId::parse("1700000000000-1").unwrap();
        let c = ProgressId::parse("1700000000001-0").unwrap();
        assert!(a < b && b < c);
        assert_eq!(b.to_string(), "1700000000000-1");
        for bad in ["", "-", "1-", "-1", "1", "a-1", "1-1-1", " 1-1", "1-+1", "99999999999999999999999-0"] {
            assert_eq!(ProgressId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_announcement_carries_the_event_whole() {
        let quote = Quote::new("acme", rust_decimal::Decimal::new(1999, 2), Currency::parse("EUR").unwrap(), 12);
        let (kind, data) = Progress::encode(&Ok(quote));
        let message = Progress::message("5-2", kind, &data);
        let event = Progress::from_message(&message).unwrap();
        assert_eq!(event.id, ProgressId { ms: 5, seq: 2 });
        assert_eq!((event.kind, event.provider.as_str()), (ProgressKind::Quote, "acme"));
        assert_eq!(
            event.data_str().unwrap(),
            r#"{"provider":"acme","price":"19.99","currency":"EUR","latency_ms":12}"#
        );

        let failure = Failure::new("slow one", FailureReason::Timeout, "a b c");
        let (kind, data) = Progress::encode(&Err(failure));
        let event = Progress::from_message(&Progress::message("7-0", kind, &data)).unwrap();
        assert_eq!((event.kind, event.provider.as_str()), (ProgressKind::Failure, "slow one"));
    }

    #[test]
    fn garbage_is_not_an_event() {
        for bad in [
            &b""[..],
            b"1-0",
            b"1-0 quote",
            b"1-0 other {\"provider\":\"a\"}",
            b"1-0 quote {}",
            b"x quote {\"provider\":\"a\"}",
        ] {
            assert_eq!(Progress::from_message(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
