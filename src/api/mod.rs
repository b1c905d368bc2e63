//! The HTTP API (`device-logs api`): the platform-compatible log request
//! resource, stateless (any number of replicas). A PUT publishes a LogRequest
//! to the requests topic and waits for the broker; the worker owns the state.
//! A GET reads the record from the store. The same listener serves
//! `/metrics`, `/livez` and `/readyz`.

pub mod auth;
pub mod directory;
pub mod error;
pub mod metrics;
mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, put};
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::kafka::EventProducer;
use crate::store::AnyStore;
use crate::worker::Clock;
pub use auth::Verifier;
pub use directory::Directory;
use error::ApiError;
pub use metrics::ApiMetrics;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub struct ApiState {
    pub settings: Settings,
    pub verifier: Arc<Verifier>,
    pub directory: Directory,
    pub store: AnyStore,
    pub producer: EventProducer,
    pub metrics: ApiMetrics,
    pub clock: Arc<dyn Clock>,
}

/// The API's routes on `state`.
pub fn router(state: Arc<ApiState>) -> Router {
    let logs = put(routes::put_logs)
        .get(routes::get_logs)
        .fallback(|| async { ApiError::method_not_allowed() });
    Router::new()
        .route(
            "/v1/environments/{env}/users/{user}/devices/{device}/logs",
            logs,
        )
        .route("/metrics", get(render_metrics))
        .route("/livez", get(|| async { Json(json!({"status": "alive"})) }))
        .route("/readyz", get(readyz))
        .fallback(any(|| async { ApiError::not_found("no such resource") }))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes; in-flight
/// requests finish first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop.cancel();
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(token.cancelled_owned())
        .await
}

/// The route label of a request path: the template, never the ids.
fn route_label(path: &str) -> &'static str {
    match path {
        "/metrics" => "/metrics",
        "/livez" => "/livez",
        "/readyz" => "/readyz",
        p if p.starts_with("/v1/environments/")
            && p.ends_with("/logs")
            && p.matches('/').count() == 8 =>
        {
            metrics::LOGS_ROUTE
        }
        _ => "other",
    }
}

async fn observe(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_label(request.uri().path());
    let method = match request.method().as_str() {
        m @ ("GET" | "PUT" | "POST" | "DELETE" | "PATCH" | "HEAD") => m,
        _ => "other",
    }
    .to_string();
    let response = next.run(request).await;
    state.metrics.observe(
        route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

async fn render_metrics(State(state): State<Arc<ApiState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Ready when the store answers and the broker's metadata is reachable.
async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    let store = matches!(
        tokio::time::timeout(CHECK_TIMEOUT, state.store.ping()).await,
        Ok(Ok(()))
    );
    let producer = state.producer.clone();
    let kafka = tokio::task::spawn_blocking(move || producer.reachable(CHECK_TIMEOUT))
        .await
        .unwrap_or(false);
    let checks = json!({"redis": store, "kafka": kafka});
    if store && kafka {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "checks": checks})),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "checks": checks})),
        )
            .into_response()
    }
}

/// The API's state: token verifier, device directory, producer, metrics.
pub fn state(
    settings: Settings,
    store: AnyStore,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<ApiState>> {
    Ok(Arc::new(ApiState {
        verifier: Verifier::new(&settings.api.auth)?,
        directory: Directory::from_settings(&settings.api.devices),
        producer: EventProducer::new(&settings.kafka)?,
        metrics: ApiMetrics::new()?,
        store,
        clock,
        settings,
    }))
}

/// `device-logs api`: the API on Redis and the configured broker until
/// `shutdown` completes.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // The store's own Redis timings are not part of the API's exposition.
    let store_metrics = crate::metrics::Metrics::new(&[], &[]);
    let store = crate::store::RedisStore::connect(
        &settings.redis,
        settings.logs.retention,
        settings.outbox.lease,
        store_metrics,
    )
    .await?;
    let listen = settings.api.listen;
    let state = state(settings, store.into(), Arc::new(crate::worker::SystemClock))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    tracing::info!(addr = %listen, "api listening");
    serve(listener, state, shutdown).await?;
    tracing::info!("api stopped");
    Ok(())
}
