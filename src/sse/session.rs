//! One stream's life after its opening: deliver, heartbeat, close.
//!
//! The session is a task of its own that hands finished chunks of events to
//! the response body through a channel of one chunk ([`EventBody`],
//! `handoff.rs`). The connection's writer (hyper, or the accept loop's own
//! writer for a connection that opened with the stream) takes a chunk
//! whenever it has written the last one, so a `send` that waits means the
//! client stopped reading: that wait has the `--write-timeout` deadline,
//! and a close request of the map (the queue overflowed, a kick) wins over
//! it. A writer with a deadline of its own may give up first; it says so on
//! the [`ConnectionAbort`] before it drops the body, and the end is counted
//! as a failed write all the same. One `select!` serves the drain, the
//! outbound queue, the client leaving and one timer (heartbeat, token
//! expiry, paced close).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::body::{Body, Frame};
use tokio::time::{Instant, timeout};

use super::end::End;
use super::event;
use super::handoff::{self, TrySendError};
use crate::App;
use crate::connections::{Connection, Delivery};
use crate::model::{Held, Message};
use crate::net::abort::ConnectionAbort;
use crate::telemetry;

/// Queued messages written in one chunk at most.
const BATCH: usize = 64;

/// The response body: the chunks the session hands over, until it drops
/// its end of the channel.
pub(super) struct EventBody(pub(super) handoff::Receiver);

impl Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// What a session holds between two turns of its loop.
pub(super) struct Session {
    pub(super) conn: Connection,
    pub(super) tx: handoff::Sender,
    pub(super) abort: ConnectionAbort,
    pub(super) app: App,
    /// When the next heartbeat is due.
    pub(super) next_ping: Instant,
    /// Set once the drain begins: when this stream's paced close is due.
    pub(super) close_at: Option<Instant>,
    /// Secure mode: when the token expires.
    pub(super) expires: Option<Instant>,
    /// What the client holds: the opening's top (`Bound::replayed_up_to`),
    /// then each live message's position; a gap ends the stream (4006).
    pub(super) held: Held,
}

/// `now + wait`, or a deadline that never comes in practice when the sum
/// overflows the clock (`wait` may come from a peer's token).
pub(super) fn after(now: Instant, wait: Duration) -> Instant {
    const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);
    now.checked_add(wait)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

/// When a token expiring at `at` (wall clock) expires on the session's clock.
pub(super) fn expiry(at: SystemTime) -> Instant {
    after(
        Instant::now(),
        at.duration_since(SystemTime::now()).unwrap_or_default(),
    )
}

/// The session's future. A function returning an `async move` block
/// rather than an `async fn`: an `async fn` would keep its argument twice
/// in its state, which every idle stream holds.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would store its argument twice in every idle stream's state"
)]
pub(super) fn session(mut session: Session) -> impl Future<Output = ()> {
    async move {
        let end = session.run().await;
        // Boxed: it runs once, at the end, and unboxed it would be part of
        // every idle session's state.
        Box::pin(session.finish(end)).await;
    }
}

impl Session {
    async fn run(&mut self) -> End {
        // One timer for the session's life, moved only when its deadline
        // changes.
        let timer = tokio::time::sleep_until(self.next_ping);
        tokio::pin!(timer);
        loop {
            let wake = self.next_wake();
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            let step = tokio::select! {
                biased;
                _ = self.app.shutdown.draining(), if self.close_at.is_none() => {
                    // Keep serving until this stream's slot comes up.
                    self.close_at = Some(self.app.shutdown.close_slot());
                    Ok(())
                }
                delivery = self.conn.next() => self.on_delivery(delivery).await,
                _ = self.tx.closed() => Err(self.body_dropped()),
                _ = &mut timer => self.on_timer().await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let mut wake = self.next_ping;
        for at in [self.expires, self.close_at].into_iter().flatten() {
            wake = wake.min(at);
        }
        wake
    }

    /// Messages are queued: one chunk of events for them and whatever else
    /// waits, duplicates of the replay left out.
    async fn on_delivery(&mut self, delivery: Delivery) -> Result<(), End> {
        let first = match delivery {
            Delivery::Message(first) => first,
            Delivery::Close(reason) => return Err(End::Closed(reason)),
        };
        let mut out = String::new();
        let held = &mut self.held;
        encode(&mut out, held, &first);
        self.conn.take_queued(BATCH, |m| encode(&mut out, held, &m));
        if !out.is_empty() {
            self.send(Bytes::from(out)).await?;
        }
        if self.held.missed() {
            return Err(End::Missed);
        }
        Ok(())
    }

    /// The timer fired: the paced close, the token's expiry, or a heartbeat.
    async fn on_timer(&mut self) -> Result<(), End> {
        let now = Instant::now();
        if self.close_at.is_some_and(|at| now >= at) {
            return Err(End::Shutdown);
        }
        if self.expires.is_some_and(|at| now >= at) {
            return Err(End::TokenExpired);
        }
        if now >= self.next_ping {
            // A quiet turn: give back what a past burst left in the queue.
            self.conn.trim_queue();
            self.send(Bytes::from_static(event::PING)).await?;
            self.next_ping = after(now, self.app.config.websocket.ping_interval);
        }
        Ok(())
    }

    /// Hands `chunk` to the body; waits only when the body is full, and
    /// then at most `--write-timeout`, or until the map asks to close.
    async fn send(&mut self, chunk: Bytes) -> Result<(), End> {
        let chunk = match self.tx.try_send(chunk) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Closed) => return Err(self.body_dropped()),
            Err(TrySendError::Full(chunk)) => chunk,
        };
        let limit = self.app.config.websocket.write_timeout;
        let this = &*self;
        // Boxed: this wait happens only while a client is not reading, and
        // unboxed it would be the largest part of every idle session.
        Box::pin(async move {
            tokio::select! {
                sent = timeout(limit, this.tx.send(chunk)) => match sent {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => Err(this.body_dropped()),
                    Err(_) => Err(End::WriteFailed),
                },
                reason = this.conn.close_requested() => Err(End::Closed(reason)),
            }
        })
        .await
    }

    /// Why the body was dropped: the connection's writer gave up on a stuck
    /// socket, or else the client went away.
    fn body_dropped(&self) -> End {
        if self.abort.write_failed() {
            End::WriteFailed
        } else {
            End::Peer
        }
    }

    /// Counts how the stream ended, unbinds, and sends the close event
    /// `end` calls for. The close event waits behind what the client has
    /// not read yet: if it cannot be handed over within `--write-timeout`,
    /// or a write already failed, the HTTP connection is dropped, since
    /// hyper would otherwise hold a stuck socket for ever (the accept
    /// loop's own writer has a deadline of its own, see `http::serve`).
    async fn finish(self, end: End) {
        let Session {
            conn,
            tx,
            abort,
            app,
            ..
        } = self;
        if let Some(label) = end.label() {
            telemetry::sse_disconnect(label);
        }
        tracing::debug!(conn = conn.id().0, ?end, "sse stream ended");
        // Unbind first: a closing stream takes no pushes.
        drop(conn);
        let Some((code, reason)) = end.close() else {
            if end == End::WriteFailed {
                abort.abort();
            }
            return;
        };
        // A draining client reconnects after 0.5 to 2.5 s: EventSource's
        // own delay, spread so a drain's closes stay spread.
        let retry =
            (end == End::Shutdown).then(|| Duration::from_millis(fastrand::u64(500..=2500)));
        let close = event::close(code, reason, retry);
        let limit = app.config.websocket.write_timeout;
        let handed = match tx.try_send(close) {
            Ok(()) => true,
            Err(TrySendError::Closed) => false,
            Err(TrySendError::Full(close)) => {
                matches!(timeout(limit, tx.send(close)).await, Ok(Ok(())))
            }
        };
        if !handed {
            abort.abort();
        }
        // Dropping `tx` ends the body, and with it the response.
    }
}

/// Appends `message`'s event to `out` if `held` admits it.
fn encode(out: &mut String, held: &mut Held, message: &Message) {
    if held.admit(message) {
        event::push_message(out, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle stream holds one session future, its channel and the
    /// body: its size is most of an idle stream's own memory (the
    /// connection's writer comes on top: a few hundred bytes for a
    /// connection that opened with the stream, hyper's buffers otherwise).
    #[tokio::test]
    async fn an_idle_stream_fits_its_memory_budget() {
        use clap::Parser;
        const FUTURE_BUDGET: usize = 1024;
        let app = crate::AppState::new(crate::Config::parse_from(["pushgate"])).unwrap();
        let (tx, rx) = handoff::channel();
        let body = EventBody(rx);
        let future = session(Session {
            conn: app.map.open(),
            tx,
            abort: ConnectionAbort::new(),
            next_ping: Instant::now(),
            close_at: None,
            expires: None,
            held: Held::default(),
            app: app.clone(),
        });
        let size = std::mem::size_of_val(&future);
        assert!(
            size <= FUTURE_BUDGET,
            "session future is {size} bytes, budget {FUTURE_BUDGET}"
        );
        assert!(std::mem::size_of_val(&body) <= 16);
        drop((future, body));
    }

    #[test]
    fn a_live_message_the_replay_covered_is_left_out() {
        use crate::model::{Epoch, Payload, Position, Stream};
        let top = Position {
            offset: 5,
            epoch: Epoch(1),
        };
        let at = |offset, epoch| Message {
            payload: Payload::from("x"),
            stream: Stream::Uid(Some(Position {
                offset,
                epoch: Epoch(epoch),
            })),
        };
        let mut out = String::new();
        let mut held = Held::new(Some(top));
        encode(&mut out, &mut held, &at(5, 1));
        assert!(out.is_empty());
        encode(&mut out, &mut held, &at(6, 1));
        encode(&mut out, &mut held, &at(1, 2));
        encode(&mut out, &mut held, &Message::broadcast(Payload::from("b")));
        assert_eq!(
            held,
            Held::new(Some(Position {
                offset: 1,
                epoch: Epoch(2)
            }))
        );
        assert_eq!(out.matches("\n\n").count(), 3, "{out}");
        // A gap: that message and every later one are left out, and the
        // session ends (4006) so the client resumes.
        encode(&mut out, &mut held, &at(3, 2));
        encode(&mut out, &mut held, &at(2, 2));
        assert!(held.missed());
        assert_eq!(out.matches("\n\n").count(), 3, "{out}");
    }
}
