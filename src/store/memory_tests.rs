//! Lifetimes of the in-memory store, judged by the injected clock: the parts
//! the Redis comparison (tests/it/model.rs) cannot reach in seconds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::MemoryStore;
use crate::domain::{DeviceRef, Record, Status, Transition};
use crate::store::{Applied, ApplyOp};
use crate::worker::engine::Clock;

struct TestClock(Mutex<DateTime<Utc>>);

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn received(device: DeviceRef, at: DateTime<Utc>) -> Record {
    Record {
        device,
        request_id: Uuid::new_v4(),
        status: Status::Received,
        requested_at: at,
        expires_at: None,
        changed_at: at,
        sequence: 1,
        causation_id: Uuid::new_v4(),
    }
}

#[test]
fn records_and_dedup_markers_go_after_the_retention() {
    let start = Utc::now();
    let clock = Arc::new(TestClock(Mutex::new(start)));
    let retention = Duration::from_secs(3600);
    let store = MemoryStore::new(4, retention, Duration::from_secs(5), clock.clone());
    let device = DeviceRef {
        environment: Uuid::new_v4(),
        user: Uuid::new_v4(),
        device: Uuid::new_v4(),
    };
    let record = received(device, start);
    let input = Uuid::new_v4();
    let op = ApplyOp {
        expected_version: String::new(),
        transition: Transition {
            previous: None,
            record: record.clone(),
        },
        input_id: Some(input),
        event: "{}".into(),
    };
    assert_eq!(
        store.apply(std::slice::from_ref(&op), start),
        vec![Applied::Applied]
    );
    // The same input again is a duplicate; the record is readable.
    assert_eq!(
        store.apply(std::slice::from_ref(&op), start),
        vec![Applied::Duplicate]
    );
    let (loaded, seen) = store.load(&[device], &[(device, input)]);
    assert_eq!(loaded[&device].record.as_ref(), Some(&record));
    assert!(seen.contains(&(device, input)));
    assert_eq!(store.due_deadlines(start, 10), Vec::<String>::new());

    // Past the retention both are gone: the device reads as new.
    *clock.0.lock().unwrap_or_else(|e| e.into_inner()) = start + chrono::Duration::hours(2);
    let (loaded, seen) = store.load(&[device], &[(device, input)]);
    assert_eq!(loaded[&device].record, None);
    assert!(seen.is_empty());
    assert_eq!(store.apply(&[op], start), vec![Applied::Applied]);
}

#[test]
fn claimed_outbox_events_hide_for_the_lease_and_acks_remove_them() {
    let start = Utc::now();
    let clock = Arc::new(TestClock(Mutex::new(start)));
    let store = MemoryStore::new(2, Duration::from_secs(3600), Duration::from_secs(5), clock);
    let device = DeviceRef {
        environment: Uuid::new_v4(),
        user: Uuid::new_v4(),
        device: Uuid::new_v4(),
    };
    let op = ApplyOp {
        expected_version: String::new(),
        transition: Transition {
            previous: None,
            record: received(device, start),
        },
        input_id: None,
        event: "{\"e\":1}".into(),
    };
    store.apply(&[op], start);
    // Not visible before the lease of the first publication runs out.
    assert!(store.claim_outbox(start, 10).is_empty());
    let later = start + chrono::Duration::seconds(6);
    let claimed = store.claim_outbox(later, 10);
    assert_eq!(claimed.len(), 1);
    assert!(store.claim_outbox(later, 10).is_empty(), "leased");
    store.ack_outbox(&[(claimed[0].shard, claimed[0].id)]);
    assert_eq!(store.counts(), (0, 0));
}
