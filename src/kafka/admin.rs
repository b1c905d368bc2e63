//! `create-topics`: the four topics with the configured partition count.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaSettings;

/// Creates the requests, uploads, status and dead-letter topics. Topics that
/// exist already are left as they are, so running it again is harmless.
/// Returns (topic, created?) per topic.
pub async fn create_topics(
    settings: &KafkaSettings,
) -> Result<Vec<(String, bool)>, rdkafka::error::KafkaError> {
    let admin: AdminClient<DefaultClientContext> = super::client_config(settings)
        .create()
        .map_err(super::redact_config_error)?;
    let t = &settings.topics;
    let names = [&t.requests, &t.uploads, &t.status, &t.dead_letters];
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                settings.partitions,
                TopicReplication::Fixed(settings.replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&topics, &options).await?;
    let mut out = Vec::new();
    for result in results {
        match result {
            Ok(name) => out.push((name, true)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => out.push((name, false)),
            Err((name, code)) => {
                return Err(rdkafka::error::KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::error!(topic = %name, error = %code, "topic creation failed");
                })
            }
        }
    }
    Ok(out)
}
