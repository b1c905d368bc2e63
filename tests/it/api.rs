//! The HTTP API against the real broker and Redis: the reference request,
//! the worker storing what the API answered, and every error case.

use std::time::Duration;

use chrono::Utc;
use device_logs::store::RedisStore;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::api_support::*;
use crate::helpers::*;

const BASE: &str = "https://api.test.example/v1";

/// World settings for an API with HS256 (test secret) and `pem` enabled, and
/// a static directory of `mobile` and `sms` devices.
fn api_settings(
    world: &World,
    pem: &std::path::Path,
    env: Uuid,
    user: Uuid,
    devices: &[(Uuid, &str)],
) -> device_logs::config::Settings {
    let mut settings = world.settings();
    // A loaded shared test broker can take seconds for a first produce.
    settings.api.publish_timeout = std::time::Duration::from_secs(20);
    settings.api.auth.allow_hs256 = true;
    settings.api.auth.hs256_secret = SECRET.into();
    settings.api.auth.public_key_file = pem.display().to_string();
    for (device, kind) in devices {
        settings
            .api
            .devices
            .static_devices
            .insert(format!("{env}/{user}/{device}"), kind.to_string());
    }
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_against_broker_and_redis_answers_the_documented_shapes() {
    let world = World::new("24h").await;
    let worker = world.start_in_process();
    let (env, user, mobile, sms) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let keys = KeyPair::rsa();
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("issuer.pem");
    std::fs::write(&pem, &keys.public_pem).unwrap();
    let settings = api_settings(&world, &pem, env, user, &[(mobile, "MOBILE"), (sms, "SMS")]);
    let store = RedisStore::connect(
        &settings.redis,
        settings.logs.retention,
        settings.outbox.lease,
        device_logs::metrics::Metrics::new(&[], &[]),
    )
    .await
    .unwrap();
    let (addr, _stop) = start_api(settings, store.into()).await;
    let api = format!("http://{addr}/v1");
    let token = keys.sign(&claims(&env.to_string(), json!({})));
    let contract = Contract::load();

    let before = Utc::now();
    let (status, body) = reference_curl(&api, env, user, mobile, &token);
    let after = Utc::now();
    contract.check(LOGS_ROUTE, "PUT", status, &body);
    assert_eq!(status, 200, "{body}");
    let expires = assert_record(&body, BASE, env, user, mobile, "PENDING");
    let at = chrono::DateTime::parse_from_rfc3339(expires.as_str().unwrap()).unwrap();
    let ttl = chrono::Duration::hours(24);
    assert!(
        at >= chrono::SubsecRound::trunc_subsecs(before, 3) + ttl && at <= after + ttl,
        "{expires}"
    );
    assert_eq!(
        expires.as_str().unwrap().len(),
        "2020-03-06T17:38:31.767Z".len()
    );

    // The worker stores exactly the expiresAt the API answered.
    let url = format!("{api}/environments/{env}/users/{user}/devices/{mobile}/logs");
    let stored = wait_until(
        Duration::from_secs(20),
        "the worker to store the request",
        || async {
            let got = call("GET", &url, Some(&token), None, None).await;
            (got.0 == 200).then_some(got)
        },
    )
    .await;
    contract.expect(&stored, "GET", 200, None);
    assert_eq!(
        assert_record(&stored.1, BASE, env, user, mobile, "PENDING"),
        expires
    );

    // The app uploads: GET reads RECEIVED, expiresAt reset.
    let device = device_logs::domain::DeviceRef {
        environment: env,
        user,
        device: mobile,
    };
    let producer = world.producer();
    world
        .send(
            &producer,
            "uploads",
            &device,
            &upload_json(Uuid::new_v4(), &device, None, Utc::now()),
        )
        .await;
    let received = wait_until(Duration::from_secs(20), "RECEIVED", || async {
        let got = call("GET", &url, Some(&token), None, None).await;
        (got.1["status"] == "RECEIVED").then_some(got)
    })
    .await;
    contract.expect(&received, "GET", 200, None);
    assert_eq!(
        assert_record(&received.1, BASE, env, user, mobile, "RECEIVED"),
        Value::Null
    );

    common_error_cases(&api, &token, env, user, sms).await;
    token_cases(&api, &keys, env, user, mobile).await;
    ops_endpoints(&format!("http://{addr}")).await;
    worker.stop().await;
}

/// Tokens: HS256 (enabled here), ES256 from an unconfigured key, expired,
/// not yet valid, wrong audience, no exp, no environment claim.
async fn token_cases(api: &str, keys: &KeyPair, env: Uuid, user: Uuid, mobile: Uuid) {
    let contract = Contract::load();
    let url = format!("{api}/environments/{env}/users/{user}/devices/{mobile}/logs");
    let env = env.to_string();
    let now = Utc::now().timestamp();
    let ok = hs256(&claims(&env, json!({})), SECRET);
    contract.expect(
        &call("GET", &url, Some(&ok), None, None).await,
        "GET",
        200,
        None,
    );
    let refused = [
        KeyPair::ec().sign(&claims(&env, json!({}))),
        hs256(
            &claims(&env, json!({})),
            "another-secret-0123456789-0123456789-x",
        ),
        keys.sign(&claims(&env, json!({"exp": now - 3600}))),
        keys.sign(&claims(&env, json!({"nbf": now + 3600}))),
        keys.sign(&claims(&env, json!({"aud": "https://other.example"}))),
        keys.sign(&claims(&env, json!({"exp": null}))),
        keys.sign(&claims(&env, json!({"env": null}))),
    ];
    for token in refused {
        contract.expect(
            &call("GET", &url, Some(&token), None, None).await,
            "GET",
            401,
            Some("ACCESS_FAILED"),
        );
    }
    // Within the leeway an expired token still passes.
    let recent = keys.sign(&claims(&env, json!({"exp": now - 5})));
    contract.expect(
        &call("GET", &url, Some(&recent), None, None).await,
        "GET",
        200,
        None,
    );
}

async fn ops_endpoints(root: &str) {
    let metrics = reqwest::get(format!("{root}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("device_logs_api_requests_total{method=\"PUT\",route=\"/v1/environments/{envID}/users/{userID}/devices/{deviceID}/logs\",status_class=\"2xx\"} "), "{metrics}");
    assert!(
        metrics.contains("device_logs_api_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert_eq!(
        reqwest::get(format!("{root}/livez"))
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = call("GET", &format!("{root}/readyz"), None, None, None).await;
    assert_eq!(ready.0, 200, "{}", ready.1);
    Contract::load().check("/readyz", "GET", 200, &ready.1);
}

/// The broker unreachable: a PUT answers 503 in the error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_503_when_kafka_is_unreachable() {
    let (env, user, mobile) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut settings = device_logs::config::Settings::load_from(None, Vec::new()).unwrap();
    settings.kafka.brokers = format!("127.0.0.1:{}", free_port());
    settings.api.publish_timeout = Duration::from_secs(1);
    settings.api.auth.allow_hs256 = true;
    settings.api.auth.hs256_secret = SECRET.into();
    settings
        .api
        .devices
        .static_devices
        .insert(format!("{env}/{user}/{mobile}"), "MOBILE".into());
    let clock = std::sync::Arc::new(device_logs::worker::SystemClock);
    let store = device_logs::store::MemoryStore::new(
        4,
        settings.logs.retention,
        settings.outbox.lease,
        clock,
    );
    let (addr, _stop) = start_api(settings, store.into()).await;
    let token = hs256(&claims(&env.to_string(), json!({})), SECRET);
    let url = format!("http://{addr}/v1/environments/{env}/users/{user}/devices/{mobile}/logs");
    let got = call(
        "PUT",
        &url,
        Some(&token),
        Some("application/json"),
        Some(br#"{"status":"PENDING"}"#.to_vec()),
    )
    .await;
    Contract::load().expect(&got, "PUT", 503, Some("SERVICE_UNAVAILABLE"));
    let ready = call("GET", &format!("http://{addr}/readyz"), None, None, None).await;
    assert_eq!(ready.0, 503);
    Contract::load().check("/readyz", "GET", 503, &ready.1);
}
