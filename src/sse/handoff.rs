//! The hand-over of event chunks from a stream's session to its response
//! body: a channel of one chunk.
//!
//! Why not tokio's `mpsc::channel(1)`: its allocation is laid out for
//! throughput (a block of 32 slots, cache-padded halves), about 1.5 KiB
//! that every idle stream would keep for its whole life. This is one small
//! allocation: a slot, the wakers of whoever waits and whether each side
//! is still there, under one lock that neither side holds for more than a
//! few moves.

use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

/// A new channel: the session's end and the body's end.
pub(super) fn channel() -> (Sender, Receiver) {
    let shared = Arc::new(Shared::default());
    (Sender(shared.clone()), Receiver(shared))
}

/// The session's end. Dropping it ends the body once its last chunk is
/// taken.
#[derive(Debug)]
pub(super) struct Sender(Arc<Shared>);

/// The body's end. Dropping it tells the session the client is gone.
#[derive(Debug)]
pub(super) struct Receiver(Arc<Shared>);

/// Why [`Sender::try_send`] did not hand the chunk over.
#[derive(Debug)]
pub(super) enum TrySendError {
    /// The slot holds a chunk not taken yet: this one is given back.
    Full(Bytes),
    /// The body is gone.
    Closed,
}

#[derive(Debug, Default)]
struct Shared(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    chunk: Option<Bytes>,
    /// The session waiting for room in the slot ([`Sender::send`]).
    room: Option<Waker>,
    /// The session waiting for the body to go ([`Sender::closed`]): apart
    /// from `room`, so that an idle session is not woken each time the
    /// body takes a chunk.
    closed: Option<Waker>,
    /// The body waiting for a chunk or for the session to go.
    receiver: Option<Waker>,
    sender_gone: bool,
    receiver_gone: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held; a poisoned state is whole.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps `cx`'s waker in `slot`, cloning it only when it changed.
fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

impl Sender {
    /// Puts `chunk` in the slot if it is empty and the body is there.
    pub(super) fn try_send(&self, chunk: Bytes) -> Result<(), TrySendError> {
        let mut state = self.0.lock();
        if state.receiver_gone {
            return Err(TrySendError::Closed);
        }
        if state.chunk.is_some() {
            return Err(TrySendError::Full(chunk));
        }
        state.chunk = Some(chunk);
        let waker = state.receiver.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Waits until the slot is empty and puts `chunk` in it; `Err` (with
    /// the chunk) once the body is gone. Cancel-safe: a cancelled send put
    /// nothing.
    pub(super) async fn send(&self, chunk: Bytes) -> Result<(), Bytes> {
        let mut chunk = Some(chunk);
        poll_fn(|cx| {
            let mut state = self.0.lock();
            let Some(c) = chunk.take() else {
                // Polled again after it finished: nothing left to do.
                return Poll::Ready(Ok(()));
            };
            if state.receiver_gone {
                return Poll::Ready(Err(c));
            }
            if state.chunk.is_some() {
                chunk = Some(c);
                register(&mut state.room, cx);
                return Poll::Pending;
            }
            state.chunk = Some(c);
            let waker = state.receiver.take();
            drop(state);
            if let Some(waker) = waker {
                waker.wake();
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Resolves once the body is gone. Cancel-safe.
    pub(super) async fn closed(&self) {
        poll_fn(|cx| {
            let mut state = self.0.lock();
            if state.receiver_gone {
                return Poll::Ready(());
            }
            register(&mut state.closed, cx);
            Poll::Pending
        })
        .await
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.sender_gone = true;
        let waker = state.receiver.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Receiver {
    /// The next chunk; `None` once the session is gone and the slot is
    /// empty.
    pub(super) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut state = self.0.lock();
        if let Some(chunk) = state.chunk.take() {
            let waker = state.room.take();
            drop(state);
            if let Some(waker) = waker {
                waker.wake();
            }
            return Poll::Ready(Some(chunk));
        }
        if state.sender_gone {
            return Poll::Ready(None);
        }
        register(&mut state.receiver, cx);
        Poll::Pending
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_gone = true;
        // What was never taken is never sent: free it now, not when the
        // session lets go.
        let chunk = state.chunk.take();
        let wakers = [state.room.take(), state.closed.take()];
        drop(state);
        drop(chunk);
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn recv(rx: &mut Receiver) -> Option<Bytes> {
        poll_fn(|cx| rx.poll_recv(cx)).await
    }

    #[tokio::test]
    async fn one_chunk_waits_in_the_slot_and_a_second_waits_for_room() {
        let (tx, mut rx) = channel();
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        assert!(matches!(
            tx.try_send(Bytes::from_static(b"b")),
            Err(TrySendError::Full(b)) if b == "b"
        ));
        {
            let send = tx.send(Bytes::from_static(b"b"));
            tokio::pin!(send);
            assert!(futures_util::poll!(send.as_mut()).is_pending());
            assert_eq!(recv(&mut rx).await.unwrap(), "a");
            send.await.unwrap();
        }
        assert_eq!(recv(&mut rx).await.unwrap(), "b");
        let next = tokio::time::timeout(Duration::ZERO, recv(&mut rx)).await;
        assert!(next.is_err(), "an empty slot waits");
        drop(tx);
        assert_eq!(recv(&mut rx).await, None);
    }

    #[tokio::test]
    async fn the_last_chunk_is_still_taken_after_the_sender_goes() {
        let (tx, mut rx) = channel();
        tx.try_send(Bytes::from_static(b"close")).unwrap();
        drop(tx);
        assert_eq!(recv(&mut rx).await.unwrap(), "close");
        assert_eq!(recv(&mut rx).await, None);
    }

    /// Counts its wakes.
    struct Counter(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_session_waiting_only_for_the_close_is_not_woken_by_each_chunk_taken() {
        let counter = Arc::new(Counter(0.into()));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let wakes = || counter.0.load(std::sync::atomic::Ordering::SeqCst);
        let (tx, mut rx) = channel();
        let closed = tx.closed();
        let mut closed = std::pin::pin!(closed);
        assert!(closed.as_mut().poll(&mut cx).is_pending());
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        let noop = Waker::noop();
        let taken = rx.poll_recv(&mut Context::from_waker(noop));
        assert!(matches!(taken, Poll::Ready(Some(_))));
        assert_eq!(wakes(), 0);
        drop(rx);
        assert_eq!(wakes(), 1);
        assert!(closed.as_mut().poll(&mut cx).is_ready());
    }

    #[tokio::test]
    async fn a_gone_receiver_wakes_the_sender_and_refuses_chunks() {
        let (tx, rx) = channel();
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        let waiting = async {
            let blocked = tx.send(Bytes::from_static(b"b"));
            tokio::join!(blocked, tx.closed()).0
        };
        let dropper = async move { drop(rx) };
        let (sent, ()) = tokio::join!(waiting, dropper);
        assert_eq!(sent.unwrap_err(), "b");
        assert!(matches!(
            tx.try_send(Bytes::from_static(b"c")),
            Err(TrySendError::Closed)
        ));
    }
}
