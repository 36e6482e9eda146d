//! The event stream's wire format (WHATWG HTML, "Server-sent events",
//! §9.2.5 and §9.2.6): each event is `field: value` lines and a blank line;
//! a line starting with `:` is a comment. What each event carries is
//! protocol v2's (docs/protocol-v2.md, "Server-Sent Events").

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;

use crate::model::envelope::{BoundFrame, message_frame};
use crate::model::{Epoch, Message, Position, Stream, Uid};
use crate::store::Unrecoverable;

/// The heartbeat: a comment, ignored by `EventSource`, that keeps proxies
/// from closing an idle stream.
pub(super) const PING: &[u8] = b": ping\n\n";

/// Appends one event: its type (`None`: the default, `message`), its id
/// and `data`, one `data:` line per line of it, since a line break ends a
/// field (CR, LF and CRLF all do; the client joins the lines with LF, which
/// a JSON text reads as the same whitespace).
fn push_event(out: &mut String, event: Option<&str>, id: Option<Position>, data: &str) {
    if let Some(event) = event {
        out.push_str("event: ");
        out.push_str(event);
        out.push('\n');
    }
    if let Some(id) = id {
        // Writing to a `String` cannot fail.
        let _ = writeln!(out, "id: {}", format_position(id));
    }
    for line in data.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        for part in line.split('\r') {
            out.push_str("data: ");
            out.push_str(part);
            out.push('\n');
        }
    }
    out.push('\n');
}

/// `<epoch>:<offset>`, an event's `id` and what `Last-Event-ID` and
/// `?since=` carry back.
pub(super) fn format_position(p: Position) -> String {
    format!("{}:{}", p.epoch, p.offset)
}

/// Reads `<epoch>:<offset>` (1 to 16 hex digits, a decimal offset).
pub(super) fn parse_position(s: &str) -> Option<Position> {
    let (epoch, offset) = s.trim().split_once(':')?;
    Some(Position {
        epoch: epoch.parse::<Epoch>().ok()?,
        offset: offset.parse().ok()?,
    })
}

/// Appends a push or broadcast: the v2 `message` or `broadcast` frame, with
/// the push's position as the event's id when it was stored.
pub(super) fn push_message(out: &mut String, message: &Message) {
    push_event(
        out,
        None,
        message.position(),
        message_frame(message).as_str(),
    );
}

/// The stream's opening: `event: bound`, then the replay a recovered resume
/// calls for. The bound event carries the stream's top as its id unless a
/// replay follows: a browser that reconnects then resumes from there (after
/// a replay, from the last replayed message it actually received).
pub(super) fn opening(
    uid: &Uid,
    history: bool,
    top: Option<Position>,
    recovery: Option<&Result<Vec<crate::store::StoredMessage>, Unrecoverable>>,
) -> Bytes {
    let recovered = recovery.map(|r| r.as_ref().map(|_| ()).map_err(|e| *e));
    let frame = BoundFrame::new(uid, history, top, recovered).encode();
    let mut out = String::with_capacity(frame.len() + 64);
    let replay = match (recovery, top) {
        (Some(Ok(messages)), Some(top)) => Some((messages, top.epoch)),
        _ => None,
    };
    let id = if replay.is_some() { None } else { top };
    push_event(&mut out, Some("bound"), id, frame.as_str());
    if let Some((messages, epoch)) = replay {
        for stored in messages {
            let message = Message {
                payload: stored.payload.clone(),
                stream: Stream::Uid(Some(Position {
                    offset: stored.offset,
                    epoch,
                })),
            };
            push_message(&mut out, &message);
        }
    }
    Bytes::from(out)
}

/// `event: close` with `{"code":…,"reason":"…"}`, and a `retry:` line
/// (milliseconds before `EventSource` reconnects) when one is given.
pub(super) fn close(code: u16, reason: &str, retry: Option<Duration>) -> Bytes {
    let mut out = String::with_capacity(96);
    if let Some(retry) = retry {
        let _ = writeln!(out, "retry: {}", retry.as_millis());
    }
    let data = serde_json::json!({ "code": code, "reason": reason }).to_string();
    push_event(&mut out, Some("close"), None, &data);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Payload;

    #[test]
    fn a_stored_push_is_an_event_whose_id_is_its_position() {
        let mut out = String::new();
        let m = Message {
            payload: Payload::from(r#"{"a":1}"#),
            stream: Stream::Uid(Some(Position {
                offset: 7,
                epoch: Epoch(0xab),
            })),
        };
        push_message(&mut out, &m);
        assert_eq!(
            out,
            "id: 00000000000000ab:7\ndata: {\"type\":\"message\",\"offset\":7,\"epoch\":\"00000000000000ab\",\"data\":{\"a\":1}}\n\n"
        );
        out.clear();
        push_message(&mut out, &Message::broadcast(Payload::from("hi")));
        assert_eq!(out, "data: {\"type\":\"broadcast\",\"data\":\"hi\"}\n\n");
    }

    #[test]
    fn every_line_break_in_the_data_starts_a_data_line() {
        let mut out = String::new();
        push_event(&mut out, None, None, "{\r\n\"a\":\r1\n}");
        assert_eq!(out, "data: {\ndata: \"a\":\ndata: 1\ndata: }\n\n");
    }

    #[test]
    fn a_position_reads_back_as_written_and_nothing_else_reads() {
        let p = Position {
            offset: 42,
            epoch: Epoch(0xc0ffee),
        };
        assert_eq!(parse_position(&format_position(p)), Some(p));
        for bad in ["", "42", "x:1", "ab:", "ab:-1", ":1", "ab:1:2"] {
            assert_eq!(parse_position(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_bound_event_carries_the_top_only_when_no_replay_follows() {
        let uid = Uid::new("u").unwrap();
        let top = Position {
            offset: 2,
            epoch: Epoch(1),
        };
        let fresh = opening(&uid, true, Some(top), None);
        assert!(fresh.starts_with(b"event: bound\nid: 0000000000000001:2\ndata: {"));
        let stored = crate::store::StoredMessage {
            offset: 2,
            payload: Payload::from("x"),
            time: std::time::SystemTime::UNIX_EPOCH,
        };
        let resumed = opening(&uid, true, Some(top), Some(&Ok(vec![stored])));
        let text = std::str::from_utf8(&resumed).unwrap();
        assert!(text.starts_with("event: bound\ndata: {"), "{text}");
        assert!(text.ends_with("id: 0000000000000001:2\ndata: {\"type\":\"message\",\"offset\":2,\"epoch\":\"0000000000000001\",\"data\":\"x\"}\n\n"), "{text}");
    }

    #[test]
    fn the_close_event_names_its_code_and_may_set_the_retry_delay() {
        assert_eq!(
            close(1001, "bye", Some(Duration::from_millis(1500))),
            Bytes::from_static(
                b"retry: 1500\nevent: close\ndata: {\"code\":1001,\"reason\":\"bye\"}\n\n"
            )
        );
    }
}
