//! The WebSocket opening handshake (RFC 6455 §4.2), as an axum extractor.
//!
//! axum's `WebSocketUpgrade` hands its callback a `WebSocket` that hides the
//! socket, and pushgate writes its frames to the socket itself (see
//! `socket.rs`). So this checks the same request headers, answers 101 with
//! the accept key tungstenite derives, and, once hyper lets go of the
//! connection, gives the session the TCP stream.

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::WebSocketConfig;

use super::socket::Socket;
use crate::net::problem::ApiError;

/// A valid upgrade request, not answered yet.
pub struct Handshake {
    accept: HeaderValue,
    on_upgrade: OnUpgrade,
    /// The request's `Sec-WebSocket-Protocol` lines, if any.
    subprotocols: Vec<HeaderValue>,
}

/// Why an upgrade request is refused.
pub enum HandshakeRefusal {
    /// A problem+json answer.
    Problem(ApiError),
    /// A WebSocket version other than 13: 426 naming the version spoken
    /// here, as RFC 6455 §4.4 asks, so a client can retry with it.
    Version,
}

impl From<ApiError> for HandshakeRefusal {
    fn from(e: ApiError) -> HandshakeRefusal {
        HandshakeRefusal::Problem(e)
    }
}

impl IntoResponse for HandshakeRefusal {
    fn into_response(self) -> Response {
        match self {
            HandshakeRefusal::Problem(e) => e.into_response(),
            // `ApiError` adds the headers every 426 carries.
            HandshakeRefusal::Version => ApiError::UnsupportedVersion.into_response(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Handshake {
    type Rejection = HandshakeRefusal;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, HandshakeRefusal> {
        // axum routes HEAD to GET handlers; an upgrade is GET only
        // (RFC 6455 §4.1), and a HEAD answer can carry no session.
        if parts.method != Method::GET {
            return Err(bad("the method must be GET").into());
        }
        let headers = &parts.headers;
        if !has_token(headers, header::CONNECTION, "upgrade") {
            return Err(bad("the Connection header must include \"upgrade\"").into());
        }
        if !has_token(headers, header::UPGRADE, "websocket") {
            return Err(bad("the Upgrade header must be \"websocket\"").into());
        }
        match headers.get(header::SEC_WEBSOCKET_VERSION) {
            None => return Err(bad("Sec-WebSocket-Version is missing").into()),
            Some(v) if v.as_bytes() != b"13" => return Err(HandshakeRefusal::Version),
            Some(_) => {}
        }
        let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
        let key = match (keys.next(), keys.next()) {
            (None, _) => return Err(bad("Sec-WebSocket-Key is missing").into()),
            (Some(_), Some(_)) => {
                return Err(bad("Sec-WebSocket-Key must be sent once").into());
            }
            (Some(key), None) => key,
        };
        if !is_nonce(key.as_bytes()) {
            return Err(bad("Sec-WebSocket-Key must be 16 bytes in base64").into());
        }
        let accept = HeaderValue::try_from(derive_accept_key(key.as_bytes()))
            .map_err(|_| bad("Sec-WebSocket-Key is not valid"))?;
        // Absent when the connection cannot be taken over (not HTTP/1.1).
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(ApiError::UpgradeRequired)?;
        let subprotocols = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .cloned()
            .collect();
        Ok(Handshake {
            accept,
            on_upgrade,
            subprotocols,
        })
    }
}

impl Handshake {
    /// Whether the client offered subprotocol `name` in
    /// `Sec-WebSocket-Protocol` (a comma-separated list, possibly over
    /// several header lines; names compared exactly, RFC 6455 §4.1).
    pub fn offers_subprotocol(&self, name: &str) -> bool {
        self.subprotocols.iter().any(|value| {
            value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|item| item.trim_ascii() == name.as_bytes())
        })
    }

    /// Answers 101 (naming `subprotocol`, which must be one the client
    /// offered) and runs `session` on the socket once hyper hands the
    /// connection over. A client that leaves first never gets a session.
    ///
    /// The session is a task of its own, spawned by the short task that
    /// waits for the upgrade: what only the upgrade needs (the config, hyper's
    /// upgrade future) then takes no room in the long-lived task, whose
    /// allocation every idle connection pays.
    pub fn accept<F, Fut>(
        self,
        config: WebSocketConfig,
        subprotocol: Option<&'static str>,
        session: F,
    ) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            // `http::serve` hands hyper a `TokioIo<TcpStream>`, so this is
            // what comes back.
            match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => {
                    let socket = Socket::new(parts.io.into_inner(), parts.read_buf, config);
                    tokio::spawn(session(socket));
                }
                Err(_) => tracing::error!("an upgraded connection was not a TCP stream; dropped"),
            }
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        if let Some(name) = subprotocol {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(name),
            );
        }
        response
    }
}

fn bad(why: &str) -> ApiError {
    ApiError::BadRequest(format!("not a WebSocket upgrade: {why}"))
}

/// Whether `key` is the base64 of 16 bytes, as RFC 6455 §4.2.1 (item 5)
/// requires of `Sec-WebSocket-Key`: 22 characters of the base64 alphabet
/// (RFC 4648 §4) then `==`. The bits the last character carries past the
/// 16th byte are not checked, as a lenient decoder would not.
fn is_nonce(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Whether the comma-separated header `name` lists `token` (ASCII
/// case-insensitive), as `Connection: keep-alive, Upgrade` does.
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_tokens_are_matched_whole_and_case_blind() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(has_token(&h, header::CONNECTION, "upgrade"));
        h.insert(header::CONNECTION, HeaderValue::from_static("upgraded"));
        assert!(!has_token(&h, header::CONNECTION, "upgrade"));
    }

    #[test]
    fn a_key_is_sixteen_bytes_of_base64() {
        assert!(is_nonce(b"dGhlIHNhbXBsZSBub25jZQ=="), "RFC 6455's example");
        for bad in [
            &b""[..],
            b"x",
            b"dGhlIHNhbXBsZSBub25jZQ",
            b"dGhlIHNhbXBsZSBub25jZQ===",
            b"dGhlIHNhbXBsZSBub25j====",
            b"dGhlIHNhbXBsZSBub25jZQ=x",
            b"dGhl-HNhbXBsZSBub25jZQ==",
            b"dGhlIHNhbXBsZSBub25jZQ==\0",
        ] {
            assert!(!is_nonce(bad), "{}", String::from_utf8_lossy(bad));
        }
    }
}
