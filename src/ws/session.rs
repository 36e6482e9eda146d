//! One WebSocket connection's life: bind, deliver, heartbeat, close.
//!
//! Each connection runs one `select!` over its outbound queue, inbound frames,
//! one timer (bind deadline, next ping or pong deadline, token expiry, paced
//! drain) and the shutdown signal. Queued messages are written together, in
//! one system call (see `socket.rs`).

use std::time::{Duration, SystemTime};

use tokio::time::{Instant, timeout};
use tracing::{Instrument, Span};
use tungstenite::Message;

use super::deadline::{after, next_wake};
use super::end::{End, classify_read_error, uid_error_reason};
use super::socket::Socket;
use crate::App;
use crate::auth::{Identity, TokenError};
use crate::connections::{CloseReason, Connection, Delivery};
use crate::model::Uid;
use crate::telemetry;

/// How long a slow consumer gets to take its close frame.
const SLOW_CLOSE_LIMIT: Duration = Duration::from_secs(1);

/// Binds `conn` to a verified identity and names its uid on `span`; returns
/// when the token expires.
fn bind_identity(conn: &mut Connection, id: Identity, span: &Span) -> Instant {
    tracing::debug!(conn = conn.id().0, uid = %id.uid, "bound (token)");
    span.record("uid", tracing::field::display(&id.uid));
    // A fresh connection's first bind cannot fail.
    let _ = conn.bind(id.uid);
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
pub(super) fn session(
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
    // The query-string token is applied here, before the future exists: a
    // captured `preauth` would stay in every session's state for its life.
    let mut expires: Option<Instant> = None;
    let mut early_end = None;
    match preauth {
        Some(Ok(id)) => expires = Some(bind_identity(&mut conn, id, &span)),
        Some(Err(e)) => early_end = Some(End::Token(e)),
        None => {}
    }
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
struct Session {
    socket: Socket,
    conn: Connection,
    app: App,
    /// When an unbound connection is closed (`--bind-timeout`).
    bind_deadline: Instant,
    /// When the next ping is due.
    next_ping: Instant,
    /// When the client must have answered the last ping (any frame counts).
    pong_due: Option<Instant>,
    /// Set once the drain begins: when this session's paced close is due.
    close_at: Option<Instant>,
    /// Secure mode: when the token expires.
    expires: Option<Instant>,
}

impl Session {
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
                    Ok(()) => self.on_readable(bound),
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
                let limit = self.app.config.websocket.write_timeout;
                match write_batch(&mut self.socket, &mut self.conn, first.payload, limit).await {
                    Ok(()) => Ok(()),
                    Err(WriteError::Closing(reason)) => Err(End::Closed(reason)),
                    Err(WriteError::Failed) => Err(End::WriteFailed),
                }
            }
            Delivery::Close(reason) => Err(End::Closed(reason)),
        }
    }

    /// The socket is readable: take a frame if a whole one has arrived.
    /// Any frame answers a pending ping; the first text frame binds.
    fn on_readable(&mut self, bound: bool) -> Result<(), End> {
        let message = match self.socket.try_read() {
            Ok(Some(message)) => message,
            // Readiness without a whole frame yet.
            Ok(None) => return Ok(()),
            Err(e) => return Err(classify_read_error(e)),
        };
        self.pong_due = None;
        match message {
            Message::Close(_) => {
                // tungstenite has queued the answering close frame.
                self.socket.flush_now();
                Err(End::Peer)
            }
            Message::Text(text) if !bound => self.on_bind(text.as_str()),
            Message::Binary(_) if !bound => Err(End::BinaryUid),
            _ => Ok(()),
        }
    }

    /// The first text frame: the uid itself in legacy mode (trusted as the
    /// seed trusted it), a token in secure mode.
    fn on_bind(&mut self, text: &str) -> Result<(), End> {
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
        if let Some((code, reason)) = end.close_frame() {
            let write_timeout = app.config.websocket.write_timeout;
            // A slow consumer's socket is likely stuck: try briefly, then drop it.
            let limit = match end {
                End::Closed(CloseReason::SlowConsumer) => write_timeout.min(SLOW_CLOSE_LIMIT),
                _ => write_timeout,
            };
            // Boxed for the same reason: it runs once, at the end.
            Box::pin(socket.close(code, reason, limit)).await;
        }
    }
}

/// Why a batch write did not complete.
enum WriteError {
    /// The gateway asked the connection to close meanwhile (its queue
    /// overflowed while the socket was stuck, or it was kicked).
    Closing(CloseReason),
    /// The write failed or took longer than `--write-timeout`.
    Failed,
}

/// Writes `first` and whatever else is already queued, in one system call.
///
/// The common case — the socket takes everything at once — arms no timer;
/// only a write that has to wait gets the `--write-timeout` deadline and the
/// watch for a close request.
async fn write_batch(
    socket: &mut Socket,
    conn: &mut Connection,
    first: crate::model::Payload,
    limit: Duration,
) -> Result<(), WriteError> {
    // Further messages are taken from the queue as the batch is built: what
    // was queued when the write began goes in this write.
    match socket.write_texts(first, |max, take| {
        conn.take_queued(max, |m| take(m.payload))
    }) {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        Err(_) => return Err(WriteError::Failed),
    }
    // A close request wins over the rest of the batch, which the socket
    // keeps: its close handshake finishes it before the close frame.
    // Boxed: this wait (a timer, the socket's readiness, the close watch)
    // happens only when a socket is full, and unboxed it would be the
    // largest part of every idle session's state.
    Box::pin(async {
        tokio::select! {
            written = timeout(limit, socket.finish_writes()) => match written {
                Ok(Ok(())) => Ok(()),
                _ => Err(WriteError::Failed),
            },
            reason = conn.close_requested() => Err(WriteError::Closing(reason)),
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
        let app = crate::AppState::new(crate::Config::parse_from(["pushgate"])).unwrap();
        let socket = Socket::new(server, bytes::Bytes::new(), Default::default());
        let conn = app.map.open();
        let future = session(socket, conn, None, app.clone());
        let size = std::mem::size_of_val(&future);
        assert!(
            size <= BUDGET,
            "session future is {size} bytes, budget {BUDGET}"
        );
        drop((future, client));
    }
}
