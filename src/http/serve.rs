//! The HTTP accept loop.
//!
//! pushgate drives hyper itself instead of `axum::serve` for three reasons:
//! hyper gets a timer, so the header-read timeout actually fires (slowloris);
//! each connection is tracked, so shutdown waits for requests in flight; and
//! the peer address is attached to every request for the local-caller rule.
//! It also sees, after each answer, whether the request's body was read to
//! its end: a refusal that left part of it unread says `Connection: close`
//! and closes, since the rest of that body cannot be told from a next
//! request (RFC 9112 §9.6). And each request carries a
//! [`ConnectionAbort`], so a streamed answer can end a connection whose
//! client stopped reading.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, StatusCode, header};
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tracing::Instrument;

use crate::App;
use crate::net::abort::ConnectionAbort;

/// Serves HTTP on `listener` until the stop phase of shutdown, then lets each
/// connection finish the request it is serving.
pub async fn serve(listener: TcpListener, router: axum::Router, app: App) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Some(app.config.http.header_read_timeout))
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
                crate::net::accept::error_pause(&e).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let abort = ConnectionAbort::new();
        let handle = abort.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(ConnectInfo(peer));
            parts.extensions.insert(handle.clone());
            let (body, read_to_end) = Tracked::new(body);
            let router = router.clone();
            async move {
                let mut response = router
                    .oneshot(hyper::Request::from_parts(parts, body))
                    .await
                    .unwrap_or_else(|e| match e {});
                if !read_to_end.load(Ordering::Relaxed)
                    && response.status() != StatusCode::SWITCHING_PROTOCOLS
                {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response)
            }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let shutdown = app.shutdown.clone();
        // A debug-level span: disabled (a handle, no registry entry) at the
        // default level, so keep-alive connections cost nothing more.
        let span = tracing::debug_span!("http", %peer);
        let served = async move {
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                // A streamed answer whose client is stuck: drop it all.
                _ = abort.ended() => {}
                _ = shutdown.stopping() => {
                    conn.as_mut().graceful_shutdown();
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = abort.ended() => {}
                    }
                }
            }
            abort.abort();
        };
        app.shutdown.services().spawn(served.instrument(span));
    }
}

/// A request body that records whether it was read to its end.
struct Tracked {
    inner: Incoming,
    read_to_end: Arc<AtomicBool>,
}

impl Tracked {
    /// Wraps `inner`; the flag is set once it has no more to give (at once
    /// for a request without a body).
    fn new(inner: Incoming) -> (Tracked, Arc<AtomicBool>) {
        let read_to_end = Arc::new(AtomicBool::new(inner.is_end_stream()));
        let tracked = Tracked {
            inner,
            read_to_end: read_to_end.clone(),
        };
        (tracked, read_to_end)
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if frame.is_none() || self.inner.is_end_stream() {
            self.read_to_end.store(true, Ordering::Relaxed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
