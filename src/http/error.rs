//! HTTP errors as `application/problem+json` (RFC 9457).
//!
//! Handlers return [`ApiError`]; its `IntoResponse` picks the status and writes
//! a problem document. Details are written for the caller; internal causes are
//! logged, never shown.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Everything an HTTP endpoint can refuse with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON or lacks a required field.
    #[error("{0}")]
    BadRequest(String),
    /// The request lacks a valid API key.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller may not use this endpoint.
    #[error("{0}")]
    Forbidden(String),
    /// No such endpoint.
    #[error("no such endpoint")]
    NotFound,
    /// The endpoint exists but not for this method.
    #[error("method not allowed for this endpoint")]
    MethodNotAllowed,
    /// The body is larger than `--max-body-bytes`.
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The body is not `application/json`.
    #[error("expected a body of content type application/json")]
    UnsupportedMediaType,
    /// The gateway cannot serve this now (shutting down).
    #[error("{0}")]
    Unavailable(String),
    /// Part of the work could not be done (the cluster bus is unavailable);
    /// the second member says what was done anyway, as RFC 9457 extension
    /// members of the problem, so a caller can tell whether a retry repeats
    /// deliveries.
    #[error("{0}")]
    Incomplete(String, serde_json::Map<String, serde_json::Value>),
    /// A WebSocket upgrade on a connection that cannot be upgraded.
    #[error("this connection cannot be upgraded to a WebSocket (HTTP/1.1 required)")]
    UpgradeRequired,
    /// A WebSocket upgrade asking for a protocol version other than 13.
    #[error("only WebSocket version 13 is spoken here (Sec-WebSocket-Version: 13)")]
    UnsupportedVersion,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) | ApiError::Incomplete(..) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UpgradeRequired | ApiError::UnsupportedVersion => {
                StatusCode::UPGRADE_REQUIRED
            }
        }
    }
}

/// An RFC 9457 problem document. `type` stays `about:blank`, so `title` is the
/// status phrase and `detail` says what was wrong with this request.
#[derive(Debug, Serialize)]
struct Problem {
    r#type: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
    /// Extension members (RFC 9457 section 3.2).
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = self.to_string();
        let extra = match self {
            ApiError::Incomplete(_, extra) => extra,
            _ => serde_json::Map::new(),
        };
        let problem = Problem {
            r#type: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
            extra,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response()
    }
}
