//! Table-driven tests of every row of SPEC §4.

use super::*;
use chrono::TimeZone;
use uuid::Uuid;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).single().unwrap()
}

const HOUR: i64 = 3600;

fn policy() -> Policy {
    Policy {
        ttl: Duration::hours(24),
        max_clock_skew: Duration::minutes(5),
    }
}

fn device() -> DeviceRef {
    DeviceRef {
        environment: Uuid::from_u128(1),
        user: Uuid::from_u128(2),
        device: Uuid::from_u128(3),
    }
}

fn request(id: u128, at: DateTime<Utc>) -> LogRequest {
    LogRequest {
        id: Uuid::from_u128(id),
        device: device(),
        device_type: MOBILE.into(),
        status: "PENDING".into(),
        requested_at: at,
    }
}

fn upload(id: u128, request_id: Option<u128>, at: DateTime<Utc>) -> Input {
    Input::Upload(LogsUploaded {
        id: Uuid::from_u128(id),
        device: device(),
        request_id: request_id.map(Uuid::from_u128),
        uploaded_at: at,
    })
}

fn expire() -> Input {
    Input::Expire(ExpiryCheck { device: device() })
}

fn record(
    request_id: u128,
    status: Status,
    requested_at: DateTime<Utc>,
    causation: u128,
) -> Record {
    Record {
        device: device(),
        request_id: Uuid::from_u128(request_id),
        status,
        requested_at,
        expires_at: (status == Status::Pending).then(|| requested_at + Duration::hours(24)),
        changed_at: requested_at,
        sequence: 10,
        causation_id: Uuid::from_u128(causation),
    }
}

/// What a row expects, compared on the parts that matter.
#[derive(Debug, PartialEq)]
enum Expect {
    Becomes {
        status: Status,
        previous: Option<Status>,
        expires_at: Option<DateTime<Utc>>,
        sequence: u64,
    },
    Ignored(Ignored),
    Rejected(Reason, Option<&'static str>),
}

fn outcome(decision: Decision) -> Expect {
    match decision {
        Decision::Transition(tr) => Expect::Becomes {
            status: tr.record.status,
            previous: tr.previous,
            expires_at: tr.record.expires_at,
            sequence: tr.record.sequence,
        },
        Decision::Ignore(i) => Expect::Ignored(i),
        Decision::Reject(r) => {
            let target = r.details.first().and_then(|d| d.target.clone());
            Expect::Rejected(r.reason, target.map(|s| &*Box::leak(s.into_boxed_str())))
        }
    }
}

/// (name, current record, input, already applied, now, expected outcome)
type Row<'a> = (
    &'a str,
    Option<&'a Record>,
    Input,
    bool,
    DateTime<Utc>,
    Expect,
);

#[test]
fn transitions_follow_the_spec_table() {
    use Status::*;
    let now = t(HOUR);
    let pending = record(100, Pending, t(0), 100);
    let received = record(100, Received, t(0), 200);
    let expired = record(100, Expired, t(0), 100);
    let non_mobile = LogRequest {
        device_type: "SMS".into(),
        ..request(7, t(HOUR))
    };
    let not_pending = LogRequest {
        status: "RECEIVED".into(),
        ..request(7, t(HOUR))
    };
    let p = Some(now + Duration::hours(24));
    let rows: Vec<Row> = vec![
        (
            "first request starts a cycle",
            None,
            Input::Request(request(7, now)),
            false,
            now,
            Expect::Becomes {
                status: Pending,
                previous: None,
                expires_at: p,
                sequence: now.timestamp_millis() as u64,
            },
        ),
        (
            "re-request while PENDING restarts the window",
            Some(&pending),
            Input::Request(request(7, now)),
            false,
            now,
            Expect::Becomes {
                status: Pending,
                previous: Some(Pending),
                expires_at: p,
                sequence: 11,
            },
        ),
        (
            "request after RECEIVED starts a new cycle",
            Some(&received),
            Input::Request(request(7, now)),
            false,
            now,
            Expect::Becomes {
                status: Pending,
                previous: Some(Received),
                expires_at: p,
                sequence: 11,
            },
        ),
        (
            "request after EXPIRED starts a new cycle",
            Some(&expired),
            Input::Request(request(7, now)),
            false,
            now,
            Expect::Becomes {
                status: Pending,
                previous: Some(Expired),
                expires_at: p,
                sequence: 11,
            },
        ),
        (
            "stale request is a no-op",
            Some(&pending),
            Input::Request(request(7, t(-1))),
            false,
            now,
            Expect::Ignored(Ignored::Stale),
        ),
        (
            "request with the same requestedAt is not stale",
            Some(&pending),
            Input::Request(request(7, t(0))),
            false,
            now,
            Expect::Becomes {
                status: Pending,
                previous: Some(Pending),
                expires_at: Some(t(24 * HOUR)),
                sequence: 11,
            },
        ),
        (
            "non-MOBILE device is invalid",
            None,
            Input::Request(non_mobile),
            false,
            now,
            Expect::Rejected(Reason::Invalid, Some("device.type")),
        ),
        (
            "status other than PENDING is invalid",
            None,
            Input::Request(not_pending),
            false,
            now,
            Expect::Rejected(Reason::Invalid, Some("status")),
        ),
        (
            "request from the future is invalid",
            None,
            Input::Request(request(7, now + Duration::minutes(6))),
            false,
            now,
            Expect::Rejected(Reason::Invalid, Some("requestedAt")),
        ),
        (
            "request within the clock skew is accepted",
            None,
            Input::Request(request(7, now + Duration::minutes(4))),
            false,
            now,
            Expect::Becomes {
                status: Pending,
                previous: None,
                expires_at: Some(now + Duration::minutes(4) + Duration::hours(24)),
                sequence: now.timestamp_millis() as u64,
            },
        ),
        (
            "request already past its expiry is invalid",
            None,
            Input::Request(request(7, now - Duration::hours(24))),
            false,
            now,
            Expect::Rejected(Reason::Invalid, Some("requestedAt")),
        ),
        (
            "upload before expiresAt receives",
            Some(&pending),
            upload(8, Some(100), t(2 * HOUR)),
            false,
            t(2 * HOUR),
            Expect::Becomes {
                status: Received,
                previous: Some(Pending),
                expires_at: None,
                sequence: 11,
            },
        ),
        (
            "upload without requestId answers the current cycle",
            Some(&pending),
            upload(8, None, t(2 * HOUR)),
            false,
            t(2 * HOUR),
            Expect::Becomes {
                status: Received,
                previous: Some(Pending),
                expires_at: None,
                sequence: 11,
            },
        ),
        (
            "upload exactly at expiresAt is refused",
            Some(&pending),
            upload(8, None, t(24 * HOUR)),
            false,
            t(24 * HOUR),
            Expect::Rejected(Reason::NoPendingRequest, None),
        ),
        (
            "upload naming another cycle is refused",
            Some(&pending),
            upload(8, Some(99), t(2 * HOUR)),
            false,
            t(2 * HOUR),
            Expect::Rejected(Reason::NoPendingRequest, None),
        ),
        (
            "upload older than the cycle is refused",
            Some(&pending),
            upload(8, None, t(-10)),
            false,
            t(2 * HOUR),
            Expect::Rejected(Reason::NoPendingRequest, None),
        ),
        (
            "upload with no request is refused",
            None,
            upload(8, None, t(2 * HOUR)),
            false,
            t(2 * HOUR),
            Expect::Rejected(Reason::NoPendingRequest, None),
        ),
        (
            "upload after RECEIVED is refused",
            Some(&received),
            upload(8, None, t(2 * HOUR)),
            false,
            t(2 * HOUR),
            Expect::Rejected(Reason::NoPendingRequest, None),
        ),
        (
            "upload after EXPIRED is refused",
            Some(&expired),
            upload(8, None, t(2 * HOUR)),
            false,
            t(2 * HOUR),
            Expect::Rejected(Reason::NoPendingRequest, None),
        ),
        (
            "upload from the future is invalid",
            Some(&pending),
            upload(8, None, t(3 * HOUR)),
            false,
            t(2 * HOUR),
            Expect::Rejected(Reason::Invalid, Some("uploadedAt")),
        ),
        (
            "clock reaching expiresAt expires",
            Some(&pending),
            expire(),
            false,
            t(24 * HOUR),
            Expect::Becomes {
                status: Expired,
                previous: Some(Pending),
                expires_at: None,
                sequence: 11,
            },
        ),
        (
            "clock before expiresAt does not expire",
            Some(&pending),
            expire(),
            false,
            t(24 * HOUR - 1),
            Expect::Ignored(Ignored::NotDue),
        ),
        (
            "expiry after RECEIVED is not due",
            Some(&received),
            expire(),
            false,
            t(25 * HOUR),
            Expect::Ignored(Ignored::NotDue),
        ),
        (
            "expiry of a missing record is not due",
            None,
            expire(),
            false,
            t(25 * HOUR),
            Expect::Ignored(Ignored::NotDue),
        ),
        (
            "already applied input id is a duplicate",
            Some(&pending),
            upload(8, None, t(2 * HOUR)),
            true,
            t(2 * HOUR),
            Expect::Ignored(Ignored::Duplicate),
        ),
        (
            "replayed request of the current cycle is a duplicate",
            Some(&received),
            Input::Request(request(100, t(0))),
            false,
            now,
            Expect::Ignored(Ignored::Duplicate),
        ),
        (
            "replayed upload that received is a duplicate",
            Some(&received),
            upload(200, None, t(2 * HOUR)),
            false,
            t(2 * HOUR),
            Expect::Ignored(Ignored::Duplicate),
        ),
    ];
    for (name, current, input, applied, at, expected) in rows {
        let got = outcome(decide(current, &input, applied, at, &policy()));
        assert_eq!(got, expected, "row: {name}");
    }
}

#[test]
fn received_and_expired_keep_the_cycle_and_reset_expiry() {
    let pending = record(100, Status::Pending, t(0), 100);
    let Decision::Transition(received) = decide(
        Some(&pending),
        &upload(8, None, t(60)),
        false,
        t(61),
        &policy(),
    ) else {
        panic!("upload should receive");
    };
    assert_eq!(received.record.request_id, pending.request_id);
    assert_eq!(received.record.requested_at, pending.requested_at);
    assert_eq!(received.record.causation_id, Uuid::from_u128(8));
    assert_eq!(received.record.changed_at, t(61));
    // Terminal never goes back within the cycle: neither expiry nor a second upload applies.
    assert_eq!(
        decide(
            Some(&received.record),
            &expire(),
            false,
            t(25 * HOUR),
            &policy()
        ),
        Decision::Ignore(Ignored::NotDue)
    );
    assert!(matches!(
        decide(
            Some(&received.record),
            &upload(9, None, t(70)),
            false,
            t(70),
            &policy()
        ),
        Decision::Reject(_)
    ));
}

#[test]
fn event_ids_are_deterministic_per_transition() {
    let a = record(100, Status::Pending, t(0), 100);
    let mut b = a.clone();
    b.changed_at = t(5);
    b.sequence = 99;
    assert_eq!(a.event_id(), b.event_id(), "same transition, same id");
    let received = Record {
        status: Status::Received,
        ..a.clone()
    };
    assert_ne!(a.event_id(), received.event_id());
    let other_cycle = record(101, Status::Pending, t(0), 101);
    assert_ne!(a.event_id(), other_cycle.event_id());
}

#[test]
fn sequence_of_a_new_record_is_past_any_dropped_one() {
    // A record dropped after retention had sequence start + k, k far below the
    // milliseconds of the retention; the next first transition starts later.
    let first = decide(
        None,
        &Input::Request(request(1, t(0))),
        false,
        t(0),
        &policy(),
    );
    let Decision::Transition(first) = first else {
        panic!()
    };
    let retention_later = t(7 * 24 * HOUR + 2 * HOUR);
    let again = decide(
        None,
        &Input::Request(request(2, retention_later)),
        false,
        retention_later,
        &policy(),
    );
    let Decision::Transition(again) = again else {
        panic!()
    };
    assert!(again.record.sequence > first.record.sequence + 1_000_000);
}
