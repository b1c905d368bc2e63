//! Kafka adapter: client configuration shared by consumer, producer and
//! admin client; the consumer context (rebalances, statistics); the producer
//! of status events and dead letters; topic administration.

mod admin;
mod context;
mod producer;

pub use admin::create_topics;
pub use context::{Consumer, WorkerContext};
pub use producer::{EventProducer, Headers, PublishError};

use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

use crate::config::KafkaSettings;

/// Properties common to every client: brokers, security, pass-through.
pub fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", &settings.client_id)
        .set(
            "security.protocol",
            settings.security_protocol.to_ascii_lowercase(),
        );
    if !settings.sasl.mechanism.is_empty() {
        config
            .set("sasl.mechanism", &settings.sasl.mechanism)
            .set("sasl.username", &settings.sasl.username)
            .set("sasl.password", &settings.sasl.password);
    }
    for (key, value) in &settings.properties {
        config.set(key, value);
    }
    config
}

/// The consumer: one group over the requests and uploads topics,
/// at-least-once (auto commit of explicitly stored offsets only).
pub fn consumer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = client_config(settings);
    config
        .set("group.id", &settings.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("statistics.interval.ms", "5000");
    // Pass-through properties win, so operators can tune timeouts.
    for (key, value) in &settings.properties {
        config.set(key, value);
    }
    config
}

/// The producer of events and dead letters: idempotent, so broker retries
/// neither duplicate nor reorder a device's events within a partition.
pub fn producer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = client_config(settings);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        // A delivery is given up on (and left to the outbox) well within
        // the outbox lease, so a stalled broker does not get every pending
        // event re-enqueued by every worker on each lease.
        .set("message.timeout.ms", "30000");
    for (key, value) in &settings.properties {
        config.set(key, value);
    }
    config
}

/// librdkafka's configuration errors carry the offending value (and often
/// repeat it in the description): never let a secret out that way. The key
/// is kept so the operator knows what to fix.
pub fn redact_config_error(error: KafkaError) -> KafkaError {
    match error {
        KafkaError::ClientConfig(code, description, key, _) => {
            let description = if crate::config::is_secret_property(&key) {
                "invalid value".to_string()
            } else {
                description
            };
            KafkaError::ClientConfig(code, description, key, "<redacted>".to_string())
        }
        other => other,
    }
}
