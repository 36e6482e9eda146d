//! The REST API's request and response bodies.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use tungstenite::Utf8Bytes;

use super::{Payload, Uid};

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
    /// History on, a push to one uid, stored: its offset in the uid's stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// With `offset`: the stream's epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// History on: where each uid's copy was stored, in the order of the
    /// request's uids (a uid whose store was unreachable is missing). Absent
    /// while history is off, so the answer is then what it always was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored: Option<Vec<StoredAt>>,
}

/// Where a push was stored in one uid's history.
#[derive(Debug, Clone, Serialize)]
pub struct StoredAt {
    /// The uid.
    pub uid: Uid,
    /// Its offset in the uid's stream.
    pub offset: u64,
    /// The stream's epoch.
    pub epoch: String,
}

/// Answer of `GET /history/{uid}`.
#[derive(Debug, Serialize)]
pub struct HistoryResponse {
    /// The uid asked about.
    pub uid: Uid,
    /// Its stream's epoch.
    pub epoch: String,
    /// The offset of its newest message (0: none yet in this epoch).
    pub offset: u64,
    /// The messages asked for, in the order asked for.
    pub messages: Vec<HistoryMessage>,
}

/// One message of a history page.
#[derive(Debug, Serialize)]
pub struct HistoryMessage {
    /// Its offset in the uid's stream.
    pub offset: u64,
    /// What a v2 client received for it (docs/protocol-v2.md, `data`).
    pub data: super::envelope::Data,
    /// When it was stored (RFC 3339, UTC, milliseconds).
    pub time: String,
}

/// Answer of `DELETE /history/{uid}`: the new, empty stream.
#[derive(Debug, Serialize)]
pub struct HistoryDeleted {
    /// The uid.
    pub uid: Uid,
    /// The new epoch.
    pub epoch: String,
    /// Always 0: nothing in the new epoch yet.
    pub offset: u64,
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
