//! `[producer]`: the HTTP API's listeners and the bounds it keeps per client and per process.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_with::{DurationMilliSeconds, DurationSeconds, serde_as};

#[serde_as]
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerSettings {
    /// `PRICEFRONT__PRODUCER__LISTEN`: address the HTTP API binds.
    pub listen: SocketAddr,
    /// `PRICEFRONT__PRODUCER__RETRY_AFTER_SECS`: `Retry-After` sent with 202 and 503.
    pub retry_after_secs: u64,
    /// `[producer.miss_rate_per_client]`: misses one client may cause (hits are never
    /// limited); past it, 429.
    pub miss_rate_per_client: RateSettings,
    /// `PRICEFRONT__PRODUCER__TRUSTED_PROXIES`: peers (IP addresses or CIDR blocks) whose
    /// `X-Forwarded-For` names the client; everyone else is identified by their own address.
    #[serde(deserialize_with = "networks")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `PRICEFRONT__PRODUCER__MAX_PUBLISH_RATE`: new requests one producer publishes per
    /// second at most (burst of the same size); past it, misses answer 503.
    pub max_publish_rate: u32,
    /// `PRICEFRONT__PRODUCER__MAX_WAIT_SECS`: the longest a `Prefer: wait=N` request is held.
    #[serde(rename = "max_wait_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub max_wait: Duration,
    /// `PRICEFRONT__PRODUCER__MAX_WAITERS`: requests held at once per producer; past it, a
    /// `Prefer: wait` miss answers 202 at once.
    pub max_waiters: usize,
    /// `PRICEFRONT__PRODUCER__MAX_STREAM_SECS`: the longest a `/v1/prices/{id}/events` stream
    /// stays open without a result; then it ends (an `EventSource` reconnects by itself).
    #[serde(rename = "max_stream_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub max_stream: Duration,
    /// `PRICEFRONT__PRODUCER__MAX_STREAMS`: event streams open at once per producer; past it,
    /// a new one answers 503 with `Retry-After`.
    pub max_streams: usize,
    /// `PRICEFRONT__PRODUCER__MAX_BATCH_IDS`: most ids one `GET /v1/prices?ids=` may ask for;
    /// more answer 400.
    pub max_batch_ids: usize,
    /// `PRICEFRONT__PRODUCER__CORS_ALLOW_ORIGINS` (comma-separated): the origins
    /// (`https://shop.example`) whose pages may call the API and open its event streams, for
    /// the widget embedded on another site; `["*"]` for any. Empty (the default): none.
    #[serde(deserialize_with = "origins")]
    pub cors_allow_origins: Vec<String>,
    /// `PRICEFRONT__PRODUCER__DEMO_PAGE`: serve the demo page at `/` (and the few figures its
    /// live panel reads, at `/demo/metrics`). The widget's script (`/static/price-compare.js`)
    /// is served either way.
    pub demo_page: bool,
    /// `PRICEFRONT__PRODUCER__OPS_LISTEN`: where `/metrics`, and `/healthz` and `/readyz` with
    /// their details, are served for scrapers and probes; keep it off the public network.
    pub ops_listen: SocketAddr,
    /// `PRICEFRONT__PRODUCER__MAX_CONNECTIONS`: connections open at once on the public port;
    /// past it, a new one is answered 503 and closed.
    pub max_connections: usize,
    /// `PRICEFRONT__PRODUCER__HEADER_READ_TIMEOUT_MS`: a request's head must arrive within
    /// this, and a kept-alive connection waiting this long for its next request is closed.
    #[serde(rename = "header_read_timeout_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub header_read_timeout: Duration,
    /// `PRICEFRONT__PRODUCER__IDLE_TIMEOUT_SECS`: a connection that moves no byte for this long
    /// is closed; longer than `max_wait_secs` and than an event stream's 15 s keep-alive.
    #[serde(rename = "idle_timeout_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub idle_timeout: Duration,
    /// `PRICEFRONT__PRODUCER__MAX_STREAMS_PER_CLIENT`: event streams one client may hold open;
    /// past it, 429.
    pub max_streams_per_client: usize,
    /// `PRICEFRONT__PRODUCER__MAX_WAITERS_PER_CLIENT`: `Prefer: wait` requests one client may
    /// have held at once; past it, a request answers as if it had not asked to wait.
    pub max_waiters_per_client: usize,
}

/// A rate with a burst: `per_second` on average, up to `burst` at once.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSettings {
    pub per_second: u32,
    pub burst: u32,
}

impl ProducerSettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 || self.max_streams_per_client == 0 || self.max_waiters_per_client == 0 {
            return Err(
                "producer.max_connections, max_streams_per_client and max_waiters_per_client must be at least 1".into(),
            );
        }
        if self.header_read_timeout.is_zero() {
            return Err("producer.header_read_timeout_ms must be positive".into());
        }
        // Quiet on purpose: a held request, and the gap between an event stream's keep-alives;
        // 5 s more, for a loaded machine and the network between.
        let quiet = self.max_wait.max(Duration::from_secs(15)) + Duration::from_secs(5);
        if self.idle_timeout < quiet {
            return Err(format!(
                "producer.idle_timeout_secs ({:?}) must be at least 5 s more than producer.max_wait_secs and an event stream's 15 s keep-alive ({quiet:?})",
                self.idle_timeout
            ));
        }
        if self.max_stream.is_zero() {
            return Err("producer.max_stream_secs must be at least 1".into());
        }
        if self.max_batch_ids == 0 {
            return Err("producer.max_batch_ids must be at least 1".into());
        }
        let rate = &self.miss_rate_per_client;
        if rate.per_second == 0 || rate.burst == 0 || self.max_publish_rate == 0 {
            return Err(
                "producer.miss_rate_per_client (per_second, burst) and producer.max_publish_rate must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}

/// IP addresses (a one-address network) or CIDR blocks.
fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| {
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| serde::de::Error::custom(format!("{text:?} is not an IP address or CIDR block")))
        })
        .collect()
}

/// Web origins, `scheme://host[:port]` with no path, lower-cased as browsers send them; or
/// `*` alone.
fn origins<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let origins = Vec::<String>::deserialize(d)?;
    if origins.iter().any(|o| o == "*") {
        return match origins.len() {
            1 => Ok(origins),
            _ => Err(serde::de::Error::custom("\"*\" (any origin) cannot be listed with others")),
        };
    }
    origins
        .into_iter()
        .map(|text| {
            let origin = text.trim().to_ascii_lowercase();
            let host = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
            match host {
                // As a browser sends it: ASCII (an international name in punycode), no path.
                Some(host)
                    if !host.is_empty()
                        && host.bytes().all(|b| b.is_ascii_graphic())
                        && !host.contains(['/', '?', '#', '@', '\\']) =>
                {
                    Ok(origin)
                }
                _ => Err(serde::de::Error::custom(format!(
                    "{text:?} is not an origin: scheme://host[:port], http or https, no path (or \"*\" alone)"
                ))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use crate::settings::testing::env;

    #[test]
    fn trusted_proxies_take_addresses_and_blocks() {
        let s = Settings::load_from(None, env(&[("PRICEFRONT__PRODUCER__TRUSTED_PROXIES", "127.0.0.1,10.0.0.0/8")]));
        assert_eq!(s.unwrap().producer.trusted_proxies.len(), 2, "a comma-separated list from env");
        let net: Result<Vec<ipnet::IpNet>, _> = networks(serde_json::json!(["10.0.0.0/8", "192.0.2.1", "::1"]));
        assert_eq!(net.unwrap().len(), 3);
        assert!(networks(serde_json::json!(["not-an-ip"])).is_err());
    }

    #[test]
    fn cors_origins_are_origins() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert!(s.producer.cors_allow_origins.is_empty() && s.producer.demo_page, "none by default; the demo page on");
        let pairs = [("PRICEFRONT__PRODUCER__CORS_ALLOW_ORIGINS", "https://Shop.example,http://127.0.0.1:3000")];
        let s = Settings::load_from(None, env(&pairs)).unwrap();
        assert_eq!(
            s.producer.cors_allow_origins,
            ["https://shop.example", "http://127.0.0.1:3000"],
            "from env, lower-cased"
        );
        let any = origins(serde_json::json!(["*"])).unwrap();
        assert_eq!(any, ["*"]);
        for bad in [
            serde_json::json!(["*", "https://a.example"]),
            serde_json::json!(["shop.example"]),
            serde_json::json!(["https://a.example/"]),
            serde_json::json!(["ftp://a.example"]),
            serde_json::json!(["https://"]),
            serde_json::json!(["https://a.ex\u{7}"]),
            serde_json::json!(["https://bücher.example"]),
        ] {
            assert!(origins(bad.clone()).is_err(), "{bad}");
        }
        let err =
            Settings::load_from(None, env(&[("PRICEFRONT__PRODUCER__CORS_ALLOW_ORIGINS", "https://a.example/x")]));
        let err = format!("{:#}", anyhow::Error::new(err.unwrap_err()));
        assert!(err.contains("not an origin"), "{err}");
    }

    #[test]
    fn seconds_keys_read_whole_seconds_from_env() {
        let s = Settings::load_from(None, env(&[("PRICEFRONT__PRODUCER__MAX_WAIT_SECS", "7")])).unwrap();
        assert_eq!(s.producer.max_wait, Duration::from_secs(7));
        let err = Settings::load_from(None, env(&[("PRICEFRONT__PRODUCER__IDLE_TIMEOUT_SECS", "10")])).unwrap_err();
        assert!(err.to_string().contains("producer.idle_timeout_secs"), "{err}");
    }
}
