//! What a session does differently in protocol v1 and v2: the bind, the
//! frame a queued message becomes, the close codes. A session is generic
//! over it, so each protocol's choices are compiled in and v1 pays nothing
//! for v2 (no branch, no state, not a byte of its idle future).

use std::future::Future;

use tokio::time::Instant;
use tracing::Span;
use tungstenite::Utf8Bytes;

use super::end::End;
use super::session::{Session, bind_identity};
use crate::auth::{Identity, TokenError};
use crate::connections::Connection;
use crate::model::{Message, Payload};

/// A client protocol spoken over one WebSocket.
pub(super) trait Protocol: Send + Sized + 'static {
    /// Whether the close frames use v2's codes ([`End::close_frame`]).
    const V2: bool;

    /// Takes the upgrade URL's token (secure mode), before the session's
    /// future exists.
    fn start(
        conn: &mut Connection,
        preauth: Option<Result<Identity, TokenError>>,
        span: &Span,
    ) -> Start<Self>;

    /// The text frame to write for a queued message; `None`: skip it.
    fn frame(&mut self, message: Message) -> Option<Payload>;

    /// Whether a queued message showed that this connection missed some
    /// (protocol v2: a gap in the offsets); the session then ends with
    /// [`End::Missed`] once what came before it is written.
    fn missed(&self) -> bool {
        false
    }

    /// Binds the connection with its first text frame (and, in v2, writes
    /// what the bind answers).
    fn bind(
        session: &mut Session<Self>,
        text: Utf8Bytes,
    ) -> impl Future<Output = Result<(), End>> + Send + '_;
}

/// How a session starts.
pub(super) struct Start<P> {
    /// The protocol's state.
    pub(super) protocol: P,
    /// When the token expires, if already bound by one.
    pub(super) expires: Option<Instant>,
    /// Set when the session must end at once (a refused URL token).
    pub(super) end: Option<End>,
}

/// Protocol v1, the seed's: the uid (or token) as the first frame, each
/// push's text as it was pushed.
pub(super) struct V1;

impl Protocol for V1 {
    const V2: bool = false;

    /// A URL token binds at once: v1 clients send nothing more.
    fn start(
        conn: &mut Connection,
        preauth: Option<Result<Identity, TokenError>>,
        span: &Span,
    ) -> Start<V1> {
        let (expires, end) = match preauth {
            Some(Ok(id)) => (Some(bind_identity(conn, id, span)), None),
            Some(Err(e)) => (None, Some(End::Token(e))),
            None => (None, None),
        };
        Start {
            protocol: V1,
            expires,
            end,
        }
    }

    #[inline]
    fn frame(&mut self, message: Message) -> Option<Payload> {
        Some(message.payload)
    }

    fn bind(
        session: &mut Session<V1>,
        text: Utf8Bytes,
    ) -> impl Future<Output = Result<(), End>> + Send + '_ {
        std::future::ready(session.bind_v1(text.as_str()))
    }
}
