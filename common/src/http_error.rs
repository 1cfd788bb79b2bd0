//! The one error body of rigwatch's own HTTP APIs, and the trait every member's error type
//! implements to say how HTTP should answer it.
//!
//! ```json
//! {"status": "error", "errorType": "bad_data", "error": "what was wrong, and where"}
//! ```
//!
//! It is the shape of Prometheus' HTTP API, so one client parses every rigwatch error, from
//! the SQL route to the allocator, the portal and the PromQL routes alike. A route may add
//! detail fields beside the three (`request_id` of an internal error, `position` and
//! `suggestion` of a DSL error, `retry_after_s` of a refusal). Two edges keep the shape their
//! clients expect instead: the InfluxDB-compatible line-protocol write routes
//! (`{"code", "message"}`) and the Kubernetes scheduler extender (`{"Error": ...}`).

use std::time::Duration;

pub use http::StatusCode;
use serde::Serialize;
use serde_json::{Map, Value};

/// An error that knows how HTTP should answer it.
pub trait HttpError: std::fmt::Display {
    /// The status to answer with.
    fn status_code(&self) -> StatusCode;

    /// The body's `errorType`: by default the status' kind ([`error_type`]).
    fn error_type(&self) -> &'static str {
        error_type(self.status_code())
    }

    /// Whether the same request may succeed later (overload, a timeout, a node not ready).
    fn is_retryable(&self) -> bool {
        is_retryable(self.status_code())
    }

    /// How long a caller should wait before trying again, when waiting helps.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// `errorType` for a status: Prometheus' names where it has one.
pub fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        408 | 504 => "timeout",
        409 => "conflict",
        413 => "too_large",
        422 => "execution",
        429 => "too_many_requests",
        503 => "unavailable",
        400..=499 => "bad_data",
        _ => "internal",
    }
}

/// Whether a request answered with `status` may succeed if sent again later.
pub fn is_retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 503 | 504)
}

/// The one error body; see the module documentation.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    status: &'static str,
    #[serde(rename = "errorType")]
    error_type: &'static str,
    error: String,
    #[serde(flatten)]
    detail: Map<String, Value>,
}

impl ErrorBody {
    /// A body of kind `error_type` saying `message`.
    pub fn new(error_type: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: "error",
            error_type,
            error: message.into(),
            detail: Map::new(),
        }
    }

    /// A body whose kind follows from the status.
    pub fn for_status(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(error_type(status), message)
    }

    /// A body for `e`.
    pub fn of(e: &(impl HttpError + ?Sized)) -> Self {
        Self::new(e.error_type(), e.to_string())
    }

    /// Adds a detail field beside the three.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.detail.insert(key.to_string(), value.into());
        self
    }

    /// The `errorType`.
    pub fn error_type(&self) -> &'static str {
        self.error_type
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.error
    }

    /// The body as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings and JSON values always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(feature = "axum")]
mod response {
    use axum::http::{HeaderValue, header};
    use axum::response::{IntoResponse, Response};

    use super::{ErrorBody, HttpError, StatusCode};

    impl ErrorBody {
        /// The answer: `status` with this body. A 401 says how to authenticate; a 503 without
        /// a `retry_after_s` detail asks the caller to come back in a second.
        pub fn response(self, status: StatusCode) -> Response {
            let retry = self
                .detail
                .get("retry_after_s")
                .and_then(serde_json::Value::as_u64);
            let mut resp = (status, axum::Json(self)).into_response();
            let headers = resp.headers_mut();
            if status == StatusCode::UNAUTHORIZED {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"rigwatch\""),
                );
            }
            match retry {
                Some(s) => {
                    headers.insert(header::RETRY_AFTER, HeaderValue::from(s.max(1)));
                }
                None if status == StatusCode::SERVICE_UNAVAILABLE => {
                    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                }
                None => {}
            }
            resp
        }
    }

    /// The answer for `e`: its status, the one body, `Retry-After` when waiting helps.
    pub fn error_response(e: &(impl HttpError + ?Sized)) -> Response {
        let mut body = ErrorBody::of(e);
        if let Some(wait) = e.retry_after() {
            body = body.with(
                "retry_after_s",
                u64::try_from(wait.as_millis().div_ceil(1000)).unwrap_or(u64::MAX),
            );
        }
        body.response(e.status_code())
    }
}

#[cfg(feature = "axum")]
pub use response::error_response;

#[cfg(test)]
mod tests {
    use super::*;

    struct Busy;
    impl std::fmt::Display for Busy {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("queue full")
        }
    }
    impl HttpError for Busy {
        fn status_code(&self) -> StatusCode {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }

    #[test]
    fn the_body_has_prometheus_shape_plus_details() {
        let b = ErrorBody::of(&Busy).with("request_id", "r1");
        let v: Value = serde_json::from_slice(&b.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "status": "error", "errorType": "unavailable", "error": "queue full",
                "request_id": "r1"
            })
        );
        assert!(Busy.is_retryable());
    }

    #[test]
    fn kinds_follow_the_status() {
        for (code, kind) in [
            (400, "bad_data"),
            (401, "unauthorized"),
            (403, "forbidden"),
            (404, "not_found"),
            (409, "conflict"),
            (413, "too_large"),
            (418, "bad_data"),
            (429, "too_many_requests"),
            (500, "internal"),
            (503, "unavailable"),
            (504, "timeout"),
        ] {
            assert_eq!(
                error_type(StatusCode::from_u16(code).unwrap()),
                kind,
                "{code}"
            );
        }
        assert!(!is_retryable(StatusCode::BAD_REQUEST));
    }
}
