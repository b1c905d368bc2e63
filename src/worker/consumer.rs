//! The consumer loop: poll a batch, resolve it, dead-letter what cannot be
//! applied, publish events, store offsets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::engine::{Engine, Resolution};
use super::publisher::{Publication, Publisher};
use crate::config::Settings;
use crate::domain::{dead_letter_id, Ignored, Input, Rejection};
use crate::failpoint;
use crate::http::Health;
use crate::kafka::{Consumer, EventProducer, Headers};
use crate::metrics::{Metrics, Outcome};
use crate::payload::{self, InputOrigin, DEAD_LETTER_TYPE, EVENT_SOURCE};
use crate::store::OutboxEvent;

/// How long one wait for a dead letter's delivery report may take before
/// the batch is retried (and the loop reports it is alive).
const DELIVERY_WAIT: Duration = Duration::from_secs(30);
/// Backoff between retries of a batch that hit a transient error.
const RETRY_BACKOFF: [Duration; 5] = [
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

pub(super) struct Intake {
    pub consumer: Consumer,
    pub engine: Engine,
    pub publisher: Publisher,
    pub producer: EventProducer,
    pub metrics: Metrics,
    pub settings: Settings,
    pub health: Arc<Health>,
}

/// One polled input, parsed or refused.
struct Polled {
    message: OwnedMessage,
    received: Instant,
    parsed: Result<Input, Rejection>,
}

impl Intake {
    /// Runs until `token` is cancelled; returns the consumer after a final
    /// synchronous commit so the caller can close it within the bound.
    pub async fn run(self, token: CancellationToken) -> Consumer {
        while let Some(batch) = self.poll_batch(&token).await {
            if batch.is_empty() {
                continue;
            }
            if !self.handle(&batch, &token).await {
                break;
            }
        }
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            // NoOffset: the auto-commit already committed everything stored.
            Ok(())
            | Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            )) => tracing::info!("offsets committed"),
            Err(e) => {
                self.metrics.kafka_error("commit");
                tracing::warn!(error = %e, "final commit failed; uncommitted inputs are replayed");
            }
        }
        self.consumer
    }

    /// Waits for the first input (waking every second to report liveness),
    /// then takes what arrives within `kafka.batch_linger`, up to
    /// `kafka.batch_size`. `None` once shutdown is requested.
    async fn poll_batch(&self, token: &CancellationToken) -> Option<Vec<Polled>> {
        let mut batch = Vec::new();
        let limit = self.settings.kafka.batch_size;
        loop {
            self.health.beat_consumer();
            tokio::select! {
                _ = token.cancelled() => return None,
                polled = tokio::time::timeout(Duration::from_secs(1), self.consumer.recv()) => match polled {
                    Err(_) => continue,
                    Ok(Ok(message)) => {
                        batch.push(self.parse(message.detach()));
                        break;
                    }
                    Ok(Err(e)) => {
                        self.metrics.kafka_error("consume");
                        tracing::warn!(error = %e, "poll failed");
                        return Some(batch);
                    }
                },
            }
        }
        let deadline = tokio::time::Instant::now() + self.settings.kafka.batch_linger;
        while batch.len() < limit {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(message)) => batch.push(self.parse(message.detach())),
                Ok(Err(e)) => {
                    self.metrics.kafka_error("consume");
                    tracing::warn!(error = %e, "poll failed");
                    break;
                }
                Err(_) => break,
            }
        }
        Some(batch)
    }

    fn parse(&self, message: OwnedMessage) -> Polled {
        let topics = &self.settings.kafka.topics;
        let max = self.settings.input.max_bytes;
        let bytes = message.payload().unwrap_or_default();
        let parsed = if message.topic() == topics.requests {
            payload::parse_log_request(bytes, max).map(Input::Request)
        } else {
            payload::parse_logs_uploaded(bytes, max).map(Input::Upload)
        };
        Polled {
            message,
            received: Instant::now(),
            parsed,
        }
    }

    /// Handles one batch to the point where its offsets are stored. Returns
    /// false when shutdown interrupted a retry (the batch is then replayed
    /// by whoever owns the partitions next).
    async fn handle(&self, batch: &[Polled], token: &CancellationToken) -> bool {
        let inputs: Vec<Input> = batch
            .iter()
            .filter_map(|p| p.parsed.as_ref().ok().cloned())
            .collect();
        let mut attempt = 0;
        let resolutions = loop {
            self.health.beat_consumer();
            match self.engine.process(&inputs).await {
                Ok(resolutions) => break resolutions,
                Err(e) => {
                    for polled in batch {
                        self.metrics.input(polled.message.topic(), Outcome::Retried);
                    }
                    tracing::warn!(error = %e, inputs = batch.len(), attempt, "batch not applied; retrying");
                    if !self.backoff(&mut attempt, token).await {
                        return false;
                    }
                }
            }
        };
        failpoint::hit("after_apply").await;

        // Pair each polled input with its resolution, in order.
        let mut resolutions = resolutions.into_iter();
        let outcomes: Vec<Resolution> = batch
            .iter()
            .map(|p| match &p.parsed {
                Ok(_) => resolutions
                    .next()
                    .unwrap_or(Resolution::Ignored(Ignored::NotDue)),
                Err(rejection) => Resolution::Rejected(rejection.clone()),
            })
            .collect();

        let mut attempt = 0;
        while !self.dead_letter(batch, &outcomes).await {
            if !self.backoff(&mut attempt, token).await {
                return false;
            }
        }

        let mut publications = Vec::new();
        for (polled, outcome) in batch.iter().zip(&outcomes) {
            self.account(polled, outcome);
            if let Resolution::Applied(applied) = outcome {
                let record = &applied.transition.record;
                publications.push(Publication {
                    event: OutboxEvent {
                        shard: self.engine.store.shard_of(&record.device),
                        id: record.event_id(),
                        payload: applied.event.clone(),
                    },
                    stamped_at: polled.parsed.as_ref().ok().and_then(Input::stamped_at),
                    deadline: None,
                });
            }
        }
        self.publisher.publish(publications).await;
        self.store_offsets(batch);
        // Received to offset stored, per input.
        for polled in batch {
            self.metrics.processing(polled.received.elapsed());
        }
        true
    }

    /// Sleeps before the next retry; false if shutdown came first.
    async fn backoff(&self, attempt: &mut usize, token: &CancellationToken) -> bool {
        let pause = RETRY_BACKOFF[(*attempt).min(RETRY_BACKOFF.len() - 1)];
        *attempt += 1;
        tokio::select! {
            _ = token.cancelled() => false,
            _ = tokio::time::sleep(pause) => true,
        }
    }

    /// Produces the batch's dead letters and waits for the broker to take
    /// them all: an input is never acknowledged before its dead letter is.
    async fn dead_letter(&self, batch: &[Polled], outcomes: &[Resolution]) -> bool {
        let topic = &self.settings.kafka.topics.dead_letters;
        let mut deliveries = Vec::new();
        for (polled, outcome) in batch.iter().zip(outcomes) {
            let Resolution::Rejected(rejection) = outcome else {
                continue;
            };
            let m = &polled.message;
            let origin = InputOrigin {
                topic: m.topic(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key(),
                timestamp: m
                    .timestamp()
                    .to_millis()
                    .and_then(DateTime::<Utc>::from_timestamp_millis),
                payload: m.payload().unwrap_or_default(),
            };
            let now = Utc::now();
            let letter =
                payload::dead_letter(rejection, &origin, now, self.settings.input.max_bytes)
                    .to_string();
            let id = dead_letter_id(m.topic(), m.partition(), m.offset()).to_string();
            let subject = format!("{}/{}/{}", m.topic(), m.partition(), m.offset());
            let time = crate::domain::timestamp(now);
            let headers = Headers {
                id: &id,
                event_type: DEAD_LETTER_TYPE,
                source: EVENT_SOURCE,
                time: &time,
                subject: &subject,
            };
            let key = m
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .unwrap_or("");
            match self.producer.send(topic, key, &letter, &headers).await {
                Ok(delivery) => deliveries.push(delivery),
                Err(e) => {
                    self.metrics.published(topic, false);
                    self.metrics.kafka_error("produce");
                    tracing::warn!(error = %e, "dead letter not enqueued; retrying the batch's dead letters");
                    return false;
                }
            }
        }
        let mut all_delivered = true;
        for delivery in deliveries {
            let delivered = matches!(
                tokio::time::timeout(DELIVERY_WAIT, delivery).await,
                Ok(Ok(Ok(_)))
            );
            self.metrics.published(topic, delivered);
            if !delivered {
                self.metrics.kafka_error("produce");
                all_delivered = false;
            }
        }
        if !all_delivered {
            tracing::warn!("dead letters not delivered; producing them again (same error ids)");
        }
        all_delivered
    }

    /// Counts and logs one settled input.
    fn account(&self, polled: &Polled, outcome: &Resolution) {
        let m = &polled.message;
        let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
        let ids = polled.parsed.as_ref().ok().map(|i| (i.device(), i.id()));
        let span = match ids {
            Some((d, id)) => {
                tracing::info_span!("input", environment = %d.environment, user = %d.user,
                device = %d.device, input_id = %id.map(|i| i.to_string()).unwrap_or_default(), topic, partition, offset)
            }
            None => tracing::info_span!("input", topic, partition, offset),
        };
        let _entered = span.enter();
        match outcome {
            Resolution::Applied(applied) => {
                let t = &applied.transition;
                self.metrics.input(topic, Outcome::Applied);
                self.metrics.transition(t.previous, t.record.status);
                tracing::debug!(status = t.record.status.as_str(), sequence = t.record.sequence,
                    event_id = %t.record.event_id(), "transition applied");
            }
            Resolution::Ignored(Ignored::Stale) => {
                self.metrics.input(topic, Outcome::Stale);
                tracing::info!("stale request ignored");
            }
            Resolution::Ignored(_) => {
                self.metrics.input(topic, Outcome::Duplicate);
                tracing::info!("duplicate input ignored");
            }
            Resolution::Rejected(rejection) => {
                self.metrics.input(topic, Outcome::DeadLetter);
                self.metrics.dead_letter(rejection.reason);
                let detail = rejection
                    .details
                    .first()
                    .map(|d| d.message.as_str())
                    .unwrap_or_default();
                tracing::warn!(
                    reason = rejection.reason.as_str(),
                    detail,
                    "input dead-lettered"
                );
            }
        }
    }

    /// Stores, per partition, the offset after the batch's last input.
    fn store_offsets(&self, batch: &[Polled]) {
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for polled in batch {
            let m = &polled.message;
            let entry = next.entry((m.topic(), m.partition())).or_insert(0);
            *entry = (*entry).max(m.offset() + 1);
        }
        for ((topic, partition), offset) in next {
            let mut tpl = TopicPartitionList::new();
            if tpl
                .add_partition_offset(topic, partition, Offset::Offset(offset))
                .is_err()
            {
                continue;
            }
            if let Err(e) = self.consumer.store_offsets(&tpl) {
                // The partition went to another worker during the batch: it
                // replays these inputs from its committed offset (deduplicated).
                self.metrics.kafka_error("store");
                tracing::info!(topic, partition, offset, error = %e, "offset not stored: partition no longer assigned");
            }
        }
    }
}
