//! The platform's error shape, `{"id", "code", "message", "details"}`, and
//! the status code that goes with each code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// (code, target, message)
    pub details: Vec<(&'static str, Option<String>, String)>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: vec![],
        }
    }

    fn detail(
        mut self,
        code: &'static str,
        target: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        self.details
            .push((code, target.map(str::to_owned), message.into()));
        self
    }

    /// 400: a value in the request is unacceptable.
    pub fn invalid_value(target: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            "the request could not be completed: invalid data",
        )
        .detail("INVALID_VALUE", Some(target), message)
    }

    /// 400: a required value is missing.
    pub fn required_value(target: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            "the request could not be completed: invalid data",
        )
        .detail("REQUIRED_VALUE", Some(target), message)
    }

    /// 400: the body is not a JSON object.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            "the request body is not valid JSON",
        )
        .detail("INVALID_VALUE", Some("body"), message)
    }

    /// 401: no token, or one that does not verify. The reason stays in the
    /// server's logs: telling a caller why its token failed helps forgers.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "ACCESS_FAILED",
            "the request could not be authenticated",
        )
    }

    /// 403: a valid token for another environment.
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "ACCESS_FAILED",
            "the access token does not grant access to this environment",
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "the method is not allowed on this resource",
        )
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "INVALID_REQUEST",
            "the request body must be application/json",
        )
        .detail(
            "INVALID_VALUE",
            Some("Content-Type"),
            "expected application/json",
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "INVALID_REQUEST",
            "the request body is too large",
        )
        .detail(
            "SIZE_LIMIT_EXCEEDED",
            Some("body"),
            format!("at most {limit} bytes"),
        )
    }

    /// 503: a dependency (broker, store, device directory) did not answer.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            message,
        )
    }

    pub fn body(&self) -> Value {
        let details: Vec<Value> = self
            .details
            .iter()
            .map(|(code, target, message)| {
                let mut d = json!({"code": code, "message": message});
                if let Some(target) = target {
                    d["target"] = json!(target);
                }
                d
            })
            .collect();
        let mut body = json!({"id": Uuid::new_v4(), "code": self.code, "message": self.message});
        if !details.is_empty() {
            body["details"] = json!(details);
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}
