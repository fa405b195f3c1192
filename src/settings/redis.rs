//! `[redis]`: where Redis is (one URL, or Cluster seed nodes), its TLS files and key prefix.
//! A URL's password is part of the URL, so it is redacted by [`redact_url`] wherever a URL
//! is shown, not by [`super::Secret`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_with::{DurationMilliSeconds, serde_as};

use super::{REDACTED, template};

/// Where Redis is and how to reach it. `url` and `cluster_nodes` may hold `${NAME}` (read when
/// a client is built) and `user:password@`; shown anywhere, the password is redacted.
#[serde_as]
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `PRICEFRONT__REDIS__URL`: `redis://` or `rediss://` (TLS), `[user:password@]host:port`.
    pub url: String,
    /// `PRICEFRONT__REDIS__CLUSTER_NODES` (comma-separated): when set, Redis Cluster through
    /// these seed nodes, and `url` is not used.
    #[serde(default)]
    pub cluster_nodes: Vec<String>,
    /// `PRICEFRONT__REDIS__CA_FILE`: PEM roots to trust instead of the system's (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `PRICEFRONT__REDIS__CLIENT_CERT`: PEM certificate for mutual TLS (with `client_key`).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// `PRICEFRONT__REDIS__CLIENT_KEY`: PEM private key for mutual TLS (with `client_cert`).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// `PRICEFRONT__REDIS__KEY_PREFIX`: every key is `{key_prefix}:…`.
    pub key_prefix: String,
    /// `PRICEFRONT__REDIS__TIMEOUT_MS`: bound on one connect or one response.
    #[serde(rename = "timeout_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub timeout: Duration,
}

impl RedisSettings {
    /// The URLs clients connect to, as configured (templates unexpanded).
    pub fn urls(&self) -> Vec<&str> {
        if self.cluster_nodes.is_empty() {
            vec![self.url.as_str()]
        } else {
            self.cluster_nodes.iter().map(String::as_str).collect()
        }
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if self.key_prefix.is_empty() || self.key_prefix.contains(|c: char| c.is_whitespace() || c == '{' || c == '}') {
            return Err("redis.key_prefix must be non-empty, without whitespace or braces (the product id is the keys' hash tag)".into());
        }
        let field = if self.cluster_nodes.is_empty() { "redis.url" } else { "redis.cluster_nodes" };
        let mut schemes = Vec::new();
        for url in self.urls() {
            template::variables(url).map_err(|e| format!("{field}: {e}"))?;
            let scheme = url.split_once("://").map(|(scheme, _)| scheme);
            match scheme {
                Some(s @ ("redis" | "rediss")) => schemes.push(s),
                _ => return Err(format!("{field}: {} must start with redis:// or rediss://", redact_url(url))),
            }
        }
        schemes.dedup();
        if schemes.len() > 1 {
            return Err("redis.cluster_nodes: all nodes must use the same scheme (redis:// or rediss://)".into());
        }
        let tls = schemes == ["rediss"];
        if !tls && (self.ca_file.is_some() || self.client_cert.is_some() || self.client_key.is_some()) {
            return Err(format!(
                "redis.ca_file, redis.client_cert and redis.client_key need TLS: {field} must use rediss://"
            ));
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err("redis.client_cert and redis.client_key go together (mutual TLS needs both)".into());
        }
        Ok(())
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("cluster_nodes", &self.cluster_nodes.iter().map(|u| redact_url(u)).collect::<Vec<_>>())
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key.as_ref().map(|_| REDACTED))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A Redis URL with its password (if any) replaced by [`REDACTED`]. The user info ends at the
/// last `@` (a password may hold `/`, `@` or `:` unencoded).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            // `redis://password@host` (no colon) is a password alone.
            let shown = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:{REDACTED}"),
                None => REDACTED.to_owned(),
            };
            format!("{scheme}://{shown}{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use crate::settings::testing::{env, with_toml};

    #[test]
    fn redis_urls_tls_files_and_cluster_nodes_are_checked_at_load() {
        let s = Settings::load_from(
            None,
            env(&[("PRICEFRONT__REDIS__CLUSTER_NODES", "redis://10.0.0.1:6379,redis://10.0.0.2:6379")]),
        )
        .unwrap();
        assert_eq!(s.redis.urls(), ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"]);
        let cases = [
            ("[redis]\nurl = \"http://h:6379\"", "must start with redis:// or rediss://"),
            ("[redis]\nca_file = \"/ca.pem\"", "need TLS"),
            ("[redis]\nurl = \"rediss://h:6379\"\nclient_cert = \"/c.pem\"", "go together"),
            ("[redis]\nkey_prefix = \"a{b}\"", "braces"),
            ("[redis]\ncluster_nodes = [\"redis://a:1\", \"rediss://b:1\"]", "same scheme"),
            ("[redis]\nurl = \"rediss://u:${PASS@h:6379\"", "unterminated"),
        ];
        for (toml, expected) in cases {
            let err = with_toml(toml).unwrap_err().to_string();
            assert!(err.contains(expected), "{toml}: {err}");
        }
        let ok = "[redis]\nurl = \"rediss://shop:${REDIS_PASSWORD}@h:6380\"\nca_file = \"/ca.pem\"\nclient_cert = \"/c.pem\"\nclient_key = \"/k.pem\"";
        assert!(format!("{:?}", with_toml(ok).unwrap().redis).contains("rediss://shop:<redacted>@h:6380"));
    }

    #[test]
    fn redis_url_passwords_are_redacted() {
        assert_eq!(redact_url("rediss://shop:s3cret@h:6380/0"), "rediss://shop:<redacted>@h:6380/0");
        assert_eq!(redact_url("redis://s3cret@h:6379"), "redis://<redacted>@h:6379");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact_url("redis://u:p@ss@h:1"), "redis://u:<redacted>@h:1");
        assert_eq!(redact_url("rediss://shop:s3cr/et+Q==@h:6380"), "rediss://shop:<redacted>@h:6380");
    }
}
