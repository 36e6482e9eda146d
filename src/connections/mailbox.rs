//! One connection's outbound queue, split into the two ends the map and the
//! connection task hold.
//!
//! The queue is bounded twice, by messages (the channel's capacity) and by
//! bytes (a shared counter), whichever is reached first. A push never waits:
//! when a queue is full the connection is a slow consumer, it is told to close
//! through its [`Control`], and the pusher moves on. That keeps one stuck
//! browser from growing the gateway's memory or delaying anyone else.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use tokio::sync::{Notify, mpsc};

use crate::model::{ConnId, Payload};

/// Why the gateway asks a connection to close, from outside its own task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// Its outbound queue overflowed: it reads slower than it is pushed to.
    SlowConsumer = 1,
    /// An operator disconnected its uid (`POST /disconnect`).
    Kicked = 2,
    /// Its uid bound more than `--max-conns-per-uid` connections; the
    /// oldest goes.
    Replaced = 3,
}

impl CloseReason {
    fn from_u8(v: u8) -> Option<CloseReason> {
        match v {
            1 => Some(CloseReason::SlowConsumer),
            2 => Some(CloseReason::Kicked),
            3 => Some(CloseReason::Replaced),
            _ => None,
        }
    }

    /// A metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Kicked => "kicked",
            CloseReason::Replaced => "too_many_for_uid",
        }
    }
}

/// State both ends share.
#[derive(Debug, Default)]
pub(crate) struct Control {
    queued_bytes: AtomicUsize,
    close: AtomicU8,
    wake: Notify,
}

impl Control {
    /// Asks the connection to close; the first reason wins.
    pub(crate) fn close(&self, reason: CloseReason) {
        if self
            .close
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // notify_one stores a permit when nobody waits yet, so the
            // request is not lost if the task is busy writing.
            self.wake.notify_one();
        }
    }

    fn close_reason(&self) -> Option<CloseReason> {
        CloseReason::from_u8(self.close.load(Ordering::Acquire))
    }
}

/// The map's end: where pushes are enqueued.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    pub(crate) id: ConnId,
    tx: mpsc::Sender<Payload>,
    ctl: Arc<Control>,
    max_bytes: usize,
}

/// Result of offering a message to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// In the queue.
    Queued,
    /// The queue was full; the connection has been told to close.
    Dropped,
    /// The connection is already closing; nothing was queued.
    Closed,
}

impl Outbox {
    /// Whether this connection has been asked to close (it takes no more).
    pub(crate) fn is_closing(&self) -> bool {
        self.ctl.close_reason().is_some()
    }

    /// Asks this connection to close.
    pub(crate) fn close(&self, reason: CloseReason) {
        self.ctl.close(reason);
    }

    /// Enqueues without waiting. A full queue marks the connection a slow
    /// consumer.
    pub(crate) fn offer(&self, payload: &Payload) -> Offer {
        if self.ctl.close_reason().is_some() {
            return Offer::Closed;
        }
        let len = payload.len();
        let before = self.ctl.queued_bytes.fetch_add(len, Ordering::AcqRel);
        // A single message larger than the byte budget still goes to an idle
        // connection: refusing it forever would make that uid unreachable.
        if before > 0 && before + len > self.max_bytes {
            self.ctl.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.ctl.close(CloseReason::SlowConsumer);
            return Offer::Dropped;
        }
        match self.tx.try_send(payload.clone()) {
            Ok(()) => Offer::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.ctl.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                self.ctl.close(CloseReason::SlowConsumer);
                Offer::Dropped
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.ctl.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                Offer::Closed
            }
        }
    }
}

/// What a connection task gets from its queue.
#[derive(Debug)]
pub enum Delivery {
    /// A message to write to the client.
    Message(Payload),
    /// The gateway wants this connection closed.
    Close(CloseReason),
}

/// The connection task's end of the queue.
#[derive(Debug)]
pub(crate) struct Inbox {
    rx: mpsc::Receiver<Payload>,
    ctl: Arc<Control>,
}

impl Inbox {
    /// Waits for the next message or close request. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Delivery {
        loop {
            if let Some(reason) = self.ctl.close_reason() {
                return Delivery::Close(reason);
            }
            tokio::select! {
                biased;
                _ = self.ctl.wake.notified() => continue,
                msg = self.rx.recv() => match msg {
                    Some(p) => return Delivery::Message(self.took(p)),
                    // Every Outbox is gone: only happens while the map drops
                    // this connection, which then closes it anyway.
                    None => return Delivery::Close(CloseReason::SlowConsumer),
                },
            }
        }
    }

    /// Resolves once the gateway asks this connection to close, so a write
    /// stuck on a slow client can be abandoned.
    pub(crate) async fn close_requested(&self) -> CloseReason {
        loop {
            if let Some(reason) = self.ctl.close_reason() {
                return reason;
            }
            self.ctl.wake.notified().await;
        }
    }

    /// Takes an already queued message without waiting, for coalescing several
    /// into one socket write.
    pub(crate) fn try_next(&mut self) -> Option<Payload> {
        if self.ctl.close_reason().is_some() {
            return None;
        }
        self.rx.try_recv().ok().map(|p| self.took(p))
    }

    fn took(&self, p: Payload) -> Payload {
        self.ctl.queued_bytes.fetch_sub(p.len(), Ordering::AcqRel);
        p
    }
}

/// Creates both ends of a new connection's queue.
pub(crate) fn channel(id: ConnId, max_len: usize, max_bytes: usize) -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::channel(max_len);
    let ctl = Arc::new(Control::default());
    (
        Outbox {
            id,
            tx,
            ctl: ctl.clone(),
            max_bytes,
        },
        Inbox { rx, ctl },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> Payload {
        Payload::from(s)
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_asks_to_close() {
        let (out, mut inbox) = channel(ConnId(1), 2, 1024);
        assert_eq!(out.offer(&msg("a")), Offer::Queued);
        assert_eq!(out.offer(&msg("b")), Offer::Queued);
        assert_eq!(out.offer(&msg("c")), Offer::Dropped);
        assert_eq!(out.offer(&msg("d")), Offer::Closed);
        assert!(matches!(
            inbox.next().await,
            Delivery::Close(CloseReason::SlowConsumer)
        ));
    }

    #[tokio::test]
    async fn the_byte_budget_counts_queued_bytes() {
        let (out, mut inbox) = channel(ConnId(1), 100, 10);
        assert_eq!(
            out.offer(&msg("12345678901234")),
            Offer::Queued,
            "idle takes one big message"
        );
        assert!(matches!(inbox.next().await, Delivery::Message(_)));
        assert_eq!(out.offer(&msg("123456")), Offer::Queued);
        assert_eq!(out.offer(&msg("1234")), Offer::Queued);
        assert_eq!(out.offer(&msg("1")), Offer::Dropped);
    }
}
