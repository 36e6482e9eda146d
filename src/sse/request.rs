//! What a `GET /sse` request asks for: the media type, the resume position
//! and who the client is. Each refusal is a problem answer and a metric
//! label.

use axum::http::{HeaderMap, header};
use serde::Deserialize;

use super::event::parse_position;
use crate::auth::{Identity, TokenError, TokenVerifier};
use crate::model::{Position, Uid};
use crate::net::problem::ApiError;

/// The query string of `GET /sse`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamQuery {
    /// Legacy mode: the uid to bind.
    uid: Option<String>,
    /// Secure mode: a JWT (instead of `Authorization: Bearer`).
    token: Option<String>,
    /// Resume after `<epoch>:<offset>` (`Last-Event-ID` wins when both
    /// are sent: it is the browser's newer knowledge).
    since: Option<String>,
}

/// A refused request: its answer and its `pushgate_sse_refused_total` label.
pub(super) struct Refusal {
    pub(super) label: &'static str,
    pub(super) error: ApiError,
}

pub(super) fn refuse(label: &'static str, error: ApiError) -> Refusal {
    Refusal { label, error }
}

/// Whether `Accept` lists `text/event-stream` (case and other parameters
/// aside) with a weight above zero: `q=0` says "not acceptable" (RFC 9110
/// §12.4.2, §12.5.1).
pub(super) fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().any(|value| {
        value.as_bytes().split(|&b| b == b',').any(|item| {
            let mut parts = item.split(|&b| b == b';');
            let media = parts.next().unwrap_or_default();
            media
                .trim_ascii()
                .eq_ignore_ascii_case(b"text/event-stream")
                && !parts.any(weight_zero)
        })
    })
}

/// Whether a media range parameter is a weight of zero (`q=0`, `q=0.`,
/// `q=0.000`; the name is case-insensitive).
fn weight_zero(param: &[u8]) -> bool {
    let Some((name, value)) = param
        .iter()
        .position(|&b| b == b'=')
        .map(|i| (&param[..i], &param[i + 1..]))
    else {
        return false;
    };
    let value = value.trim_ascii();
    name.trim_ascii().eq_ignore_ascii_case(b"q")
        && value.first() == Some(&b'0')
        && value[1..]
            .strip_prefix(b".")
            .unwrap_or(&value[1..])
            .iter()
            .all(|&b| b == b'0')
}

/// The position to resume after: `Last-Event-ID`, else `?since=`; either
/// malformed is refused rather than ignored, so a client never believes it
/// resumed when it did not.
pub(super) fn since(query: &StreamQuery, headers: &HeaderMap) -> Result<Option<Position>, Refusal> {
    let bad = |what: &str| {
        refuse(
            "bad_request",
            ApiError::BadRequest(format!(
                "{what} must be <epoch>:<offset>, as an event's id carries it"
            )),
        )
    };
    if let Some(id) = headers.get("last-event-id") {
        let id = id.to_str().map_err(|_| bad("Last-Event-ID"))?;
        // An empty id is what `EventSource` sends after an event that reset it.
        if !id.trim().is_empty() {
            return parse_position(id)
                .map(Some)
                .ok_or_else(|| bad("Last-Event-ID"));
        }
    }
    match query.since.as_deref() {
        None => Ok(None),
        Some(since) => parse_position(since).map(Some).ok_or_else(|| bad("since")),
    }
}

/// Who binds: the uid of `?uid=` (legacy mode, trusted as the WebSocket
/// bind frame is) or of a verified token (secure mode: `?token=`, else
/// `Authorization: Bearer`). A missing or expired token is 401 (a fresh one
/// would do), any other refused token 403.
pub(super) fn identity(
    verifier: Option<&TokenVerifier>,
    query: &StreamQuery,
    headers: &HeaderMap,
    client: std::net::IpAddr,
) -> Result<(Uid, Option<Identity>), Refusal> {
    let Some(verifier) = verifier else {
        let uid = query.uid.as_deref().ok_or_else(|| {
            refuse(
                "bad_request",
                ApiError::BadRequest("?uid= is required (the uid to bind)".into()),
            )
        })?;
        let uid = Uid::new(uid).map_err(|e| {
            refuse(
                "bad_request",
                ApiError::BadRequest(format!("invalid uid: {e}")),
            )
        })?;
        return Ok((uid, None));
    };
    let token = query
        .token
        .as_deref()
        .or_else(|| bearer(headers))
        .ok_or_else(|| {
            refuse(
                "no_token",
                ApiError::Unauthorized(
                    "a token is required: ?token=<jwt> or Authorization: Bearer <jwt>".into(),
                ),
            )
        })?;
    match verifier.verify(token) {
        Ok(id) => Ok((id.uid.clone(), Some(id))),
        Err(e) => {
            verifier.log_refusal(&e, Some(client));
            Err(match e {
                TokenError::Expired => refuse(
                    "token_expired",
                    ApiError::Unauthorized("token expired".into()),
                ),
                _ => refuse("invalid_token", ApiError::Forbidden("invalid token".into())),
            })
        }
    }
}

/// The token of `Authorization: Bearer <token>` (RFC 6750 §2.1; the scheme
/// is case-insensitive, RFC 9110 §11.1).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether every name and value of a raw query string is UTF-8 once
/// percent-decoded (RFC 3986 §2.5: text is UTF-8 before it is encoded).
pub(super) fn query_is_utf8(query: &str) -> bool {
    query.split('&').all(|pair| {
        percent_encoding::percent_decode_str(pair)
            .decode_utf8()
            .is_ok()
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_query_must_be_utf8_once_percent_decoded() {
        assert!(super::query_is_utf8("uid=%C3%A9t%C3%A9&since=a:1"));
        assert!(super::query_is_utf8("uid=plain+text"));
        assert!(!super::query_is_utf8("uid=%fe"));
        assert!(!super::query_is_utf8("uid=ok&x=%C3"));
    }
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn only_an_accept_listing_the_event_stream_type_is_acceptable() {
        let mut h = HeaderMap::new();
        assert!(!accepts_event_stream(&h));
        for (value, ok) in [
            ("text/event-stream", true),
            ("text/html, Text/Event-Stream; q=0.9", true),
            ("text/event-stream;q=0", false),
            ("text/event-stream; Q=0.000", false),
            ("text/event-stream;q=0., text/html", false),
            ("text/event-stream;q=0.001", true),
            ("text/event-stream;q=1", true),
            ("text/event-stream;q=0, text/event-stream", true),
            ("*/*", false),
            ("text/event-streams", false),
        ] {
            h.insert(header::ACCEPT, HeaderValue::from_static(value));
            assert_eq!(accepts_event_stream(&h), ok, "{value}");
        }
    }

    #[test]
    fn every_refused_head_is_counted_under_a_listed_label() {
        use crate::net::problem::HeadRefused;
        use crate::telemetry::{SSE_REFUSED, is_listed_sse};
        for refused in [
            HeadRefused::Timeout(std::time::Duration::ZERO),
            HeadRefused::TooLarge(1, 1),
            HeadRefused::Malformed(String::new()),
        ] {
            assert!(is_listed_sse(SSE_REFUSED, refused.label()), "{refused:?}");
        }
    }

    #[test]
    fn last_event_id_wins_over_since_and_a_malformed_one_is_refused() {
        let query = StreamQuery {
            since: Some("1:5".into()),
            ..StreamQuery::default()
        };
        let mut h = HeaderMap::new();
        assert_eq!(since(&query, &h).ok().flatten().map(|p| p.offset), Some(5));
        h.insert("last-event-id", HeaderValue::from_static("1:9"));
        assert_eq!(since(&query, &h).ok().flatten().map(|p| p.offset), Some(9));
        h.insert("last-event-id", HeaderValue::from_static("9"));
        assert!(since(&query, &h).is_err());
    }

    #[test]
    fn a_bearer_token_is_read_whatever_the_schemes_case() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bEaReR abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }
}
