//! Metrics, health endpoints and a real Prometheus scraping the worker.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use crate::helpers::*;
use crate::lifecycle::http_get;

const WAIT: Duration = Duration::from_secs(60);

/// The value of one sample line `name{labels} value` in an exposition.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_scripted_run_by_outcome() {
    // The ttl leaves the uploads room on a loaded machine; the three devices
    // left alone expire after it.
    let mut world = World::new("10s").await;
    // Only first publications: a re-publication after the lease would count twice.
    world.set("OUTBOX__LEASE", "60s");
    let worker = world.start_in_process();
    let status = world.reader("status");
    let dlq = world.reader("dlq");
    let producer = world.producer();
    // N = 6 requests; M = 3 of them uploaded; K = 3 left to expire; D = 2 bad.
    let devices: Vec<_> = (0..6).map(|_| device()).collect();
    for d in &devices {
        world.send_request(&producer, d, Uuid::new_v4()).await;
    }
    status
        .wait_for(6, WAIT, |m| m.body["status"] == "PENDING")
        .await;
    for d in &devices[..3] {
        world
            .send(
                &producer,
                "uploads",
                d,
                &upload_json(Uuid::new_v4(), d, None, Utc::now()),
            )
            .await;
    }
    let stranger = device();
    world
        .send_raw(
            &producer,
            "requests",
            &stranger.device.to_string(),
            b"{not json",
        )
        .await;
    world
        .send(
            &producer,
            "uploads",
            &stranger,
            &upload_json(Uuid::new_v4(), &stranger, None, Utc::now()),
        )
        .await;
    status.wait_for(12, WAIT, |_| true).await;
    dlq.wait_for(2, WAIT, |_| true).await;

    let (requests, uploads) = (world.topic("requests"), world.topic("uploads"));
    let (status_topic, dlq_topic) = (world.topic("status"), world.topic("dlq"));
    let expected = [
        (
            format!("device_logs_inputs_total{{outcome=\"applied\",topic=\"{requests}\"}}"),
            6.0,
        ),
        (
            format!("device_logs_inputs_total{{outcome=\"dead_letter\",topic=\"{requests}\"}}"),
            1.0,
        ),
        (
            format!("device_logs_inputs_total{{outcome=\"applied\",topic=\"{uploads}\"}}"),
            3.0,
        ),
        (
            format!("device_logs_inputs_total{{outcome=\"dead_letter\",topic=\"{uploads}\"}}"),
            1.0,
        ),
        (
            format!("device_logs_inputs_total{{outcome=\"duplicate\",topic=\"{uploads}\"}}"),
            0.0,
        ),
        (
            format!("device_logs_inputs_total{{outcome=\"stale\",topic=\"{requests}\"}}"),
            0.0,
        ),
        (
            "device_logs_transitions_total{from=\"none\",to=\"pending\"}".to_string(),
            6.0,
        ),
        (
            "device_logs_transitions_total{from=\"pending\",to=\"received\"}".to_string(),
            3.0,
        ),
        (
            "device_logs_transitions_total{from=\"pending\",to=\"expired\"}".to_string(),
            3.0,
        ),
        (
            "device_logs_dead_letters_total{reason=\"malformed\"}".to_string(),
            1.0,
        ),
        (
            "device_logs_dead_letters_total{reason=\"no_pending_request\"}".to_string(),
            1.0,
        ),
        (
            "device_logs_dead_letters_total{reason=\"invalid\"}".to_string(),
            0.0,
        ),
        (
            format!(
                "device_logs_events_published_total{{outcome=\"ok\",topic=\"{status_topic}\"}}"
            ),
            12.0,
        ),
        (
            format!("device_logs_events_published_total{{outcome=\"ok\",topic=\"{dlq_topic}\"}}"),
            2.0,
        ),
        (
            "device_logs_processing_duration_seconds_count".to_string(),
            11.0,
        ),
        ("device_logs_expiry_delay_seconds_count".to_string(), 3.0),
        ("device_logs_event_lag_seconds_count".to_string(), 12.0),
        ("device_logs_pending_requests".to_string(), 0.0),
        ("device_logs_outbox_depth".to_string(), 0.0),
    ];
    // Delivery reports and gauge samples land shortly after the events.
    let deadline = tokio::time::Instant::now() + WAIT;
    let metrics = loop {
        let metrics = http_get(worker.port, "/metrics").await.1;
        let off: Vec<_> = expected
            .iter()
            .filter(|(series, value)| sample(&metrics, series) != Some(*value))
            .map(|(series, value)| {
                format!("{series}: want {value}, got {:?}", sample(&metrics, series))
            })
            .collect();
        if off.is_empty() {
            break metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics did not settle: {off:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        metrics.contains("device_logs_build_info{revision="),
        "build info"
    );
    // Consumer lag comes from librdkafka statistics (every 5 s), one series
    // per partition that holds messages: all of them at zero once consumed.
    wait_until(WAIT, "consumer lag series at zero", || async {
        let metrics = http_get(worker.port, "/metrics").await.1;
        let lags: Vec<f64> = metrics
            .lines()
            .filter(|l| l.starts_with("device_logs_consumer_lag{") && l.contains(&requests))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!lags.is_empty() && lags.iter().all(|v| *v == 0.0)).then_some(())
    })
    .await;
    let assigns = sample(&metrics, "device_logs_rebalances_total{kind=\"assign\"}");
    assert!(
        assigns.is_some_and(|n| n >= 1.0),
        "the assignment was counted"
    );
    assert!(
        metrics.contains("process_resident_memory_bytes"),
        "process metrics"
    );
    assert!(metrics
        .contains("device_logs_redis_duration_seconds_bucket{operation=\"apply\",le=\"0.001\"}"));
    assert!(
        sample(&metrics, "device_logs_assigned_partitions").is_some_and(|v| v == 6.0),
        "6 partitions assigned"
    );
    worker.stop().await;
}

/// A private Redis on `port`, stopped on drop (never the suite's shared one).
struct OwnRedis(Child);

impl OwnRedis {
    fn start(port: u16) -> OwnRedis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        OwnRedis(child)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        kill(&mut self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_redis_while_livez_stays_up() {
    let mut world = World::new("24h").await;
    let port = free_port();
    let redis = OwnRedis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    wait_until(WAIT, "private redis", || async {
        redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    world.set("REDIS__URL", &url);
    world.set("REDIS__COMMAND_TIMEOUT", "500ms");
    let worker = world.start_in_process();
    let ready = wait_until(WAIT, "ready", || async {
        let (code, body) = http_get(worker.port, "/readyz").await;
        (code == 200).then_some(body)
    })
    .await;
    assert!(ready.contains("\"redis\":true"), "{ready}");

    drop(redis);
    let (_, body) = wait_until(WAIT, "not ready without redis", || async {
        let (code, body) = http_get(worker.port, "/readyz").await;
        (code == 503).then_some((code, body))
    })
    .await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["failed"], serde_json::json!(["redis"]));
    assert_eq!(
        http_get(worker.port, "/livez").await.0,
        200,
        "liveness never checks dependencies"
    );

    let _redis = OwnRedis::start(port);
    wait_until(WAIT, "ready again", || async {
        (http_get(worker.port, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(http_get(worker.port, "/livez").await.0, 200);
    worker.stop().await;
}

/// Percent-encodes a PromQL query for a URL.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_worker_and_answers_dashboard_queries() {
    let world = World::new("24h").await;
    let worker = world.start_in_process();
    let status = world.reader("status");
    let producer = world.producer();
    let d = device();
    world.send_request(&producer, &d, Uuid::new_v4()).await;
    status.wait_for(1, WAIT, |_| true).await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: device-logs\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            worker.port
        ),
    )
    .unwrap();
    let web = free_port();
    let _prometheus = KillOnDrop(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        None,
    );
    let requests = world.topic("requests");
    let queries = [
        format!("device_logs_inputs_total{{outcome=\"applied\",topic=\"{requests}\"}}"),
        "sum by (outcome) (rate(device_logs_inputs_total[1m]))".to_string(),
        "histogram_quantile(0.99, sum by (le) (rate(device_logs_processing_duration_seconds_bucket[1m])))".to_string(),
        "device_logs_build_info".to_string(),
        "up{job=\"device-logs\"} == 1".to_string(),
    ];
    for query in &queries {
        let body = wait_until(WAIT, query, || async {
            let (code, body) =
                http_get(web, &format!("/api/v1/query?query={}", encode(query))).await;
            let json: serde_json::Value = serde_json::from_str(&body).ok()?;
            let results = json["data"]["result"].as_array()?;
            (code == 200 && !results.is_empty()).then_some(json)
        })
        .await;
        if query.starts_with("device_logs_inputs_total{") {
            assert_eq!(body["data"]["result"][0]["value"][1], "1", "{body}");
        }
    }
    worker.stop().await;
}
