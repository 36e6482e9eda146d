//! The message store: where history will live, beside the broker and behind
//! the [`ConnectionMap`](crate::ConnectionMap).
//!
//! Today pushgate keeps nothing: delivery is at most once, and a push to an
//! offline uid answers `fail`. The next issue adds per-uid history with
//! offsets and epochs, so a client that reconnects can ask for what it
//! missed. That store goes here: an implementation of [`MessageStore`] (in
//! memory, or in the broker's backend), one the map is built with, and the
//! map appends each routed push to it. Until then the map holds
//! [`NoHistory`], which stores nothing and costs nothing.

use crate::model::{Payload, Uid};

/// What the map will ask of a history store. A sketch, for the shape only:
/// the history issue settles offsets, epochs and retention.
pub trait MessageStore: Send + Sync + 'static {
    /// Records a push to `uid`. Never waits on the network (the push path
    /// must not), so a remote store buffers.
    fn append(&self, uid: &Uid, payload: &Payload);
}

/// No history: every push is forgotten once routed (today's behaviour).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHistory;

impl MessageStore for NoHistory {
    fn append(&self, _: &Uid, _: &Payload) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_history_takes_any_push_and_keeps_nothing() {
        let store = NoHistory;
        store.append(&Uid::new("u").unwrap(), &Payload::from("x"));
        assert_eq!(std::mem::size_of::<NoHistory>(), 0);
    }
}
