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
    /// Not JSON, or JSON that is not an object.
    #[error("invalid push line: {0}")]
    Invalid(#[from] serde_json::Error),
    /// JSON that PHP's `json_decode` refuses although serde_json accepts it
    /// (push.php then found no uid): a lone UTF-16 surrogate escape, or
    /// arrays and objects nested deeper than [`PHP_JSON_MAX_NESTING`].
    #[error("invalid push line: {0}")]
    NotPhpJson(&'static str),
    /// The object has no usable `uid` (see [`LineUidError`]).
    #[error("invalid uid: {0}")]
    Uid(#[from] LineUidError),
}

/// Why the `uid` of a text-port line names no client.
///
/// push.php read it as `json_decode($buffer, true)['uid']` and used it as a
/// PHP array key; where PHP would turn it into another user's key, pushgate
/// refuses it instead (README, "Differences from push.php").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineUidError {
    /// No `uid` member, or `null` (PHP's key `""`, which no client can bind).
    #[error("no uid")]
    Missing,
    /// `true` or `false` (PHP's keys `1` and `0`): a failed lookup in the
    /// caller, not an id.
    #[error("uid is a boolean")]
    Boolean,
    /// A number with a fraction, an integer beyond 64 bits, or a float whose
    /// magnitude is 2^53 or more: PHP truncated or wrapped it to some other
    /// integer.
    #[error("uid is a number that is not an exact integer")]
    NotAnInteger,
    /// An array or object (push.php's worker threw a `TypeError` and exited).
    #[error("uid is an array or object")]
    Container,
    /// A string that is no valid uid (empty, or longer than [`MAX_UID_BYTES`]).
    #[error(transparent)]
    Invalid(#[from] UidError),
}

/// Deepest nesting of arrays and objects (the line's own object included)
/// that PHP's `json_decode` accepts with its default depth of 512; one more
/// level and it returns `null` ("Maximum stack depth exceeded").
pub const PHP_JSON_MAX_NESTING: usize = 511;

/// Largest magnitude (exclusive) of a uid written as a JSON float that is
/// taken as an integer: below 2^53 every integer is exactly a float, so the
/// key PHP made of it is the number the caller wrote.
const EXACT_FLOAT_INTEGERS: f64 = 9_007_199_254_740_992.0;

/// The top-level members of a line, as `json_decode($buffer, true)` keeps
/// them: when `uid` repeats, the last one wins. Its value is kept as text so
/// a number can be read exactly as PHP reads it.
struct LineHead<'a> {
    uid: Option<&'a RawValue>,
}

impl<'de> Deserialize<'de> for LineHead<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HeadVisitor;
        impl<'de> de::Visitor<'de> for HeadVisitor {
            type Value = LineHead<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut uid = None;
                while let Some(key) = map.next_key::<HeadKey>()? {
                    match key {
                        HeadKey::Uid => uid = Some(map.next_value()?),
                        HeadKey::Other => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(LineHead { uid })
            }
        }
        d.deserialize_map(HeadVisitor)
    }
}

/// A member name of a line: `uid` (after unescaping, as PHP compares it) or
/// any other.
enum HeadKey {
    Uid,
    Other,
}

impl<'de> Deserialize<'de> for HeadKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl de::Visitor<'_> for KeyVisitor {
            type Value = HeadKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HeadKey, E> {
                Ok(if v == "uid" {
                    HeadKey::Uid
                } else {
                    HeadKey::Other
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// The uid a line's `uid` value stands for, given its JSON text (valid JSON,
/// no surrounding whitespace): a string as is; an integer as its decimal text
/// (`-0` is `0`, as PHP's integer key); a float of integer value below 2^53 in
/// magnitude as that integer (`1e2` is `100`, `-0.0` is `0`), because PHP
/// turned a float key into an integer.
fn uid_of_json(raw: &str) -> Result<Uid, LineError> {
    match raw.as_bytes().first() {
        Some(b'"') => {
            let text: Cow<'_, str> = serde_json::from_str(raw)?;
            Ok(Uid::new(&text).map_err(LineUidError::from)?)
        }
        Some(b'-' | b'0'..=b'9') => {
            let n = if raw.contains(['.', 'e', 'E']) {
                let f: f64 = raw.parse().map_err(|_| LineUidError::NotAnInteger)?;
                // An infinite value has a NaN fraction, so it is refused too.
                if f.fract() != 0.0 || f.abs() >= EXACT_FLOAT_INTEGERS {
                    return Err(LineUidError::NotAnInteger.into());
                }
                // Exact: an integer below 2^53 in magnitude.
                f as i64
            } else {
                // Beyond i64 PHP made it a float of magnitude 2^63 or more.
                raw.parse::<i64>().map_err(|_| LineUidError::NotAnInteger)?
            };
            Ok(Uid::new(&n.to_string()).map_err(LineUidError::from)?)
        }
        Some(b't' | b'f') => Err(LineUidError::Boolean.into()),
        Some(b'[' | b'{') => Err(LineUidError::Container.into()),
        _ => Err(LineUidError::Missing.into()),
    }
}

/// What PHP's `json_decode` refuses that serde_json does not check in the
/// members pushgate skips: a UTF-16 surrogate escape that is not part of a
/// high-low pair, and nesting deeper than [`PHP_JSON_MAX_NESTING`]. `text`
/// is JSON that serde_json has already parsed, so its escapes are well formed.
fn php_json_refusal(text: &str) -> Option<&'static str> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut in_string = false;
    // A high surrogate escape was just read: a low one must follow at once.
    let mut need_low = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if !in_string {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > PHP_JSON_MAX_NESTING {
                        return Some("nested deeper than PHP's json_decode allows");
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            i += 1;
            continue;
        }
        let unit = if b == b'\\' && bytes.get(i + 1) == Some(&b'u') {
            text.get(i + 2..i + 6)
                .and_then(|hex| u16::from_str_radix(hex, 16).ok())
        } else {
            None
        };
        match unit {
            Some(0xDC00..=0xDFFF) if need_low => need_low = false,
            _ if need_low => return Some("unpaired UTF-16 surrogate escape"),
            Some(0xD800..=0xDBFF) => need_low = true,
            Some(0xDC00..=0xDFFF) => return Some("unpaired UTF-16 surrogate escape"),
            _ => {}
        }
        match (unit, b) {
            (Some(_), _) => i += 6,
            (None, b'\\') => i += 2,
            (None, b'"') => {
                in_string = false;
                i += 1;
            }
            (None, _) => i += 1,
        }
    }
    None
}

/// Reads a text-port line (without its line end) as push.php routed it —
/// `json_decode($buffer, true)['uid']` used as a PHP array key — and returns
/// the target uid and the payload, which is the line itself, byte for byte.
///
/// Errors: not UTF-8; not JSON or not an object; JSON PHP refuses
/// ([`LineError::NotPhpJson`]); no usable uid ([`LineUidError`]).
pub fn parse_text_line(line: bytes::Bytes) -> Result<(Uid, Payload), LineError> {
    let text = Utf8Bytes::try_from(line).map_err(|_| LineError::NotUtf8)?;
    let head: LineHead<'_> = serde_json::from_str(text.as_str())?;
    if let Some(why) = php_json_refusal(text.as_str()) {
        return Err(LineError::NotPhpJson(why));
    }
    let uid = uid_of_json(head.uid.map_or("null", RawValue::get))?;
    Ok((uid, text))
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

    /// What `json_decode($buffer, true)['uid']` gives as an array key.
    #[test]
    fn text_lines_route_as_phps_json_decode_and_array_keys_do() {
        for (line, uid) in [
            // Duplicate members: the last wins, whatever the earlier ones were.
            (r#"{"uid":"a","uid":"b"}"#, "b"),
            (r#"{"uid":[1],"x":1,"uid":"b"}"#, "b"),
            (r#"{"uid":"b","uid":7}"#, "7"),
            (r#"{"\u0075id":"a"}"#, "a"),
            // -0 is the integer 0; a float of integer value is that integer.
            (r#"{"uid":-0}"#, "0"),
            (r#"{"uid":-0.0}"#, "0"),
            (r#"{"uid":1e2}"#, "100"),
            (r#"{"uid":5.0}"#, "5"),
            (r#"{"uid":-9223372036854775808}"#, "-9223372036854775808"),
            (r#"{"uid":9223372036854775807}"#, "9223372036854775807"),
            // Strings are keys as they are: "042" is not 42.
            (r#"{"uid":"042"}"#, "042"),
            (r#"{"uid":"-0"}"#, "-0"),
            (r#"{"uid":"\ud83d\ude00","x":"\ud83d\ude00"}"#, "😀"),
        ] {
            assert_eq!(uid_of(line).as_deref(), Some(uid), "{line}");
        }
        let deep = |n: usize| {
            format!(
                r#"{{"uid":"a","x":{}{}}}"#,
                "[".repeat(n - 1),
                "]".repeat(n - 1)
            )
        };
        assert_eq!(uid_of(&deep(PHP_JSON_MAX_NESTING)).as_deref(), Some("a"));
        assert_eq!(uid_of(&deep(PHP_JSON_MAX_NESTING + 1)), None);
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
            r#""uid""#,
            r#"{"uid":"a"} trailing"#,
            r#"{"uid":"a","uid":null}"#,
            r#"{"uid":true}"#,
            r#"{"uid":false}"#,
            r#"{"uid":{"a":1}}"#,
            r#"{"uid":1.0000001}"#,
            r#"{"uid":9007199254740992.0}"#,
            r#"{"uid":9223372036854775808}"#,
            r#"{"uid":-9223372036854775809}"#,
            r#"{"uid":1e400}"#,
            // PHP's json_decode refuses these whole lines.
            r#"{"uid":"a","x":"\ud800"}"#,
            r#"{"uid":"a","x":"\udc00\ud800"}"#,
            r#"{"uid":"a","x":"\ud83d\u0041"}"#,
        ] {
            assert_eq!(uid_of(line), None, "{line:?} must fail");
        }
        let long = format!(r#"{{"uid":"{}"}}"#, "x".repeat(MAX_UID_BYTES + 1));
        assert_eq!(uid_of(&long), None);
        assert!(parse_text_line(Bytes::from_static(b"{\"uid\":\"\xff\"}")).is_err());
    }

    #[test]
    fn refused_text_lines_say_why() {
        let why = |line: &str| parse_text_line(Bytes::copy_from_slice(line.as_bytes())).err();
        let uid_error = |line: &str| match why(line) {
            Some(LineError::Uid(e)) => Some(e),
            _ => None,
        };
        assert_eq!(uid_error(r#"{"x":1}"#), Some(LineUidError::Missing));
        assert_eq!(uid_error(r#"{"uid":null}"#), Some(LineUidError::Missing));
        assert_eq!(uid_error(r#"{"uid":false}"#), Some(LineUidError::Boolean));
        assert_eq!(
            uid_error(r#"{"uid":0.5}"#),
            Some(LineUidError::NotAnInteger)
        );
        assert_eq!(uid_error(r#"{"uid":[]}"#), Some(LineUidError::Container));
        assert_eq!(
            uid_error(r#"{"uid":""}"#),
            Some(LineUidError::Invalid(UidError::Empty))
        );
        assert!(matches!(why("[1]"), Some(LineError::Invalid(_))));
        assert!(matches!(
            why(r#"{"uid":"a","x":"\udc00"}"#),
            Some(LineError::NotPhpJson(_))
        ));
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
