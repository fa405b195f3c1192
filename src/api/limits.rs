//! Protection of the price sources from cost attacks: every cold id a client invents costs
//! one call per source, so misses are limited, hits never.
//!
//! - Per client: `producer.miss_rate_per_client` (GCRA, `governor`): past it, 429.
//! - Per producer: `producer.max_publish_rate` new publishes per second: past it, 503.
//!
//! The client is the peer's IP address, or the first address in `X-Forwarded-For` when the
//! peer is one of `producer.trusted_proxies` (anybody else could forge that header).

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

pub struct Limits {
    per_client: DefaultKeyedRateLimiter<IpAddr>,
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
            publishes: DefaultDirectRateLimiter::direct(Quota::per_second(at_least_one(settings.max_publish_rate))),
            trusted_proxies: settings.trusted_proxies.clone(),
            clock: DefaultClock::default(),
        }
    }

    /// Who is asking: see the module doc. `None` when the connection's peer is unknown
    /// (a router driven in process).
    pub fn client(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> IpAddr {
        let peer = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip());
        if !self.trusted_proxies.iter().any(|net| net.contains(&peer)) {
            return peer;
        }
        let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
        forwarded
            .and_then(|list| list.split(',').next())
            .and_then(|first| first.trim().parse::<IpAddr>().ok())
            .unwrap_or(peer)
    }

    /// Takes one of `client`'s misses, or says how long until it has one again.
    pub fn miss(&self, client: IpAddr) -> Result<(), Refused> {
        self.per_client.check_key(&client).map_err(|until| Refused {
            limit: Limit::ClientMisses,
            retry_after: until.wait_time_from(self.clock.now()),
        })
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

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let l = limits(&["10.0.0.0/8"]);
        let proxy: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let stranger: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let h = forwarded("203.0.113.9, 10.1.2.3");
        assert_eq!(l.client(Some(proxy), &h), "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(l.client(Some(stranger), &h), stranger.ip(), "a forged header is ignored");
        assert_eq!(l.client(Some(proxy), &forwarded("garbage")), proxy.ip());
    }

    #[test]
    fn each_client_has_its_own_burst() {
        let l = limits(&[]);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert!(l.miss(a).is_ok() && l.miss(a).is_ok());
        let refused = l.miss(a).unwrap_err();
        assert_eq!((refused.limit, refused.retry_after_secs()), (Limit::ClientMisses, 1));
        assert!(l.miss(b).is_ok(), "another client is not affected");
        assert!((0..3).all(|_| l.publish().is_ok()));
        assert_eq!(l.publish().unwrap_err().limit, Limit::Publishes);
    }
}
