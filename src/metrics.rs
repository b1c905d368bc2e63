//! All metrics of the worker, in one registry with the `device_logs_` prefix.
//! Every label has a bounded value set (never an id) and every series is
//! created at start-up so dashboards and alerts see zeros, not gaps.
//! `docs/metrics.md` documents each one.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::domain::{Reason, Status};

/// Outcomes of an input (label `outcome` of `device_logs_inputs_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
    Stale,
    DeadLetter,
    /// Its batch hit a transient error and will be processed again.
    Retried,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Applied,
        Outcome::Duplicate,
        Outcome::Stale,
        Outcome::DeadLetter,
        Outcome::Retried,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Stale => "stale",
            Outcome::DeadLetter => "dead_letter",
            Outcome::Retried => "retried",
        }
    }
}

/// Buckets from a millisecond to a minute: input handling is milliseconds
/// when healthy and seconds to minutes when Redis or Kafka struggle.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Buckets for delays measured from a producer's or the clock's timestamp.
const DELAY_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

pub const REDIS_OPERATIONS: [&str; 7] = [
    "load",
    "apply",
    "sweep",
    "outbox_claim",
    "outbox_ack",
    "sample",
    "ping",
];
pub const REDIS_ERROR_KINDS: [&str; 3] = ["connection", "timeout", "response"];
pub const KAFKA_ERROR_KINDS: [&str; 5] = ["consume", "produce", "commit", "store", "admin"];
pub const REBALANCE_KINDS: [&str; 3] = ["assign", "revoke", "error"];

#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    /// `{topic, outcome}`: inputs by their outcome.
    inputs: IntCounterVec,
    /// `{from, to}`: transitions applied; from = none|pending|received|expired.
    transitions: IntCounterVec,
    /// `{reason}`: dead letters written, by SPEC reason code.
    dead_letters: IntCounterVec,
    /// `{topic, outcome}`: events and dead letters produced, outcome ok|error.
    events_published: IntCounterVec,
    /// Input received to its offset stored.
    processing: Histogram,
    /// Input's own timestamp to its event published.
    event_lag: Histogram,
    /// Deadline to EXPIRED published.
    expiry_delay: Histogram,
    /// PENDING requests (size of the deadline index).
    pending: IntGauge,
    /// Events written but not yet acknowledged by the broker.
    outbox_depth: IntGauge,
    /// `{topic, partition}`: consumer lag from librdkafka statistics.
    consumer_lag: IntGaugeVec,
    /// `{kind}`: assign | revoke | error.
    rebalances: IntCounterVec,
    /// Partitions assigned to this worker.
    assigned: IntGauge,
    /// `{operation}`: Redis round trips.
    redis_duration: HistogramVec,
    /// `{kind}`: connection | timeout | response.
    redis_errors: IntCounterVec,
    /// `{kind}`: consume | produce | commit | store | admin.
    kafka_errors: IntCounterVec,
}

impl Metrics {
    /// Creates the registry with every series initialised. `topics` are the
    /// (input topics, output topics) used as label values.
    pub fn new(input_topics: &[&str], output_topics: &[&str]) -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help).namespace("device_logs"), labels)
                .expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let h = Histogram::with_opts(
                HistogramOpts::new(name, help)
                    .namespace("device_logs")
                    .buckets(buckets.to_vec()),
            )
            .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::with_opts(Opts::new(name, help).namespace("device_logs"))
                .expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let inputs = counter(
            "inputs_total",
            "Inputs consumed, by topic and outcome.",
            &["topic", "outcome"],
        );
        let transitions = counter(
            "transitions_total",
            "State transitions applied, by from and to status.",
            &["from", "to"],
        );
        let dead_letters = counter(
            "dead_letters_total",
            "Inputs dead-lettered, by reason.",
            &["reason"],
        );
        let events_published = counter(
            "events_published_total",
            "Messages produced, by topic and outcome.",
            &["topic", "outcome"],
        );
        let processing = histogram(
            "processing_duration_seconds",
            "Time from an input being received to its offset being stored.",
            LATENCY_BUCKETS,
        );
        let event_lag = histogram(
            "event_lag_seconds",
            "Time from an input's own timestamp to its event being published.",
            DELAY_BUCKETS,
        );
        let expiry_delay = histogram(
            "expiry_delay_seconds",
            "Time from a request's deadline to its EXPIRED event being published.",
            DELAY_BUCKETS,
        );
        let pending = gauge(
            "pending_requests",
            "PENDING requests, sampled from the deadline index.",
        );
        let outbox_depth = gauge(
            "outbox_depth",
            "Events written to Redis and not yet acknowledged by the broker.",
        );
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "consumer_lag",
                "Consumer lag in messages, from librdkafka statistics.",
            )
            .namespace("device_logs"),
            &["topic", "partition"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(consumer_lag.clone()))
            .expect("unique metric");
        let rebalances = counter(
            "rebalances_total",
            "Consumer group rebalances, by kind.",
            &["kind"],
        );
        let assigned = gauge(
            "assigned_partitions",
            "Partitions currently assigned to this worker.",
        );
        let redis_duration = HistogramVec::new(
            HistogramOpts::new("redis_duration_seconds", "Redis round trips, by operation.")
                .namespace("device_logs")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["operation"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(redis_duration.clone()))
            .expect("unique metric");
        let redis_errors = counter("redis_errors_total", "Redis errors, by kind.", &["kind"]);
        let kafka_errors = counter(
            "kafka_errors_total",
            "Kafka client errors, by kind.",
            &["kind"],
        );
        let build_info = IntGaugeVec::new(
            Opts::new("build_info", "Build of the running worker; always 1.")
                .namespace("device_logs"),
            &["version", "revision"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(build_info.clone()))
            .expect("unique metric");
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                option_env!("DEVICE_LOGS_REVISION").unwrap_or("unknown"),
            ])
            .set(1);
        #[cfg(target_os = "linux")]
        {
            let _ = registry.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ));
        }

        for topic in input_topics {
            for outcome in Outcome::ALL {
                inputs.with_label_values(&[topic, outcome.as_str()]);
            }
        }
        let statuses = [
            Some(Status::Pending),
            Some(Status::Received),
            Some(Status::Expired),
        ];
        for from in [
            None,
            Some(Status::Pending),
            Some(Status::Received),
            Some(Status::Expired),
        ] {
            for to in statuses {
                transitions.with_label_values(&[Status::label(from), Status::label(to)]);
            }
        }
        for reason in Reason::ALL {
            dead_letters.with_label_values(&[reason.as_str()]);
        }
        for topic in output_topics {
            for outcome in ["ok", "error"] {
                events_published.with_label_values(&[topic, outcome]);
            }
        }
        for op in REDIS_OPERATIONS {
            redis_duration.with_label_values(&[op]);
        }
        for kind in REDIS_ERROR_KINDS {
            redis_errors.with_label_values(&[kind]);
        }
        for kind in KAFKA_ERROR_KINDS {
            kafka_errors.with_label_values(&[kind]);
        }
        for kind in REBALANCE_KINDS {
            rebalances.with_label_values(&[kind]);
        }
        Metrics(Arc::new(Inner {
            registry,
            inputs,
            transitions,
            dead_letters,
            events_published,
            processing,
            event_lag,
            expiry_delay,
            pending,
            outbox_depth,
            consumer_lag,
            rebalances,
            assigned,
            redis_duration,
            redis_errors,
            kafka_errors,
        }))
    }

    /// The exposition in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.0.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    pub fn input(&self, topic: &str, outcome: Outcome) {
        self.0
            .inputs
            .with_label_values(&[topic, outcome.as_str()])
            .inc();
    }

    pub fn transition(&self, from: Option<Status>, to: Status) {
        self.0
            .transitions
            .with_label_values(&[Status::label(from), Status::label(Some(to))])
            .inc();
    }

    pub fn dead_letter(&self, reason: Reason) {
        self.0
            .dead_letters
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    pub fn published(&self, topic: &str, ok: bool) {
        self.0
            .events_published
            .with_label_values(&[topic, if ok { "ok" } else { "error" }])
            .inc();
    }

    pub fn processing(&self, elapsed: Duration) {
        self.0.processing.observe(elapsed.as_secs_f64());
    }

    pub fn event_lag(&self, seconds: f64) {
        self.0.event_lag.observe(seconds.max(0.0));
    }

    pub fn expiry_delay(&self, seconds: f64) {
        self.0.expiry_delay.observe(seconds.max(0.0));
    }

    pub fn set_counts(&self, pending: u64, outbox: u64) {
        self.0
            .pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.0
            .outbox_depth
            .set(i64::try_from(outbox).unwrap_or(i64::MAX));
    }

    pub fn consumer_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.0
            .consumer_lag
            .with_label_values(&[topic, &partition.to_string()])
            .set(lag.max(0));
    }

    pub fn forget_consumer_lag(&self, topic: &str, partition: i32) {
        let _ = self
            .0
            .consumer_lag
            .remove_label_values(&[topic, &partition.to_string()]);
    }

    pub fn rebalance(&self, kind: &'static str) {
        self.0.rebalances.with_label_values(&[kind]).inc();
    }

    pub fn set_assigned(&self, partitions: usize) {
        self.0
            .assigned
            .set(i64::try_from(partitions).unwrap_or(i64::MAX));
    }

    pub fn redis_duration(&self, operation: &'static str, elapsed: Duration) {
        self.0
            .redis_duration
            .with_label_values(&[operation])
            .observe(elapsed.as_secs_f64());
    }

    pub fn redis_error(&self, error: &redis::RedisError) {
        let kind = if error.is_timeout() {
            "timeout"
        } else if error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
        {
            "connection"
        } else {
            "response"
        };
        self.0.redis_errors.with_label_values(&[kind]).inc();
    }

    pub fn kafka_error(&self, kind: &'static str) {
        self.0.kafka_errors.with_label_values(&[kind]).inc();
    }
}
