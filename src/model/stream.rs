//! Positions in a uid's stream and the message a connection receives.
//!
//! With history on (`--history`), every push to a uid gets the next offset
//! of that uid's stream (1, 2, 3, …). The stream also has an epoch, which
//! changes whenever its history is lost (a single node restarted, the stream
//! expired in Redis, `DELETE /history/{uid}`), so a client that kept
//! `{offset, epoch}` can tell "nothing missed" from "history gone"
//! (Centrifugo's offset + epoch recovery, same idea).

use std::fmt;
use std::str::FromStr;

use super::Payload;

/// Identifies one life of a uid's stream: a new epoch means the offsets
/// before it are gone. On the wire it is a string of 16 lowercase hex
/// digits (the protocol promises only "an opaque string").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(pub u64);

impl Epoch {
    /// A fresh epoch: random, so two processes (a node and its restart, or
    /// two nodes creating the same uid's stream) practically never agree.
    pub fn random() -> Epoch {
        Epoch(fastrand::u64(..))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Why an epoch string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an epoch is 1 to 16 hex digits")]
pub struct EpochError;

impl FromStr for Epoch {
    type Err = EpochError;

    /// Parses 1 to 16 hex digits (either case).
    fn from_str(s: &str) -> Result<Epoch, EpochError> {
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(EpochError);
        }
        u64::from_str_radix(s, 16)
            .map(Epoch)
            .map_err(|_| EpochError)
    }
}

/// A place in a uid's stream: the offset of a message (or, for a stream's
/// top, of its newest message; 0 when it has none yet) in one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 1 for the first message of an epoch, then +1 per push.
    pub offset: u64,
    /// The stream's epoch.
    pub epoch: Epoch,
}

/// Which stream a message belongs to, as a v2 client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// A push to the connection's uid; `Some` with its place in the uid's
    /// history when it was stored (history on, and the store reachable).
    Uid(Option<Position>),
    /// A broadcast: part of no uid's history.
    Broadcast,
}

/// Where a live message stands for a client holding everything up to some
/// position ([`Message::continuity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// The client has it already (the replay covered it): leave it out.
    Covered,
    /// It follows what the client holds, or carries no position to compare
    /// (history off, the store unreachable, a broadcast): send it.
    Next,
    /// Messages between what the client holds and it never reached this
    /// connection (a node's Redis subscription dropped by Redis, a rare
    /// reorder while a subscription starts): sending it would let the
    /// client's position skip them. The v2 front ends end the connection
    /// instead (4006), and the client resumes from what it holds.
    Gap,
}

/// What a v2 client holds of its uid's stream, as each transport tracks it
/// to decide every live message ([`Message::continuity`]): the position of
/// the last message it got (first the bind answer's top, which covers the
/// replay), and whether a gap was seen, after which nothing more is sent
/// and the transport ends the connection (4006) so the client resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Held {
    at: Option<Position>,
    missed: bool,
}

impl Held {
    /// A client holding everything up to `at` (`None`: no position known,
    /// e.g. history off or the store unreachable at the bind).
    pub fn new(at: Option<Position>) -> Held {
        Held { at, missed: false }
    }

    /// Whether to send `message`: not when the client holds it already, nor
    /// from a gap on (which marks [`Held::missed`]); otherwise yes, and the
    /// client's position moves on to it.
    pub fn admit(&mut self, message: &Message) -> bool {
        if self.missed {
            return false;
        }
        match message.continuity(self.at) {
            Continuity::Covered => false,
            Continuity::Gap => {
                self.missed = true;
                false
            }
            Continuity::Next => {
                if let Some(at) = message.position() {
                    self.at = Some(at);
                }
                true
            }
        }
    }

    /// Whether a message showed a gap: the connection must end.
    pub fn missed(&self) -> bool {
        self.missed
    }
}

/// One message as queued for a connection: the text a legacy client
/// receives (encoded once, shared by every recipient) and the stream it
/// belongs to, from which a v2 connection builds its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Exactly what a legacy (seed) client receives.
    pub payload: Payload,
    /// Its stream and, when stored, its position.
    pub stream: Stream,
}

impl Message {
    /// A push to a uid, not stored.
    pub fn push(payload: Payload) -> Message {
        Message {
            payload,
            stream: Stream::Uid(None),
        }
    }

    /// A broadcast.
    pub fn broadcast(payload: Payload) -> Message {
        Message {
            payload,
            stream: Stream::Broadcast,
        }
    }

    /// Where this live message stands against `held`, the position of the
    /// last message a v2 client got (or of its bind answer): see
    /// [`Continuity`].
    pub fn continuity(&self, held: Option<Position>) -> Continuity {
        match (held, self.position()) {
            (Some(held), Some(at)) if at.epoch == held.epoch => {
                if at.offset <= held.offset {
                    Continuity::Covered
                } else if at.offset == held.offset + 1 {
                    Continuity::Next
                } else {
                    Continuity::Gap
                }
            }
            // A new epoch is whole only from its first message: anything
            // later means the client missed the messages before it.
            (Some(_), Some(at)) if at.offset != 1 => Continuity::Gap,
            _ => Continuity::Next,
        }
    }

    /// The offset of a stored push, if this is one.
    pub fn position(&self) -> Option<Position> {
        match self.stream {
            Stream::Uid(p) => p,
            Stream::Broadcast => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_is_sixteen_hex_digits_both_ways() {
        let e = Epoch(0xab);
        assert_eq!(e.to_string(), "00000000000000ab");
        assert_eq!("00000000000000ab".parse::<Epoch>(), Ok(e));
        assert_eq!("AB".parse::<Epoch>(), Ok(e));
        for bad in ["", "x", "00000000000000000", "-1", "+1"] {
            assert_eq!(bad.parse::<Epoch>(), Err(EpochError), "{bad:?}");
        }
    }

    #[test]
    fn a_message_is_covered_only_by_a_position_of_its_epoch_at_or_past_it() {
        let at = |offset, epoch| Position {
            offset,
            epoch: Epoch(epoch),
        };
        let m = Message {
            payload: Payload::from("x"),
            stream: Stream::Uid(Some(at(5, 1))),
        };
        use Continuity::{Covered, Next};
        assert_eq!(m.continuity(Some(at(5, 1))), Covered);
        assert_eq!(m.continuity(Some(at(9, 1))), Covered);
        assert_ne!(m.continuity(Some(at(4, 1))), Covered);
        assert_ne!(m.continuity(Some(at(9, 2))), Covered);
        assert_eq!(m.continuity(None), Next);
        assert_eq!(
            Message::push(Payload::from("x")).continuity(Some(at(9, 1))),
            Next
        );
        assert_eq!(
            Message::broadcast(Payload::from("x")).continuity(Some(at(9, 1))),
            Next
        );
    }

    #[test]
    fn a_message_past_the_next_offset_or_in_a_later_epoch_is_a_gap() {
        let at = |offset, epoch| Position {
            offset,
            epoch: Epoch(epoch),
        };
        let m = |offset, epoch| Message {
            payload: Payload::from("x"),
            stream: Stream::Uid(Some(at(offset, epoch))),
        };
        use Continuity::{Covered, Gap, Next};
        assert_eq!(m(5, 1).continuity(Some(at(4, 1))), Next);
        assert_eq!(m(5, 1).continuity(Some(at(5, 1))), Covered);
        assert_eq!(m(5, 1).continuity(Some(at(3, 1))), Gap);
        assert_eq!(
            m(1, 2).continuity(Some(at(9, 1))),
            Next,
            "a new epoch's first"
        );
        assert_eq!(m(2, 2).continuity(Some(at(9, 1))), Gap);
        assert_eq!(m(7, 1).continuity(None), Next, "nothing to compare with");
        assert_eq!(
            Message::push(Payload::from("x")).continuity(Some(at(4, 1))),
            Next
        );
        assert_eq!(
            Message::broadcast(Payload::from("x")).continuity(Some(at(4, 1))),
            Next
        );
    }
}
