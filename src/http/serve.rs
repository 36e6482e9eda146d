//! The HTTP accept loop.
//!
//! pushgate drives hyper itself instead of `axum::serve` for three reasons:
//! hyper gets a timer, so the header-read timeout actually fires (slowloris);
//! each connection is tracked, so shutdown waits for requests in flight; and
//! the peer address is attached to every request for the local-caller rule.

use std::convert::Infallible;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::App;

/// Serves HTTP on `listener` until the stop phase of shutdown, then lets each
/// connection finish the request it is serving.
pub async fn serve(listener: TcpListener, router: axum::Router, app: App) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Some(app.config.header_read_timeout))
        .keep_alive(true)
        // Answers are a few hundred bytes: copied into one buffer they cost
        // the kernel one segment instead of two (as for WebSocket frames,
        // see `ws/socket.rs`).
        .writev(false);
    loop {
        let accepted = tokio::select! {
            _ = app.shutdown.stopping() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                crate::text::accept_error_pause(&e).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            async move { Ok::<_, Infallible>(router.oneshot(req).await.unwrap_or_else(|e| match e {})) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let shutdown = app.shutdown.clone();
        app.shutdown.http().spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.stopping() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}
