//! Protection of the price sources from cost attacks: every cold id a client invents costs
//! one call per source, so misses are limited, hits never.
//!
//! - Per client: `producer.miss_rate_per_client` (GCRA, `governor`): past it, 429.
//! - Per producer: `producer.max_publish_rate` new publishes per second: past it, 503.
//!
//! The client is the peer's IP address; when the peer is one of `producer.trusted_proxies`,
//! it is the nearest address in `X-Forwarded-For` that is not a trusted proxy, read from the
//! right. (Proxies append the address they saw; whatever a client wrote at the front is
//! its own claim, so taking the first address would let it pick a fresh budget each time.
//! With one proxy that sets the header, that is its first and only address.) IPv4-mapped
//! IPv6 addresses count as IPv4, and an IPv6 client is its /64, which one host can fill.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use ipnet::IpNet;

use crate::settings::ProducerSettings;

/// Which limit refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    ClientMisses,
    Publishes,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::ClientMisses => "client_misses",
            Limit::Publishes => "publishes",
        }
    }
}

/// Clients refused lately, remembered until their next token is due (at most this many).
const REFUSED_KEEP: u64 = 100_000;

struct UntilDue;

impl moka::Expiry<IpAddr, std::time::Instant> for UntilDue {
    fn expire_after_create(&self, _: &IpAddr, due: &std::time::Instant, now: std::time::Instant) -> Option<Duration> {
        Some(due.saturating_duration_since(now))
    }
}

pub struct Limits {
    per_client: DefaultKeyedRateLimiter<IpAddr>,
    /// A refused client's misses are refused here, before they touch Redis, until its next
    /// token is due: a client over its limit cannot keep claiming (and releasing) a product
    /// others wait for.
    refused: moka::sync::Cache<IpAddr, std::time::Instant>,
    publishes: DefaultDirectRateLimiter,
    trusted_proxies: Vec<IpNet>,
    clock: DefaultClock,
}

impl Limits {
    pub fn new(settings: &ProducerSettings) -> Self {
        let at_least_one = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        let rate = settings.miss_rate_per_client;
        let per_client = Quota::per_second(at_least_one(rate.per_second)).allow_burst(at_least_one(rate.burst));
        Self {
            per_client: DefaultKeyedRateLimiter::keyed(per_client),
            refused: moka::sync::Cache::builder().max_capacity(REFUSED_KEEP).expire_after(UntilDue).build(),
            publishes: DefaultDirectRateLimiter::direct(Quota::per_second(at_least_one(settings.max_publish_rate))),
            trusted_proxies: settings.trusted_proxies.clone(),
            clock: DefaultClock::default(),
        }
    }

    /// Who is asking: see the module doc. `peer` is `None` when the connection's peer is
    /// unknown (a router driven in process).
    pub fn client(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip().to_canonical());
        if self.trusted(client) {
            let hops: Vec<&str> = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .collect();
            for hop in hops.iter().rev() {
                // A hop that is not an address ("unknown") ends the walk at the last one known.
                let Some(address) = parse_hop(hop) else { break };
                client = address;
                if !self.trusted(address) {
                    break;
                }
            }
        }
        match client {
            IpAddr::V6(v6) => IpAddr::V6(ipnet::Ipv6Net::new(v6, 64).map_or(v6, |net| net.network())),
            v4 => v4,
        }
    }

    fn trusted(&self, address: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&address))
    }

    /// Takes one of `client`'s misses, or says how long until it has one again.
    pub fn miss(&self, client: IpAddr) -> Result<(), Refused> {
        self.per_client.check_key(&client).map_err(|until| {
            let retry_after = until.wait_time_from(self.clock.now());
            self.refused.insert(client, std::time::Instant::now() + retry_after);
            Refused { limit: Limit::ClientMisses, retry_after }
        })
    }

    /// Whether `client` was refused and its next token is not due yet (takes nothing).
    pub fn still_refused(&self, client: IpAddr) -> Option<Refused> {
        let due = self.refused.get(&client)?;
        let retry_after = due.checked_duration_since(std::time::Instant::now())?;
        Some(Refused { limit: Limit::ClientMisses, retry_after })
    }

    /// Takes one of this producer's publishes, or says how long until it has one again.
    pub fn publish(&self) -> Result<(), Refused> {
        self.publishes
            .check()
            .map_err(|until| Refused { limit: Limit::Publishes, retry_after: until.wait_time_from(self.clock.now()) })
    }

    /// Forgets clients whose budget is full again, so the table does not grow without limit.
    pub fn forget_idle_clients(&self) {
        self.per_client.retain_recent();
        self.per_client.shrink_to_fit();
    }
}

/// One `X-Forwarded-For` entry: an address, maybe with a port (`1.2.3.4:5678`, `[::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>().or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip())).ok().map(|ip| ip.to_canonical())
}

/// A limit said no.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} limit reached; retry in {retry_after:?}", limit.as_str())]
pub struct Refused {
    pub limit: Limit,
    pub retry_after: Duration,
}

impl Refused {
    /// Whole seconds for `Retry-After`, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(trusted: &[&str]) -> Limits {
        let mut settings: crate::settings::Settings =
            crate::settings::Settings::load_from(None, Some(Default::default())).unwrap();
        settings.producer.miss_rate_per_client = crate::settings::RateSettings { per_second: 1, burst: 2 };
        settings.producer.max_publish_rate = 3;
        settings.producer.trusted_proxies = trusted.iter().map(|t| t.parse().unwrap()).collect();
        Limits::new(&settings.producer)
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", value.parse().unwrap());
        h
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let l = limits(&["10.0.0.0/8"]);
        let proxy: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let stranger: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        assert_eq!(l.client(Some(proxy), &forwarded("203.0.113.9")), ip("203.0.113.9"));
        assert_eq!(l.client(Some(proxy), &forwarded("203.0.113.9, 10.1.2.3")), ip("203.0.113.9"), "proxies skipped");
        assert_eq!(l.client(Some(stranger), &forwarded("203.0.113.9")), stranger.ip(), "a forged header is ignored");
        assert_eq!(l.client(Some(proxy), &forwarded("garbage")), proxy.ip());
        assert_eq!(l.client(Some(proxy), &forwarded("203.0.113.9:4711")), ip("203.0.113.9"), "a port is dropped");
    }

    #[test]
    fn what_a_client_writes_in_front_of_an_appending_proxy_does_not_choose_its_budget() {
        let l = limits(&["10.0.0.0/8"]);
        let proxy: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        // The client sent "X-Forwarded-For: 1.1.1.1"; the proxy appended the address it saw.
        assert_eq!(l.client(Some(proxy), &forwarded("1.1.1.1, 198.51.100.7")), ip("198.51.100.7"));
    }

    #[test]
    fn mapped_ipv4_is_ipv4_and_ipv6_clients_are_their_64() {
        let l = limits(&["10.0.0.0/8"]);
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:5000".parse().unwrap();
        assert_eq!(l.client(Some(mapped), &forwarded("203.0.113.9")), ip("203.0.113.9"), "the mapped proxy is trusted");
        let v6: SocketAddr = "[2001:db8:1:2:aaaa::1]:5000".parse().unwrap();
        assert_eq!(l.client(Some(v6), &HeaderMap::new()), ip("2001:db8:1:2::"));
    }

    #[test]
    fn each_client_has_its_own_burst() {
        let l = limits(&[]);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert!(l.miss(a).is_ok() && l.miss(a).is_ok());
        let refused = l.miss(a).unwrap_err();
        assert_eq!((refused.limit, refused.retry_after_secs()), (Limit::ClientMisses, 1));
        assert!(l.miss(b).is_ok(), "another client is not affected");
        assert_eq!(l.still_refused(a).map(|r| r.limit), Some(Limit::ClientMisses));
        assert!(l.still_refused(b).is_none());
        assert!((0..3).all(|_| l.publish().is_ok()));
        assert_eq!(l.publish().unwrap_err().limit, Limit::Publishes);
    }
}
