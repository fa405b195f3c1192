//! A result as the store keeps it and L1 serves it: the comparison's JSON, exactly the bytes a
//! hit answers, behind a one-line header holding what serving it needs, so a hit parses no
//! JSON.
//!
//! Format: `#pf1 <computed_at ms> <expires_at ms> <status> "<etag>"\n<comparison JSON>`, times
//! in milliseconds since the Unix epoch, the entity tag quoted as an `ETag` header carries it. A value without the header
//! (written before it existed) is read by parsing its JSON, so a rollout serves what is there.
//!
//! The entity tag is strong: the result's `computed_at` and an xxh3 hash of its bytes, made
//! once, when the result is written.

use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use bytes::Bytes;
use time::OffsetDateTime;

use crate::domain::{Comparison, Status};

/// The header's first word: the format's version.
const MAGIC: &str = "#pf1";

/// The header's reader for scripts that run inside Redis (`STORE_UNTIL` in `store.rs`, which
/// must judge the stored result where it is, atomically): a Lua function
/// `pf_header(value)` answering a stored value's computed_at (ms, or nil for a value without
/// the header) and its status (nil if unreadable). It is here, beside [`StoredResult::encode`]
/// and [`StoredResult::decode`], so one file owns the format; the store contract suite
/// (`tests/it/stores.rs`) runs it on what `encode` writes.
pub(super) const LUA_HEADER: &str = r"
local function pf_header(value)
  local computed, status = string.match(value, '^#pf1 (%-?%d+) %-?%d+ ([%a_]+) ')
  if computed then
    return tonumber(computed), status
  end
  local ok, decoded = pcall(cjson.decode, value)
  if ok and type(decoded) == 'table' and type(decoded.status) == 'string' then
    return nil, decoded.status
  end
  return nil, nil
end
";

/// A result, ready to serve.
#[derive(Clone, Debug)]
pub struct StoredResult {
    /// The comparison's JSON, served as is.
    pub body: Bytes,
    pub status: Status,
    /// When the quotes were gathered, in ms since the Unix epoch.
    pub computed_at_ms: i64,
    /// The end of its price guarantee, in ms since the Unix epoch.
    pub expires_at_ms: i64,
    /// The strong entity tag, quoted (`"…"`), ready for an `ETag` header.
    pub etag: HeaderValue,
    /// The headers every answer of it carries that do not change with time (`Content-Type`,
    /// `X-Cache`, `ETag`, `Vary`), made once: an answer clones them and adds the rest.
    pub headers: HeaderMap,
    /// When this copy stops being servable, on this process's monotonic clock: its guarantee's
    /// end, as the wall clock said when it was read.
    pub expires: Instant,
}

/// Why bytes are not a stored result.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    #[error("the header is not `#pf1 <computed_at> <expires_at> <status> \"<etag>\"`")]
    Header,
    #[error("the comparison JSON is invalid")]
    Json(#[source] serde_json::Error),
}

impl StoredResult {
    /// The stored form of `comparison`.
    pub fn encode(comparison: &Comparison) -> Vec<u8> {
        let json = serde_json::to_vec(comparison).expect("a Comparison always serializes");
        let computed_at_ms = unix_ms(comparison.computed_at);
        let mut out = format!(
            "{MAGIC} {computed_at_ms} {} {} \"{}\"\n",
            unix_ms(comparison.expires_at),
            comparison.status.as_str(),
            etag(computed_at_ms, &json)
        )
        .into_bytes();
        out.extend_from_slice(&json);
        out
    }

    /// Reads a stored value (either format); `now` is the wall clock now.
    pub fn decode(value: Bytes, now: SystemTime) -> Result<Self, Malformed> {
        if !value.starts_with(MAGIC.as_bytes()) {
            return Self::from_json(value, now);
        }
        let newline = value.iter().position(|&b| b == b'\n').ok_or(Malformed::Header)?;
        // Split as bytes: `str::split` with a pattern cost the Redis hit path ~800 instructions.
        let mut words = value[..newline].split(|&b| b == b' ').map(std::str::from_utf8);
        let (Some(Ok(MAGIC)), Some(Ok(computed)), Some(Ok(expires)), Some(Ok(status)), Some(Ok(tag)), None) =
            (words.next(), words.next(), words.next(), words.next(), words.next(), words.next())
        else {
            return Err(Malformed::Header);
        };
        let computed_at_ms = computed.parse().map_err(|_| Malformed::Header)?;
        let expires_at_ms = expires.parse().map_err(|_| Malformed::Header)?;
        let status = Status::parse(status).ok_or(Malformed::Header)?;
        let unquoted = tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')).ok_or(Malformed::Header)?;
        if unquoted.is_empty() || !unquoted.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(Malformed::Header);
        }
        // The tag's bytes, shared with the value (no copy); the header is ASCII.
        let start = newline - tag.len();
        let etag = HeaderValue::from_maybe_shared(value.slice(start..newline)).map_err(|_| Malformed::Header)?;
        // The header is ours: the JSON after it is what the consumer wrote, served unparsed.
        Ok(Self {
            body: value.slice(newline + 1..),
            status,
            computed_at_ms,
            expires_at_ms,
            headers: answer_headers(&etag),
            etag,
            expires: instant_of(expires_at_ms, now),
        })
    }

    /// A value written before the header existed: the comparison's JSON alone.
    fn from_json(body: Bytes, now: SystemTime) -> Result<Self, Malformed> {
        let comparison: Comparison = serde_json::from_slice(&body).map_err(Malformed::Json)?;
        let computed_at_ms = unix_ms(comparison.computed_at);
        let expires_at_ms = unix_ms(comparison.expires_at);
        let etag = quoted(&etag(computed_at_ms, &body));
        Ok(Self {
            headers: answer_headers(&etag),
            etag,
            status: comparison.status,
            computed_at_ms,
            expires_at_ms,
            expires: instant_of(expires_at_ms, now),
            body,
        })
    }

    /// The comparison itself, parsed from the body (for the few who need its quotes).
    pub fn comparison(&self) -> Result<Comparison, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    pub fn ttl_left(&self) -> Duration {
        self.ttl_left_at(Instant::now())
    }

    /// How long it stays servable, seen at `now`.
    pub fn ttl_left_at(&self, now: Instant) -> Duration {
        self.expires.saturating_duration_since(now)
    }

    /// How long its price guarantee was given for: `expires_at - computed_at`.
    pub fn window(&self) -> Duration {
        Duration::from_millis((self.expires_at_ms - self.computed_at_ms).max(0) as u64)
    }

    /// Whole seconds since it was computed, by the wall clock `now`.
    pub fn age_secs(&self, now: SystemTime) -> u64 {
        (ms_since_epoch(now) - self.computed_at_ms).max(0) as u64 / 1000
    }

    /// Whether `tags` (an `If-None-Match` value) names this result: `*`, or a list of entity
    /// tags compared weakly (RFC 9110 §13.1.2: `W/` is ignored).
    pub fn matches(&self, tags: &[u8]) -> bool {
        etag_listed(tags, self.etag.as_bytes())
    }
}

/// Whether `tags` (an `If-None-Match` value) names the entity tag `ours` (quoted, as sent):
/// `*`, or a list compared weakly (RFC 9110 §13.1.2: `W/` is ignored).
pub fn etag_listed(tags: &[u8], ours: &[u8]) -> bool {
    let tags = tags.trim_ascii();
    if tags == b"*" {
        return true;
    }
    tags.split(|&b| b == b',').map(|t| t.trim_ascii()).any(|t| t.strip_prefix(b"W/").unwrap_or(t) == ours)
}

/// The entity tag (unquoted) of a result computed at `computed_at_ms` with these bytes.
fn etag(computed_at_ms: i64, json: &[u8]) -> String {
    format!("{computed_at_ms:x}-{:016x}", xxhash_rust::xxh3::xxh3_64(json))
}

fn answer_headers(etag: &HeaderValue) -> HeaderMap {
    // Cloned from one made once, and the tag set: half the cost of building it (callgrind).
    static FIXED: LazyLock<HeaderMap> = LazyLock::new(|| {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(HeaderName::from_static("x-cache"), HeaderValue::from_static("HIT"));
        headers.insert(header::ETAG, HeaderValue::from_static("\"\""));
        headers.insert(header::VARY, HeaderValue::from_static("Prefer"));
        headers
    });
    let mut headers = FIXED.clone();
    headers.insert(header::ETAG, etag.clone());
    headers
}

fn quoted(tag: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{tag}\"")).expect("hex digits and dashes")
}

fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn ms_since_epoch(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The monotonic instant at which the wall clock will read `at_ms`.
fn instant_of(at_ms: i64, now: SystemTime) -> Instant {
    Instant::now() + Duration::from_millis((at_ms - ms_since_epoch(now)).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Currency, ProductId, Quote, TtlPolicy};

    fn comparison(status_ok: bool) -> Comparison {
        let policy = TtlPolicy {
            answered: Duration::from_secs(300),
            transient: Duration::from_secs(300),
            failed: Duration::from_secs(30),
            not_found: Duration::from_secs(600),
        };
        let quote = Quote::new("acme", rust_decimal::Decimal::new(1999, 2), Currency::parse("EUR").unwrap(), 12);
        let outcomes = if status_ok { vec![Ok(quote)] } else { vec![] };
        Comparison::aggregate(
            ProductId::parse("sku-1").unwrap(),
            outcomes,
            OffsetDateTime::now_utc(),
            &policy,
            &Default::default(),
        )
    }

    #[test]
    fn a_stored_result_serves_its_exact_json_and_what_the_header_says() {
        let c = comparison(true);
        let stored = StoredResult::decode(Bytes::from(StoredResult::encode(&c)), SystemTime::now()).unwrap();
        assert_eq!(stored.body, serde_json::to_vec(&c).unwrap());
        assert_eq!(stored.comparison().unwrap(), c);
        assert_eq!(stored.status, Status::Complete);
        assert_eq!(stored.window(), Duration::from_secs(300));
        let left = stored.ttl_left();
        assert!(left > Duration::from_secs(298) && left <= Duration::from_secs(300), "{left:?}");
        assert!(stored.etag.to_str().unwrap().starts_with('"'));
    }

    #[test]
    fn a_value_written_before_the_header_is_read_the_same() {
        let c = comparison(false);
        let legacy = StoredResult::decode(Bytes::from(serde_json::to_vec(&c).unwrap()), SystemTime::now()).unwrap();
        let current = StoredResult::decode(Bytes::from(StoredResult::encode(&c)), SystemTime::now()).unwrap();
        assert_eq!((legacy.body, legacy.etag, legacy.status), (current.body, current.etag, current.status));
        assert_eq!(legacy.expires_at_ms, current.expires_at_ms);
    }

    #[test]
    fn the_tag_follows_the_bytes_and_the_time() {
        let a = comparison(true);
        let tag = |c: &Comparison| {
            StoredResult::decode(Bytes::from(StoredResult::encode(c)), SystemTime::now()).unwrap().etag
        };
        assert_eq!(tag(&a), tag(&a));
        let mut later = a.clone();
        later.computed_at += Duration::from_millis(1);
        assert_ne!(tag(&a), tag(&later));
        let mut cheaper = a.clone();
        cheaper.quotes[0].price = rust_decimal::Decimal::new(1998, 2);
        assert_ne!(tag(&a), tag(&cheaper));
    }

    #[test]
    fn if_none_match_compares_weakly_in_a_list() {
        let stored =
            StoredResult::decode(Bytes::from(StoredResult::encode(&comparison(true))), SystemTime::now()).unwrap();
        let ours = stored.etag.to_str().unwrap().to_owned();
        assert!(stored.matches(ours.as_bytes()));
        assert!(stored.matches(format!("\"x\", W/{ours}").as_bytes()));
        assert!(stored.matches(b" * "));
        assert!(!stored.matches(b"\"x\""));
        assert!(!stored.matches(ours.trim_matches('"').as_bytes()), "unquoted is not a tag");
        assert!(!stored.matches(b""));
    }

    #[test]
    fn malformed_values_are_refused() {
        let good = StoredResult::encode(&comparison(true));
        let json_start = good.iter().position(|&b| b == b'\n').unwrap() + 1;
        let json = &good[json_start..];
        for header in [
            "#pf1 1 2 complete\n",
            "#pf1 1 2 complete \"abc\" extra\n",
            "#pf1 x 2 complete \"abc\"\n",
            "#pf1 1 2 sold_out \"abc\"\n",
            "#pf1 1 2 complete abc\n",
            "#pf1 1 2 complete \"\"\n",
            "#pf1 1 2 complete \"abc\"",
        ] {
            let mut value = header.as_bytes().to_vec();
            value.extend_from_slice(json);
            assert!(StoredResult::decode(Bytes::from(value), SystemTime::now()).is_err(), "{header:?}");
        }
        assert!(StoredResult::decode(Bytes::from_static(b"not json"), SystemTime::now()).is_err());
    }
}
