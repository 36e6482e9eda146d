//! HTTP errors as `application/problem+json` (RFC 9457).
//!
//! Handlers return [`ApiError`]; its `IntoResponse` picks the status and writes
//! a problem document. Details are written for the caller; internal causes are
//! logged, never shown.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Seconds a 503 asks the caller to wait (`Retry-After`, RFC 9110 §10.2.3).
/// Every 503 is a passing state: a drain ends within the shutdown timeout
/// (the client reconnects to another node at once anyway), a connection cap
/// frees as clients leave, and a lost Redis bus is re-probed every 5 s by
/// default (`--redis-probe-interval`). 5 s is long enough not to hammer a
/// busy node and short enough that nothing waits for long.
pub const RETRY_AFTER_SECS: u32 = 5;

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
    /// The endpoint exists but what it serves is turned off (`--history`);
    /// the detail says which flag turns it on.
    #[error("{0}")]
    Disabled(String),
    /// The endpoint exists but not for this method.
    #[error("method not allowed for this endpoint")]
    MethodNotAllowed,
    /// The request's `Accept` does not include the one media type the
    /// endpoint answers with (RFC 9110 §15.5.7).
    #[error("{0}")]
    NotAcceptable(String),
    /// The body is larger than `--max-body-bytes`.
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The body is not `application/json`.
    #[error("expected a body of content type application/json")]
    UnsupportedMediaType,
    /// The gateway cannot serve this now (shutting down, a connection cap,
    /// Redis unreachable): 503 with `Retry-After` ([`RETRY_AFTER_SECS`]).
    #[error("{0}")]
    Unavailable(String),
    /// Part of the work could not be done (the cluster bus is unavailable);
    /// the second member says what was done anyway, as RFC 9457 extension
    /// members of the problem, so a caller can tell whether a retry repeats
    /// deliveries.
    #[error("{0}")]
    Incomplete(String, serde_json::Map<String, serde_json::Value>),
    /// The request body did not arrive within `--body-read-timeout`: 408
    /// (RFC 9110 §15.5.9), and the connection is closed.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// The request head did not arrive within `--header-read-timeout`: 408
    /// (RFC 9110 §15.5.9), and the connection is closed. Only answered
    /// where the gateway reads the head itself (a connection that opens with
    /// an event stream request); hyper closes such a connection silently.
    #[error("the request head did not arrive within {0:?}")]
    HeadTimeout(std::time::Duration),
    /// The request head is larger than the first number (bytes) or has more
    /// header lines than the second: 431 (RFC 6585 §5).
    #[error("the request head is larger than {0} bytes or has more than {1} header lines")]
    HeadTooLarge(usize, usize),
    /// A WebSocket upgrade on a connection that cannot be upgraded.
    #[error("this connection cannot be upgraded to a WebSocket (HTTP/1.1 required)")]
    UpgradeRequired,
    /// A WebSocket upgrade asking for a protocol version other than 13:
    /// 426 naming the version spoken here (RFC 6455 §4.4).
    #[error("only WebSocket version 13 is spoken here (Sec-WebSocket-Version: 13)")]
    UnsupportedVersion,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound | ApiError::Disabled(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) | ApiError::Incomplete(..) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTimeout(_) | ApiError::HeadTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::HeadTooLarge(..) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
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
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response();
        let headers = response.headers_mut();
        match status {
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            // A 426 names the protocol to upgrade to (RFC 9110 §15.5.22),
            // with the `upgrade` connection option its sender must send
            // (§7.8), and the WebSocket version spoken here (RFC 6455 §4.4).
            StatusCode::UPGRADE_REQUIRED => {
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                headers.insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            // The rest of the body (or of the head) is never read: the
            // connection cannot carry another request (RFC 9112 §9.6).
            StatusCode::REQUEST_TIMEOUT | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// A request head the gateway read itself (a connection that opens with an
/// event stream request, `http::serve`) and refused before any route saw
/// it. It is handed to the route the request line named, in the extensions
/// of a stand-in request, so that the refusal passes the same layers as the
/// route's own: the access log and request metrics, CORS (a browser can
/// read it), and the route's refusal counter.
#[derive(Debug, Clone)]
pub enum HeadRefused {
    /// Not complete within `--header-read-timeout` (the duration): 408.
    Timeout(std::time::Duration),
    /// Larger than the first number (bytes) or more header lines than the
    /// second: 431.
    TooLarge(usize, usize),
    /// Not an HTTP/1 request head (what was wrong): 400.
    Malformed(String),
}

impl HeadRefused {
    /// The `reason` label a route counts this refusal under.
    pub fn label(&self) -> &'static str {
        match self {
            HeadRefused::Timeout(_) => "head_timeout",
            HeadRefused::TooLarge(..) => "head_too_large",
            HeadRefused::Malformed(_) => "bad_request",
        }
    }

    /// The problem answer.
    pub fn into_error(self) -> ApiError {
        match self {
            HeadRefused::Timeout(limit) => ApiError::HeadTimeout(limit),
            HeadRefused::TooLarge(bytes, lines) => ApiError::HeadTooLarge(bytes, lines),
            HeadRefused::Malformed(why) => {
                ApiError::BadRequest(format!("malformed request head: {why}"))
            }
        }
    }
}
