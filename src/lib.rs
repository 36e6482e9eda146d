//! pushgate: a real-time push gateway.
//!
//! Browsers hold WebSocket connections and bind a user id (uid) by sending it
//! as their first text frame. Backends push to a uid through the legacy text
//! port (one JSON object per line, answered `ok` or `fail`, exactly as
//! Workerman's `push.php` did) or through the REST API.
//!
//! # How a push flows
//!
//! ```text
//! text port (text/) ───┐
//!                      ├─> ConnectionMap::push(uid) ─> bounded queue per connection
//! REST (http/push.rs) ─┘        (connections/)    │          │
//!                                                 │          v
//!           the broker: PUBLISH ──────────────────┘   WebSocket session task
//!           (broker/redis/ in cluster mode),          (ws/session.rs) ─> browser
//!           delivered by the nodes holding the uid    one write per batch
//!                                                     (ws/socket.rs)
//! ```
//!
//! # The layers
//!
//! - **Wiring**: `main.rs` parses, checks and binds; this file runs the
//!   front ends on their listeners ([`run`], [`serve`], [`Listeners`]);
//!   [`app`] holds the state they share ([`AppState`]); [`config`] (one
//!   flattened group per part, each part reading only its own),
//!   [`shutdown`], [`telemetry`] (logs, metric names; the only place that
//!   emits metrics), [`cli`], `reload`.
//! - **Front ends** translate a wire format into calls on the one
//!   [`ConnectionMap`] and hold no routing state: [`ws`] (upgrade, bind,
//!   the per-connection loop), [`sse`] (Server-Sent Events, protocol v2
//!   only, and the JavaScript client's files), [`text`] (the legacy line
//!   port), [`http`]
//!   (REST, health, metrics). No front end imports another; what they share
//!   is in [`net`] (accept back-off, client address, problem answers). The
//!   WebSocket upgrade handler and the SSE routes are handed to the public
//!   router by [`serve`].
//! - **Policy**: [`auth`] (tokens, API keys), [`limits`] (admission caps).
//! - **Routing**: [`connections`] is the map, the one door to routing;
//!   [`model`] holds the ids and wire types every front end agrees on.
//! - **Broker**: the seam is the routing side's (`connections::broker`: the
//!   `Broker` trait, presence changes, readiness, the single node);
//!   [`broker`] picks an implementation, and `broker::redis` shares routing
//!   between nodes through Redis — nothing else names Redis. The message
//!   store (history, [`store`]) sits beside it, behind the map.
//!
//! # Where a new part goes
//!
//! - **A new front end** (SSE, say): its own module beside `ws/` and
//!   `text/`, calling only the map, `net`, `auth`/`limits` and
//!   `telemetry`; its listener or route is wired here, in [`serve`], and
//!   its flags are a new group in `config/groups.rs`.
//! - **A new broker** (NATS, say): a module in `broker/` implementing the
//!   `Broker` trait, one variant of `broker::AnyBroker` and one arm in
//!   `broker::from_config`. No front end changes.
//! - **A new REST endpoint**: a handler in `http/` (one file per concern,
//!   like `push.rs`) that translates JSON into a map call and refuses with
//!   `net::problem::ApiError`; its route is added in `http/mod.rs` (and to
//!   `http::observe::ROUTES` for its metrics) and described in `openapi.yaml`.
//!
//! [`run`] builds the state and serves; the binary builds the state first
//! ([`AppState::new`]: every key file and URL is checked), binds only then,
//! and calls [`serve`], so a bad configuration never logs `listening`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod broker;
pub mod cli;
pub mod config;
pub mod connections;
pub mod http;
pub mod limits;
pub mod model;
pub mod net;
#[cfg(unix)]
pub mod reload;
pub mod shutdown;
pub mod sse;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod ws;

use std::future::Future;

use tokio::net::TcpListener;

pub use app::{App, AppState, StartError};
pub use config::Config;
pub use connections::ConnectionMap;

/// The bound listeners the server runs on. Binding is the caller's job, so
/// tests can bind `127.0.0.1:0` and read the ports before starting.
pub struct Listeners {
    /// The public listener (`--listen`): WebSocket upgrades and health; REST
    /// only when API keys are configured.
    pub http: TcpListener,
    /// The legacy text push port.
    pub text: TcpListener,
    /// The API listener (`--api-listen`): REST, metrics and health.
    pub api: TcpListener,
}

/// Builds the state for `config` and runs the gateway on `listeners` until
/// `shutdown` resolves, then shuts down gracefully within
/// `config.shutdown.shutdown_timeout` (see [`serve`]). Errors: the configuration's
/// files or URLs are not usable ([`StartError`]).
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let app = AppState::new(config)?;
    serve(app, listeners, shutdown).await;
    Ok(())
}

/// Runs the gateway with state built beforehand ([`AppState::new`]) until
/// `shutdown` resolves, then drains. Returns once everything is closed (or
/// `--shutdown-timeout` has passed).
pub async fn serve(app: App, listeners: Listeners, shutdown: impl Future<Output = ()>) {
    let timeout = app.config.shutdown.shutdown_timeout;
    tracing::info!(
        max_connections = app.admission.max_connections(),
        "connection capacity"
    );
    telemetry::set_max_connections(app.admission.max_connections());
    telemetry::register_label_values(app.map.node_id().is_some());
    telemetry::register_sse_label_values();
    #[cfg(unix)]
    let reload = reload::spawn(app.clone());
    log_exposure(&app, &listeners);
    let upkeep = tokio::spawn(telemetry::run_upkeep(app.prometheus.clone()));
    if let Some(node) = app.map.node_id() {
        tracing::info!(node, "cluster mode: routing through Redis");
        app.shutdown
            .services()
            .spawn(app.map.clone().run_broker(app.shutdown.clone()));
    }
    app.shutdown
        .services()
        .spawn(app.map.clone().run_history_sweep(app.shutdown.clone()));
    let api_loopback = listeners
        .api
        .local_addr()
        .is_ok_and(|a| a.ip().to_canonical().is_loopback());
    let public = http::public_router(
        app.clone(),
        axum::routing::get(ws::upgrade),
        sse::routes(&app),
    );
    let api = http::api_router(app.clone(), api_loopback);
    let tasks = app.shutdown.services();
    // The event stream is served below hyper on a connection it opens
    // (`http::serve`); the API listener streams nothing.
    tasks.spawn(http::serve(
        listeners.http,
        public,
        app.clone(),
        &[sse::PATH],
    ));
    tasks.spawn(http::serve(listeners.api, api, app.clone(), &[]));
    tasks.spawn(text::serve(listeners.text, app.clone()));

    shutdown.await;
    tracing::info!(
        connections = app.map.connections(),
        "draining: closing connections"
    );
    if app.shutdown.run(timeout, app.map.connections()).await {
        tracing::info!("shutdown complete");
    } else {
        tracing::warn!(?timeout, "shutdown timeout reached; closing what is left");
    }
    upkeep.abort();
    #[cfg(unix)]
    if let Some(reload) = reload {
        reload.abort();
    }
}

/// Says at start, one line per listener, what each one exposes, so an
/// operator sees from the log alone what the internet can reach.
fn log_exposure(app: &App, listeners: &Listeners) {
    let addr = |l: &TcpListener| {
        l.local_addr()
            .map_or_else(|e| format!("? ({e})"), |a| a.to_string())
    };
    let keyed = app.api_keys.is_enabled();
    let public = if keyed {
        "WebSocket, SSE, client files, health, REST (API key required)"
    } else {
        "WebSocket, SSE, client files, health"
    };
    tracing::info!("public listener {}: {public}", addr(&listeners.http));
    let api_loopback = listeners
        .api
        .local_addr()
        .is_ok_and(|a| a.ip().to_canonical().is_loopback());
    match (keyed, api_loopback) {
        (true, _) => tracing::info!(
            "API listener {}: REST (API key required), metrics, health",
            addr(&listeners.api)
        ),
        (false, true) => tracing::info!(
            "API listener {}: REST (unkeyed, loopback only), metrics, health",
            addr(&listeners.api)
        ),
        (false, false) => tracing::warn!(
            "API listener {}: metrics, health; REST answers 403: API keys are required on a \
             non-loopback API listener (set --api-key, or bind --api-listen to loopback)",
            addr(&listeners.api)
        ),
    }
    tracing::info!(
        "text port {}: pushes (JSON lines, no authentication)",
        addr(&listeners.text)
    );
}

#[cfg(test)]
mod tests {
    //! In-process tests over [`run`]: listeners bound to port 0 by the test
    //! (the promise of [`Listeners`]), time paused where a timer is the
    //! behaviour, as mini-redis' tests do.

    use clap::Parser;
    use futures_util::StreamExt;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::oneshot;

    use super::*;

    async fn listeners() -> Listeners {
        let bind = || TcpListener::bind("127.0.0.1:0");
        Listeners {
            http: bind().await.unwrap(),
            text: bind().await.unwrap(),
            api: bind().await.unwrap(),
        }
    }

    #[tokio::test]
    async fn run_serves_listeners_bound_by_the_caller_until_the_shutdown_future_resolves() {
        let listeners = listeners().await;
        let text = listeners.text.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let config = Config::parse_from(["pushgate", "--shutdown-timeout", "1s"]);
        let server = tokio::spawn(run(config, listeners, async {
            let _ = stopped.await;
        }));
        let mut backend = BufReader::new(TcpStream::connect(text).await.unwrap());
        backend.write_all(b"{\"uid\":\"nobody\"}\n").await.unwrap();
        let mut answer = String::new();
        backend.read_line(&mut answer).await.unwrap();
        assert_eq!(answer, "fail\n");
        let _ = stop.send(());
        assert!(server.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unbound_websocket_is_closed_at_the_bind_timeout() {
        let listeners = listeners().await;
        let http = listeners.http.local_addr().unwrap();
        let config = Config::parse_from(["pushgate", "--bind-timeout", "10s"]);
        tokio::spawn(run(config, listeners, std::future::pending()));
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/"))
            .await
            .unwrap();
        let start = tokio::time::Instant::now();
        let close = loop {
            match ws.next().await {
                Some(Ok(tungstenite::Message::Close(frame))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        let frame = close.expect("a close frame with a code");
        assert_eq!(u16::from(frame.code), 1008);
        assert_eq!(frame.reason.as_str(), "bind timeout: send the uid first");
        assert!(start.elapsed() >= std::time::Duration::from_secs(10));
    }
}
