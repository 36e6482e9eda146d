//! Identifiers and wire types shared by every front end.
//!
//! Keeping them in one place means the text port, REST and WebSocket agree on
//! what a uid is (1 to 256 bytes, matched exactly; a JSON integer is its decimal
//! text, as PHP arrays produced) and on what a client receives. The uid and
//! connection ids are here; the text port's push line is in `line.rs`, the REST
//! bodies in `rest.rs`.

mod bind;
pub mod envelope;
mod line;
mod rest;
mod stream;

pub use bind::*;
pub use line::*;
pub use rest::*;
pub use stream::*;

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use tungstenite::Utf8Bytes;

/// Longest uid, in bytes.
pub const MAX_UID_BYTES: usize = 256;

/// A user id that connections bind to and pushes address.
///
/// Cheap to clone (one shared allocation), because every binding and every
/// routing entry keeps a copy.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uid(Arc<str>);

/// Why a uid was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UidError {
    /// The uid is the empty string.
    #[error("uid is empty")]
    Empty,
    /// The uid is longer than [`MAX_UID_BYTES`].
    #[error("uid is longer than {MAX_UID_BYTES} bytes")]
    TooLong,
}

impl Uid {
    /// Validates a uid: 1 to [`MAX_UID_BYTES`] bytes, taken exactly as given.
    pub fn new(s: &str) -> Result<Uid, UidError> {
        match s.len() {
            0 => Err(UidError::Empty),
            n if n > MAX_UID_BYTES => Err(UidError::TooLong),
            _ => Ok(Uid(Arc::from(s))),
        }
    }

    /// The uid's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Uid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A uid as it appears in JSON: a string, or an integer that stands for its
/// decimal text (`{"uid":42}` reaches the client that bound `42`).
impl<'de> Deserialize<'de> for Uid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct UidVisitor;
        impl<'de> de::Visitor<'de> for UidVisitor {
            type Value = Uid;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "a uid: a string of 1 to {MAX_UID_BYTES} bytes or an integer"
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Uid, E> {
                Uid::new(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Uid, E> {
                Uid::new(&v.to_string()).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Uid, E> {
                Uid::new(&v.to_string()).map_err(E::custom)
            }
        }
        d.deserialize_any(UidVisitor)
    }
}

/// Identifies one WebSocket connection for its whole life, so that removing a
/// closed connection never removes another connection of the same uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// The text one push delivers: encoded once, shared by every recipient.
pub type Payload = Utf8Bytes;

/// Which front end a push came through (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The legacy text port.
    Text,
    /// The REST API.
    Http,
}

impl Source {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Text => "text",
            Source::Http => "http",
        }
    }
}
