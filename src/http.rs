//! `/metrics`, `/livez`, `/readyz` on `http.listen`.
//!
//! `/livez` says the process and its loops are alive (each loop beats at
//! least every few seconds, also while it retries an outage) and never
//! looks at Kafka or Redis: restarting a worker does not heal a broker.
//! `/readyz` checks the dependencies: Redis answers PING, Kafka metadata is
//! reachable, the consumer has joined its group.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::kafka::EventProducer;
use crate::metrics::Metrics;
use crate::store::AnyStore;

/// A loop that has not beaten for this long is considered hung.
const STALE_AFTER_SECS: i64 = 120;
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Health {
    metrics: Metrics,
    store: AnyStore,
    producer: EventProducer,
    joined: Arc<AtomicBool>,
    consumer_beat: AtomicI64,
    maintenance_beat: AtomicI64,
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Health {
    pub fn new(
        metrics: Metrics,
        store: AnyStore,
        producer: EventProducer,
        joined: Arc<AtomicBool>,
    ) -> Self {
        Health {
            metrics,
            store,
            producer,
            joined,
            consumer_beat: AtomicI64::new(now_secs()),
            maintenance_beat: AtomicI64::new(now_secs()),
        }
    }

    pub fn beat_consumer(&self) {
        self.consumer_beat.store(now_secs(), Ordering::Relaxed);
    }

    pub fn beat_maintenance(&self) {
        self.maintenance_beat.store(now_secs(), Ordering::Relaxed);
    }

    fn hung_loops(&self) -> Vec<&'static str> {
        let now = now_secs();
        [
            ("consumer", &self.consumer_beat),
            ("maintenance", &self.maintenance_beat),
        ]
        .into_iter()
        .filter(|(_, beat)| now - beat.load(Ordering::Relaxed) > STALE_AFTER_SECS)
        .map(|(name, _)| name)
        .collect()
    }
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    token: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(health);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(token.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "http server failed");
    }
}

async fn metrics(State(health): State<Arc<Health>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        health.metrics.render(),
    )
        .into_response()
}

async fn livez(State(health): State<Arc<Health>>) -> Response {
    let hung = health.hung_loops();
    if hung.is_empty() {
        (StatusCode::OK, Json(json!({"status": "alive"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "hung", "loops": hung})),
        )
            .into_response()
    }
}

async fn readyz(State(health): State<Arc<Health>>) -> Response {
    let redis = matches!(
        tokio::time::timeout(CHECK_TIMEOUT, health.store.ping()).await,
        Ok(Ok(()))
    );
    let producer = health.producer.clone();
    let kafka = tokio::task::spawn_blocking(move || producer.reachable(CHECK_TIMEOUT))
        .await
        .unwrap_or(false);
    let group = health.joined.load(Ordering::Relaxed);
    let checks = json!({"redis": redis, "kafka": kafka, "consumer_group": group});
    if redis && kafka && group {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "checks": checks})),
        )
            .into_response()
    } else {
        let failed: Vec<&str> = [
            ("redis", redis),
            ("kafka", kafka),
            ("consumer_group", group),
        ]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name)
        .collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "failed": failed, "checks": checks})),
        )
            .into_response()
    }
}
