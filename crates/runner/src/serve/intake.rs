//! What a model route's request goes through between its headers and its handler: a JSON content type, a place
//! in the queue taken before the body is read (so the bodies held in memory are at most `--max-concurrent`
//! times `--max-body-bytes`), the body read within its size and time limits, and the request's deadline.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::connections::ConnectionClock;
use super::error::ApiError;
use super::routes::AppState;

/// The time and size limits of a model request (`runner serve`'s flags).
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Bytes per request body.
    pub max_body_bytes: usize,
    /// Time for the body, from the end of the headers.
    pub body_timeout: Duration,
    /// Time from the end of the body to the answer.
    pub request_timeout: Duration,
}

/// The middleware of the model routes: refuses other content types (415), takes a place in the queue (503 when
/// full) and holds it until the answer, reads the body (413 over the limit, 408 too slow), marks the connection
/// as answering, and answers 504 when the handler is not done by the deadline (the model then skips the
/// request's remaining inputs).
pub async fn admit(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let limits = state.request_limits;
    let admitted = async {
        check_json(request.headers())?;
        check_declared_length(request.headers(), limits.max_body_bytes)?;
        let place = state.batcher.admit()?;
        let (mut parts, body) = request.into_parts();
        let bytes = read_body(body, limits).await?;
        if let Some(clock) = parts.extensions.remove::<Arc<ConnectionClock>>() {
            clock.answering();
        }
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        Ok::<_, ApiError>((place, Request::from_parts(parts, Body::from(bytes))))
    };
    let (_place, request) = match admitted.await {
        Ok(admitted) => admitted,
        Err(e) => return e.into_response(),
    };
    match tokio::time::timeout(limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::timeout(limits.request_timeout).into_response(),
    }
}

/// The body must be declared JSON: `application/json`, optionally with parameters (`; charset=utf-8`).
fn check_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("(not text)"));
    let essence = given.map(|t| t.split(';').next().unwrap_or("").trim());
    match essence {
        Some(e) if e.eq_ignore_ascii_case("application/json") => Ok(()),
        _ => Err(ApiError::unsupported_media_type(given)),
    }
}

/// A body whose declared length is over the limit is refused before anything is read or queued.
fn check_declared_length(headers: &HeaderMap, max: usize) -> Result<(), ApiError> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match declared {
        Some(length) if length > max as u64 => Err(body_too_large(max)),
        _ => Ok(()),
    }
}

/// The whole body, within `max_body_bytes` and `body_timeout`.
async fn read_body(body: Body, limits: RequestLimits) -> Result<axum::body::Bytes, ApiError> {
    let collected = tokio::time::timeout(limits.body_timeout, Limited::new(body, limits.max_body_bytes).collect());
    match collected.await {
        Err(_) => Err(ApiError::body_timeout(limits.body_timeout)),
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(body_too_large(limits.max_body_bytes)),
        Ok(Err(e)) => Err(ApiError::bad_request("unreadable_body", format!("cannot read the request body: {e}"))),
    }
}

fn body_too_large(max: usize) -> ApiError {
    ApiError::too_large("body_too_large", format!("the request body is over this server's limit of {max} bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs.iter().map(|(n, v)| (n.clone(), HeaderValue::from_str(v).unwrap())).collect()
    }

    #[test]
    fn only_json_bodies_are_taken() {
        for ok in ["application/json", "Application/JSON; charset=utf-8", " application/json ;"] {
            assert!(check_json(&headers(&[(header::CONTENT_TYPE, ok)])).is_ok(), "{ok}");
        }
        for bad in ["text/plain", "application/x-www-form-urlencoded", "application/jsonl", ""] {
            let e = check_json(&headers(&[(header::CONTENT_TYPE, bad)])).unwrap_err();
            assert_eq!((e.status.as_u16(), e.code), (415, "unsupported_media_type"), "{bad}");
        }
        let missing = check_json(&HeaderMap::new()).unwrap_err();
        assert!(missing.message.contains("no Content-Type"), "{}", missing.message);
    }

    #[test]
    fn declared_lengths_over_the_limit_are_refused_unread() {
        assert!(check_declared_length(&headers(&[(header::CONTENT_LENGTH, "100")]), 100).is_ok());
        assert!(check_declared_length(&HeaderMap::new(), 100).is_ok());
        let e = check_declared_length(&headers(&[(header::CONTENT_LENGTH, "101")]), 100).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (413, "body_too_large"));
    }
}
