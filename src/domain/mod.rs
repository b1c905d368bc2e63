//! The state machine of SPEC §4 as a pure function:
//! `decide(current record, input, already applied?, now, policy) -> Decision`.
//!
//! No I/O and no clock of its own: adapters load the record, pass `now`, and
//! carry out the decision (write the new record and publish its event, dead
//! letter a rejection, or count an ignored input).

mod types;

#[cfg(test)]
mod tests;

pub use types::*;

use chrono::{DateTime, Duration, Utc};

/// Rules that come from configuration.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// How long a request stays PENDING (SPEC: 24 h).
    pub ttl: Duration,
    /// Inputs stamped further than this in the future are invalid.
    pub max_clock_skew: Duration,
}

/// What one input does to one device's record.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// A transition: store `record`, publish its event.
    Transition(Transition),
    /// Nothing to do, counted by kind.
    Ignore(Ignored),
    /// The input cannot be applied: dead letter it.
    Reject(Rejection),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub previous: Option<Status>,
    pub record: Record,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// The input id was applied before.
    Duplicate,
    /// A LogRequest older than the current cycle.
    Stale,
    /// An expiry check for a cycle that is not (or no longer) due.
    NotDue,
}

/// Decides what `input` does to `current` at `now`.
///
/// `already_applied` says whether the store has seen the input's id applied
/// (the dedup index); the record itself is checked too, so a replay of the
/// input that made the current state is a duplicate even without the index.
pub fn decide(
    current: Option<&Record>,
    input: &Input,
    already_applied: bool,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Decision {
    let replays_current = current.is_some_and(|r| match input {
        Input::Request(request) => r.request_id == request.id,
        Input::Upload(upload) => r.causation_id == upload.id,
        Input::Expire(_) => false,
    });
    if already_applied || replays_current {
        return Decision::Ignore(Ignored::Duplicate);
    }
    match input {
        Input::Request(request) => decide_request(current, request, now, policy),
        Input::Upload(upload) => decide_upload(current, upload, now, policy),
        Input::Expire(_) => decide_expiry(current, now),
    }
}

fn decide_request(
    current: Option<&Record>,
    request: &LogRequest,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Decision {
    if request.device_type != MOBILE {
        return Decision::Reject(Rejection::invalid(
            "device.type",
            format!(
                "only MOBILE devices can be asked for logs, got {}",
                request.device_type
            ),
        ));
    }
    if request.status != PENDING_LITERAL {
        return Decision::Reject(Rejection::invalid(
            "status",
            format!(
                "a log request must have status PENDING, got {}",
                request.status
            ),
        ));
    }
    if request.requested_at > now + policy.max_clock_skew {
        return Decision::Reject(Rejection::invalid(
            "requestedAt",
            format!(
                "requestedAt {} is in the future",
                timestamp(request.requested_at)
            ),
        ));
    }
    let expires_at = request.requested_at + policy.ttl;
    if expires_at <= now {
        return Decision::Reject(Rejection::invalid(
            "requestedAt",
            format!(
                "the request expired at {} before it was applied",
                timestamp(expires_at)
            ),
        ));
    }
    if let Some(record) = current {
        if request.requested_at < record.requested_at {
            return Decision::Ignore(Ignored::Stale);
        }
    }
    Decision::Transition(Transition {
        previous: current.map(|r| r.status),
        record: Record {
            device: request.device,
            request_id: request.id,
            status: Status::Pending,
            requested_at: request.requested_at,
            expires_at: Some(expires_at),
            changed_at: now,
            sequence: next_sequence(current, now),
            causation_id: request.id,
        },
    })
}

fn decide_upload(
    current: Option<&Record>,
    upload: &LogsUploaded,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Decision {
    if upload.uploaded_at > now + policy.max_clock_skew {
        return Decision::Reject(Rejection::invalid(
            "uploadedAt",
            format!(
                "uploadedAt {} is in the future",
                timestamp(upload.uploaded_at)
            ),
        ));
    }
    let Some(record) = current.filter(|r| r.status == Status::Pending) else {
        return Decision::Reject(Rejection::no_pending(
            "the device has no PENDING log request",
        ));
    };
    if upload.request_id.is_some_and(|id| id != record.request_id) {
        return Decision::Reject(Rejection::no_pending(format!(
            "requestId does not name the device's PENDING request {}",
            record.request_id
        )));
    }
    if upload.uploaded_at < record.requested_at {
        return Decision::Reject(Rejection::no_pending(
            "the logs were uploaded before the PENDING request was made",
        ));
    }
    // A PENDING record always has an expiry; treat a missing one as expired.
    let expires_at = record.expires_at.unwrap_or(record.requested_at);
    if upload.uploaded_at >= expires_at {
        return Decision::Reject(Rejection::no_pending(format!(
            "the PENDING request expired at {}",
            timestamp(expires_at)
        )));
    }
    Decision::Transition(Transition {
        previous: Some(Status::Pending),
        record: Record {
            status: Status::Received,
            expires_at: None,
            changed_at: now,
            sequence: record.sequence + 1,
            causation_id: upload.id,
            ..record.clone()
        },
    })
}

fn decide_expiry(current: Option<&Record>, now: DateTime<Utc>) -> Decision {
    match current {
        Some(record)
            if record.status == Status::Pending
                && record.expires_at.is_some_and(|at| at <= now) =>
        {
            Decision::Transition(Transition {
                previous: Some(Status::Pending),
                record: Record {
                    status: Status::Expired,
                    expires_at: None,
                    changed_at: now,
                    sequence: record.sequence + 1,
                    causation_id: record.request_id,
                    ..record.clone()
                },
            })
        }
        _ => Decision::Ignore(Ignored::NotDue),
    }
}

/// The per-device sequence: +1 per transition. A device without a stored
/// record (first request ever, or its record dropped after retention) starts
/// at the transition time in Unix milliseconds, so the sequence keeps
/// increasing across a dropped record: the record outlives its last
/// transition by the retention, far more milliseconds than it has transitions.
fn next_sequence(current: Option<&Record>, now: DateTime<Utc>) -> u64 {
    match current {
        Some(record) => record.sequence + 1,
        None => u64::try_from(now.timestamp_millis()).unwrap_or(0).max(1),
    }
}

/// RFC 3339 UTC with milliseconds, the platform's timestamp format.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
