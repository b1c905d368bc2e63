//! Wire formats of SPEC §3. Inputs are checked against their JSON Schema
//! (`schemas/`, embedded at build time) before they are turned into domain
//! types; events and dead letters are built here so their shape has one home.

use std::sync::OnceLock;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::domain::{
    self, timestamp, Detail, DeviceRef, LogRequest, LogsUploaded, Record, Rejection, Transition,
};

pub const LOG_REQUEST_SCHEMA: &str = include_str!("../schemas/log-request.schema.json");
pub const LOGS_UPLOADED_SCHEMA: &str = include_str!("../schemas/logs-uploaded.schema.json");
pub const STATUS_CHANGED_SCHEMA: &str = include_str!("../schemas/status-changed.schema.json");
pub const DEAD_LETTER_SCHEMA: &str = include_str!("../schemas/dead-letter.schema.json");

/// CloudEvents `type` of each message the worker writes.
pub const STATUS_CHANGED_TYPE: &str = "devicelogs.status.changed.v1";
pub const DEAD_LETTER_TYPE: &str = "devicelogs.deadletter.v1";
/// CloudEvents `source` of everything the worker writes.
pub const EVENT_SOURCE: &str = "/device-logs/worker";

/// The four payload kinds, each with its compiled schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    LogRequest,
    LogsUploaded,
    StatusChanged,
    DeadLetter,
}

impl Kind {
    pub fn schema_text(self) -> &'static str {
        match self {
            Kind::LogRequest => LOG_REQUEST_SCHEMA,
            Kind::LogsUploaded => LOGS_UPLOADED_SCHEMA,
            Kind::StatusChanged => STATUS_CHANGED_SCHEMA,
            Kind::DeadLetter => DEAD_LETTER_SCHEMA,
        }
    }

    fn validator(self) -> &'static jsonschema::Validator {
        static CELLS: [OnceLock<jsonschema::Validator>; 4] = [
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
        ];
        CELLS[self as usize].get_or_init(|| {
            // The schemas are part of the binary and covered by tests: failing
            // to compile one is a build defect, not a runtime condition.
            let schema: Value =
                serde_json::from_str(self.schema_text()).expect("embedded schema is JSON");
            jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .should_validate_formats(true)
                .build(&schema)
                .expect("embedded schema compiles")
        })
    }

    /// Schema violations of `instance`, as platform error details.
    pub fn violations(self, instance: &Value) -> Vec<Detail> {
        self.validator()
            .iter_errors(instance)
            .take(10)
            .map(|e| Detail {
                code: if e.to_string().contains("is a required property") {
                    "REQUIRED_VALUE"
                } else {
                    "INVALID_VALUE"
                },
                target: Some(json_pointer_to_target(e.instance_path().as_str())),
                message: e.to_string(),
            })
            .collect()
    }
}

/// "/device/type" -> "device.type"; the document root is "$".
fn json_pointer_to_target(pointer: &str) -> String {
    let target = pointer.trim_start_matches('/').replace('/', ".");
    if target.is_empty() {
        "$".into()
    } else {
        target
    }
}

#[derive(Deserialize)]
struct IdRef {
    id: Uuid,
}

#[derive(Deserialize)]
struct DeviceWire {
    id: Uuid,
    #[serde(rename = "type")]
    device_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogRequestWire {
    id: Uuid,
    environment: IdRef,
    user: IdRef,
    device: DeviceWire,
    status: String,
    requested_at: DateTime<Utc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogsUploadedWire {
    id: Uuid,
    environment: IdRef,
    user: IdRef,
    device: DeviceWire,
    request_id: Option<Uuid>,
    uploaded_at: DateTime<Utc>,
}

/// Parses and schema-checks input bytes of `kind`. `max_bytes` is checked
/// before anything is parsed.
fn parse_checked<T: for<'de> Deserialize<'de>>(
    kind: Kind,
    bytes: &[u8],
    max_bytes: usize,
) -> Result<T, Rejection> {
    if bytes.len() > max_bytes {
        return Err(Rejection::malformed(
            "the input is too large",
            vec![Detail {
                code: "SIZE_LIMIT_EXCEEDED",
                target: Some("$".into()),
                message: format!("{} bytes exceed the limit of {max_bytes}", bytes.len()),
            }],
        ));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        Rejection::malformed(
            "the input is not valid JSON",
            vec![Detail {
                code: "INVALID_VALUE",
                target: Some("$".into()),
                message: e.to_string(),
            }],
        )
    })?;
    let violations = kind.violations(&value);
    if !violations.is_empty() {
        return Err(Rejection::malformed(
            "the input does not match its schema",
            violations,
        ));
    }
    // The schema has been checked, so this only fails on what JSON Schema
    // cannot say (e.g. a date-time chrono does not accept).
    serde_json::from_value(value).map_err(|e| {
        Rejection::malformed(
            "the input does not match its schema",
            vec![Detail {
                code: "INVALID_VALUE",
                target: Some("$".into()),
                message: e.to_string(),
            }],
        )
    })
}

pub fn parse_log_request(bytes: &[u8], max_bytes: usize) -> Result<LogRequest, Rejection> {
    let w: LogRequestWire = parse_checked(Kind::LogRequest, bytes, max_bytes)?;
    Ok(LogRequest {
        id: w.id,
        device: DeviceRef {
            environment: w.environment.id,
            user: w.user.id,
            device: w.device.id,
        },
        device_type: w.device.device_type.unwrap_or_default(),
        status: w.status,
        requested_at: w.requested_at,
    })
}

pub fn parse_logs_uploaded(bytes: &[u8], max_bytes: usize) -> Result<LogsUploaded, Rejection> {
    let w: LogsUploadedWire = parse_checked(Kind::LogsUploaded, bytes, max_bytes)?;
    Ok(LogsUploaded {
        id: w.id,
        device: DeviceRef {
            environment: w.environment.id,
            user: w.user.id,
            device: w.device.id,
        },
        request_id: w.request_id,
        uploaded_at: w.uploaded_at,
    })
}

/// Serializes a LogRequest as upstream producers do (CLI `request`, tests).
pub fn log_request_json(request: &LogRequest) -> Value {
    json!({
        "id": request.id,
        "environment": {"id": request.device.environment},
        "user": {"id": request.device.user},
        "device": {"id": request.device.device, "type": request.device_type},
        "status": request.status,
        "requestedAt": timestamp(request.requested_at),
    })
}

/// Serializes a LogsUploaded as the app gateway does (CLI `upload`, tests).
pub fn logs_uploaded_json(upload: &LogsUploaded) -> Value {
    let mut v = json!({
        "id": upload.id,
        "environment": {"id": upload.device.environment},
        "user": {"id": upload.device.user},
        "device": {"id": upload.device.device},
        "uploadedAt": timestamp(upload.uploaded_at),
    });
    if let Some(request_id) = upload.request_id {
        v["requestId"] = json!(request_id);
    }
    v
}

/// `_links` of a device's log request, in the shape of the API response.
pub fn links(device: &DeviceRef, base_url: &str) -> Value {
    let base = base_url.trim_end_matches('/');
    let device_href = format!(
        "{base}/environments/{}/users/{}/devices/{}",
        device.environment, device.user, device.device
    );
    json!({"self": {"href": format!("{device_href}/logs")}, "device": {"href": device_href}})
}

/// The StatusChanged event of a transition.
pub fn status_changed(transition: &Transition, base_url: &str) -> Value {
    let r = &transition.record;
    json!({
        "id": r.event_id(),
        "environment": {"id": r.device.environment},
        "user": {"id": r.device.user},
        "device": {"id": r.device.device},
        "requestId": r.request_id,
        "causationId": r.causation_id,
        "previousStatus": transition.previous.map(|s| s.as_str()),
        "status": r.status.as_str(),
        "requestedAt": timestamp(r.requested_at),
        "expiresAt": r.expires_at.map(timestamp),
        "changedAt": timestamp(r.changed_at),
        "sequence": r.sequence,
        "_links": links(&r.device, base_url),
    })
}

/// The record in the shape of the API's response (SPEC §1).
pub fn api_response(record: &Record, base_url: &str) -> Value {
    json!({
        "_links": links(&record.device, base_url),
        "status": record.status.as_str(),
        "expiresAt": record.expires_at.map(timestamp),
    })
}

/// Where a dead-lettered input came from.
#[derive(Debug, Clone)]
pub struct InputOrigin<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub timestamp: Option<DateTime<Utc>>,
    pub payload: &'a [u8],
}

/// The dead letter of an input: original bytes, origin, platform error shape.
///
/// At most `max_payload` bytes of the input are embedded (`truncated` then
/// says so, `sizeBytes` gives the original size): an oversize input, base64-
/// or JSON-escaped, could otherwise exceed the broker's message size and its
/// dead letter could never be written, which would stall the partition.
pub fn dead_letter(
    rejection: &Rejection,
    origin: &InputOrigin<'_>,
    now: DateTime<Utc>,
    max_payload: usize,
) -> Value {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut input = json!({
        "topic": origin.topic,
        "partition": origin.partition,
        "offset": origin.offset,
        "key": origin.key.map(|k| std::str::from_utf8(k).map(str::to_owned).unwrap_or_else(|_| b64(k))),
        "timestamp": origin.timestamp.map(timestamp),
        "sizeBytes": origin.payload.len(),
        "truncated": origin.payload.len() > max_payload,
    });
    let kept = &origin.payload[..origin.payload.len().min(max_payload)];
    match std::str::from_utf8(kept) {
        Ok(text) => input["payload"] = json!(text),
        Err(_) => input["payloadBase64"] = json!(b64(kept)),
    }
    let details: Vec<Value> = rejection
        .details
        .iter()
        .map(|d| {
            let mut v = json!({"code": d.code, "message": d.message});
            if let Some(target) = &d.target {
                v["target"] = json!(target);
            }
            v
        })
        .collect();
    json!({
        "error": {
            "id": domain::dead_letter_id(origin.topic, origin.partition, origin.offset),
            "code": "INVALID_DATA",
            "message": rejection.message,
            "details": details,
        },
        "reason": rejection.reason.as_str(),
        "input": input,
        "deadLetteredAt": timestamp(now),
    })
}

/// The record as stored in Redis: compact, versioned by field names.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredRecord {
    #[serde(rename = "r")]
    pub request_id: Uuid,
    #[serde(rename = "s")]
    pub status: String,
    #[serde(rename = "q")]
    pub requested_at: DateTime<Utc>,
    #[serde(rename = "x")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(rename = "c")]
    pub changed_at: DateTime<Utc>,
    #[serde(rename = "n")]
    pub sequence: u64,
    #[serde(rename = "k")]
    pub causation_id: Uuid,
}

impl StoredRecord {
    pub fn from_record(r: &Record) -> Self {
        StoredRecord {
            request_id: r.request_id,
            status: r.status.as_str().to_string(),
            requested_at: r.requested_at,
            expires_at: r.expires_at,
            changed_at: r.changed_at,
            sequence: r.sequence,
            causation_id: r.causation_id,
        }
    }

    pub fn into_record(self, device: DeviceRef) -> Option<Record> {
        Some(Record {
            device,
            request_id: self.request_id,
            status: domain::Status::parse(&self.status)?,
            requested_at: self.requested_at,
            expires_at: self.expires_at,
            changed_at: self.changed_at,
            sequence: self.sequence,
            causation_id: self.causation_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Reason, Status};

    fn examples(kind: Kind) -> Vec<Value> {
        let schema: Value = serde_json::from_str(kind.schema_text()).unwrap();
        schema["examples"].as_array().unwrap().clone()
    }

    fn valid_request() -> Value {
        examples(Kind::LogRequest)[0].clone()
    }

    fn valid_upload() -> Value {
        examples(Kind::LogsUploaded)[0].clone()
    }

    #[test]
    fn every_schema_has_an_id_and_examples_that_validate() {
        for kind in [
            Kind::LogRequest,
            Kind::LogsUploaded,
            Kind::StatusChanged,
            Kind::DeadLetter,
        ] {
            let schema: Value = serde_json::from_str(kind.schema_text()).unwrap();
            assert_eq!(
                schema["$schema"],
                "https://json-schema.org/draft/2020-12/schema"
            );
            assert!(schema["$id"]
                .as_str()
                .is_some_and(|s| s.starts_with("https://")));
            let examples = examples(kind);
            assert!(!examples.is_empty(), "{kind:?} has no examples");
            for example in examples {
                assert_eq!(
                    kind.violations(&example),
                    vec![],
                    "{kind:?} example: {example}"
                );
            }
        }
    }

    fn rejected(kind: Kind, mutate: impl FnOnce(&mut Value)) -> Vec<Detail> {
        let mut v = if kind == Kind::LogRequest {
            valid_request()
        } else {
            valid_upload()
        };
        mutate(&mut v);
        kind.violations(&v)
    }

    #[test]
    fn one_invalid_example_per_rule_is_rejected() {
        type Mutation = Box<dyn FnOnce(&mut Value)>;
        let cases: Vec<(&str, Kind, Mutation, &str)> = vec![
            (
                "missing id",
                Kind::LogRequest,
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("id");
                }),
                "$",
            ),
            (
                "id not a uuid",
                Kind::LogRequest,
                Box::new(|v| v["id"] = json!("../../etc")),
                "id",
            ),
            (
                "environment id not a uuid",
                Kind::LogRequest,
                Box::new(|v| v["environment"]["id"] = json!("x:*")),
                "environment.id",
            ),
            (
                "user id a number",
                Kind::LogRequest,
                Box::new(|v| v["user"]["id"] = json!(5)),
                "user.id",
            ),
            (
                "device type missing",
                Kind::LogRequest,
                Box::new(|v| {
                    v["device"].as_object_mut().unwrap().remove("type");
                }),
                "device",
            ),
            (
                "status empty",
                Kind::LogRequest,
                Box::new(|v| v["status"] = json!("")),
                "status",
            ),
            (
                "requestedAt not a date-time",
                Kind::LogRequest,
                Box::new(|v| v["requestedAt"] = json!("yesterday")),
                "requestedAt",
            ),
            (
                "unknown property",
                Kind::LogRequest,
                Box::new(|v| v["extra"] = json!(1)),
                "$",
            ),
            (
                "upload missing uploadedAt",
                Kind::LogsUploaded,
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("uploadedAt");
                }),
                "$",
            ),
            (
                "upload requestId not a uuid",
                Kind::LogsUploaded,
                Box::new(|v| v["requestId"] = json!("abc")),
                "requestId",
            ),
            (
                "upload negative size",
                Kind::LogsUploaded,
                Box::new(|v| v["logs"]["sizeBytes"] = json!(-1)),
                "logs.sizeBytes",
            ),
            (
                "upload device not an object",
                Kind::LogsUploaded,
                Box::new(|v| v["device"] = json!("d")),
                "device",
            ),
        ];
        for (name, kind, mutate, target) in cases {
            let violations = rejected(kind, mutate);
            assert!(!violations.is_empty(), "{name}: accepted");
            assert!(
                violations
                    .iter()
                    .any(|d| d.target.as_deref() == Some(target)),
                "{name}: targets {:?}",
                violations.iter().map(|d| &d.target).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn parse_turns_bytes_into_domain_inputs_or_malformed_rejections() {
        let bytes = serde_json::to_vec(&valid_request()).unwrap();
        let request = parse_log_request(&bytes, 65536).unwrap();
        assert_eq!(request.device_type, "MOBILE");
        let oversize = parse_log_request(&bytes, 10).unwrap_err();
        assert_eq!(oversize.reason, Reason::Malformed);
        assert_eq!(oversize.details[0].code, "SIZE_LIMIT_EXCEEDED");
        let not_json = parse_logs_uploaded(b"\xff{", 65536).unwrap_err();
        assert_eq!(not_json.reason, Reason::Malformed);
        let upload =
            parse_logs_uploaded(&serde_json::to_vec(&valid_upload()).unwrap(), 65536).unwrap();
        assert!(upload.request_id.is_some());
        // What the CLI publishes parses back to the same input.
        assert_eq!(
            parse_log_request(
                &serde_json::to_vec(&log_request_json(&request)).unwrap(),
                65536
            )
            .unwrap(),
            request
        );
        assert_eq!(
            parse_logs_uploaded(
                &serde_json::to_vec(&logs_uploaded_json(&upload)).unwrap(),
                65536
            )
            .unwrap(),
            upload
        );
    }

    #[test]
    fn built_events_and_dead_letters_match_their_schemas() {
        let request =
            parse_log_request(&serde_json::to_vec(&valid_request()).unwrap(), 65536).unwrap();
        let record = Record {
            device: request.device,
            request_id: request.id,
            status: Status::Pending,
            requested_at: request.requested_at,
            expires_at: Some(request.requested_at + chrono::Duration::hours(24)),
            changed_at: request.requested_at,
            sequence: 1,
            causation_id: request.id,
        };
        let event = status_changed(
            &Transition {
                previous: None,
                record: record.clone(),
            },
            "https://api.example.com/v1",
        );
        assert_eq!(Kind::StatusChanged.violations(&event), vec![]);
        assert!(event["_links"]["self"]["href"]
            .as_str()
            .unwrap()
            .ends_with("/logs"));
        let bad = Rejection::invalid("device.type", "only MOBILE");
        for payload in [&b"{\"a\":1}"[..], &b"\xff\xfe"[..]] {
            let origin = InputOrigin {
                topic: "device-logs.requests.v1",
                partition: 2,
                offset: 9,
                key: Some(b"k"),
                timestamp: None,
                payload,
            };
            let letter = dead_letter(&bad, &origin, Utc::now(), 65536);
            assert_eq!(Kind::DeadLetter.violations(&letter), vec![], "{letter}");
        }
    }
}
