//! What a queue hands to workers, in our own types: the worker and the standalone demo never
//! see rdkafka's.

use super::ack::Ack;

/// Message headers in order, as Kafka carries them (a key may repeat; [`Headers::get`]
/// returns the first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, Vec<u8>)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, key: &str, value: impl AsRef<[u8]>) -> Self {
        self.0.push((key.to_owned(), value.as_ref().to_vec()));
        self
    }

    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_slice())
    }

    /// The first value of `key`, if it is UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The values of `keys` this holds, as new headers.
    pub fn kept(&self, keys: &[&str]) -> Self {
        Self(self.0.iter().filter(|(k, _)| keys.contains(&k.as_str())).cloned().collect())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Where a message was read: for logs and dead-letter headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// One consumed message, as received: bytes are not interpreted here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Headers,
    pub origin: Origin,
}

/// A message and the acknowledgement that settles it.
#[derive(Debug)]
pub struct Incoming {
    pub message: Message,
    pub ack: Ack,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_keep_order_and_answer_the_first_value() {
        let h = Headers::new().with("a", "1").with("b", [0xff]).with("a", "2");
        assert_eq!(h.get("a"), Some(&b"1"[..]));
        assert_eq!(h.get_str("b"), None, "not UTF-8");
        assert_eq!(h.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["a", "b", "a"]);
        assert!(h.get("c").is_none());
    }
}
