//! The API against a platform: tokens verified with keys from a JWKS
//! endpoint (picked by `kid`), device types from the platform's devices
//! endpoint (the caller's token passed on, answers cached).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::api_support::*;
use crate::helpers::*;

struct Platform {
    jwks: Value,
    devices: Vec<(Uuid, &'static str)>,
    lookups: AtomicUsize,
}

async fn device(
    State(p): State<Arc<Platform>>,
    Path((_env, _user, device)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, StatusCode> {
    p.lookups.fetch_add(1, Ordering::SeqCst);
    if !headers
        .get("authorization")
        .is_some_and(|v| v.as_bytes().starts_with(b"Bearer "))
    {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let found = p.devices.iter().find(|(id, _)| id.to_string() == device);
    found
        .map(|(id, kind)| Json(json!({"id": id, "type": kind})))
        .ok_or(StatusCode::NOT_FOUND)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_uses_the_platform_jwks_and_device_directory() {
    let world = World::new("24h").await;
    let (keys, jwk) = KeyPair::rsa_jwk("k1");
    let (mobile, sms) = (Uuid::new_v4(), Uuid::new_v4());
    let platform = Arc::new(Platform {
        jwks: json!({"keys": [jwk]}),
        devices: vec![(mobile, "MOBILE"), (sms, "SMS")],
        lookups: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route(
            "/jwks.json",
            get(|State(p): State<Arc<Platform>>| async move { Json(p.jwks.clone()) }),
        )
        .route(
            "/v1/environments/{env}/users/{user}/devices/{device}",
            get(device),
        )
        .with_state(platform.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let platform_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut settings = world.settings();
    settings.api.publish_timeout = std::time::Duration::from_secs(20);
    settings.api.auth.jwks_url = format!("http://{platform_addr}/jwks.json");
    settings.api.devices.endpoint = format!("http://{platform_addr}/v1");
    let clock = Arc::new(device_logs::worker::SystemClock);
    let store = device_logs::store::MemoryStore::new(
        4,
        settings.logs.retention,
        settings.outbox.lease,
        clock,
    );
    let (addr, _stop) = start_api(settings, store.into()).await;

    let (env, user) = (Uuid::new_v4(), Uuid::new_v4());
    let token = keys.sign_kid(&claims(&env.to_string(), json!({})), "k1");
    let contract = Contract::load();
    let url =
        |d: Uuid| format!("http://{addr}/v1/environments/{env}/users/{user}/devices/{d}/logs");
    let body = || Some(br#"{"status": "PENDING"}"#.to_vec());
    let ct = Some("application/json");
    let put = |d: Uuid, t: String| async move { call("PUT", &url(d), Some(&t), ct, body()).await };

    contract.expect(&put(mobile, token.clone()).await, "PUT", 200, None);
    contract.expect(&put(mobile, token.clone()).await, "PUT", 200, None);
    assert_eq!(
        platform.lookups.load(Ordering::SeqCst),
        1,
        "the directory answer is cached"
    );
    contract.expect(
        &put(sms, token.clone()).await,
        "PUT",
        400,
        Some("INVALID_DATA"),
    );
    contract.expect(
        &put(Uuid::new_v4(), token.clone()).await,
        "PUT",
        404,
        Some("NOT_FOUND"),
    );
    // A kid the JWKS does not have, and a token with no kid from another key.
    let unknown = keys.sign_kid(&claims(&env.to_string(), json!({})), "k2");
    contract.expect(
        &put(mobile, unknown).await,
        "PUT",
        401,
        Some("ACCESS_FAILED"),
    );
    let (stranger, _) = KeyPair::rsa_jwk("k1");
    let forged = stranger.sign_kid(&claims(&env.to_string(), json!({})), "k1");
    contract.expect(
        &put(mobile, forged).await,
        "PUT",
        401,
        Some("ACCESS_FAILED"),
    );
}
