//! The log request resource: PUT asks a device for its logs (publishes a
//! LogRequest and answers what the worker will store), GET reads the record.
//!
//! Checks run in this order, so a caller learns nothing about a resource
//! before it has proven who it is: token (401), environment (403), ids
//! (400), content type (415), body size (413), body (400), device (404/400),
//! broker (503).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::error::ApiError;
use super::ApiState;
use crate::domain::{DeviceRef, LogRequest, MOBILE};
use crate::payload;

type Ids = Path<(String, String, String)>;

/// The event type header of LogRequest commands (as `device-logs request`).
const LOG_REQUEST_TYPE: &str = "devicelogs.logrequest.v1";

pub async fn put_logs(
    State(state): State<Arc<ApiState>>,
    Path(ids): Ids,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let device = authorize(&state, &headers, &ids).await?;
    if !content_type(&headers) {
        return Err(ApiError::unsupported_media_type());
    }
    let limit = state.settings.api.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::too_large(limit))?;
    let body: Value =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::malformed(e.to_string()))?;
    let Some(object) = body.as_object() else {
        return Err(ApiError::malformed("the body must be a JSON object"));
    };
    match object.get("status") {
        None => return Err(ApiError::required_value("status", "status is required")),
        Some(Value::String(s)) if s == "PENDING" => {}
        Some(other) => {
            return Err(ApiError::invalid_value(
                "status",
                format!("status must be PENDING to request logs, got {other}"),
            ))
        }
    }
    let authorization = header_str(&headers, header::AUTHORIZATION).unwrap_or_default();
    let kind = state
        .directory
        .device_type(&device, authorization)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, cause = ?std::error::Error::source(&e).map(|s| s.to_string()), "device directory lookup failed");
            ApiError::unavailable("the device directory is unavailable; retry later")
        })?
        .ok_or_else(|| ApiError::not_found("the device does not exist"))?;
    if kind != MOBILE {
        return Err(ApiError::invalid_value(
            "device.type",
            format!("only MOBILE devices can be asked for logs, this device is {kind}"),
        ));
    }

    // Milliseconds are what the wire carries, so the expiresAt answered here
    // is exactly the one the worker computes from requestedAt and stores.
    let requested_at: DateTime<Utc> = state.clock.now().trunc_subsecs(3);
    let request = LogRequest {
        id: Uuid::new_v4(),
        device,
        device_type: kind,
        status: "PENDING".into(),
        requested_at,
    };
    let settings = &state.settings;
    state
        .producer
        .publish_input(
            &settings.kafka.topics.requests,
            LOG_REQUEST_TYPE,
            &device,
            request.id,
            &payload::log_request_json(&request).to_string(),
            settings.api.publish_timeout,
        )
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, environment = %device.environment, user = %device.user, device = %device.device, "log request not published");
            ApiError::unavailable("the request could not be queued; retry later")
        })?;
    let expires_at = requested_at + crate::worker::policy(settings).ttl;
    tracing::info!(environment = %device.environment, user = %device.user, device = %device.device,
        input_id = %request.id, "log request published");
    Ok(answer(
        &device,
        "PENDING",
        Some(expires_at),
        &settings.logs.links_base_url,
    ))
}

pub async fn get_logs(
    State(state): State<Arc<ApiState>>,
    Path(ids): Ids,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let device = authorize(&state, &headers, &ids).await?;
    let record = state.store.get(&device).await.map_err(|e| {
        tracing::warn!(error = %e, "store read failed");
        ApiError::unavailable("the log request store is unavailable; retry later")
    })?;
    match record {
        Some(record) => Ok(answer(
            &device,
            record.status.as_str(),
            record.expires_at,
            &state.settings.logs.links_base_url,
        )),
        None => Err(ApiError::not_found("no log request for this device")),
    }
}

#[derive(serde::Serialize)]
struct Links {
    #[serde(rename = "self")]
    this: Href,
    device: Href,
}

#[derive(serde::Serialize)]
struct Href {
    href: String,
}

/// The documented response, keys in the documented order.
#[derive(serde::Serialize)]
struct Answer<'a> {
    #[serde(rename = "_links")]
    links: Links,
    status: &'a str,
    #[serde(rename = "expiresAt")]
    expires_at: Option<String>,
}

fn answer(
    device: &DeviceRef,
    status: &str,
    expires_at: Option<DateTime<Utc>>,
    base_url: &str,
) -> Response {
    let links = payload::links(device, base_url);
    let href = |name: &str| Href {
        href: links[name]["href"].as_str().unwrap_or_default().to_owned(),
    };
    let body = Answer {
        links: Links {
            this: href("self"),
            device: href("device"),
        },
        status,
        expires_at: expires_at.map(crate::domain::timestamp),
    };
    (StatusCode::OK, Json(body)).into_response()
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn content_type(headers: &HeaderMap) -> bool {
    header_str(headers, header::CONTENT_TYPE)
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// Verifies the token (401), its environment against `{envID}` (403), and
/// parses the ids (400).
async fn authorize(
    state: &ApiState,
    headers: &HeaderMap,
    (env, user, device): &(String, String, String),
) -> Result<DeviceRef, ApiError> {
    let environment = state
        .verifier
        .verify(header_str(headers, header::AUTHORIZATION))
        .await
        .map_err(|e| {
            tracing::info!(reason = %e, "request refused: token");
            ApiError::unauthenticated()
        })?;
    if !environment.eq_ignore_ascii_case(env) {
        tracing::info!(path_environment = %env, "request refused: token for another environment");
        return Err(ApiError::forbidden());
    }
    let parse = |target: &str, value: &str| {
        Uuid::parse_str(value)
            .map_err(|_| ApiError::invalid_value(target, format!("{target} must be a UUID")))
    };
    Ok(DeviceRef {
        environment: parse("envID", env)?,
        user: parse("userID", user)?,
        device: parse("deviceID", device)?,
    })
}
