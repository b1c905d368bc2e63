//! Domain types: identities, statuses, records, inputs, rejections.

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub const MOBILE: &str = "MOBILE";
pub(super) const PENDING_LITERAL: &str = "PENDING";

/// Namespace of the deterministic ids (event ids, dead-letter error ids,
/// expiry causation ids): UUIDv5 over a readable name.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x5f0c_4b0e_9d1a_4c3e_8f6b_2a7d_1e9c_3b50);

/// A log request is identified by (environment, user, device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceRef {
    pub environment: Uuid,
    pub user: Uuid,
    pub device: Uuid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Pending,
    Received,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Received => "RECEIVED",
            Status::Expired => "EXPIRED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PENDING" => Some(Status::Pending),
            "RECEIVED" => Some(Status::Received),
            "EXPIRED" => Some(Status::Expired),
            _ => None,
        }
    }

    /// Lowercase form used as a metric label value.
    pub fn label(status: Option<Self>) -> &'static str {
        match status {
            None => "none",
            Some(Status::Pending) => "pending",
            Some(Status::Received) => "received",
            Some(Status::Expired) => "expired",
        }
    }
}

/// The current cycle of one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub device: DeviceRef,
    /// Id of the LogRequest that started the cycle.
    pub request_id: Uuid,
    pub status: Status,
    pub requested_at: DateTime<Utc>,
    /// Set while PENDING, `None` ("reset") once RECEIVED or EXPIRED.
    pub expires_at: Option<DateTime<Utc>>,
    pub changed_at: DateTime<Utc>,
    pub sequence: u64,
    /// The input that made this state.
    pub causation_id: Uuid,
}

impl Record {
    /// Id of the event that announced this state: the same for the same
    /// transition however often it is computed or published.
    pub fn event_id(&self) -> Uuid {
        let name = format!(
            "status/{}/{}/{}/{}/{}",
            self.device.environment,
            self.device.user,
            self.device.device,
            self.request_id,
            self.status.as_str()
        );
        Uuid::new_v5(&ID_NAMESPACE, name.as_bytes())
    }
}

/// Id of the dead letter of the input at (topic, partition, offset).
pub fn dead_letter_id(topic: &str, partition: i32, offset: i64) -> Uuid {
    Uuid::new_v5(
        &ID_NAMESPACE,
        format!("dead-letter/{topic}/{partition}/{offset}").as_bytes(),
    )
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogRequest {
    pub id: Uuid,
    pub device: DeviceRef,
    pub device_type: String,
    pub status: String,
    pub requested_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogsUploaded {
    pub id: Uuid,
    pub device: DeviceRef,
    pub request_id: Option<Uuid>,
    pub uploaded_at: DateTime<Utc>,
}

/// The clock reaching a device's deadline, as found in the deadline index.
/// It has no id of its own: the EXPIRED event's causation id is the cycle's
/// request id (the request set the deadline the clock reached).
#[derive(Debug, Clone, PartialEq)]
pub struct ExpiryCheck {
    pub device: DeviceRef,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Request(LogRequest),
    Upload(LogsUploaded),
    Expire(ExpiryCheck),
}

impl Input {
    /// The idempotency key; expiries have none (the record's state guards them).
    pub fn id(&self) -> Option<Uuid> {
        match self {
            Input::Request(r) => Some(r.id),
            Input::Upload(u) => Some(u.id),
            Input::Expire(_) => None,
        }
    }

    pub fn device(&self) -> DeviceRef {
        match self {
            Input::Request(r) => r.device,
            Input::Upload(u) => u.device,
            Input::Expire(e) => e.device,
        }
    }

    /// The input's own timestamp (for the event-lag metric).
    pub fn stamped_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Input::Request(r) => Some(r.requested_at),
            Input::Upload(u) => Some(u.uploaded_at),
            Input::Expire(_) => None,
        }
    }
}

/// Why an input is dead-lettered (SPEC §3 reason codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Not JSON, schema-invalid, or too large.
    Malformed,
    /// Well-formed but not acceptable (device type, status, timestamps).
    Invalid,
    /// An upload for a device with no matching PENDING cycle.
    NoPendingRequest,
}

impl Reason {
    pub const ALL: [Reason; 3] = [Reason::Malformed, Reason::Invalid, Reason::NoPendingRequest];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::Invalid => "invalid",
            Reason::NoPendingRequest => "no_pending_request",
        }
    }
}

/// One entry of the platform error shape's `details`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    /// INVALID_VALUE, REQUIRED_VALUE, SIZE_LIMIT_EXCEEDED or NO_PENDING_REQUEST.
    pub code: &'static str,
    pub target: Option<String>,
    pub message: String,
}

/// A typed refusal of an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub message: String,
    pub details: Vec<Detail>,
}

impl Rejection {
    pub fn invalid(target: &str, message: impl Into<String>) -> Self {
        Rejection {
            reason: Reason::Invalid,
            message: "the input is invalid".into(),
            details: vec![Detail {
                code: "INVALID_VALUE",
                target: Some(target.into()),
                message: message.into(),
            }],
        }
    }

    pub fn no_pending(message: impl Into<String>) -> Self {
        Rejection {
            reason: Reason::NoPendingRequest,
            message: "no pending log request for this upload".into(),
            details: vec![Detail {
                code: "NO_PENDING_REQUEST",
                target: None,
                message: message.into(),
            }],
        }
    }

    pub fn malformed(message: impl Into<String>, details: Vec<Detail>) -> Self {
        Rejection {
            reason: Reason::Malformed,
            message: message.into(),
            details,
        }
    }
}
