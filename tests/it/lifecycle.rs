//! Every row of SPEC §4 end to end, on the in-process worker.

use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_then_upload_goes_pending_then_received() {
    let world = World::new("24h").await;
    let worker = world.start_in_process();
    let status = world.reader("status");
    let producer = world.producer();
    let d = device();
    let (request_id, upload_id) = (Uuid::new_v4(), Uuid::new_v4());
    let requested_at = Utc::now();
    world
        .send(
            &producer,
            "requests",
            &d,
            &request_json(request_id, &d, "MOBILE", requested_at),
        )
        .await;
    // Requests and uploads are different topics, so no order between them:
    // the app uploads after it was asked, i.e. after PENDING.
    status.wait_for(1, WAIT, |_| true).await;
    world
        .send(
            &producer,
            "uploads",
            &d,
            &upload_json(upload_id, &d, Some(request_id), Utc::now()),
        )
        .await;

    let events = status.wait_for(2, WAIT, |_| true).await;
    assert_eq!(statuses(&events), ["PENDING", "RECEIVED"]);
    events.iter().for_each(assert_valid_event);
    let (pending, received) = (&events[0].body, &events[1].body);
    assert_eq!(pending["previousStatus"], serde_json::Value::Null);
    assert_eq!(pending["requestId"], request_id.to_string());
    assert_eq!(pending["causationId"], request_id.to_string());
    let expected_expiry =
        device_logs::domain::timestamp(requested_at + chrono::Duration::hours(24));
    assert_eq!(pending["expiresAt"], expected_expiry);
    assert_eq!(received["previousStatus"], "PENDING");
    assert_eq!(received["causationId"], upload_id.to_string());
    assert_eq!(received["expiresAt"], serde_json::Value::Null);
    assert!(received["sequence"].as_u64() > pending["sequence"].as_u64());
    assert_eq!(
        pending["_links"]["self"]["href"],
        format!(
            "https://api.test.example/v1/environments/{}/users/{}/devices/{}/logs",
            d.environment, d.user, d.device
        )
    );
    let stored = world.stored(&d).await.expect("record stored");
    assert_eq!(stored["s"], "RECEIVED");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_stale_inputs_make_no_event_and_rerequest_restarts_the_window() {
    let world = World::new("24h").await;
    let worker = world.start_in_process();
    let status = world.reader("status");
    let producer = world.producer();
    let d = device();
    let now = Utc::now();
    let first = request_json(
        Uuid::new_v4(),
        &d,
        "MOBILE",
        now - chrono::Duration::minutes(10),
    );
    let second_id = Uuid::new_v4();
    let second = request_json(second_id, &d, "MOBILE", now);
    let older = request_json(
        Uuid::new_v4(),
        &d,
        "MOBILE",
        now - chrono::Duration::minutes(5),
    );
    world.send(&producer, "requests", &d, &first).await;
    world.send(&producer, "requests", &d, &first).await; // the same input twice
    world.send(&producer, "requests", &d, &second).await; // re-request while PENDING
    world.send(&producer, "requests", &d, &older).await; // stale: older than the current cycle
    status
        .wait_for(1, WAIT, |m| m.body["requestId"] == second_id.to_string())
        .await;
    let upload = upload_json(Uuid::new_v4(), &d, None, Utc::now());
    world.send(&producer, "uploads", &d, &upload).await;
    world.send(&producer, "uploads", &d, &upload).await; // duplicate upload

    // Sentinels, one per input topic, on the device's partitions: an input
    // the worker dead-letters. Once both dead letters are out, everything
    // sent before them on either topic has been processed. (The two topics
    // are not ordered with each other, so one sentinel would not do.)
    let dlq = world.reader("dlq");
    let request_sentinel = request_json(Uuid::new_v4(), &d, "SMS", Utc::now()).to_string();
    let upload_sentinel =
        upload_json(Uuid::new_v4(), &d, Some(Uuid::new_v4()), Utc::now()).to_string();
    world
        .send_raw(
            &producer,
            "requests",
            &d.device.to_string(),
            request_sentinel.as_bytes(),
        )
        .await;
    world
        .send_raw(
            &producer,
            "uploads",
            &d.device.to_string(),
            upload_sentinel.as_bytes(),
        )
        .await;
    dlq.wait_for(2, WAIT, |m| {
        m.body["input"]["payload"] == request_sentinel.as_str()
            || m.body["input"]["payload"] == upload_sentinel.as_str()
    })
    .await;
    // Both input partitions are past the inputs under test. One more request
    // on the device: its event is produced after every earlier event of the
    // device, on the same partition, so once it is read, all are.
    let last = Uuid::new_v4();
    world.send_request(&producer, &d, last).await;
    status
        .wait_for(1, WAIT, |m| m.body["requestId"] == last.to_string())
        .await;

    let events = status.for_device(&d);
    assert_eq!(
        statuses(&events),
        ["PENDING", "PENDING", "RECEIVED", "PENDING"],
        "{events:#?}"
    );
    assert_eq!(events[1].body["previousStatus"], "PENDING");
    assert_eq!(events[1].body["requestId"], second_id.to_string());
    assert_eq!(
        events[1].body["expiresAt"],
        device_logs::domain::timestamp(now + chrono::Duration::hours(24))
    );
    assert_eq!(
        events[2].body["requestId"],
        second_id.to_string(),
        "upload answers the current cycle"
    );
    let sequences: Vec<u64> = events
        .iter()
        .map(|e| e.body["sequence"].as_u64().unwrap())
        .collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    events.iter().for_each(assert_valid_event);

    let metrics = reqwest_metrics(worker.port).await;
    let requests = world.topic("requests");
    assert!(
        metrics.contains(&format!(
            "device_logs_inputs_total{{outcome=\"duplicate\",topic=\"{requests}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "device_logs_inputs_total{{outcome=\"stale\",topic=\"{requests}\"}} 1"
        )),
        "{metrics}"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_request_expires_once_and_late_upload_is_dead_lettered() {
    let world = World::new("2s").await;
    let worker = world.start_in_process();
    let status = world.reader("status");
    let dlq = world.reader("dlq");
    let producer = world.producer();
    let d = device();
    let request_id = Uuid::new_v4();
    world.send_request(&producer, &d, request_id).await;
    let events = status
        .wait_for(2, WAIT, |m| m.key == Some(d.device.to_string()))
        .await;
    assert_eq!(statuses(&events), ["PENDING", "EXPIRED"]);
    events.iter().for_each(assert_valid_event);
    let expired = &events[1].body;
    assert_eq!(expired["expiresAt"], serde_json::Value::Null);
    assert_eq!(expired["causationId"], request_id.to_string());
    let deadline =
        chrono::DateTime::parse_from_rfc3339(events[0].body["expiresAt"].as_str().unwrap())
            .unwrap();
    let changed =
        chrono::DateTime::parse_from_rfc3339(expired["changedAt"].as_str().unwrap()).unwrap();
    assert!(changed >= deadline, "expired before its deadline");

    // The upload arrives after the deadline: no pending request.
    world
        .send(
            &producer,
            "uploads",
            &d,
            &upload_json(Uuid::new_v4(), &d, Some(request_id), Utc::now()),
        )
        .await;
    let letters = dlq.wait_for(1, WAIT, |_| true).await;
    assert_eq!(letters[0].body["reason"], "no_pending_request");
    // A sentinel proves nothing else was published for the device meanwhile.
    let sentinel = Uuid::new_v4();
    world.send_request(&producer, &d, sentinel).await;
    status
        .wait_for(1, WAIT, |m| m.body["requestId"] == sentinel.to_string())
        .await;
    assert_eq!(
        statuses(&status.for_device(&d))[..3],
        ["PENDING", "EXPIRED", "PENDING"]
    );
    let mut conn = world.redis().await;
    let shard = world.keys().shard_of(&d);
    let in_index: Option<f64> = redis::cmd("ZSCORE")
        .arg(world.keys().deadlines(shard))
        .arg(device_logs::store::keys::device_member(&d))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(in_index.is_some(), "the new cycle is in the deadline index");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_due_while_no_worker_ran_is_emitted_once_after_restart() {
    let world = World::new("2s").await;
    let status = world.reader("status");
    let producer = world.producer();
    let d = device();
    let worker = world.start_in_process();
    world.send_request(&producer, &d, Uuid::new_v4()).await;
    let pending = status.wait_for(1, WAIT, |_| true).await;
    worker.stop().await;
    let deadline =
        chrono::DateTime::parse_from_rfc3339(pending[0].body["expiresAt"].as_str().unwrap())
            .unwrap();
    // Wait (on the clock, not on the worker) until the deadline has passed.
    wait_until(WAIT, "the deadline to pass", || async {
        (Utc::now() > deadline + chrono::Duration::milliseconds(500)).then_some(())
    })
    .await;
    assert_eq!(
        statuses(&status.for_device(&d)),
        ["PENDING"],
        "nothing expires while no worker runs"
    );

    let first = world.start_in_process();
    let second = world.start_in_process();
    let events = status.wait_for(2, WAIT, |_| true).await;
    assert_eq!(statuses(&events), ["PENDING", "EXPIRED"]);
    // Both workers sweep the same index. Once each has swept twice more,
    // any second EXPIRED would have been applied: across both, exactly one
    // transition and one publication.
    let sweeps = |metrics: &str| {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("device_logs_redis_duration_seconds_count{operation=\"sweep\"} ")
            })
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = [
        sweeps(&reqwest_metrics(first.port).await),
        sweeps(&reqwest_metrics(second.port).await),
    ];
    let (a, b) = wait_until(WAIT, "two more sweeps on each worker", || async {
        let (a, b) = (
            reqwest_metrics(first.port).await,
            reqwest_metrics(second.port).await,
        );
        (sweeps(&a) >= before[0] + 2.0 && sweeps(&b) >= before[1] + 2.0).then_some((a, b))
    })
    .await;
    let expiries = |m: &str| {
        m.lines()
            .find_map(|l| {
                l.strip_prefix("device_logs_transitions_total{from=\"pending\",to=\"expired\"} ")
            })
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(
        expiries(&a) + expiries(&b),
        1.0,
        "one EXPIRED transition across both workers"
    );
    let expired: Vec<_> = status
        .all()
        .into_iter()
        .filter(|m| m.body["status"] == "EXPIRED")
        .collect();
    assert_eq!(expired.len(), 1, "published once");
    first.stop().await;
    second.stop().await;
}

async fn reqwest_metrics(port: u16) -> String {
    http_get(port, "/metrics").await.1
}

/// Minimal HTTP/1.1 GET over a TCP stream: (status code, body); code 0
/// when nothing listens (yet), so callers can wait for a server.
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return (0, String::new());
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    if stream.write_all(request.as_bytes()).await.is_err()
        || stream.read_to_string(&mut response).await.is_err()
    {
        return (0, String::new());
    }
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}
