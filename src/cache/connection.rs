//! Reaching Redis: one server (`redis.url`) through a multiplexed `ConnectionManager`, or a
//! Redis Cluster (`redis.cluster_nodes`) through redis-rs's async cluster client, which routes
//! each command by its key's hash slot and follows `MOVED`/`ASK` as slots move.
//!
//! - `rediss://` means TLS, with rustls (its one compiled-in crypto provider, aws-lc-rs, is
//!   picked by itself): the system's roots, or only `redis.ca_file` when set;
//!   `redis.client_cert` + `redis.client_key` add a client certificate (mutual TLS).
//! - `user:password@` in a URL authenticates as that ACL user; `${NAME}` in a URL is the
//!   environment variable NAME, read here (a client being built), so a missing one is
//!   [`Error::Config`] at start-up. Values go in as they are: percent-encode a password with
//!   reserved characters (`/`, `@`, `:`…) in the variable itself.
//! - Both kinds connect lazily: a process starts, and reports not-ready, while Redis is down.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{ClientTlsConfig, Cmd, Pipeline, RedisFuture, TlsCertificates, Value};

use super::Error;
use crate::settings::{RedisSettings, redact_url, template};

/// A connection to one server or to a cluster; cheap to clone (both multiplex).
#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    /// Builds the client without connecting; the first command connects.
    pub fn lazy(settings: &RedisSettings) -> Result<Self, Error> {
        let urls = settings
            .urls()
            .into_iter()
            .map(|url| {
                template::expand(url, |var| std::env::var(var).ok())
                    .map_err(|unset| Error::Config(format!("redis URL {}: {unset}", redact_url(url))))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Errors name the URL as configured: an expanded one would show a variable's value.
        let shown = redact_url(settings.urls()[0]);
        let certificates = certificates(settings)?;
        if settings.cluster_nodes.is_empty() {
            let url = urls[0].as_str();
            let client = match certificates {
                Some(certs) => redis::Client::build_with_tls(url, certs),
                None => redis::Client::open(url),
            }
            .map_err(|e| Error::Config(format!("redis.url {shown}: {e}")))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(settings.timeout))
                .set_response_timeout(Some(settings.timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(1));
            let manager = ConnectionManager::new_lazy_with_config(client, config)
                .map_err(|source| Error::Redis { at: Self::address(settings), source })?;
            Ok(Connection::Single(manager))
        } else {
            let mut builder = ClusterClientBuilder::new(urls.iter().map(String::as_str))
                // Enough to follow a MOVED or ride out a short failover; callers bound the
                // whole call anyway.
                .retries(3)
                .max_retry_wait(200);
            if let Some(certs) = certificates {
                builder = builder.certs(certs);
            }
            let client = builder.build().map_err(|e| Error::Config(format!("redis.cluster_nodes: {e}")))?;
            let config =
                ClusterConfig::new().set_connection_timeout(settings.timeout).set_response_timeout(settings.timeout);
            Ok(Connection::Cluster(client.get_pending_async_connection_with_config(config)))
        }
    }

    /// Where Redis is, as errors name it: the configured URL, its password redacted (a
    /// cluster: its first seed node, and how many there are).
    pub fn address(settings: &RedisSettings) -> super::Address {
        let urls = settings.urls();
        match urls.len() {
            1 => redact_url(urls[0]).into(),
            n => format!("{} (a cluster, {n} seed nodes)", redact_url(urls[0])).into(),
        }
    }

    /// Clients for a pub/sub connection, each with the address errors name: to `redis.url`,
    /// or on a cluster to each seed node (a `PUBLISH` reaches every node of a cluster, so any
    /// one will do, and another when one fails).
    pub fn pubsub_clients(settings: &RedisSettings) -> Result<Vec<(redis::Client, String)>, Error> {
        let certificates = certificates(settings)?;
        settings
            .urls()
            .into_iter()
            .map(|configured| {
                let url = template::expand(configured, |var| std::env::var(var).ok())
                    .map_err(|unset| Error::Config(format!("redis URL {}: {unset}", redact_url(configured))))?;
                match certificates.clone() {
                    Some(certs) => redis::Client::build_with_tls(url.as_str(), certs),
                    None => redis::Client::open(url.as_str()),
                }
                .map(|client| (client, redact_url(configured)))
                .map_err(|e| Error::Config(format!("redis URL {}: {e}", redact_url(configured))))
            })
            .collect()
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// The private CA and client certificate, read now so a missing file fails at start-up.
fn certificates(settings: &RedisSettings) -> Result<Option<TlsCertificates>, Error> {
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| Error::Config(format!("redis.{what} {}: {e}", path.display())))
    };
    let root_cert = settings.ca_file.as_deref().map(|p| read("ca_file", p)).transpose()?;
    let client_tls = match (&settings.client_cert, &settings.client_key) {
        (Some(cert), Some(key)) => {
            Some(ClientTlsConfig { client_cert: read("client_cert", cert)?, client_key: read("client_key", key)? })
        }
        _ => None,
    };
    Ok((root_cert.is_some() || client_tls.is_some()).then_some(TlsCertificates { client_tls, root_cert }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, cluster: &[&str]) -> RedisSettings {
        let mut s = crate::settings::Settings::load_from(None, Some(Default::default())).unwrap().redis;
        s.url = url.into();
        s.cluster_nodes = cluster.iter().map(|n| n.to_string()).collect();
        s
    }

    #[test]
    fn errors_name_the_address_without_its_password() {
        let one = Connection::address(&settings("rediss://shop:s3cret@cache.internal:6380", &[]));
        assert_eq!(&*one, "rediss://shop:<redacted>@cache.internal:6380");
        let cluster = Connection::address(&settings("redis://unused:1", &["redis://:pw@a:7000", "redis://:pw@b:7001"]));
        assert_eq!(&*cluster, "redis://:<redacted>@a:7000 (a cluster, 2 seed nodes)");
        let error = Error::Timeout { at: one, after: Duration::from_secs(1) };
        assert_eq!(error.to_string(), "Redis at rediss://shop:<redacted>@cache.internal:6380 did not answer within 1s");
    }
}
