//! One WebSocket connection's life: bind, deliver, heartbeat, close.
//!
//! Each connection runs one `select!` over its outbound queue, inbound frames,
//! one timer (bind deadline, next ping or pong deadline, token expiry, paced
//! drain) and the shutdown signal. Queued messages are written together, in
//! one system call (see `socket.rs`).
//!
//! The session is generic over its [`Protocol`] (v1 or v2): what differs —
//! the bind, how a queued message is framed, the close codes — is compiled
//! into each, so a v1 connection pays nothing for v2.

use std::time::{Duration, SystemTime};

use tokio::time::{Instant, timeout};
use tracing::{Instrument, Span};
use tungstenite::{Message, Utf8Bytes};

use super::deadline::{after, next_wake};
use super::end::{End, classify_read_error, uid_error_reason};
use super::protocol::{Protocol, Start};
use super::socket::Socket;
use crate::App;
use crate::auth::{Identity, TokenError};
use crate::connections::{CloseReason, Connection, Delivery};
use crate::model::{Payload, Uid};
use crate::telemetry;

/// How long a slow consumer gets to take its close frame.
const SLOW_CLOSE_LIMIT: Duration = Duration::from_secs(1);

/// Bytes beyond `--max-message-bytes` a closing client's socket may still
/// bring (a message just over the limit, frames sent behind a bad one) that
/// are read and dropped so the close frame is not lost to a reset.
const LINGER_DISCARD: usize = 1024 * 1024;

/// Binds `conn` to a verified identity and names its uid on `span`; returns
/// when the token expires.
pub(super) fn bind_identity(conn: &mut Connection, id: Identity, span: &Span) -> Instant {
    tracing::debug!(conn = conn.id().0, uid = %id.uid, "bound (token)");
    span.record("uid", tracing::field::display(&id.uid));
    let expires = expiry(&id);
    // A fresh connection's first bind cannot fail.
    let _ = conn.bind(id.uid);
    expires
}

/// When a verified token stops being valid, on the session's clock.
pub(super) fn expiry(id: &Identity) -> Instant {
    let left = id
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    after(Instant::now(), left)
}

/// One connection's life. Written as a function returning an `async move`
/// block rather than an `async fn`: an `async fn` keeps its arguments twice
/// in its state (as captured arguments and as locals), and this state is
/// held by every idle connection; and the function does the bind of a
/// query-string token before the future exists.
///
/// The session runs inside a debug-level span naming its connection id, peer
/// and (once bound) uid. At the default `info` level the span is disabled and
/// costs only its handle in the future; with `debug` on, every line of the
/// connection carries those fields.
pub(super) fn session<P: Protocol>(
    socket: Socket,
    mut conn: Connection,
    preauth: Option<Result<Identity, TokenError>>,
    app: App,
) -> impl Future<Output = ()> {
    let span = tracing::debug_span!(
        "websocket",
        conn = conn.id().0,
        peer = tracing::field::display(
            socket
                .peer_ip()
                .map_or_else(|| "-".to_owned(), |ip| ip.to_string())
        ),
        uid = tracing::field::Empty,
    );
    // The query-string token is taken here, before the future exists: a
    // captured `preauth` would stay in every session's state for its life.
    let Start {
        protocol,
        expires,
        end: early_end,
    } = P::start(&mut conn, preauth, &span);
    let ws = &app.config.websocket;
    let now = Instant::now();
    // Built before the future exists and moved in whole: locals made from
    // captured values inside it would be stored twice.
    let mut session = Session {
        bind_deadline: after(now, ws.bind_timeout),
        next_ping: after(now, ws.ping_interval),
        pong_due: None,
        close_at: None,
        expires,
        socket,
        conn,
        app,
        protocol,
    };
    async move {
        let end = match early_end {
            Some(end) => end,
            None => session.run().await,
        };
        // Boxed: it runs once, at the end, and unboxed its state (the whole
        // session, moved in) would be part of every idle session's state.
        Box::pin(session.finish(end)).await;
    }
    .instrument(span)
}

/// What a session holds between two turns of its loop.
pub(super) struct Session<P> {
    pub(super) socket: Socket,
    pub(super) conn: Connection,
    pub(super) app: App,
    /// When an unbound connection is closed (`--bind-timeout`).
    bind_deadline: Instant,
    /// When the next ping is due.
    next_ping: Instant,
    /// When the client must have answered the last ping (any frame counts).
    pong_due: Option<Instant>,
    /// Set once the drain begins: when this session's paced close is due.
    close_at: Option<Instant>,
    /// Secure mode: when the token expires.
    pub(super) expires: Option<Instant>,
    /// The protocol's own state (v1: none).
    pub(super) protocol: P,
}

impl<P: Protocol> Session<P> {
    /// Serves the connection until it must end: one `select!` over the
    /// drain, the outbound queue, inbound frames and the one timer, each
    /// handled by a named step that says whether the session goes on.
    async fn run(&mut self) -> End {
        // One timer for the session's life, moved only when its deadline
        // changes: a fresh `Sleep` per loop turn would cost a timer-wheel insert
        // and removal per delivered message.
        let timer = tokio::time::sleep_until(self.next_ping);
        tokio::pin!(timer);
        loop {
            let bound = self.conn.uid().is_some();
            let wake = self.next_wake(bound);
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            let step = tokio::select! {
                biased;
                _ = self.app.shutdown.draining(), if self.close_at.is_none() => {
                    // Keep serving until this connection's slot comes up.
                    self.close_at = Some(self.app.shutdown.close_slot());
                    Ok(())
                }
                delivery = self.conn.next(), if bound => self.on_delivery(delivery).await,
                ready = self.socket.readable() => match ready {
                    Ok(()) => match self.on_readable(bound) {
                        Ok(Some(text)) => P::bind(self, text).await,
                        Ok(None) => Ok(()),
                        Err(end) => Err(end),
                    },
                    Err(_) => Err(End::Peer),
                },
                _ = &mut timer => self.on_timer(bound).await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// When the single timer must fire next: the bind deadline (unbound),
    /// the pong deadline or the next ping, the token's expiry, or the paced
    /// close of a drain.
    fn next_wake(&self, bound: bool) -> Instant {
        let wake = next_wake(
            bound,
            self.bind_deadline,
            self.next_ping,
            self.pong_due,
            self.expires,
        );
        self.close_at.map_or(wake, |at| wake.min(at))
    }

    /// A message is queued (write it and whatever else waits, in one
    /// system call), or the gateway asked the connection to close.
    async fn on_delivery(&mut self, delivery: Delivery) -> Result<(), End> {
        match delivery {
            Delivery::Message(first) => {
                let Some(first) = self.protocol.frame(first) else {
                    return if self.protocol.missed() {
                        Err(End::Missed)
                    } else {
                        Ok(())
                    };
                };
                let limit = self.app.config.websocket.write_timeout;
                let protocol = &mut self.protocol;
                let frames = |max, take: &mut dyn FnMut(Payload)| {
                    self.conn.take_queued(max, |m| {
                        if let Some(frame) = protocol.frame(m) {
                            take(frame);
                        }
                    });
                };
                match self.socket.write_texts(first, frames) {
                    Ok(true) => {}
                    Ok(false) => finish_batch(&mut self.socket, &self.conn, limit).await?,
                    Err(_) => return Err(End::WriteFailed),
                }
                if self.protocol.missed() {
                    return Err(End::Missed);
                }
                Ok(())
            }
            Delivery::Close(reason) => Err(End::Closed(reason)),
        }
    }

    /// The socket is readable: take a frame if a whole one has arrived.
    /// Any frame answers a pending ping; the first text frame is returned,
    /// for the protocol to bind with.
    fn on_readable(&mut self, bound: bool) -> Result<Option<Utf8Bytes>, End> {
        let message = match self.socket.try_read() {
            Ok(Some(message)) => message,
            // Readiness without a whole frame yet.
            Ok(None) => return Ok(None),
            Err(e) => return Err(classify_read_error(e)),
        };
        self.pong_due = None;
        match message {
            Message::Close(_) => {
                // tungstenite has queued the answering close frame.
                self.socket.flush_now();
                Err(End::Peer)
            }
            Message::Text(text) if !bound => Ok(Some(text)),
            Message::Binary(_) if !bound => Err(End::BinaryUid),
            _ => Ok(None),
        }
    }

    /// Protocol v1's bind, the first text frame: the uid itself in legacy
    /// mode (trusted as the seed trusted it), a token in secure mode.
    pub(super) fn bind_v1(&mut self, text: &str) -> Result<(), End> {
        match &self.app.verifier {
            None => {
                let uid = Uid::new(text).map_err(|e| End::BadUid(uid_error_reason(e)))?;
                tracing::debug!(conn = self.conn.id().0, %uid, "bound");
                Span::current().record("uid", tracing::field::display(&uid));
                // A fresh connection's first bind cannot fail.
                let _ = self.conn.bind(uid);
                Ok(())
            }
            Some(verifier) => match verifier.verify(text) {
                Ok(id) => {
                    let expires = bind_identity(&mut self.conn, id, &Span::current());
                    self.expires = Some(expires);
                    Ok(())
                }
                Err(e) => {
                    verifier.log_refusal(&e, self.socket.peer_ip());
                    Err(End::Token(e))
                }
            },
        }
    }

    /// The timer fired: whichever deadline has passed ends the session, or
    /// it is time to ping.
    async fn on_timer(&mut self, bound: bool) -> Result<(), End> {
        let now = Instant::now();
        if self.close_at.is_some_and(|at| now >= at) {
            return Err(End::Shutdown);
        }
        if !bound && now >= self.bind_deadline {
            return Err(match self.app.verifier {
                Some(_) => End::TokenTimeout,
                None => End::BindTimeout,
            });
        }
        if self.expires.is_some_and(|at| now >= at) {
            return Err(End::TokenExpired);
        }
        if self.pong_due.is_some_and(|due| now >= due) {
            return Err(End::PongTimeout);
        }
        if now >= self.next_ping {
            // A ping turn: give back what a past burst left in the queue.
            self.conn.trim_queue();
            let ws = &self.app.config.websocket;
            // Boxed: this rare write should not enlarge every idle
            // session's state.
            let ping = Box::pin(timeout(ws.write_timeout, self.socket.ping()));
            if !matches!(ping.await, Ok(Ok(()))) {
                return Err(End::WriteFailed);
            }
            self.pong_due = Some(after(now, ws.pong_timeout));
            self.next_ping = after(now, ws.ping_interval);
        }
        Ok(())
    }

    /// Counts and logs how the session ended, unbinds, and sends the close
    /// frame `end` calls for.
    async fn finish(self, end: End) {
        let Session {
            mut socket,
            conn,
            app,
            ..
        } = self;
        if !matches!(end, End::Peer) {
            telemetry::ws_disconnect(end.as_str());
        }
        tracing::debug!(
            conn = conn.id().0,
            reason = end.as_str(),
            "websocket closed"
        );
        // Unbind before the close handshake: a closing connection takes no pushes.
        drop(conn);
        if let Some((code, reason)) = end.close_frame(P::V2) {
            let write_timeout = app.config.websocket.write_timeout;
            // A slow consumer's socket is likely stuck: try briefly, then drop it.
            let limit = match end {
                End::Closed(CloseReason::SlowConsumer) => write_timeout.min(SLOW_CLOSE_LIMIT),
                _ => write_timeout,
            };
            // What the client may still send after the close frame and is
            // dropped unread: the rest of one message over the limit, and
            // then some.
            let max_discard = app
                .config
                .websocket
                .max_message_bytes
                .saturating_add(LINGER_DISCARD);
            // Boxed for the same reason: it runs once, at the end.
            Box::pin(socket.close(code, reason, limit, max_discard)).await;
        }
    }
}

/// Finishes a batch the socket did not take at once (`write_texts` kept the
/// rest), within `limit` (`--write-timeout`).
///
/// The common case — the socket takes everything at once — never gets here,
/// so it arms no timer. A close request (the queue overflowed while the
/// socket was stuck, or the uid was kicked) wins over the rest of the batch,
/// which the socket keeps: its close handshake finishes it before the close
/// frame.
pub(super) async fn finish_batch(
    socket: &mut Socket,
    conn: &Connection,
    limit: Duration,
) -> Result<(), End> {
    // Boxed: this wait (a timer, the socket's readiness, the close watch)
    // happens only when a socket is full, and unboxed it would be the
    // largest part of every idle session's state.
    Box::pin(async {
        tokio::select! {
            written = timeout(limit, socket.finish_writes()) => match written {
                Ok(Ok(())) => Ok(()),
                _ => Err(End::WriteFailed),
            },
            reason = conn.close_requested() => Err(End::Closed(reason)),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle connection holds one session future, so its size is idle
    /// memory per connection. tokio allocates a task cell 128-byte aligned:
    /// each 128 bytes more is paid by every connection, hence a test rather
    /// than only a benchmark. The rare, large waits (a full socket, a ping,
    /// the close handshake) are boxed to keep it here; a change that grows it
    /// past the budget should box its own rare wait likewise.
    #[tokio::test]
    async fn an_idle_session_fits_its_memory_budget() {
        use clap::Parser;
        const BUDGET: usize = 1024;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (server, _) = accepted.unwrap();
        let client_v2 = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client_v2, accepted) = tokio::join!(client_v2, listener.accept());
        let (server_v2, _) = accepted.unwrap();
        let app = crate::AppState::new(crate::Config::parse_from(["pushgate"])).unwrap();
        let socket = Socket::new(server, bytes::Bytes::new(), Default::default());
        let conn = app.map.open();
        let future = session::<super::super::protocol::V1>(socket, conn, None, app.clone());
        let size = std::mem::size_of_val(&future);
        assert!(
            size <= BUDGET,
            "session future is {size} bytes, budget {BUDGET}"
        );
        drop(future);
        let socket = Socket::new(server_v2, bytes::Bytes::new(), Default::default());
        let future = session::<super::super::v2::V2>(socket, app.map.open(), None, app.clone());
        let size_v2 = std::mem::size_of_val(&future);
        assert!(
            size_v2 <= BUDGET,
            "a v2 session future is {size_v2} bytes, budget {BUDGET}"
        );
        drop((future, client, client_v2));
    }
}
