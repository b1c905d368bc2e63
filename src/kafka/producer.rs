//! Producing status events and dead letters with CloudEvents binary-mode headers.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaSettings;

/// The CloudEvents attributes of one message (binary content mode: the
/// attributes travel as `ce_*` headers, the payload is the event itself).
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    pub id: &'a str,
    pub event_type: &'a str,
    pub source: &'a str,
    pub time: &'a str,
    pub subject: &'a str,
}

impl Headers<'_> {
    fn to_kafka(&self) -> OwnedHeaders {
        let pairs = [
            ("ce_specversion", "1.0"),
            ("ce_id", self.id),
            ("ce_type", self.event_type),
            ("ce_source", self.source),
            ("ce_time", self.time),
            ("ce_subject", self.subject),
            ("content-type", "application/json"),
        ];
        pairs.iter().fold(
            OwnedHeaders::new_with_capacity(pairs.len()),
            |h, (key, value)| {
                h.insert(Header {
                    key,
                    value: Some(*value),
                })
            },
        )
    }
}

/// Longest wait for room in the producer's local queue before `send` gives up.
pub const QUEUE_FULL_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct EventProducer {
    producer: FutureProducer,
}

impl EventProducer {
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        Ok(EventProducer {
            producer: super::producer_config(settings)
                .create()
                .map_err(super::redact_config_error)?,
        })
    }

    /// Enqueues one message and returns the future of its delivery report.
    /// Enqueueing is synchronous, so messages keep the order of the calls.
    /// A full local queue is waited out for up to [`QUEUE_FULL_WAIT`], then
    /// reported, so a caller stuck behind a stalled broker gets control back
    /// (to beat its health loop, to see a shutdown, to retry later).
    pub async fn send(
        &self,
        topic: &str,
        key: &str,
        payload: &str,
        headers: &Headers<'_>,
    ) -> Result<DeliveryFuture, KafkaError> {
        let deadline = tokio::time::Instant::now() + QUEUE_FULL_WAIT;
        loop {
            let record = FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .headers(headers.to_kafka());
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Waits until every enqueued message is delivered or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }

    /// Broker metadata within `timeout` (readiness).
    pub fn reachable(&self, timeout: Duration) -> bool {
        self.producer.client().fetch_metadata(None, timeout).is_ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot enqueue the message")]
    Enqueue(#[source] KafkaError),
    #[error("the broker refused the message")]
    Delivery(#[source] KafkaError),
    #[error("no delivery report from the broker within {0:?}")]
    Timeout(Duration),
}

impl EventProducer {
    /// Produces one input (LogRequest, LogsUploaded) keyed by device id, with
    /// its CloudEvents headers, and waits for the broker's acknowledgement.
    pub async fn publish_input(
        &self,
        topic: &str,
        event_type: &str,
        device: &crate::domain::DeviceRef,
        id: uuid::Uuid,
        body: &str,
        timeout: Duration,
    ) -> Result<(), PublishError> {
        let (id, time) = (id.to_string(), crate::domain::timestamp(chrono::Utc::now()));
        let subject = format!(
            "environments/{}/users/{}/devices/{}",
            device.environment, device.user, device.device
        );
        let headers = Headers {
            id: &id,
            event_type,
            source: crate::payload::EVENT_SOURCE,
            time: &time,
            subject: &subject,
        };
        let delivery = self
            .send(topic, &device.device.to_string(), body, &headers)
            .await
            .map_err(PublishError::Enqueue)?;
        match tokio::time::timeout(timeout, delivery).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err((e, _)))) => Err(PublishError::Delivery(e)),
            Ok(Err(_)) | Err(_) => Err(PublishError::Timeout(timeout)),
        }
    }
}
