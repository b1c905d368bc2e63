//! Processes that die: SIGKILL between the Redis write and the offset
//! commit, SIGTERM for a clean stop.

use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_redis_write_gives_no_second_transition_and_the_event_with_the_same_id() {
    let mut world = World::new("24h").await;
    world.set("OUTBOX__LEASE", "1s");
    let status = world.reader("status");
    let producer = world.producer();
    let d = device();
    let request_id = Uuid::new_v4();
    let mut doomed = world.spawn_child(&[("DEVICE_LOGS_FAILPOINT", "after_apply")]);
    world.send_request(&producer, &d, request_id).await;
    wait_until(WAIT, "the failpoint", || async {
        world
            .child_logs()
            .contains("failpoint after_apply reached")
            .then_some(())
    })
    .await;
    kill(&mut doomed); // SIGKILL: no shutdown path runs
    let stored = world
        .stored(&d)
        .await
        .expect("the Redis write happened before the kill");
    assert_eq!(stored["s"], "PENDING");
    let sequence = stored["n"].as_u64().unwrap();
    assert!(
        status.all().is_empty(),
        "nothing was published before the kill"
    );

    let mut worker = world.spawn_child(&[]);
    // The input is redelivered (its offset was never committed) and found
    // applied; the outbox drain publishes the event the dead worker owed.
    let pending = status
        .wait_for(1, WAIT, |m| m.body["status"] == "PENDING")
        .await;
    let expected_id = device_logs::domain::Record {
        device: d,
        request_id,
        status: device_logs::domain::Status::Pending,
        requested_at: Utc::now(),
        expires_at: None,
        changed_at: Utc::now(),
        sequence: 0,
        causation_id: request_id,
    }
    .event_id();
    assert_eq!(pending[0].body["id"], expected_id.to_string());
    assert_eq!(pending[0].body["sequence"].as_u64(), Some(sequence));
    // A sentinel upload on the same partition: once RECEIVED is out, the
    // replayed request has been processed.
    world
        .send(
            &producer,
            "uploads",
            &d,
            &upload_json(Uuid::new_v4(), &d, Some(request_id), Utc::now()),
        )
        .await;
    status
        .wait_for(1, WAIT, |m| m.body["status"] == "RECEIVED")
        .await;
    let record = world.stored(&d).await.unwrap();
    assert_eq!(
        record["n"].as_u64(),
        Some(sequence + 1),
        "exactly one more transition: RECEIVED"
    );
    let pendings: Vec<_> = status
        .all()
        .into_iter()
        .filter(|m| m.body["status"] == "PENDING")
        .collect();
    assert!(
        pendings
            .iter()
            .all(|m| m.body["id"] == expected_id.to_string()),
        "{pendings:#?}"
    );
    assert!(
        world.child_logs().contains("duplicate input ignored"),
        "the replay was seen as a duplicate"
    );
    terminate(&worker);
    assert!(worker.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_worker_cleanly_and_commits_its_offsets() {
    let world = World::new("24h").await;
    let status = world.reader("status");
    let producer = world.producer();
    let mut worker = world.spawn_child(&[]);
    let devices: Vec<_> = (0..20).map(|_| device()).collect();
    for d in &devices {
        world.send_request(&producer, d, Uuid::new_v4()).await;
    }
    status.wait_for(devices.len(), WAIT, |_| true).await;
    let started = std::time::Instant::now();
    terminate(&worker);
    let exit = worker.wait().unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "within the shutdown bound (10s), with slack for a loaded machine"
    );
    assert!(world.child_logs().contains("offsets committed"));

    // A new worker resumes after the committed offsets: no input replays.
    let mut next = world.spawn_child(&[]);
    let d = device();
    world.send_request(&producer, &d, Uuid::new_v4()).await;
    status.wait_for(devices.len() + 1, WAIT, |_| true).await;
    terminate(&next);
    assert!(next.wait().unwrap().success());
    let logs = world.child_logs();
    assert!(
        !logs.contains("duplicate input ignored"),
        "committed inputs were replayed"
    );
}
