//! Identifiers and wire types shared by every front end.
//!
//! Keeping them in one place means the text port, REST and WebSocket agree on
//! what a uid is (1 to 256 bytes, matched exactly; a JSON integer is its decimal
//! text, as PHP arrays produced) and on what a client receives.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
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

/// Why a text-port line was refused (it answers `fail`).
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// Not UTF-8, so it cannot be a WebSocket text frame.
    #[error("line is not UTF-8")]
    NotUtf8,
    /// Not a JSON object with a valid `uid`.
    #[error("invalid push line: {0}")]
    Invalid(#[from] serde_json::Error),
}

/// The only part of a text-port line pushgate reads; every other field is
/// carried to the client untouched, inside the line itself.
#[derive(Deserialize)]
struct LineHead {
    uid: Uid,
}

/// Reads a text-port line (without its line end): the target uid and the
/// payload, which is the line itself, byte for byte.
pub fn parse_text_line(line: bytes::Bytes) -> Result<(Uid, Payload), LineError> {
    let text = Utf8Bytes::try_from(line).map_err(|_| LineError::NotUtf8)?;
    let head: LineHead = serde_json::from_str(text.as_str())?;
    Ok((head.uid, text))
}

/// `uid` of a REST push or disconnect: one uid or a non-empty list.
#[derive(Debug)]
pub enum UidList {
    /// A single uid.
    One(Uid),
    /// Several uids; each connection receives the push once even if a uid repeats.
    Many(Vec<Uid>),
}

/// What a `uid` member must be, in the caller's terms (serde's own message
/// for an untagged enum names Rust types instead).
const UID_LIST_EXPECTED: &str =
    "uid as a string of 1 to 256 bytes, an integer, or a non-empty list of them";

/// A uid, or a non-empty list of uids; an empty list is refused, since a
/// push to nobody can only be a caller's mistake.
impl<'de> Deserialize<'de> for UidList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> de::Visitor<'de> for ListVisitor {
            type Value = UidList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(UID_LIST_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<UidList, E> {
                Uid::new(v)
                    .map(UidList::One)
                    .map_err(|e| E::custom(format_args!("{e}; expected {UID_LIST_EXPECTED}")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<UidList, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<UidList, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<UidList, A::Error> {
                let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(uid) = seq.next_element::<Uid>()? {
                    list.push(uid);
                }
                if list.is_empty() {
                    return Err(de::Error::custom(format_args!(
                        "uid is an empty list; expected {UID_LIST_EXPECTED}"
                    )));
                }
                Ok(UidList::Many(list))
            }
        }
        d.deserialize_any(ListVisitor)
    }
}

impl UidList {
    /// The uids, without repeats, in the order given.
    pub fn into_unique(self) -> Vec<Uid> {
        match self {
            UidList::One(uid) => vec![uid],
            UidList::Many(list) => {
                let mut seen = std::collections::HashSet::with_capacity(list.len());
                list.into_iter()
                    .filter(|u| seen.insert(u.clone()))
                    .collect()
            }
        }
    }
}

/// Reads `T` from a JSON object only: serde's derived structs also accept an
/// array of their members in order (`["a",1]` as a push to `a`), which no
/// caller means. Anything else is refused as not being `what`.
fn object<'de, D, T>(d: D, what: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ObjectVisitor<T>(std::marker::PhantomData<T>, &'static str);
    impl<'de, T: Deserialize<'de>> de::Visitor<'de> for ObjectVisitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.1)
        }
        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_map(ObjectVisitor(std::marker::PhantomData, what))
}

/// Body of `POST /push`.
#[derive(Debug)]
pub struct PushRequest {
    /// Whose connections receive it.
    pub uid: UidList,
    /// What they receive.
    pub data: Box<RawValue>,
}

/// The members of [`PushRequest`], read only from a JSON object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushRequestMembers {
    uid: UidList,
    data: Box<RawValue>,
}

impl<'de> Deserialize<'de> for PushRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m: PushRequestMembers = object(d, "a push: a JSON object with members uid and data")?;
        Ok(PushRequest {
            uid: m.uid,
            data: m.data,
        })
    }
}

/// Body of `POST /broadcast`.
#[derive(Debug)]
pub struct BroadcastRequest {
    /// What every bound connection receives.
    pub data: Box<RawValue>,
}

/// The members of [`BroadcastRequest`], read only from a JSON object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastRequestMembers {
    data: Box<RawValue>,
}

impl<'de> Deserialize<'de> for BroadcastRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m: BroadcastRequestMembers = object(d, "a broadcast: a JSON object with member data")?;
        Ok(BroadcastRequest { data: m.data })
    }
}

/// Turns a REST `data` value into what clients receive: a JSON string is sent
/// as its text; anything else as the caller's own JSON text, unchanged (no
/// re-encoding that would reorder keys or rewrite numbers).
pub fn payload_from_data(data: &RawValue) -> Result<Payload, serde_json::Error> {
    let raw = data.get();
    if raw.starts_with('"') {
        let text: Cow<'_, str> = serde_json::from_str(raw)?;
        Ok(Utf8Bytes::from(text.into_owned()))
    } else {
        Ok(Utf8Bytes::from(raw))
    }
}

/// Answer of `POST /push`.
#[derive(Debug, Default, Serialize)]
pub struct PushResponse {
    /// Connections on this node that accepted the message into their queue.
    pub delivered: usize,
    /// Connections on this node that were bound but could not take it (slow
    /// consumers, disconnected for it).
    pub dropped: usize,
    /// Bus deliveries to other nodes (cluster mode; 0 on a single node):
    /// for each uid, the other nodes holding it that received the push, as
    /// Redis counted them, summed over the uids — a node holding two of the
    /// uids counts twice. Their connections are not counted in `delivered`.
    pub remote_deliveries: usize,
    /// Requested uids no connection on any node took it for.
    pub offline: Vec<Uid>,
}

/// Body of `POST /push/batch`.
#[derive(Debug)]
pub struct BatchRequest {
    /// The pushes, each like a `POST /push` body.
    pub pushes: Vec<PushRequest>,
}

/// The members of [`BatchRequest`], read only from a JSON object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequestMembers {
    pushes: Vec<PushRequest>,
}

impl<'de> Deserialize<'de> for BatchRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m: BatchRequestMembers = object(
            d,
            "a batch: a JSON object with member pushes, a list of pushes",
        )?;
        Ok(BatchRequest { pushes: m.pushes })
    }
}

/// Answer of `POST /push/batch`.
#[derive(Debug, Serialize)]
pub struct BatchResponse {
    /// Connections on this node that took any of the pushes (summed).
    pub delivered: usize,
    /// Slow consumers dropped (summed).
    pub dropped: usize,
    /// Bus deliveries to other nodes, as each push counts them, summed over
    /// the pushes.
    pub remote_deliveries: usize,
    /// One answer per push, in order.
    pub results: Vec<BatchResult>,
}

/// One push's answer in a batch.
#[derive(Debug, Serialize)]
pub struct BatchResult {
    /// As `POST /push` answers.
    #[serde(flatten)]
    pub push: PushResponse,
    /// Uids that could not be routed because Redis was unavailable (cluster
    /// mode); they are neither online nor offline as far as anyone knows.
    pub unrouted: Vec<Uid>,
}

/// Body of `POST /disconnect`.
#[derive(Debug)]
pub struct DisconnectRequest {
    /// Whose connections to close.
    pub uid: UidList,
}

/// The members of [`DisconnectRequest`], read only from a JSON object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectRequestMembers {
    uid: UidList,
}

impl<'de> Deserialize<'de> for DisconnectRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m: DisconnectRequestMembers = object(d, "a disconnect: a JSON object with member uid")?;
        Ok(DisconnectRequest { uid: m.uid })
    }
}

/// Answer of `POST /disconnect`.
#[derive(Debug, Serialize)]
pub struct DisconnectResponse {
    /// Connections closed on this node.
    pub disconnected: usize,
    /// Bus deliveries of the close request to other nodes holding the uids
    /// (cluster mode; 0 on a single node), summed over the uids; each of
    /// those nodes closes its connections of the uid.
    pub remote_deliveries: usize,
}

/// Answer of `POST /broadcast`.
#[derive(Debug, Serialize)]
pub struct BroadcastResponse {
    /// Connections on this node that accepted the message into their queue.
    pub delivered: usize,
    /// Bound connections on this node that could not take it.
    pub dropped: usize,
    /// Other nodes that received it (cluster mode; 0 on a single node); their
    /// connections are not counted in `delivered`.
    pub remote_deliveries: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn uid_of(line: &str) -> Option<String> {
        parse_text_line(Bytes::copy_from_slice(line.as_bytes()))
            .ok()
            .map(|(u, p)| {
                assert_eq!(p.as_str(), line, "the payload is the line, byte for byte");
                u.to_string()
            })
    }

    #[test]
    fn text_lines_carry_string_and_integer_uids() {
        assert_eq!(
            uid_of(r#"{"uid":"uid1","percent":"88%"}"#).as_deref(),
            Some("uid1")
        );
        assert_eq!(uid_of(r#"{"uid":42}"#).as_deref(), Some("42"));
        assert_eq!(uid_of(r#"{"uid":-7,"x":[1,2]}"#).as_deref(), Some("-7"));
        assert_eq!(uid_of(r#"{"uid":"\u00e9"}"#).as_deref(), Some("é"));
    }

    #[test]
    fn bad_text_lines_are_refused() {
        for line in [
            "",
            "not json",
            r#"{"percent":"88%"}"#,
            r#"{"uid":1.5}"#,
            r#"{"uid":null}"#,
            r#"{"uid":["a"]}"#,
            r#"{"uid":""}"#,
            r#"["uid","a"]"#,
            r#"{"uid":"a","uid":"b"}"#,
            r#"{"uid":"a"} trailing"#,
        ] {
            assert_eq!(uid_of(line), None, "{line:?} must fail");
        }
        let long = format!(r#"{{"uid":"{}"}}"#, "x".repeat(MAX_UID_BYTES + 1));
        assert_eq!(uid_of(&long), None);
        assert!(parse_text_line(Bytes::from_static(b"{\"uid\":\"\xff\"}")).is_err());
    }

    #[test]
    fn rest_data_keeps_the_callers_json_text() {
        let req: PushRequest =
            serde_json::from_str(r#"{"uid":["a","b","a"],"data":{"z":1,"a":1.50}}"#).unwrap();
        assert_eq!(
            payload_from_data(&req.data).unwrap().as_str(),
            r#"{"z":1,"a":1.50}"#
        );
        assert_eq!(req.uid.into_unique().len(), 2);
        let req: PushRequest = serde_json::from_str(r#"{"uid":7,"data":"hi \"you\""}"#).unwrap();
        assert_eq!(
            payload_from_data(&req.data).unwrap().as_str(),
            r#"hi "you""#
        );
    }
}
