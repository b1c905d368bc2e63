//! Bad input: one dead letter each, with the original bytes and origin, and
//! the partition keeps moving.

use std::time::Duration;

use base64::Engine as _;
use chrono::Utc;
use uuid::Uuid;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversize_non_mobile_and_orphan_inputs_are_dead_lettered_and_the_partition_moves_on(
) {
    let world = World::new("24h").await;
    let worker = world.start_in_process();
    let status = world.reader("status");
    let dlq = world.reader("dlq");
    let producer = world.producer();
    // Every input shares one key, so one partition: a blocked partition
    // would hold back the valid request at the end.
    let d = device();
    let key = d.device.to_string();
    let not_json: &[u8] = b"\xff\xfe not json";
    let schema_invalid = br#"{"id":"nope"}"#;
    let oversize = format!("{{\"pad\":\"{}\"}}", "x".repeat(70 * 1024));
    let non_mobile = request_json(Uuid::new_v4(), &d, "SMS", Utc::now()).to_string();
    let orphan = upload_json(Uuid::new_v4(), &d, None, Utc::now()).to_string();
    world.send_raw(&producer, "requests", &key, not_json).await;
    world
        .send_raw(&producer, "requests", &key, schema_invalid)
        .await;
    world
        .send_raw(&producer, "requests", &key, oversize.as_bytes())
        .await;
    world
        .send_raw(&producer, "requests", &key, non_mobile.as_bytes())
        .await;
    world
        .send_raw(&producer, "uploads", &key, orphan.as_bytes())
        .await;
    let valid = Uuid::new_v4();
    world.send_request(&producer, &d, valid).await;

    let events = status.wait_for(1, WAIT, |_| true).await;
    assert_eq!(events[0].body["requestId"], valid.to_string());
    let letters = dlq.wait_for(5, WAIT, |_| true).await;
    assert_eq!(letters.len(), 5, "one dead letter per bad input");
    for letter in &letters {
        let violations = device_logs::payload::Kind::DeadLetter.violations(&letter.body);
        assert!(violations.is_empty(), "{}: {violations:?}", letter.body);
        assert_eq!(letter.body["error"]["code"], "INVALID_DATA");
        assert_eq!(
            letter.headers.get("ce_type").map(String::as_str),
            Some(device_logs::payload::DEAD_LETTER_TYPE)
        );
        assert_eq!(letter.key.as_deref(), Some(key.as_str()));
    }
    let find = |needle: &dyn Fn(&serde_json::Value) -> bool| {
        letters
            .iter()
            .find(|l| needle(&l.body))
            .unwrap_or_else(|| panic!("missing dead letter in {letters:#?}"))
    };
    let raw = find(&|b| b["input"]["payloadBase64"].is_string());
    assert_eq!(raw.body["reason"], "malformed");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(raw.body["input"]["payloadBase64"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, not_json, "original bytes kept");
    assert_eq!(raw.body["input"]["topic"], world.topic("requests"));
    assert!(raw.body["input"]["offset"].is_u64() && raw.body["input"]["partition"].is_u64());
    let invalid_schema =
        find(&|b| b["input"]["payload"] == std::str::from_utf8(schema_invalid).unwrap());
    assert_eq!(invalid_schema.body["reason"], "malformed");
    let too_big = find(&|b| b["error"]["details"][0]["code"] == "SIZE_LIMIT_EXCEEDED");
    assert_eq!(too_big.body["reason"], "malformed");
    assert_eq!(
        too_big.body["input"]["sizeBytes"].as_u64(),
        Some(oversize.len() as u64)
    );
    assert_eq!(too_big.body["input"]["truncated"], true);
    assert_eq!(
        too_big.body["input"]["payload"].as_str().map(str::len),
        Some(64 * 1024),
        "the first input.max_bytes bytes are kept"
    );
    let sms = find(&|b| b["input"]["payload"] == non_mobile.as_str());
    assert_eq!(sms.body["reason"], "invalid");
    assert_eq!(sms.body["error"]["details"][0]["target"], "device.type");
    let upload = find(&|b| b["input"]["payload"] == orphan.as_str());
    assert_eq!(upload.body["reason"], "no_pending_request");
    assert_eq!(upload.body["input"]["topic"], world.topic("uploads"));

    let metrics = crate::lifecycle::http_get(worker.port, "/metrics").await.1;
    for (reason, n) in [("malformed", 3), ("invalid", 1), ("no_pending_request", 1)] {
        assert!(
            metrics.contains(&format!(
                "device_logs_dead_letters_total{{reason=\"{reason}\"}} {n}"
            )),
            "{reason}: {metrics}"
        );
    }
    worker.stop().await;
}
