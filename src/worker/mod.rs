//! The worker: wires the adapters together and runs the consumer loop.
//!
//! At-least-once, batch by batch: poll up to `kafka.batch_size` inputs,
//! resolve them (one Redis read and one Redis write round trip), produce the
//! dead letters and wait for the broker, hand the events to the publisher,
//! and only then store the batch's offsets for the next auto-commit. A crash
//! anywhere before the store replays the batch; the replay is deduplicated.

mod consumer;
pub mod engine;
pub mod publisher;

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use chrono::Duration as ChronoDuration;
use rdkafka::consumer::Consumer as _;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::domain::Policy;
use crate::http::{self, Health};
use crate::kafka::{self, Consumer, EventProducer, WorkerContext};
use crate::metrics::Metrics;
use crate::store::{AnyStore, RedisStore, StoreError};
use crate::sweeper;
pub use engine::{Clock, Engine, SystemClock};
use publisher::Publisher;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot connect to redis")]
    Store(#[from] StoreError),
    #[error("kafka client setup failed")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the consumer loop ended unexpectedly")]
    LoopEnded,
    #[error("cannot listen on {addr}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The domain policy the settings describe.
pub fn policy(settings: &Settings) -> Policy {
    let to_chrono =
        |d: std::time::Duration| ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX);
    Policy {
        ttl: to_chrono(settings.logs.ttl),
        max_clock_skew: to_chrono(settings.logs.max_clock_skew),
    }
}

/// The metrics registry of a worker for these settings' topics.
pub fn worker_metrics(settings: &Settings) -> Metrics {
    let topics = &settings.kafka.topics;
    Metrics::new(
        &[&topics.requests, &topics.uploads],
        &[&topics.status, &topics.dead_letters],
    )
}

/// Runs the worker until `shutdown` completes, then stops intake, finishes
/// the in-flight batch, commits, flushes, within `shutdown.timeout`.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WorkerError> {
    let metrics = worker_metrics(&settings);
    let store = RedisStore::connect(
        &settings.redis,
        settings.logs.retention,
        settings.outbox.lease,
        metrics.clone(),
    )
    .await?;
    run_with(
        settings,
        store.into(),
        metrics,
        Arc::new(SystemClock),
        shutdown,
    )
    .await
}

/// [`run`] on a given store and clock (dev mode runs it on the in-memory
/// store); `metrics` is the registry the store reports to.
pub async fn run_with(
    settings: Settings,
    store: AnyStore,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WorkerError> {
    let topics = &settings.kafka.topics;
    let producer = EventProducer::new(&settings.kafka)?;
    let joined = Arc::new(AtomicBool::new(false));
    let consumer: Consumer = kafka::consumer_config(&settings.kafka)
        .create_with_context(WorkerContext::new(metrics.clone(), joined.clone()))
        .map_err(kafka::redact_config_error)?;

    let token = CancellationToken::new();
    let health = Arc::new(Health::new(
        metrics.clone(),
        store.clone(),
        producer.clone(),
        joined,
    ));
    let listener = tokio::net::TcpListener::bind(settings.http.listen)
        .await
        .map_err(|source| WorkerError::Listen {
            addr: settings.http.listen,
            source,
        })?;
    tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "http listening");
    let http_task = tokio::spawn(http::serve(listener, health.clone(), token.clone()));

    consumer.subscribe(&[topics.requests.as_str(), topics.uploads.as_str()])?;
    let engine = Engine {
        store: store.clone(),
        policy: policy(&settings),
        links_base_url: settings.logs.links_base_url.as_str().into(),
        clock,
    };
    let publisher = Publisher::new(
        producer.clone(),
        store.clone(),
        metrics.clone(),
        &topics.status,
    );
    let maintenance = tokio::spawn(sweeper::run(
        engine.clone(),
        publisher.clone(),
        metrics.clone(),
        settings.expiry.clone(),
        health.clone(),
        token.clone(),
    ));
    let intake = consumer::Intake {
        consumer,
        engine,
        publisher: publisher.clone(),
        producer,
        metrics,
        settings: settings.clone(),
        health,
    };
    let mut consumer_task = tokio::spawn(intake.run(token.clone()));

    // The consumer loop only ends when told to; if it ends first (a panic),
    // the worker must not linger half-alive: fail so the orchestrator restarts it.
    tokio::select! {
        _ = shutdown => {}
        ended = &mut consumer_task => {
            token.cancel();
            tracing::error!(panicked = ended.is_err(), "consumer loop ended unexpectedly");
            return Err(WorkerError::LoopEnded);
        }
    }
    tracing::info!(bound = ?settings.shutdown.timeout, "shutting down");
    token.cancel();
    let bound = settings.shutdown.timeout;
    let stopped = async {
        // The consumer finishes its batch, stores and commits its offsets.
        let consumer = consumer_task.await.ok();
        let _ = maintenance.await;
        publisher.close(bound).await;
        if let Some(consumer) = consumer {
            // Dropping closes the consumer (leaves the group); librdkafka can
            // block there, so it runs off the runtime and within the bound.
            let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
        }
        let _ = http_task.await;
    };
    if tokio::time::timeout(bound, stopped).await.is_err() {
        tracing::warn!(bound = ?bound, "shutdown bound reached; exiting with work outstanding (it is replayed)");
    } else {
        tracing::info!("stopped");
    }
    Ok(())
}
