//! Protocol v2's session (docs/protocol-v2.md): the JSON bind frame, the
//! `bound` answer and the replay of missed messages, `message` frames with
//! their stream positions, and no duplicate between the replay and the
//! live stream.

use std::future::Future;

use tokio::time::Instant;
use tracing::Span;
use tungstenite::Utf8Bytes;

use super::end::End;
use super::protocol::{Protocol, Start};
use super::session::{Session, expiry, finish_batch};
use crate::auth::{Identity, TokenError};
use crate::connections::Connection;
use crate::model::envelope::{BoundFrame, message_frame};
use crate::model::{BindFrame, Epoch, Held, Message, Payload, Position, Stream, Uid};
use crate::store::StoredMessage;

/// A v2 connection's own state.
pub(super) struct V2 {
    /// What the client holds: the bind answer's top, then each live
    /// message's position; a gap ends the session (4006).
    held: Held,
    /// The upgrade URL's verified token, until the bind frame comes (it
    /// may omit `token` then). Boxed: one pointer while it waits.
    preauth: Option<Box<Identity>>,
}

impl Protocol for V2 {
    const V2: bool = true;

    /// A URL token is kept for the bind frame, which carries `since`.
    fn start(
        _: &mut Connection,
        preauth: Option<Result<Identity, TokenError>>,
        _: &Span,
    ) -> Start<V2> {
        let (preauth, end) = match preauth {
            Some(Ok(id)) => (Some(Box::new(id)), None),
            Some(Err(e)) => (None, Some(End::Token(e))),
            None => (None, None),
        };
        Start {
            protocol: V2 {
                held: Held::default(),
                preauth,
            },
            expires: None,
            end,
        }
    }

    fn frame(&mut self, message: Message) -> Option<Payload> {
        self.held.admit(&message).then(|| message_frame(&message))
    }

    fn missed(&self) -> bool {
        self.held.missed()
    }

    fn bind(
        session: &mut Session<V2>,
        text: Utf8Bytes,
    ) -> impl Future<Output = Result<(), End>> + Send + '_ {
        // Boxed: a bind happens once, and its state (a store read in
        // cluster mode, the replay's writes) should not be part of every
        // idle session's.
        Box::pin(bind(session, text))
    }
}

/// The bind frame: resolve the uid (legacy `uid`, or a token from the frame
/// or the URL), bind with `since`, answer `bound`, replay.
async fn bind(s: &mut Session<V2>, text: Utf8Bytes) -> Result<(), End> {
    let frame = BindFrame::parse(text.as_str()).map_err(End::BadBind)?;
    let (uid, expires) = identify(s, &frame)?;
    tracing::debug!(conn = s.conn.id().0, %uid, "bound (v2)");
    Span::current().record("uid", tracing::field::display(&uid));
    // Only an unbound session gets here, so the bind cannot be refused.
    let Ok(bound) = s.conn.bind_stream(uid.clone(), frame.since).await else {
        return Ok(());
    };
    s.expires = expires;
    s.protocol.held = Held::new(bound.replayed_up_to());
    let (recovered, replay) = match bound.recovery {
        None => (None, Vec::new()),
        Some(Ok(messages)) => (Some(Ok(())), messages),
        Some(Err(why)) => (Some(Err(why)), Vec::new()),
    };
    let history = s.app.map.history_enabled();
    let answer = BoundFrame::new(&uid, history, bound.top, recovered).encode();
    // A replay comes only with a read of the stream, so with its top.
    let epoch = bound.top.map(|top| top.epoch);
    write_replay(s, answer, replay, epoch).await
}

/// The uid to bind and, in secure mode, when its token expires. A token in
/// the frame wins over the URL's.
fn identify(s: &mut Session<V2>, frame: &BindFrame<'_>) -> Result<(Uid, Option<Instant>), End> {
    let Some(verifier) = &s.app.verifier else {
        return Ok((frame.uid().map_err(End::BadBind)?, None));
    };
    let preauth = s.protocol.preauth.take();
    let id = match (&frame.token, preauth) {
        (Some(token), _) => verifier.verify(token).inspect_err(|e| {
            verifier.log_refusal(e, s.socket.peer_ip());
        }),
        (None, Some(id)) => Ok(*id),
        (None, None) => Err(TokenError::Malformed),
    }
    .map_err(End::Token)?;
    let expires = expiry(&id);
    Ok((id.uid, Some(expires)))
}

/// Writes the `bound` answer, then the replay (each stored message as a
/// `message` frame at its offset in the stream's `epoch`), in batches of what one
/// system call takes. A batch the socket does not take at once must finish
/// within `--write-timeout`, so a client that does not read ends the
/// session instead of making the gateway hold the replay: what waits is at
/// most one batch in the socket and the connection's own bounded queue
/// (live pushes meanwhile; past its bound, a slow consumer).
async fn write_replay(
    s: &mut Session<V2>,
    answer: Payload,
    replay: Vec<StoredMessage>,
    epoch: Option<Epoch>,
) -> Result<(), End> {
    let limit = s.app.config.websocket.write_timeout;
    let mut frames = replay.into_iter().map(|m| {
        message_frame(&Message {
            payload: m.payload,
            stream: Stream::Uid(epoch.map(|epoch| Position {
                offset: m.offset,
                epoch,
            })),
        })
    });
    let mut next = Some(answer);
    while let Some(first) = next.take() {
        let batch = s.socket.write_texts(first, |max, take| {
            frames.by_ref().take(max).for_each(take);
        });
        match batch {
            Ok(true) => {}
            Ok(false) => finish_batch(&mut s.socket, &s.conn, limit).await?,
            Err(_) => return Err(End::WriteFailed),
        }
        next = frames.next();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Epoch, Payload};

    fn at(offset: u64, epoch: u64) -> Message {
        Message {
            payload: Payload::from("{}"),
            stream: Stream::Uid(Some(Position {
                offset,
                epoch: Epoch(epoch),
            })),
        }
    }

    #[test]
    fn a_live_message_the_bind_answer_or_replay_covered_is_dropped() {
        let mut v2 = V2 {
            held: Held::new(Some(Position {
                offset: 5,
                epoch: Epoch(1),
            })),
            preauth: None,
        };
        assert_eq!(v2.frame(at(4, 1)), None);
        assert_eq!(v2.frame(at(5, 1)), None);
        assert!(v2.frame(at(6, 1)).is_some());
        assert_eq!(v2.frame(at(6, 1)), None, "the client holds 6 now");
        assert!(v2.frame(at(1, 2)).is_some(), "a new epoch's first is news");
        assert!(v2.frame(Message::push(Payload::from("x"))).is_some());
        assert!(!v2.missed());
        assert!(v2.frame(Message::broadcast(Payload::from("x"))).is_some());
        // A gap: nothing more is framed, and the session ends (4006).
        assert_eq!(v2.frame(at(3, 2)), None);
        assert!(v2.missed());
        assert_eq!(v2.frame(at(2, 2)), None);
        assert_eq!(v2.frame(Message::broadcast(Payload::from("x"))), None);
    }
}
