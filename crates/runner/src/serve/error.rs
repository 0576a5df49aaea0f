//! Errors in the OpenAI shape, `{"error": {"message", "type", "code"}}`, with their HTTP status.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answer: status, message for people, OpenAI error `type` and a short machine `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong and, where it helps, what to do.
    pub message: String,
    /// OpenAI's error class: `invalid_request_error`, `authentication_error` or `server_error`.
    pub kind: &'static str,
    /// A stable code per cause (`invalid_json`, `too_many_inputs`, `overloaded`, ...).
    pub code: &'static str,
}

impl ApiError {
    /// 400: the request is malformed or asks for something the model cannot do.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into(), kind: "invalid_request_error", code }
    }

    /// 413: the request is over one of the server's size limits.
    pub fn too_large(code: &'static str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::PAYLOAD_TOO_LARGE, message: message.into(), kind: "invalid_request_error", code }
    }

    /// 404 for a path or a model this server does not have.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::NOT_FOUND, message: message.into(), kind: "invalid_request_error", code }
    }

    /// 405: the path exists, the method does not.
    pub fn method_not_allowed() -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: "this method is not allowed on this path".into(),
            kind: "invalid_request_error",
            code: "method_not_allowed",
        }
    }

    /// 401: `--api-key` is set and the request does not carry it.
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or wrong API key: send the header `Authorization: Bearer KEY`".into(),
            kind: "authentication_error",
            code: "invalid_api_key",
        }
    }

    /// 503: the queue is full; the client should retry later.
    pub fn overloaded(capacity: usize) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("the server is busy: {capacity} requests are already queued or running; retry later"),
            kind: "server_error",
            code: "overloaded",
        }
    }

    /// 415: the body is not declared JSON.
    pub fn unsupported_media_type(given: Option<&str>) -> Self {
        let given = given.map_or("no Content-Type".to_string(), |t| format!("Content-Type {t:?}"));
        Self {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: format!("the request has {given}: send a JSON body with `Content-Type: application/json`"),
            kind: "invalid_request_error",
            code: "unsupported_media_type",
        }
    }

    /// 408: the body did not arrive within `limit` of the headers; the connection is closed.
    pub fn body_timeout(limit: Duration) -> Self {
        Self {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!("the request body did not arrive within {} s of its headers", limit.as_secs_f64()),
            kind: "invalid_request_error",
            code: "body_timeout",
        }
    }

    /// 504: the answer was not ready within `limit` of the request; its remaining work is dropped.
    pub fn timeout(limit: Duration) -> Self {
        Self {
            status: StatusCode::GATEWAY_TIMEOUT,
            message: format!(
                "the request was not done within this server's limit of {} s: send fewer or shorter inputs",
                limit.as_secs_f64()
            ),
            kind: "server_error",
            code: "timeout",
        }
    }

    /// 500: the model or the server failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            code: "internal_error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"message": self.message, "type": self.kind, "code": self.code}});
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        match self.status {
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            // What is left of a slow body is not read: the connection cannot carry another request.
            StatusCode::REQUEST_TIMEOUT => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}
