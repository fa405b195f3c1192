//! Topic creation: the request topic, its refresh topic and its DLQ, with `kafka.partitions`
//! partitions each.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::Error;
use super::config::{client_config, creation_error};
use crate::settings::{KafkaRole, KafkaSettings};

/// Creates `kafka.topic`, the refresh topic and `kafka.dlq_topic` if they do not exist. Existing topics are
/// left as they are (their partition count is not changed).
pub async fn ensure_topics(settings: &KafkaSettings) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(settings, KafkaRole::Admin, &[])?.create().map_err(|e| creation_error(e, KafkaRole::Admin))?;
    let replication = || TopicReplication::Fixed(settings.replication_factor);
    let refresh = settings.refresh_topic();
    let topics = [
        NewTopic::new(&settings.topic, settings.partitions, replication()),
        NewTopic::new(&refresh, settings.partitions, replication()),
        NewTopic::new(&settings.dlq_topic, settings.partitions, replication()),
    ];
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::Kafka(rdkafka::error::KafkaError::AdminOp(code)))
                    .inspect_err(|_| tracing::error!(%topic, %code, "cannot create topic"));
            }
        }
    }
    Ok(())
}
