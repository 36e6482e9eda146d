//! The legacy push line (`{"uid":…,…}`), parsed as push.php's
//! `json_decode` and PHP array keys did.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::value::RawValue;

use tungstenite::Utf8Bytes;

use super::{Payload, Uid, UidError};

/// Why a text-port line was refused (it answers `fail`).
#[derive(Debug, thiserror::Error)]
pub enum PushLineError {
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
    /// A string that is no valid uid (empty, or longer than [`MAX_UID_BYTES`](super::MAX_UID_BYTES)).
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
fn uid_of_json(raw: &str) -> Result<Uid, PushLineError> {
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
/// ([`PushLineError::NotPhpJson`]); no usable uid ([`LineUidError`]).
pub fn parse_text_line(line: bytes::Bytes) -> Result<(Uid, Payload), PushLineError> {
    let text = Utf8Bytes::try_from(line).map_err(|_| PushLineError::NotUtf8)?;
    let head: LineHead<'_> = serde_json::from_str(text.as_str())?;
    if let Some(why) = php_json_refusal(text.as_str()) {
        return Err(PushLineError::NotPhpJson(why));
    }
    let uid = uid_of_json(head.uid.map_or("null", RawValue::get))?;
    Ok((uid, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MAX_UID_BYTES;
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
            Some(PushLineError::Uid(e)) => Some(e),
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
        assert!(matches!(why("[1]"), Some(PushLineError::Invalid(_))));
        assert!(matches!(
            why(r#"{"uid":"a","x":"\udc00"}"#),
            Some(PushLineError::NotPhpJson(_))
        ));
    }
}
