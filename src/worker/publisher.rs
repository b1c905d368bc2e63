//! Publishes outbox events to the status topic and removes them from the
//! outbox once the broker has acknowledged them.
//!
//! Events are enqueued in the order they are handed over (so a device's
//! events keep their order); their delivery reports are awaited in a task
//! per hand-over, tracked so shutdown can wait for them. An event whose
//! delivery fails stays in the outbox and is re-published (same id) by the
//! outbox drain once its lease runs out.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio_util::task::TaskTracker;

use crate::kafka::{EventProducer, Headers};
use crate::metrics::Metrics;
use crate::payload::{EVENT_SOURCE, STATUS_CHANGED_TYPE};
use crate::store::{AnyStore, OutboxEvent};

/// An event to publish, with what its metrics need.
#[derive(Debug, Clone)]
pub struct Publication {
    pub event: OutboxEvent,
    /// The input's own timestamp (event lag).
    pub stamped_at: Option<DateTime<Utc>>,
    /// The deadline an expiry reached (expiry delay).
    pub deadline: Option<DateTime<Utc>>,
}

/// The parts of a StatusChanged event that become the key and headers.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    id: String,
    environment: IdOnly,
    user: IdOnly,
    device: IdOnly,
    changed_at: String,
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

#[derive(Clone)]
pub struct Publisher {
    producer: EventProducer,
    store: AnyStore,
    metrics: Metrics,
    topic: Arc<str>,
    tracker: TaskTracker,
}

impl Publisher {
    pub fn new(producer: EventProducer, store: AnyStore, metrics: Metrics, topic: &str) -> Self {
        Publisher {
            producer,
            store,
            metrics,
            topic: topic.into(),
            tracker: TaskTracker::new(),
        }
    }

    /// Enqueues `publications` in order and acknowledges them in the outbox
    /// as their delivery reports arrive.
    pub async fn publish(&self, publications: Vec<Publication>) {
        if publications.is_empty() {
            return;
        }
        let mut pending = Vec::with_capacity(publications.len());
        for publication in publications {
            let Ok(envelope) = serde_json::from_str::<Envelope>(&publication.event.payload) else {
                // Only a foreign writer can put this in the outbox; leave it
                // there for an operator rather than drop it silently.
                tracing::error!(event_id = %publication.event.id, "outbox event is not a StatusChanged event");
                continue;
            };
            let subject = format!(
                "environments/{}/users/{}/devices/{}",
                envelope.environment.id, envelope.user.id, envelope.device.id
            );
            let headers = Headers {
                id: &envelope.id,
                event_type: STATUS_CHANGED_TYPE,
                source: EVENT_SOURCE,
                time: &envelope.changed_at,
                subject: &subject,
            };
            match self
                .producer
                .send(
                    &self.topic,
                    &envelope.device.id,
                    &publication.event.payload,
                    &headers,
                )
                .await
            {
                Ok(delivery) => pending.push((publication, delivery)),
                Err(e) => {
                    self.metrics.published(&self.topic, false);
                    self.metrics.kafka_error("produce");
                    tracing::warn!(event_id = %publication.event.id, error = %e, "status event not enqueued; the outbox keeps it");
                    // The producer is not taking messages (a full queue behind
                    // a stalled broker): the rest stay in the outbox too and
                    // are re-published after their lease, rather than each
                    // waiting out the queue in turn.
                    break;
                }
            }
        }
        let this = self.clone();
        self.tracker.spawn(async move {
            let mut delivered = Vec::with_capacity(pending.len());
            for (publication, delivery) in pending {
                match delivery.await {
                    Ok(Ok(_)) => {
                        this.metrics.published(&this.topic, true);
                        let now = Utc::now();
                        if let Some(at) = publication.stamped_at {
                            this.metrics.event_lag((now - at).as_seconds_f64());
                        }
                        if let Some(deadline) = publication.deadline {
                            this.metrics.expiry_delay((now - deadline).as_seconds_f64());
                        }
                        delivered.push((publication.event.shard, publication.event.id));
                    }
                    Ok(Err((e, _))) => {
                        this.metrics.published(&this.topic, false);
                        this.metrics.kafka_error("produce");
                        tracing::warn!(event_id = %publication.event.id, error = %e, "status event not delivered; the outbox keeps it");
                    }
                    Err(_) => tracing::warn!(event_id = %publication.event.id, "producer dropped before delivery"),
                }
            }
            if let Err(e) = this.store.ack_outbox(&delivered).await {
                // Harmless: the events are re-published with the same ids.
                tracing::warn!(error = %e, events = delivered.len(), "outbox acknowledgement failed");
            }
        });
    }

    /// Flushes the producer and waits for the outstanding acknowledgements,
    /// both within `timeout`.
    pub async fn close(&self, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let producer = self.producer.clone();
        let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout));
        let _ = tokio::time::timeout_at(deadline, flushed).await;
        self.tracker.close();
        if tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "shutdown bound reached with event deliveries outstanding; the outbox keeps them"
            );
        }
    }
}
