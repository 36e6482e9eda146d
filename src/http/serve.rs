//! The HTTP accept loop.
//!
//! pushgate drives hyper itself instead of `axum::serve` for three reasons:
//! hyper gets a timer, so the header-read timeout actually fires (slowloris);
//! each connection is tracked, so shutdown waits for requests in flight; and
//! the peer address is attached to every request for the local-caller rule.
//! It also sees, after each answer, whether the request's body was read to
//! its end: a refusal that left part of it unread says `Connection: close`
//! and closes, since the rest of that body cannot be told from a next
//! request (RFC 9112 §9.6).
//!
//! **Streams.** An event stream (`GET /sse`) holds its connection for hours
//! with nothing to send, and under hyper an idle connection keeps its read
//! and write buffers (8 KiB each, partly touched): about 15 KiB of memory
//! per idle stream, where an idle WebSocket (which leaves hyper after its
//! 101) costs 2.5. So a connection whose first request is a `GET` of one of
//! the `streamed` paths is served below hyper ([`lean`]): the accept loop
//! looks at its first bytes without reading them ([`first_request`]),
//! parses that one request head itself, hands it to the same router (so
//! admission, the origin rule, CORS, refusals and metrics stay one code
//! path), and writes the answer with no buffer of its own. That connection
//! serves this one request (`Connection: close`). The look at the first
//! bytes counts against `--header-read-timeout`: a first head gets one
//! timeout from the accept on either path. (Hyper's own timer starts only
//! when hyper does; set shorter for one connection it would shorten every
//! later head of that connection too, so instead a deadline of this
//! loop's closes the connection if hyper has no first head by then.)
//! Everything else stays on
//! hyper, including a keep-alive connection that asks for a stream later
//! on; a streamed request there is handed a [`ConnectionAbort`] naming the
//! connection's task, so a stream whose client stopped reading can still
//! end it.

mod lean;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
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
use rustix::net::RecvFlags;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout_at};
use tower::ServiceExt;
use tracing::Instrument;

use crate::App;
use crate::net::abort::ConnectionAbort;

/// The most bytes [`first_request`] looks at: `GET `, the longest streamed
/// path, and the byte after it.
const PEEK: usize = 64;

/// Serves HTTP on `listener` until the stop phase of shutdown, then lets each
/// connection finish the request it is serving. `streamed` are the paths
/// whose answer is a stream that lasts as long as its client stays (the
/// public listener's `/sse`; none on the API listener): a connection that
/// opens with a `GET` of one is served below hyper (see the module docs).
/// Panics if a streamed path is longer than 59 bytes (a wiring mistake).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    app: App,
    streamed: &'static [&'static str],
) {
    assert!(
        streamed.iter().all(|p| "GET ".len() + p.len() < PEEK),
        "a streamed path is too long to be recognised"
    );
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Some(app.config.http.header_read_timeout))
        .keep_alive(true)
        // Answers are a few hundred bytes: copied into one buffer they cost
        // the kernel one segment instead of two (as for WebSocket frames,
        // see `ws/socket.rs`).
        .writev(false);
    let builder = Arc::new(builder);
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
        let abort = (!streamed.is_empty()).then(ConnectionAbort::new);
        let conn = Connection {
            stream,
            peer,
            router: router.clone(),
            app: app.clone(),
            http1: builder.clone(),
            streamed,
            abort: abort.clone(),
        };
        // A debug-level span: disabled (a handle, no registry entry) at the
        // default level, so keep-alive connections cost nothing more.
        let span = tracing::debug_span!("http", %peer);
        let task = app.shutdown.services().spawn(conn.serve().instrument(span));
        if let Some(abort) = abort {
            abort.bind(task.abort_handle());
        }
    }
}

/// One accepted connection, before it is known how it is served.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    app: App,
    http1: Arc<http1::Builder>,
    streamed: &'static [&'static str],
    /// Names this connection's task; handed to streamed requests on hyper.
    /// `None` when nothing here is streamed.
    abort: Option<ConnectionAbort>,
}

impl Connection {
    async fn serve(self) {
        if !self.streamed.is_empty() {
            // The same deadline as hyper's for a whole head: a connection
            // that shows nothing in that time is closed, as hyper closes it.
            let deadline = Instant::now() + self.app.config.http.header_read_timeout;
            let first = tokio::select! {
                _ = self.app.shutdown.stopping() => return,
                first = first_request(&self.stream, self.streamed, deadline) => first,
            };
            match first {
                First::Streamed(path) => {
                    // Boxed: only such connections pay for the lean path's
                    // state (a router call) while it runs, not every
                    // keep-alive connection's task.
                    let lean = lean::serve(
                        self.stream,
                        self.peer,
                        path,
                        self.router,
                        self.app,
                        deadline,
                    );
                    return Box::pin(lean).await;
                }
                First::Gone => return,
                First::Other => return self.serve_hyper(Some(deadline)).await,
            }
        }
        self.serve_hyper(None).await
    }

    /// Serves the connection with hyper. `first_head`: when its first
    /// request head must be complete, if earlier than hyper's own timer
    /// (started only now) says: the time the first bytes were looked at
    /// counts, so a head gets one `--header-read-timeout` in all. A
    /// connection without its first head by then is closed without an
    /// answer, as hyper closes one.
    async fn serve_hyper(self, first_head: Option<Instant>) {
        let Connection {
            stream,
            peer,
            router,
            app,
            http1,
            streamed,
            abort,
        } = self;
        // Set once hyper has a whole head, when it calls the service. Only
        // a connection with a first-head deadline pays for the flag and
        // the timer.
        let headed = first_head.map(|_| Arc::new(AtomicBool::new(false)));
        let head_deadline = {
            let headed = headed.clone();
            async move {
                if let (Some(at), Some(headed)) = (first_head, headed) {
                    Box::pin(tokio::time::sleep_until(at)).await;
                    if !headed.load(Ordering::Relaxed) {
                        return;
                    }
                }
                std::future::pending::<()>().await
            }
        };
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            if let Some(headed) = &headed {
                headed.store(true, Ordering::Relaxed);
            }
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(ConnectInfo(peer));
            if let Some(abort) = &abort
                && streamed.contains(&parts.uri.path())
            {
                parts.extensions.insert(abort.clone());
            }
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
        let conn = http1
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            // Dropping the connection closes it.
            () = head_deadline => tracing::debug!("first request head timed out"),
            _ = app.shutdown.stopping() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }
}

/// What a connection's first bytes say about its first request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum First {
    /// A `GET` of this streamed path: served below hyper.
    Streamed(&'static str),
    /// Anything else: hyper's.
    Other,
    /// The client closed, failed or sent nothing in time: dropped.
    Gone,
}

/// Looks at the connection's first bytes, without reading them, until they
/// tell whether its first request is a `GET` of a streamed path (then
/// `GET /sse` and a space or `?`), or until `deadline`.
///
/// Nearly always one `peek` decides. When the client's first segment is
/// shorter and still could be such a request (`GET /s`), the wait for more
/// cannot be a second `peek`: tokio's leaves the socket marked readable, so
/// it would return the same bytes at once, for ever. That rare case peeks
/// inside [`TcpStream::try_io`], which clears the mark when too few bytes
/// are there and so waits for the next segment; that peek is a `recv` with
/// `MSG_PEEK` on the stream's own descriptor (rustix's safe call), since
/// `try_io` must not call the stream's own methods and a duplicate of the
/// descriptor would cost the waiting connection a second one.
async fn first_request(stream: &TcpStream, streamed: &[&'static str], deadline: Instant) -> First {
    let want = streamed
        .iter()
        .map(|p| "GET ".len() + p.len() + 1)
        .max()
        .unwrap_or(0);
    let mut buf = [0u8; PEEK];
    let buf = &mut buf[..want];
    let seen = match timeout_at(deadline, stream.peek(buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return First::Gone,
        Ok(Ok(n)) => n,
    };
    if let Some(first) = classify(&buf[..seen], streamed) {
        return first;
    }
    loop {
        let ready = match timeout_at(deadline, stream.ready(Interest::READABLE)).await {
            Ok(Ok(ready)) => ready,
            Ok(Err(_)) | Err(_) => return First::Gone,
        };
        let peeked = stream.try_io(Interest::READABLE, || {
            let (n, _) = rustix::net::recv(stream.as_fd(), &mut *buf, RecvFlags::PEEK)?;
            classify(&buf[..n], streamed).ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))
        });
        match peeked {
            Ok(first) => return first,
            // The client closed after part of a request line: hyper reads
            // it and answers as it does any truncated request.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && ready.is_read_closed() => {
                return First::Other;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return First::Gone,
        }
    }
}

/// `Some` once `seen` (a connection's first bytes) decides; `None` while it
/// is a prefix of `GET <path>` plus one byte for a streamed path.
fn classify(seen: &[u8], streamed: &[&'static str]) -> Option<First> {
    let mut undecided = false;
    for path in streamed {
        let target = || b"GET ".iter().chain(path.as_bytes());
        let len = "GET ".len() + path.len();
        let starts = |n: usize| seen[..n].iter().zip(target()).all(|(a, b)| a == b);
        if seen.len() > len {
            if starts(len) && matches!(seen[len], b' ' | b'?') {
                return Some(First::Streamed(path));
            }
        } else if starts(seen.len()) {
            undecided = true;
        }
    }
    (!undecided).then_some(First::Other)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;

    use super::*;

    const SSE: &[&str] = &["/sse"];

    #[test]
    fn only_a_get_of_the_streamed_path_itself_is_streamed() {
        for (seen, want) in [
            (
                &b"GET /sse?uid=a HTTP/1.1"[..],
                Some(First::Streamed("/sse")),
            ),
            (b"GET /sse HTTP/1.1", Some(First::Streamed("/sse"))),
            (b"GET /sse/x HTTP/1.1", Some(First::Other)),
            (b"GET /ssex", Some(First::Other)),
            (b"GET /ws HTTP/1.1", Some(First::Other)),
            (b"OPTIONS /sse HTTP/1.1", Some(First::Other)),
            (b"HEAD /sse", Some(First::Other)),
            (b"get /sse?", Some(First::Other)),
            (b"POST /push", Some(First::Other)),
            (b"G", None),
            (b"GET /ss", None),
            (b"GET /sse", None),
        ] {
            assert_eq!(
                classify(seen, SSE),
                want,
                "{}",
                String::from_utf8_lossy(seen)
            );
        }
        assert_eq!(classify(b"G", &[]), Some(First::Other));
    }

    /// A pair of connected sockets: the client's end and the server's.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.set_nodelay(true).unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn a_request_line_that_arrives_in_pieces_is_waited_for_not_spun_on() {
        let (mut client, server) = pair().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let first = first_request(&server, SSE, deadline);
        tokio::pin!(first);
        client.write_all(b"GE").await.unwrap();
        // The server has the two bytes: the peek sees them and must wait.
        server.readable().await.unwrap();
        for _ in 0..3 {
            assert!(futures_util::poll!(first.as_mut()).is_pending());
        }
        client.write_all(b"T /ss").await.unwrap();
        server.readable().await.unwrap();
        // Still a prefix: the next segment is waited for again.
        assert!(futures_util::poll!(first.as_mut()).is_pending());
        client.write_all(b"e?uid=a").await.unwrap();
        assert_eq!(first.await, First::Streamed("/sse"));
        // Nothing was read: the whole request line is still there.
        let mut buf = [0u8; 32];
        let n = server.peek(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET /sse?uid=a");
    }

    /// How many of this process's descriptors refer to `stream`'s socket.
    fn descriptors_of(stream: &TcpStream) -> usize {
        use std::os::fd::AsRawFd;
        let socket = std::fs::read_link(format!("/proc/self/fd/{}", stream.as_raw_fd())).unwrap();
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter(|target| *target == socket)
            .count()
    }

    #[tokio::test]
    async fn a_connection_waiting_for_more_of_its_first_line_holds_one_descriptor() {
        let (mut client, server) = pair().await;
        client.write_all(b"GET /s").await.unwrap();
        server.readable().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let first = first_request(&server, SSE, deadline);
        tokio::pin!(first);
        assert!(futures_util::poll!(first.as_mut()).is_pending());
        assert_eq!(descriptors_of(&server), 1);
        client.write_all(b"tats").await.unwrap();
        assert_eq!(first.await, First::Other);
    }

    #[tokio::test]
    async fn a_client_that_closes_mid_line_goes_to_hyper_and_a_silent_one_is_dropped() {
        let (mut client, server) = pair().await;
        client.write_all(b"GET /s").await.unwrap();
        client.shutdown().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        assert_eq!(first_request(&server, SSE, deadline).await, First::Other);

        let (_client, server) = pair().await;
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(first_request(&server, SSE, soon).await, First::Gone);
    }
}
