//! Two worker processes in one group, 1,000 devices, requests, uploads and
//! expiries: exactly one event per transition, per-device order.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use device_logs::domain::DeviceRef;
use uuid::Uuid;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_apply_each_transition_once_with_increasing_sequences() {
    // The test broker (Tansu on sqlite, on a 2-core machine shared with the
    // rest of the suite) takes tens of seconds for a burst of this size: the
    // ttl leaves room for that before uploads would arrive too late.
    let mut world = World::new("90s").await;
    // A long lease: this test wants no re-publication, only first publications.
    world.set("OUTBOX__LEASE", "60s");
    // 2,300 inputs in a burst load the test broker's group coordinator;
    // a longer session keeps heartbeats from timing out into rebalances.
    world.set_kafka_property("session.timeout.ms", "30000");
    world.set_kafka_property("heartbeat.interval.ms", "3000");
    let status = world.reader("status");
    let producer = world.producer();
    let mut workers = [world.spawn_child(&[]), world.spawn_child(&[])];
    // Inputs go out once the group is stable with both members, so this test
    // measures exactly-once across replicas, not the test broker's rebalance
    // latency under a burst (crash tests cover rebalances).
    wait_until(Duration::from_secs(120), "both workers assigned", || {
        let (a, b) = (workers[0].assignment(), workers[1].assignment());
        let stable = !a.is_empty() && !b.is_empty() && a.len() + b.len() == 2 * PARTITIONS as usize;
        async move { stable.then_some(()) }
    })
    .await;

    let devices: Vec<_> = (0..1000).map(|_| device()).collect();
    // Device i: i%3==0 requested then uploaded (PENDING, RECEIVED);
    // i%3==1 requested and left to expire (PENDING, EXPIRED);
    // i%3==2 requested twice then uploaded (PENDING, PENDING, RECEIVED).
    let expected: HashMap<Uuid, Vec<&str>> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let statuses = match i % 3 {
                0 => vec!["PENDING", "RECEIVED"],
                1 => vec!["PENDING", "EXPIRED"],
                _ => vec!["PENDING", "PENDING", "RECEIVED"],
            };
            (d.device, statuses)
        })
        .collect();
    // All requests at once (the producer keeps each device's order), stamped
    // as they are sent; uploads once their request is PENDING, because the
    // two topics are not ordered with each other.
    let now = Utc::now();
    let mut requests = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        requests.push((*d, request_json(Uuid::new_v4(), d, "MOBILE", now)));
        if i % 3 == 2 {
            let later = now + chrono::Duration::milliseconds(1);
            requests.push((*d, request_json(Uuid::new_v4(), d, "MOBILE", later)));
        }
    }
    futures::future::join_all(
        requests
            .iter()
            .map(|(d, body)| world.send(&producer, "requests", d, body)),
    )
    .await;
    // Each device's upload goes out as soon as its last PENDING is out (the
    // app answers after being asked), not after every device's: under load
    // the slowest request must not push the first uploads past their expiry.
    let mut waiting: HashMap<Uuid, (DeviceRef, usize)> = devices
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 1)
        .map(|(i, d)| (d.device, (*d, if i % 3 == 2 { 2 } else { 1 })))
        .collect();
    wait_until(Duration::from_secs(120), "every upload sent", || {
        let mut pending_seen: HashMap<Uuid, usize> = HashMap::new();
        for m in status.distinct() {
            if m.body["status"] == "PENDING" {
                let id: Uuid = m.body["device"]["id"].as_str().unwrap().parse().unwrap();
                *pending_seen.entry(id).or_default() += 1;
            }
        }
        let ready: Vec<DeviceRef> = waiting
            .iter()
            .filter(|(id, (_, want))| pending_seen.get(*id).is_some_and(|n| n >= want))
            .map(|(_, (d, _))| *d)
            .collect();
        for d in &ready {
            waiting.remove(&d.device);
        }
        let done = waiting.is_empty();
        let (world, producer) = (&world, &producer);
        async move {
            let uploads: Vec<_> = ready
                .iter()
                .map(|d| (*d, upload_json(Uuid::new_v4(), d, None, Utc::now())))
                .collect();
            futures::future::join_all(
                uploads
                    .iter()
                    .map(|(d, body)| world.send(producer, "uploads", d, body)),
            )
            .await;
            done.then_some(())
        }
    })
    .await;
    let transitions: usize = expected.values().map(Vec::len).sum();
    let events = status
        .wait_for(transitions, Duration::from_secs(240), |_| true)
        .await;

    // Exactly once: as many messages as transitions, all ids distinct.
    let ids: HashSet<_> = events
        .iter()
        .map(|e| e.body["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), transitions, "distinct event ids");
    assert_eq!(events.len(), transitions, "no event published twice");
    // Per device: the expected statuses, in topic order, sequence increasing.
    let mut by_device: HashMap<Uuid, Vec<&Received>> = HashMap::new();
    for e in &events {
        by_device
            .entry(e.body["device"]["id"].as_str().unwrap().parse().unwrap())
            .or_default()
            .push(e);
    }
    for (device, want) in &expected {
        let mut got = by_device.remove(device).unwrap_or_default();
        got.sort_by_key(|e| e.offset);
        let partitions: HashSet<_> = got.iter().map(|e| e.partition).collect();
        assert_eq!(partitions.len(), 1, "one device, one partition");
        let statuses: Vec<&str> = got
            .iter()
            .map(|e| e.body["status"].as_str().unwrap())
            .collect();
        assert_eq!(&statuses, want, "device {device}");
        let sequences: Vec<u64> = got
            .iter()
            .map(|e| e.body["sequence"].as_u64().unwrap())
            .collect();
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "device {device}: {sequences:?}"
        );
    }
    events.iter().take(50).for_each(assert_valid_event);
    for worker in &mut workers {
        terminate(worker);
        assert!(worker.wait().unwrap().success());
    }
}
