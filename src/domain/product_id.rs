//! `ProductId`: the only way a product id from the outside world reaches a Redis key,
//! a Kafka key or a provider URL.
//!
//! Invariant: the inner string matches `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`, so it is safe
//! as a key segment and as a URL path segment without escaping.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted product id, in bytes (all accepted characters are ASCII).
pub const MAX_LEN: usize = 64;

/// A validated product identifier.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProductId(String);

/// Why a string is not a product id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidProductId {
    #[error("product id is empty")]
    Empty,
    #[error("product id is {0} characters long; at most {MAX_LEN} are allowed")]
    TooLong(usize),
    #[error("product id must start with a letter or a digit")]
    BadFirstChar,
    #[error("product id may only contain A-Z, a-z, 0-9, '.', '_' and '-' (found {0:?})")]
    BadChar(char),
}

impl ProductId {
    pub fn parse(raw: &str) -> Result<Self, InvalidProductId> {
        let mut chars = raw.chars();
        let first = chars.next().ok_or(InvalidProductId::Empty)?;
        let len = raw.chars().count();
        if len > MAX_LEN {
            return Err(InvalidProductId::TooLong(len));
        }
        if !first.is_ascii_alphanumeric() {
            return Err(InvalidProductId::BadFirstChar);
        }
        if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
            return Err(InvalidProductId::BadChar(bad));
        }
        Ok(Self(raw.to_owned()))
    }

    /// Whether `raw` is a valid id, without allocating one (the hit path's check).
    pub fn is_valid(raw: &str) -> bool {
        let bytes = raw.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_LEN
            && bytes[0].is_ascii_alphanumeric()
            && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lets maps keyed by `ProductId` be looked up with a `&str` (hashes and compares the same).
impl std::borrow::Borrow<str> for ProductId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProductId {
    type Error = InvalidProductId;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<ProductId> for String {
    fn from(id: ProductId) -> Self {
        id.0
    }
}

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["a", "SKU-123", "9", "a.b_c-d", &"x".repeat(64)] {
            assert_eq!(ProductId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(ProductId::parse(""), Err(InvalidProductId::Empty));
        assert_eq!(ProductId::parse(&"x".repeat(65)), Err(InvalidProductId::TooLong(65)));
        assert_eq!(ProductId::parse("../etc"), Err(InvalidProductId::BadFirstChar));
        assert_eq!(ProductId::parse("-a"), Err(InvalidProductId::BadFirstChar));
        assert_eq!(ProductId::parse("a/b"), Err(InvalidProductId::BadChar('/')));
        assert_eq!(ProductId::parse("a:b"), Err(InvalidProductId::BadChar(':')));
        assert_eq!(ProductId::parse("prodé"), Err(InvalidProductId::BadChar('é')));
        assert_eq!(ProductId::parse("é"), Err(InvalidProductId::BadFirstChar));
        assert_eq!(ProductId::parse("a b"), Err(InvalidProductId::BadChar(' ')));
    }

    proptest::proptest! {
        #[test]
        fn parse_agrees_with_the_documented_pattern(raw in "\\PC{0,70}|[A-Za-z0-9._-]{0,70}") {
            let pattern = regex::Regex::new("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$").unwrap();
            proptest::prop_assert_eq!(ProductId::parse(&raw).is_ok(), pattern.is_match(&raw));
            proptest::prop_assert_eq!(ProductId::is_valid(&raw), pattern.is_match(&raw));
        }
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<ProductId>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<ProductId>("\"no/slash\"").is_err());
    }
}
