//! Protocol v2's bind frame, the client's first text frame
//! (docs/protocol-v2.md, "the bind frame"):
//! `{"uid": …, "token": …, "since": {"offset": …, "epoch": "…"}}`.

use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::value::RawValue;

use super::{Epoch, Position, Uid};

/// A parsed bind frame. Unknown members are ignored, so later protocol
/// additions do not break older gateways.
#[derive(Debug, Deserialize)]
pub struct BindFrame<'a> {
    /// The uid (legacy mode), kept unparsed: secure mode ignores it, so an
    /// invalid one must not refuse the frame there.
    #[serde(borrow, default)]
    uid: Option<&'a RawValue>,
    /// A JWT (secure mode); may be absent when the upgrade URL had one.
    #[serde(default)]
    pub token: Option<String>,
    /// The last position the client holds.
    #[serde(default, deserialize_with = "since")]
    pub since: Option<Position>,
}

/// Why a bind frame was refused (closes a v2 connection with 4007); its
/// text is the close frame's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindFrameError {
    /// Not a JSON object of the expected members.
    Malformed,
    /// Legacy mode and no `uid` member.
    MissingUid,
    /// The `uid` is not a string of 1 to 256 bytes or an integer.
    InvalidUid,
}

impl BindFrameError {
    /// The close frame's reason text (at most 123 bytes, RFC 6455 §5.5).
    pub fn as_str(self) -> &'static str {
        match self {
            BindFrameError::Malformed => {
                "invalid bind frame: expected {\"uid\"|\"token\", \"since\"?}"
            }
            BindFrameError::MissingUid => "invalid bind frame: uid is missing",
            BindFrameError::InvalidUid => {
                "invalid bind frame: uid is not 1 to 256 bytes or an integer"
            }
        }
    }
}

impl std::fmt::Display for BindFrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for BindFrameError {}

impl<'a> BindFrame<'a> {
    /// Parses the frame's text. Errors: not a JSON object, or a member of
    /// the wrong shape (`token` not a string, `since` malformed).
    pub fn parse(text: &'a str) -> Result<BindFrame<'a>, BindFrameError> {
        // serde would also take a struct from an array of its members.
        if !text.trim_start().starts_with('{') {
            return Err(BindFrameError::Malformed);
        }
        serde_json::from_str(text).map_err(|_| BindFrameError::Malformed)
    }

    /// The uid to bind in legacy mode. Errors: absent, or not a valid uid.
    pub fn uid(&self) -> Result<Uid, BindFrameError> {
        let raw = self.uid.ok_or(BindFrameError::MissingUid)?;
        serde_json::from_str(raw.get()).map_err(|_| BindFrameError::InvalidUid)
    }
}

/// `since`: `{"offset": <u64>, "epoch": "<1 to 16 hex digits>"}` or `null`.
fn since<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Position>, D::Error> {
    #[derive(Deserialize)]
    struct Since<'a> {
        offset: u64,
        #[serde(borrow)]
        epoch: std::borrow::Cow<'a, str>,
    }
    let Some(since) = Option::<Since<'de>>::deserialize(d)? else {
        return Ok(None);
    };
    let epoch: Epoch = since.epoch.parse().map_err(de::Error::custom)?;
    Ok(Some(Position {
        offset: since.offset,
        epoch,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bind_frame_takes_a_uid_a_token_and_a_position_and_ignores_the_rest() {
        let f = BindFrame::parse(
            r#"{"uid":42,"since":{"offset":17,"epoch":"00c0ffee00c0ffee"},"type":"bind","x":[1]}"#,
        )
        .unwrap();
        assert_eq!(f.uid().unwrap().as_str(), "42");
        assert_eq!(
            f.since,
            Some(Position {
                offset: 17,
                epoch: Epoch(0x00c0ffee00c0ffee)
            })
        );
        let f = BindFrame::parse(r#"{"token":"t","uid":"","since":null}"#).unwrap();
        assert_eq!(f.token.as_deref(), Some("t"));
        assert_eq!(f.since, None);
        assert_eq!(f.uid().unwrap_err(), BindFrameError::InvalidUid);
        assert_eq!(
            BindFrame::parse("{}").unwrap().uid().unwrap_err(),
            BindFrameError::MissingUid
        );
    }

    #[test]
    fn a_malformed_bind_frame_is_refused() {
        for bad in [
            "uid1",
            "",
            "[]",
            r#""uid1""#,
            r#"{"uid":"u","since":{"offset":-1,"epoch":"1"}}"#,
            r#"{"uid":"u","since":{"offset":1,"epoch":"xyz"}}"#,
            r#"{"uid":"u","since":{"offset":1}}"#,
            r#"{"uid":"u","since":3}"#,
            r#"{"token":5}"#,
            r#"{"uid":"u"} trailing"#,
        ] {
            assert_eq!(
                BindFrame::parse(bad).map(|_| ()),
                Err(BindFrameError::Malformed),
                "{bad}"
            );
        }
    }
}
