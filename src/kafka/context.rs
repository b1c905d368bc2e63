//! The consumer's context: commits on revoke, counts rebalances, turns
//! librdkafka statistics into the consumer-lag gauge.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::TopicPartitionList;

use crate::metrics::Metrics;

pub type Consumer = StreamConsumer<WorkerContext>;

pub struct WorkerContext {
    metrics: Metrics,
    /// Set once the consumer has received its first assignment (readiness).
    joined: Arc<AtomicBool>,
}

impl WorkerContext {
    pub fn new(metrics: Metrics, joined: Arc<AtomicBool>) -> Self {
        WorkerContext { metrics, joined }
    }
}

impl ClientContext for WorkerContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's "not consumed by us": leave no stale series.
                if *partition < 0 {
                    continue;
                }
                if p.consumer_lag >= 0 {
                    self.metrics.consumer_lag(topic, *partition, p.consumer_lag);
                } else {
                    self.metrics.forget_consumer_lag(topic, *partition);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics.kafka_error("consume");
        tracing::warn!(error = %error, reason, "kafka client error");
    }
}

impl ConsumerContext for WorkerContext {
    /// Runs inside the poll, between two batches: every stored offset belongs
    /// to an input whose effect is durable, so commit them before the
    /// partitions go to another worker.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(partitions) => {
                self.metrics.rebalance("revoke");
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(())
                    | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) =>
                        {}
                    Err(e) => {
                        self.metrics.kafka_error("commit");
                        tracing::warn!(error = %e, partitions = partitions.count(), "commit on revoke failed");
                    }
                }
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => {
                self.metrics.rebalance("error");
                tracing::warn!(error = %e, "rebalance error");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            self.metrics.rebalance("assign");
            self.joined.store(true, Ordering::Relaxed);
            tracing::info!(partitions = %describe(partitions), "partitions assigned");
        }
        let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        self.metrics.set_assigned(assigned);
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        match result {
            Ok(())
            | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                self.metrics.kafka_error("commit");
                tracing::warn!(error = %e, "offset commit failed");
            }
        }
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}
