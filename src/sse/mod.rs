//! The Server-Sent Events front end (`GET /sse`), protocol v2 only
//! (docs/protocol-v2.md, "Server-Sent Events"), and the JavaScript
//! client's files.
//!
//! A stream is admitted exactly like a WebSocket (drain, origin, the
//! `--max-connections` and per-address caps), binds through the same
//! [`Connection::bind_stream`](crate::connections::Connection::bind_stream)
//! as a v2 WebSocket, and ends with the same close codes, sent as an
//! `event: close`. Refusals happen before the stream starts, as problem
//! answers. Browsers on other origins may use it: the routes answer CORS
//! for the `--allowed-origins` (any origin when unset: no cookie carries
//! identity here, the uid or token is in the URL or a header).
//!
//! This module checks the request and writes the opening (`request.rs`,
//! `event.rs`); `session.rs` runs each stream's life, handing its events
//! to the response body through `handoff.rs`.

mod end;
mod event;
mod files;
mod handoff;
mod request;
mod session;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use futures_util::FutureExt;
use tokio::time::Instant;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::App;
use crate::model::Held;
use crate::net::abort::ConnectionAbort;
use crate::net::client_ip::client_ip;
use crate::net::origin::{origin_allowed, origin_passes};
use crate::net::problem::{ApiError, HeadRefused};
use crate::telemetry;
use request::{Refusal, StreamQuery, refuse};
use session::{EventBody, Session, after, expiry};

/// The stream's path.
pub const PATH: &str = "/sse";

/// How long a browser may cache a CORS preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// This front end's routes on the public listener, each answering CORS:
/// `/sse`, `/pushgate.js`, `/pushgate.mjs` and `/demo`.
pub fn routes(app: &App) -> Vec<(&'static str, MethodRouter<App>)> {
    let cors = cors(&app.config.websocket.allowed_origins);
    // An explicit OPTIONS answer, so the CORS layer surely sees the
    // preflight, whatever the router's fallbacks do.
    let with_cors = |route: MethodRouter<App>| {
        route
            .options(|| async { StatusCode::NO_CONTENT })
            .layer(cors.clone())
    };
    vec![
        (PATH, with_cors(get(stream))),
        ("/pushgate.js", with_cors(get(files::script))),
        ("/pushgate.mjs", with_cors(get(files::module))),
        ("/demo", get(files::demo)),
    ]
}

/// CORS for `allowed` origins (all when empty), for `GET` with the headers
/// a client sets: `Authorization` (a token) and `Last-Event-ID`.
fn cors(allowed: &[String]) -> CorsLayer {
    let origin = if allowed.is_empty() {
        AllowOrigin::any()
    } else {
        let allowed = allowed.to_vec();
        AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin_allowed(&allowed, origin.as_bytes())
        })
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::GET])
        .allow_headers([
            header::AUTHORIZATION,
            HeaderName::from_static("last-event-id"),
        ])
        .max_age(PREFLIGHT_MAX_AGE)
}

/// `GET /sse`: checks, admits and binds, answers with the opening, and
/// leaves the rest of the stream to its session task.
///
/// `HEAD /sse` (which axum routes here) passes the same checks but those
/// with an effect (admission, binding): it gets the head a `GET` would get
/// (RFC 9110 §9.3.2), or its refusal, and changes nothing. A `HEAD` that
/// bound would kick the uid's stream past `--max-conns-per-uid`.
///
/// A request head the accept loop refused ([`HeadRefused`], a stand-in
/// request) is answered here, so it is counted and answered with CORS as
/// every refusal of this route is.
pub async fn stream(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    abort: Option<Extension<ConnectionAbort>>,
    head_refused: Option<Extension<HeadRefused>>,
    request: Parts,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Response {
    let Parts {
        method,
        uri,
        headers,
        ..
    } = request;
    if let Some(Extension(refused)) = head_refused {
        telemetry::sse_refused(refused.label());
        return refused.into_error().into_response();
    }
    let abort = abort.map(|Extension(a)| a).unwrap_or_default();
    let only_head = method == Method::HEAD;
    // axum's form decoder turns bytes that are not UTF-8 into U+FFFD, which
    // would make several uids one: such a query is refused instead.
    let query = query.map(|q| (q, uri.query().is_none_or(request::query_is_utf8)));
    match open(app, peer, abort, only_head, query, &headers).await {
        Ok(response) => response,
        Err(Refusal { label, error }) => {
            telemetry::sse_refused(label);
            error.into_response()
        }
    }
}

/// Checks, admits, binds and answers the opening; with `only_head`, only
/// checks and answers the head (see [`stream`]).
async fn open(
    app: App,
    peer: SocketAddr,
    abort: ConnectionAbort,
    only_head: bool,
    query: Result<(Query<StreamQuery>, bool), QueryRejection>,
    headers: &HeaderMap,
) -> Result<Response, Refusal> {
    // First: a forbidden origin is forbidden whatever it asks for.
    if !origin_passes(&app.config.websocket.allowed_origins, headers) {
        return Err(refuse(
            "origin",
            ApiError::Forbidden("this origin may not open a stream here".into()),
        ));
    }
    if !request::accepts_event_stream(headers) {
        return Err(refuse(
            "not_acceptable",
            ApiError::NotAcceptable(
                "this is an event stream: send Accept: text/event-stream".into(),
            ),
        ));
    }
    if app.shutdown.is_draining() {
        return Err(refuse(
            "shutting_down",
            ApiError::Unavailable("the gateway is shutting down".into()),
        ));
    }
    let (Query(query), utf8) =
        query.map_err(|e| refuse("bad_request", ApiError::BadRequest(e.body_text())))?;
    if !utf8 {
        return Err(refuse(
            "bad_request",
            ApiError::BadRequest("the query is not UTF-8 once percent-decoded".into()),
        ));
    }
    let since = request::since(&query, headers)?;
    let cfg = &app.config;
    let client = client_ip(
        peer,
        headers,
        &cfg.http.trusted_proxies,
        cfg.http.client_ip_header,
    );
    if only_head {
        request::identity(app.verifier.as_ref(), &query, headers, client)?;
        // A body of unknown length, as a stream's is: with an empty one
        // the router would say `Content-Length: 0`, which a HEAD answer
        // may only say if the GET's body were empty (RFC 9110 §8.6). The
        // router drops it unread.
        let unknown = futures_util::stream::empty::<Result<bytes::Bytes, Infallible>>();
        return Ok(stream_head(Body::from_stream(unknown)));
    }
    // Before the token check: a flood of bad tokens costs no signature
    // checks past the caps.
    let permit = app.admission.admit(client).map_err(|refusal| {
        tracing::debug!(%client, reason = refusal.as_str(), "sse stream refused");
        refuse(
            refusal.as_str(),
            ApiError::Unavailable(format!("connection limit reached ({})", refusal.as_str())),
        )
    })?;
    let (uid, identity) = request::identity(app.verifier.as_ref(), &query, headers, client)?;
    // Counted by the shutdown from now, so a drain never misses a stream.
    let tracked = app.shutdown.sessions().token();
    let mut conn = app.map.open();
    let bound = conn
        .bind_stream(uid.clone(), since)
        .await
        .map_err(|e| refuse("bad_request", ApiError::BadRequest(e.to_string())))?;
    let opening = event::opening(
        &uid,
        app.map.history_enabled(),
        bound.top,
        bound.recovery.as_ref(),
    );
    tracing::debug!(conn = conn.id().0, %uid, "sse stream bound");
    let (tx, rx) = handoff::channel();
    // The channel is new and empty: the opening fits.
    let _ = tx.try_send(opening);
    let session = Session {
        conn,
        tx,
        abort,
        next_ping: after(Instant::now(), cfg.websocket.ping_interval),
        close_at: None,
        expires: identity.map(|id| expiry(id.expires_at)),
        held: Held::new(bound.replayed_up_to()),
        app: app.clone(),
    };
    telemetry::sse_streams(1.0);
    tokio::spawn(session::session(session).map(move |()| {
        telemetry::sse_streams(-1.0);
        drop(permit);
        drop(tracked);
    }));
    Ok(stream_head(Body::new(EventBody(rx))))
}

/// The answer of an admitted stream: `body` with the stream's headers.
fn stream_head(body: Body) -> Response {
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx buffers proxied answers unless told not to.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
