//! librdkafka configuration for each of our clients: ours first (what correctness needs, set
//! per client where it is used), then `[kafka.options]`, then the role's own table, with
//! `${NAME}` expanded from the environment. Which overrides are refused, and which values are
//! secrets, is decided at load (`settings::KafkaOptions`); here a missing variable, and
//! librdkafka's verdict on a templated value or on the whole (an unreadable `ssl.ca.location`),
//! become [`Error::Config`], naming the property.

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

use super::Error;
use crate::settings::{KafkaRole, KafkaSettings, template};

/// The configuration of a client in `role`: `ours`, then the overrides. The result is logged at
/// debug level, secrets redacted.
pub(super) fn client_config(
    settings: &KafkaSettings,
    role: KafkaRole,
    ours: &[(&str, String)],
) -> Result<ClientConfig, Error> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.brokers).set("client.id", "pricefront");
    for (name, value) in ours {
        config.set(*name, value);
    }
    for (section, options) in settings.options_for(role) {
        for (name, value) in options.iter() {
            let value = template::expand(value, |var| std::env::var(var).ok())
                .map_err(|unset| Error::Config(format!("{section}.\"{name}\": {unset}")))?;
            config.set(name, value);
        }
    }
    tracing::debug!(client = role.as_str(), config = %effective(&config), "kafka client configuration");
    Ok(config)
}

/// librdkafka's refusal to create a client in `role`, as [`Error::Config`] in its own words.
pub(super) fn creation_error(error: KafkaError, role: KafkaRole) -> Error {
    let client = format!("kafka {} client", role.as_str());
    match error {
        KafkaError::ClientConfig(..) => Error::Config(crate::settings::kafka_options_error(&client, &error)),
        KafkaError::ClientCreation(message) => Error::Config(format!("cannot create the {client}: {message}")),
        other => Error::Kafka(other),
    }
}

/// Every property set, sorted, secrets redacted.
pub(super) fn effective(config: &ClientConfig) -> String {
    let mut pairs: Vec<_> = config.config_map().iter().collect();
    pairs.sort();
    crate::settings::show_options(pairs.into_iter().map(|(k, v)| (k.as_str(), v.as_str())))
}
