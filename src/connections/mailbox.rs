//! One connection's outbound queue, split into the two ends the map and the
//! connection task hold.
//!
//! The queue is bounded twice, by messages and by bytes, whichever is reached
//! first. A push never waits:
//! when a queue is full the connection is a slow consumer, it is told to close
//! through its close flag, and the pusher moves on. That keeps one stuck
//! browser from growing the gateway's memory or delaying anyone else.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::model::{ConnId, Message};

/// Why the gateway asks a connection to close, from outside its own task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// Its outbound queue overflowed: it reads slower than it is pushed to.
    SlowConsumer = 1,
    /// An operator disconnected its uid (`POST /disconnect`).
    Disconnected = 2,
    /// Its uid bound more than `--max-conns-per-uid` connections; the
    /// oldest goes.
    Replaced = 3,
}

impl CloseReason {
    fn from_u8(v: u8) -> Option<CloseReason> {
        match v {
            1 => Some(CloseReason::SlowConsumer),
            2 => Some(CloseReason::Disconnected),
            3 => Some(CloseReason::Replaced),
            _ => None,
        }
    }

    /// A metrics label. `Disconnected` keeps the label `kicked` it was
    /// exported under before the rename, so dashboards and alerts hold.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Disconnected => "kicked",
            CloseReason::Replaced => "too_many_for_uid",
        }
    }
}

/// State both ends share: one allocation per connection. The deque is
/// empty, and allocates nothing, until the first push; an idle connection
/// therefore costs this struct and no queue storage.
#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    close: AtomicU8,
    wake: Notify,
    max_len: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Message>,
    bytes: usize,
}

/// What a queue keeps of its capacity once its connection has gone quiet
/// ([`Inbox::trim`]), so one burst does not pin memory on an otherwise idle
/// connection.
const KEEP_CAPACITY: usize = 16;

impl Shared {
    #[inline]
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Every critical section is a push or a pop: a panic cannot leave the
        // queue inconsistent, so a poisoned lock is taken over.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the connection to close; the first reason wins.
    fn close(&self, reason: CloseReason) {
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

    // `#[inline]` on this and the other small calls of the delivery path:
    // without it they inline only where they happen to share a codegen unit
    // with their caller, and a module split elsewhere cost broadcasts 12 %
    // per delivery (BENCHMARKS.md, "The routing-core redesign").
    #[inline]
    fn close_reason(&self) -> Option<CloseReason> {
        CloseReason::from_u8(self.close.load(Ordering::Acquire))
    }

    #[inline]
    fn pop(&self) -> Option<Message> {
        self.lock().pop()
    }
}

impl Queue {
    /// The oldest message, with its bytes taken off the budget. Capacity is
    /// kept while the connection is busy: a queue emptied and refilled by
    /// each burst (broadcasts) would otherwise grow again from nothing,
    /// reallocating, every time — on the pusher's thread.
    #[inline]
    fn pop(&mut self) -> Option<Message> {
        let p = self.items.pop_front()?;
        self.bytes -= p.payload.len();
        Some(p)
    }
}

/// The map's end: where pushes are enqueued.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    pub(crate) id: ConnId,
    shared: Arc<Shared>,
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
        self.shared.close_reason().is_some()
    }

    /// Asks this connection to close.
    pub(crate) fn close(&self, reason: CloseReason) {
        self.shared.close(reason);
    }

    /// Loads this connection's queue state into the cache ahead of
    /// [`Outbox::offer`]: plain loads of the two cache lines `offer` reads
    /// first, so a caller that warms several connections before offering to
    /// them waits for their cache misses once rather than once each.
    #[inline]
    pub(crate) fn warm(&self) {
        std::hint::black_box(self.shared.close.load(Ordering::Relaxed));
        std::hint::black_box(self.shared.queue.is_poisoned());
    }

    /// Enqueues a copy without waiting (a broadcast, or a uid with several
    /// connections: the payload's bytes are shared, not copied). A full
    /// queue marks the connection a slow consumer.
    pub(crate) fn offer(&self, message: &Message) -> Offer {
        self.offer_with(message.payload.len(), || message.clone())
    }

    /// [`Outbox::offer`] of a message this connection alone receives (a
    /// uid's only connection, the common case): moved in, so the push path
    /// pays no reference-count round trip on the payload for a copy it
    /// would drop at once.
    pub(crate) fn offer_owned(&self, message: Message) -> Offer {
        self.offer_with(message.payload.len(), || message)
    }

    fn offer_with(&self, len: usize, message: impl FnOnce() -> Message) -> Offer {
        let shared = &self.shared;
        if shared.close_reason().is_some() {
            return Offer::Closed;
        }
        {
            let mut q = shared.lock();
            // A single message larger than the byte budget still goes to an
            // idle connection: refusing it forever would make that uid
            // unreachable.
            let over_bytes = q.bytes > 0 && q.bytes + len > shared.max_bytes;
            if q.items.len() < shared.max_len && !over_bytes {
                let was_empty = q.items.is_empty();
                q.items.push_back(message());
                q.bytes += len;
                drop(q);
                // A non-empty queue was already signalled, and its task pops
                // until the queue is empty before it waits again: only the
                // first message needs the wake-up. Under a burst (broadcasts
                // queueing behind each other) this skips an atomic on a line
                // the connection's task is using at the same time.
                if was_empty {
                    shared.wake.notify_one();
                }
                return Offer::Queued;
            }
        }
        shared.close(CloseReason::SlowConsumer);
        Offer::Dropped
    }
}

/// What a connection task gets from its queue.
#[derive(Debug)]
pub enum Delivery {
    /// A message to write to the client.
    Message(Message),
    /// The gateway wants this connection closed.
    Close(CloseReason),
}

/// The connection task's end of the queue.
#[derive(Debug)]
pub(crate) struct Inbox {
    shared: Arc<Shared>,
}

impl Inbox {
    /// Waits for the next message or close request. Cancel-safe: state is
    /// checked before every wait, and a wake-up that arrives between the
    /// check and the wait is kept as a permit by `Notify`.
    pub(crate) async fn next(&mut self) -> Delivery {
        loop {
            if let Some(reason) = self.shared.close_reason() {
                return Delivery::Close(reason);
            }
            if let Some(p) = self.shared.pop() {
                return Delivery::Message(p);
            }
            self.shared.wake.notified().await;
        }
    }

    /// Resolves once the gateway asks this connection to close, so a write
    /// stuck on a slow client can be abandoned.
    pub(crate) async fn close_requested(&self) -> CloseReason {
        loop {
            if let Some(reason) = self.shared.close_reason() {
                return reason;
            }
            self.shared.wake.notified().await;
        }
    }

    /// Gives back the capacity a burst left in an empty queue, above
    /// [`KEEP_CAPACITY`]. Called when the connection has been quiet for a
    /// while (its ping turn).
    pub(crate) fn trim(&self) {
        let mut q = self.shared.lock();
        if q.items.is_empty() && q.items.capacity() > KEEP_CAPACITY {
            q.items = VecDeque::new();
        }
    }

    /// Takes up to `max` already queued messages without waiting, under one
    /// lock, for coalescing them into one socket write. Taking them one lock
    /// at a time made the connection's task and a broadcaster filling its
    /// queue trade the queue's cache line back and forth per message.
    pub(crate) fn take_queued(&self, max: usize, mut take: impl FnMut(Message)) {
        if self.shared.close_reason().is_some() {
            return;
        }
        let mut q = self.shared.lock();
        for _ in 0..max {
            let Some(p) = q.pop() else { break };
            take(p);
        }
    }
}

/// Creates both ends of a new connection's queue.
pub(crate) fn channel(id: ConnId, max_len: usize, max_bytes: usize) -> (Outbox, Inbox) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue::default()),
        close: AtomicU8::new(0),
        wake: Notify::new(),
        max_len,
        max_bytes,
    });
    (
        Outbox {
            id,
            shared: shared.clone(),
        },
        Inbox { shared },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> Message {
        Message::push(crate::model::Payload::from(s))
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
