//! Errors in the OpenAI shape, `{"error": {"message", "type", "code"}}`, with their HTTP status.

use axum::http::{header, StatusCode};
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
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}
