//! The WebSocket front end: upgrade, bind, and one task per connection.
//!
//! A client binds by sending its uid as the first text frame (the seed's
//! contract, protocol v1), or its token in secure mode. A client that opts
//! into protocol v2 (subprotocol or query `pushgate.v2`, docs/protocol-v2.md)
//! sends a JSON bind frame instead, may resume from a stream position, and
//! receives JSON frames and distinct close codes. After the bind, frames from
//! the client are read (so pings, pongs and close frames work) and otherwise
//! ignored, bounded by `--max-message-bytes`.
//!
//! This module admits connections (drain, origin, caps, query token), picks
//! the protocol and configures the WebSocket; `session` runs each
//! connection's life, `protocol` and `v2` hold what differs between v1 and
//! v2.

mod deadline;
mod end;
mod handshake;
mod protocol;
mod session;
mod socket;
mod v2;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use serde::Deserialize;
use tungstenite::protocol::WebSocketConfig;

use crate::App;
use crate::net::client_ip::client_ip;
use crate::net::origin::origin_passes;
use crate::net::problem::ApiError;
use crate::telemetry;
use handshake::Handshake;
use protocol::{Protocol, V1};
use session::session;
use v2::V2;

/// Close code for a connection closed by `POST /disconnect`.
pub const CLOSE_KICKED: u16 = 4001;
/// Close code for the oldest connection of a uid past `--max-conns-per-uid`.
pub const CLOSE_REPLACED: u16 = 4002;
/// Protocol v2: the token was refused (bad signature, issuer, audience, not
/// yet valid, missing).
pub const CLOSE_TOKEN_REFUSED: u16 = 4003;
/// Protocol v2: the token expired, at bind or while connected.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4004;
/// Protocol v2: no bind frame within `--bind-timeout`.
pub const CLOSE_BIND_TIMEOUT: u16 = 4005;
/// Protocol v2: the outbound queue overflowed (slow consumer).
pub const CLOSE_SLOW_CONSUMER: u16 = 4006;
/// Protocol v2: the bind frame was not valid.
pub const CLOSE_INVALID_BIND: u16 = 4007;

/// The subprotocol (and `protocol=` query value) that opts into protocol v2.
pub const V2_SUBPROTOCOL: &str = "pushgate.v2";

/// tungstenite's per-connection read buffer: touched in full on the first
/// read, so it is resident memory for every idle connection.
const READ_BUFFER: usize = 512;

/// The most tungstenite may hold unwritten: only control frames go through
/// it (pushes are written directly), and a ping, a pong and a close frame
/// are at most 127 bytes each.
const CONTROL_BUFFER: usize = 4096;

/// Query parameters of the upgrade.
#[derive(Debug, Deserialize)]
pub struct UpgradeQuery {
    /// A JWT, in secure mode (instead of sending it as the first frame).
    token: Option<String>,
    /// `pushgate.v2` opts into protocol v2, for clients that cannot set a
    /// subprotocol; any other value is ignored (v1).
    protocol: Option<String>,
}

/// `GET /` and `GET /ws`: the WebSocket upgrade.
///
/// Refusals happen here, before the upgrade, as HTTP answers: 503 while
/// shutting down or past a connection cap, 403 for an origin not allowed.
pub async fn upgrade(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<UpgradeQuery>,
    headers: HeaderMap,
    ws: Handshake,
) -> Response {
    if app.shutdown.is_draining() {
        telemetry::rejected_upgrade("shutting_down");
        return ApiError::Unavailable("the gateway is shutting down".into()).into_response();
    }
    if !origin_passes(&app.config.websocket.allowed_origins, &headers) {
        telemetry::rejected_upgrade("origin");
        return ApiError::Forbidden("this origin may not open a WebSocket here".into())
            .into_response();
    }
    let cfg = &app.config;
    let client = client_ip(
        peer,
        &headers,
        &cfg.http.trusted_proxies,
        cfg.http.client_ip_header,
    );
    let permit = match app.admission.admit(client) {
        Ok(permit) => permit,
        Err(refusal) => {
            telemetry::rejected_upgrade(refusal.as_str());
            tracing::debug!(%client, reason = refusal.as_str(), "upgrade refused");
            return ApiError::Unavailable(format!(
                "connection limit reached ({})",
                refusal.as_str()
            ))
            .into_response();
        }
    };
    // A token on the query string is checked now; the session closes with
    // 1008 at once if it is bad (the close frame says whether a fresh token
    // would help; the log says precisely why).
    let preauth = match (&app.verifier, query.token) {
        (Some(verifier), Some(token)) => Some(
            verifier
                .verify(&token)
                .inspect_err(|e| verifier.log_refusal(e, Some(client))),
        ),
        _ => None,
    };
    // The tracker counts this session from now, not from when the upgrade
    // completes, so a shutdown never misses a connection mid-handshake.
    let token = app.shutdown.sessions().token();
    let config = WebSocketConfig::default()
        // tungstenite's 128 KiB default read buffer per connection is what
        // makes idle connections expensive; clients send little after binding,
        // and larger frames still grow the buffer as they need.
        .read_buffer_size(READ_BUFFER)
        // Control frames are written at once; pushes never pass through here.
        .write_buffer_size(0)
        .max_write_buffer_size(CONTROL_BUFFER)
        .max_message_size(Some(cfg.websocket.max_message_bytes))
        .max_frame_size(Some(cfg.websocket.max_message_bytes));
    // v2 by subprotocol is answered with it (RFC 6455 §4.2.2: the server
    // picks one the client offered); by query, the client offered none.
    let offered = ws.offers_subprotocol(V2_SUBPROTOCOL);
    if offered || query.protocol.as_deref() == Some(V2_SUBPROTOCOL) {
        let answer = offered.then_some(V2_SUBPROTOCOL);
        start::<V2>(ws, config, answer, app, preauth, (permit, token))
    } else {
        start::<V1>(ws, config, None, app, preauth, (permit, token))
    }
}

/// Answers the upgrade and runs a session of protocol `P`; `held` (the
/// admission permit, the shutdown tracker's token) is released when the
/// session ends.
fn start<P: Protocol>(
    ws: Handshake,
    config: WebSocketConfig,
    subprotocol: Option<&'static str>,
    app: App,
    preauth: Option<Result<crate::auth::Identity, crate::auth::TokenError>>,
    held: impl Send + 'static,
) -> Response {
    ws.accept(config, subprotocol, move |socket| {
        let conn = app.map.open();
        // A combinator, not an `async` block: awaiting the session inside
        // one would store the session's state twice.
        session::<P>(socket, conn, preauth, app).map(move |()| drop(held))
    })
}
