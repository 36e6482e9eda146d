//! Who may use the REST API (the client address behind a proxy is
//! [`crate::net::client_ip`]).
//!
//! Where the API is reachable is decided by listener, never by what a
//! request says about itself: a reverse proxy or TCP forwarder on the same
//! host connects from loopback and may add no header at all, so no rule based
//! on the peer address and the absence of forwarding headers can tell it from
//! a local backend.
//!
//! - API keys configured: every REST call needs `Authorization: Bearer KEY`
//!   (401 otherwise), on whichever listener it arrives.
//! - No keys: REST is routed only on the API listener (`--api-listen`), and
//!   served there unkeyed only when that listener is bound to a loopback
//!   address; on any other address it answers 403 (see [`Listener`]).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::App;
use crate::net::problem::ApiError;

/// Which listener a REST route is served on; decides what an unkeyed call
/// gets when no API key is configured (keys may be reloaded, so this is
/// checked per request, not only when the routes are built).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `--listen`: reachable from the internet; REST only with keys.
    Public,
    /// `--api-listen`; `loopback` when bound to a loopback address, where
    /// only processes on this host can connect.
    Api {
        /// The listener's own address is loopback.
        loopback: bool,
    },
}

/// Middleware for the REST API: the API key when keys are configured, else
/// the listener rule of the module docs.
pub async fn require_api_access(
    State((app, listener)): State<(App, Listener)>,
    req: Request,
    next: Next,
) -> Response {
    if app.api_keys.is_enabled() {
        return match bearer(req.headers()) {
            Some(key) if app.api_keys.accepts(key.as_bytes()) => next.run(req).await,
            Some(_) => unauthorized("the API key is not valid"),
            None => unauthorized("an API key is required: Authorization: Bearer KEY"),
        };
    }
    match listener {
        Listener::Api { loopback: true } => next.run(req).await,
        Listener::Api { loopback: false } => {
            ApiError::Forbidden("API keys are required on a non-loopback API listener".into())
                .into_response()
        }
        Listener::Public => {
            ApiError::Forbidden("API keys are required on the public listener".into())
                .into_response()
        }
    }
}

/// The credentials of an `Authorization: Bearer KEY` header. The scheme is
/// matched case-insensitively (RFC 9110 §11.1: `bearer`, `BEARER` are the
/// same scheme); one or more spaces separate it from the key. A request with
/// two `Authorization` headers (not a list field, RFC 9110 §11.6.2) has none
/// that counts, rather than being judged by whichever comes first.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let value = value.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty()).then_some(credentials)
}

fn unauthorized(detail: &str) -> Response {
    let mut resp = ApiError::Unauthorized(detail.into()).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::net::client_ip::tests::headers;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for (value, key) in [
            ("Bearer k1", Some("k1")),
            ("bearer k1", Some("k1")),
            ("BEARER   k1 ", Some("k1")),
            ("Basic k1", None),
            ("Bearer ", None),
            ("Bearerk1", None),
        ] {
            let h = headers(&[("authorization", value)]);
            assert_eq!(bearer(&h), key, "{value:?}");
        }
        let two = headers(&[
            ("authorization", "Bearer k1"),
            ("authorization", "Bearer k2"),
        ]);
        assert_eq!(bearer(&two), None);
    }
}
