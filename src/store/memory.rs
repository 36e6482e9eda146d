//! History in memory, for a single node: kept inside the routing table's
//! lock, so a push's offset and its place in every connection's queue are
//! decided together, and a resume's read and its bind are one step.
//!
//! Not yet filled in: the history issue's single-node part.

use std::time::Instant;

use super::{HistoryLimits, HistoryPage, HistoryQuery};
use crate::model::{Epoch, Payload, Position, Uid};

/// Every uid's stream on this node, bounded by [`HistoryLimits`].
#[derive(Debug)]
pub struct MemoryHistory {
    limits: HistoryLimits,
}

impl MemoryHistory {
    /// Empty history bounded by `limits`.
    pub fn new(limits: HistoryLimits) -> MemoryHistory {
        MemoryHistory { limits }
    }

    /// The bounds this history keeps.
    pub fn limits(&self) -> HistoryLimits {
        self.limits
    }

    /// Stores a push to `uid` at the stream's next offset and returns that
    /// position.
    pub fn append(&mut self, _uid: &Uid, _payload: &Payload, _now: Instant) -> Position {
        Position {
            offset: 0,
            epoch: Epoch(0),
        }
    }

    /// Reads `uid`'s stream (creating its empty stream, so its epoch holds
    /// from now on).
    pub fn read(&mut self, _uid: &Uid, _query: &HistoryQuery, _now: Instant) -> HistoryPage {
        HistoryPage {
            top: Position {
                offset: 0,
                epoch: Epoch(0),
            },
            messages: Vec::new(),
        }
    }

    /// Drops `uid`'s messages and starts a new epoch at offset 0.
    pub fn delete(&mut self, _uid: &Uid) -> Position {
        Position {
            offset: 0,
            epoch: Epoch::random(),
        }
    }
}
