//! Protocol v2's server frames (docs/protocol-v2.md), encoded once here for
//! every transport that speaks v2 (WebSocket, SSE).

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::value::RawValue;

use super::{Message, Payload, Position, Stream, Uid};
use crate::store::Unrecoverable;

/// The `data` member of a v2 frame: the text a v1 client receives, embedded
/// as JSON when it is a JSON value, else as a JSON string
/// (docs/protocol-v2.md, "message").
fn push_data(out: &mut String, payload: &str) {
    if serde_json::from_str::<&RawValue>(payload).is_ok() {
        out.push_str(payload.trim());
    } else {
        // Serialising a `str` cannot fail.
        out.push_str(&serde_json::to_string(payload).unwrap_or_default());
    }
}

/// `{"type":"message","offset":…,"epoch":"…","data":…}` (offset and epoch
/// only when stored), or `{"type":"broadcast","data":…}`.
pub fn message_frame(message: &Message) -> Payload {
    let payload = message.payload.as_str();
    let mut out = String::with_capacity(payload.len() + 72);
    match message.stream {
        Stream::Uid(Some(Position { offset, epoch })) => {
            // Writing to a `String` cannot fail.
            let _ = write!(
                out,
                r#"{{"type":"message","offset":{offset},"epoch":"{epoch}","data":"#
            );
        }
        Stream::Uid(None) => out.push_str(r#"{"type":"message","data":"#),
        Stream::Broadcast => out.push_str(r#"{"type":"broadcast","data":"#),
    }
    push_data(&mut out, payload);
    out.push('}');
    Payload::from(out)
}

/// A payload as the `data` member of a v2 frame, for serde (a history page
/// of `GET /history/{uid}` carries it too): the same rule as the frames,
/// the text embedded as JSON when it is a JSON value, else as a JSON string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data(pub Payload);

impl Serialize for Data {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.0.as_str();
        match serde_json::from_str::<&RawValue>(text) {
            Ok(raw) => raw.serialize(s),
            Err(_) => s.serialize_str(text),
        }
    }
}

/// The answer to a v2 bind (docs/protocol-v2.md, "bound").
#[derive(Debug, Serialize)]
pub struct BoundFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    uid: &'a Uid,
    history: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

impl<'a> BoundFrame<'a> {
    /// The frame for a bind of `uid`: `top` is the stream's top (`None`:
    /// history off or unreadable), `recovered` is present after a bind
    /// with `since` (`Err`: why not).
    pub fn new(
        uid: &'a Uid,
        history: bool,
        top: Option<Position>,
        recovered: Option<Result<(), Unrecoverable>>,
    ) -> BoundFrame<'a> {
        BoundFrame {
            kind: "bound",
            uid,
            history,
            offset: top.map(|p| p.offset),
            epoch: top.map(|p| p.epoch.to_string()),
            recovered: recovered.map(|r| r.is_ok()),
            reason: recovered.and_then(|r| r.err()).map(Unrecoverable::as_str),
        }
    }

    /// The frame's JSON text.
    pub fn encode(&self) -> Payload {
        // A struct of strings, integers and booleans always serialises.
        Payload::from(serde_json::to_string(self).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Epoch;

    #[test]
    fn a_stored_push_carries_its_position_and_its_json_unchanged() {
        let m = Message {
            payload: Payload::from(r#"{"uid":"u","percent":"88%"}"#),
            stream: Stream::Uid(Some(Position {
                offset: 18,
                epoch: Epoch(0xc0ffee),
            })),
        };
        assert_eq!(
            message_frame(&m).as_str(),
            r#"{"type":"message","offset":18,"epoch":"0000000000c0ffee","data":{"uid":"u","percent":"88%"}}"#
        );
    }

    #[test]
    fn text_that_is_not_json_travels_as_a_string() {
        let m = Message::push(Payload::from("88% \"done\""));
        assert_eq!(
            message_frame(&m).as_str(),
            r#"{"type":"message","data":"88% \"done\""}"#
        );
        let b = Message::broadcast(Payload::from("[1,2]"));
        assert_eq!(
            message_frame(&b).as_str(),
            r#"{"type":"broadcast","data":[1,2]}"#
        );
    }

    #[test]
    fn data_follows_the_frames_rule() {
        for text in [r#"{"a": 1}"#, "[1,2]", "88% \"done\"", "7", " \"x\" ", ""] {
            let frame = message_frame(&Message::push(Payload::from(text)));
            let from_frame: serde_json::Value = serde_json::from_str(frame.as_str()).unwrap();
            let data = serde_json::to_value(Data(Payload::from(text))).unwrap();
            assert_eq!(data, from_frame["data"], "{text:?}");
        }
    }

    #[test]
    fn the_bound_frame_says_why_a_resume_failed() {
        let uid = Uid::new("u").unwrap();
        let top = Position {
            offset: 3,
            epoch: Epoch(1),
        };
        assert_eq!(
            BoundFrame::new(
                &uid,
                true,
                Some(top),
                Some(Err(Unrecoverable::EpochChanged))
            )
            .encode()
            .as_str(),
            r#"{"type":"bound","uid":"u","history":true,"offset":3,"epoch":"0000000000000001","recovered":false,"reason":"epoch_changed"}"#
        );
        assert_eq!(
            BoundFrame::new(&uid, false, None, None).encode().as_str(),
            r#"{"type":"bound","uid":"u","history":false}"#
        );
    }
}
