//! The message store: per-uid history, beside the broker and behind the
//! [`ConnectionMap`](crate::ConnectionMap).
//!
//! With `--history`, every push to a uid is kept in that uid's stream at the
//! next offset ([`crate::model::Position`]), bounded by `--history-size`
//! messages per uid and `--history-ttl` of age (and, on a single node, by
//! `--history-memory` in all). A single node keeps it in memory
//! ([`memory`]); in cluster mode it is kept in Redis by the broker, so any
//! node can replay it and it survives node restarts. Without the flag
//! nothing is stored and nothing is paid.
//!
//! This module holds what the map, the broker and the front ends share:
//! the query and page shapes, and the one rule deciding whether a resume
//! can be served ([`recovery`]).

pub mod memory;

use std::time::{Duration, SystemTime};

use crate::model::{Payload, Position};

/// Bounds of the history, from the `history` configuration group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Messages kept per uid (the oldest go first).
    pub size: usize,
    /// Age after which a message is gone; a stream with no push for this
    /// long is gone, and the uid's next push starts a new epoch.
    pub ttl: Duration,
    /// Single node: bytes all streams may hold together (payloads and
    /// bookkeeping); the oldest messages across all uids go first.
    pub memory: usize,
}

/// One stored message, as a resume replays it and `GET /history` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its offset in the uid's stream (the epoch is the page's).
    pub offset: u64,
    /// Exactly what a legacy client received.
    pub payload: Payload,
    /// When it was stored.
    pub time: SystemTime,
}

/// Which end of the stream a history page starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Ascending offsets (a resume's order).
    #[default]
    OldestFirst,
    /// Descending offsets.
    NewestFirst,
}

/// What to read of a uid's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only messages with a greater offset; `None`: from the oldest kept.
    pub since: Option<u64>,
    /// At most this many messages.
    pub limit: usize,
    /// Which end the page starts from: with `NewestFirst` and a limit, the
    /// newest `limit` messages after `since`.
    pub order: Order,
    /// At most this many payload bytes, but always the page's first message
    /// (so paging by `since` never stalls on one large message): the page
    /// ends before the message that would pass it. A resume asks for the
    /// connection's queue budget (`--queue-bytes`), so a replay costs the
    /// gateway no more than a full live queue, whatever the history holds.
    pub max_bytes: usize,
}

/// Whether a page that already holds `taken` payload bytes may take a
/// message of `len` more within `max`: always the first one (see
/// [`HistoryQuery::max_bytes`], the rule the live queue applies too).
pub fn fits(taken: usize, len: usize, max: usize) -> bool {
    taken == 0 || taken.saturating_add(len) <= max
}

/// A read of a uid's stream: where it stands and the messages asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// The stream's epoch and the offset of its newest message (0: none
    /// yet in this epoch).
    pub top: Position,
    /// In the query's order.
    pub messages: Vec<StoredMessage>,
}

/// Why a resume (`since`) cannot be served exactly. The client then starts
/// from the current top and should reload its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrecoverable {
    /// The gateway keeps no history (`--history` is off).
    HistoryOff,
    /// The stream's epoch is not the client's: its history was lost (node
    /// restart, expiry, `DELETE /history/{uid}`).
    EpochChanged,
    /// Messages after the client's offset were already evicted (size, age
    /// or memory bound).
    Evicted,
    /// The client claims an offset the stream never reached.
    OffsetAhead,
    /// The messages after the client's offset are more bytes than its
    /// connection may queue (`--queue-bytes`): replaying them would cost
    /// more than the slow consumer it would be live. `GET /history/{uid}`
    /// can page through them.
    TooLarge,
    /// The store (Redis) could not be read.
    Unavailable,
}

impl Unrecoverable {
    /// The `reason` of a `recovered: false` answer (and a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Unrecoverable::HistoryOff => "history_off",
            Unrecoverable::EpochChanged => "epoch_changed",
            Unrecoverable::Evicted => "evicted",
            Unrecoverable::OffsetAhead => "offset_ahead",
            Unrecoverable::TooLarge => "too_large",
            Unrecoverable::Unavailable => "store_unavailable",
        }
    }
}

/// Decides a resume from a read of the stream: `page` must hold the
/// messages after `since.offset`, oldest first, and no limit below the
/// history size. Recovered: exactly those messages, none missing. A page
/// that starts right after the offset but stops short was cut by its byte
/// bound ([`Unrecoverable::TooLarge`]); one that starts later lost its
/// first messages ([`Unrecoverable::Evicted`]).
pub fn recovery(since: Position, page: HistoryPage) -> Result<Vec<StoredMessage>, Unrecoverable> {
    let top = page.top;
    if top.epoch != since.epoch {
        return Err(Unrecoverable::EpochChanged);
    }
    if since.offset > top.offset {
        return Err(Unrecoverable::OffsetAhead);
    }
    let expected = top.offset - since.offset;
    let contiguous = page
        .messages
        .iter()
        .zip(since.offset + 1..)
        .all(|(m, want)| m.offset == want);
    if !contiguous || page.messages.len() as u64 > expected {
        return Err(Unrecoverable::Evicted);
    }
    if (page.messages.len() as u64) < expected {
        // Contiguous from the offset on: only the byte bound stops a
        // non-empty page short; an empty one lost everything.
        return Err(if page.messages.is_empty() {
            Unrecoverable::Evicted
        } else {
            Unrecoverable::TooLarge
        });
    }
    Ok(page.messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Epoch;

    fn page(epoch: u64, top: u64, offsets: &[u64]) -> HistoryPage {
        HistoryPage {
            top: Position {
                offset: top,
                epoch: Epoch(epoch),
            },
            messages: offsets
                .iter()
                .map(|&offset| StoredMessage {
                    offset,
                    payload: Payload::from("x"),
                    time: SystemTime::UNIX_EPOCH,
                })
                .collect(),
        }
    }

    fn since(epoch: u64, offset: u64) -> Position {
        Position {
            offset,
            epoch: Epoch(epoch),
        }
    }

    #[test]
    fn a_resume_is_recovered_only_with_every_message_after_the_offset() {
        assert_eq!(recovery(since(1, 2), page(1, 4, &[3, 4])).unwrap().len(), 2);
        assert_eq!(recovery(since(1, 4), page(1, 4, &[])), Ok(vec![]));
        assert_eq!(
            recovery(since(1, 2), page(2, 4, &[3, 4])),
            Err(Unrecoverable::EpochChanged)
        );
        assert_eq!(
            recovery(since(1, 5), page(1, 4, &[])),
            Err(Unrecoverable::OffsetAhead)
        );
        assert_eq!(
            recovery(since(1, 1), page(1, 4, &[3, 4])),
            Err(Unrecoverable::Evicted)
        );
        assert_eq!(
            recovery(since(1, 1), page(1, 4, &[2, 4, 4])),
            Err(Unrecoverable::Evicted)
        );
        // Contiguous from the offset, but cut short by the byte bound.
        assert_eq!(
            recovery(since(1, 1), page(1, 4, &[2, 3])),
            Err(Unrecoverable::TooLarge)
        );
        assert_eq!(
            recovery(since(1, 1), page(1, 4, &[])),
            Err(Unrecoverable::Evicted)
        );
    }
}
