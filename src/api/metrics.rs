//! The API's Prometheus registry: requests by route, method and status
//! class, and their latency. Routes are the templates, never the raw path,
//! so ids cannot blow up the label cardinality.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct ApiMetrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
}

/// Route label of the log request resource.
pub const LOGS_ROUTE: &str = "/v1/environments/{envID}/users/{userID}/devices/{deviceID}/logs";

impl ApiMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "api_requests_total",
                "HTTP API requests answered, by route, method and status class (2xx, 4xx, 5xx).",
            )
            .namespace("device_logs"),
            &["route", "method", "status_class"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "api_request_duration_seconds",
                "HTTP API request latency, by route and status class.",
            )
            .namespace("device_logs")
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["route", "status_class"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        // Every series of the main route exists from the start, so rate()
        // and absent() work before the first request.
        for method in ["GET", "PUT"] {
            for class in ["2xx", "4xx", "5xx"] {
                requests.with_label_values(&[LOGS_ROUTE, method, class]);
            }
        }
        for class in ["2xx", "4xx", "5xx"] {
            duration.with_label_values(&[LOGS_ROUTE, class]);
        }
        Ok(ApiMetrics(Arc::new(Inner {
            registry,
            requests,
            duration,
        })))
    }

    pub fn observe(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let class = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.0
            .requests
            .with_label_values(&[route, method, class])
            .inc();
        self.0
            .duration
            .with_label_values(&[route, class])
            .observe(elapsed.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.0.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
