//! How a WebSocket session ends: one enum maps each way to its close frame
//! (protocol v1's codes, or v2's: docs/protocol-v2.md) and its metric label,
//! in one `match` each.

use tungstenite::error::ProtocolError;
use tungstenite::protocol::frame::coding::CloseCode;

use super::{
    CLOSE_BIND_TIMEOUT, CLOSE_INVALID_BIND, CLOSE_KICKED, CLOSE_REPLACED, CLOSE_SLOW_CONSUMER,
    CLOSE_TOKEN_EXPIRED, CLOSE_TOKEN_REFUSED,
};
use crate::auth::TokenError;
use crate::connections::CloseReason;
use crate::model::BindFrameError;

/// How a session ends; decides the close frame and the metrics label.
#[derive(Debug)]
pub(super) enum End {
    /// The client closed or went away.
    Peer,
    /// The gateway is shutting down.
    Shutdown,
    /// No uid within `--bind-timeout`.
    BindTimeout,
    /// Secure mode: no token within `--bind-timeout`.
    TokenTimeout,
    /// The bind frame was not a valid uid.
    BadUid(&'static str),
    /// The bind frame was binary.
    BinaryUid,
    /// Protocol v2: the bind frame was not valid.
    BadBind(BindFrameError),
    /// A message or frame over the size limit.
    TooBig,
    /// Text that is not UTF-8.
    BadUtf8,
    /// The client broke the WebSocket protocol.
    Protocol,
    /// No answer to a ping in time.
    PongTimeout,
    /// The gateway asked it to close (slow consumer, kicked, replaced).
    Closed(CloseReason),
    /// Secure mode: the token was missing, invalid or expired.
    Token(TokenError),
    /// Secure mode: the token expired while the connection was open.
    TokenExpired,
    /// A write did not complete in time, or failed.
    WriteFailed,
    /// Protocol v2: a queued message showed that this connection missed
    /// some (a gap in the offsets, see `model::Continuity`); the client
    /// resumes with `since`.
    Missed,
}

impl End {
    /// The close frame to send, if any (a dead peer gets none): v1's codes
    /// (the seed's, README), or with `v2` the codes of docs/protocol-v2.md,
    /// one per thing a client can do about it.
    pub(super) fn close_frame(&self, v2: bool) -> Option<(u16, &'static str)> {
        let code = |c: CloseCode| u16::from(c);
        Some(match self {
            End::Peer | End::PongTimeout | End::WriteFailed => return None,
            End::Shutdown => (code(CloseCode::Away), "server shutting down, reconnect"),
            End::BindTimeout | End::TokenTimeout if v2 => (
                CLOSE_BIND_TIMEOUT,
                "bind timeout: send the bind frame first",
            ),
            End::BinaryUid if v2 => (CLOSE_INVALID_BIND, "the bind frame must be a text frame"),
            End::BadBind(e) => (CLOSE_INVALID_BIND, e.as_str()),
            End::Closed(CloseReason::SlowConsumer) if v2 => {
                (CLOSE_SLOW_CONSUMER, "slow consumer: outbound queue full")
            }
            // Like a slow consumer: this connection did not get every
            // message; resuming gets them.
            End::Missed => (
                if v2 {
                    CLOSE_SLOW_CONSUMER
                } else {
                    code(CloseCode::Policy)
                },
                "messages missed: reconnect with since",
            ),
            End::Token(TokenError::Expired) | End::TokenExpired if v2 => {
                (CLOSE_TOKEN_EXPIRED, "token expired")
            }
            End::Token(e) if v2 => (CLOSE_TOKEN_REFUSED, e.close_reason()),
            End::BindTimeout => (code(CloseCode::Policy), "bind timeout: send the uid first"),
            End::TokenTimeout => (
                code(CloseCode::Policy),
                "bind timeout: send the token first",
            ),
            End::BadUid(why) => (code(CloseCode::Policy), why),
            End::BinaryUid => (code(CloseCode::Unsupported), "the uid must be a text frame"),
            End::TooBig => (code(CloseCode::Size), "message too big"),
            End::BadUtf8 => (code(CloseCode::Invalid), "text is not valid UTF-8"),
            End::Protocol => (code(CloseCode::Protocol), "protocol error"),
            End::Closed(CloseReason::SlowConsumer) => (
                code(CloseCode::Policy),
                "slow consumer: outbound queue full",
            ),
            End::Closed(CloseReason::Disconnected) => (CLOSE_KICKED, "disconnected by the server"),
            End::Closed(CloseReason::Replaced) => {
                (CLOSE_REPLACED, "too many connections for this uid")
            }
            End::Token(e) => (code(CloseCode::Policy), e.close_reason()),
            End::TokenExpired => (code(CloseCode::Policy), "token expired"),
        })
    }

    pub(super) fn as_str(&self) -> &'static str {
        match self {
            End::Peer => "peer_closed",
            End::Shutdown => "shutdown",
            End::BindTimeout | End::TokenTimeout => "bind_timeout",
            End::BadUid(_) | End::BadBind(_) => "invalid_uid",
            End::BinaryUid => "binary_uid",
            End::TooBig => "message_too_big",
            End::BadUtf8 => "invalid_utf8",
            End::Protocol => "protocol_error",
            End::PongTimeout => "pong_timeout",
            End::Closed(reason) => reason.as_str(),
            End::Token(e) => e.metric_label(),
            End::TokenExpired => "token_expired",
            End::WriteFailed => "write_failed",
            End::Missed => "missed_messages",
        }
    }
}

pub(super) fn uid_error_reason(e: crate::model::UidError) -> &'static str {
    match e {
        crate::model::UidError::Empty => "invalid uid: empty",
        crate::model::UidError::TooLong => "invalid uid: longer than 256 bytes",
    }
}

pub(super) fn classify_read_error(e: tungstenite::Error) -> End {
    match e {
        tungstenite::Error::Capacity(_) => End::TooBig,
        tungstenite::Error::Utf8(_) => End::BadUtf8,
        // The client went away without a close frame: nothing to answer.
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => End::Peer,
        tungstenite::Error::Protocol(_) => End::Protocol,
        _ => End::Peer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry;

    #[test]
    fn every_disconnect_label_is_exported_from_the_start() {
        use crate::auth::TokenError;
        let ends = [
            End::Shutdown,
            End::BindTimeout,
            End::TokenTimeout,
            End::BadUid("x"),
            End::BinaryUid,
            End::BadBind(BindFrameError::Malformed),
            End::TooBig,
            End::BadUtf8,
            End::Protocol,
            End::PongTimeout,
            End::Closed(CloseReason::SlowConsumer),
            End::Closed(CloseReason::Disconnected),
            End::Closed(CloseReason::Replaced),
            End::Token(TokenError::Expired),
            End::Token(TokenError::BadSignature),
            End::TokenExpired,
            End::WriteFailed,
            End::Missed,
        ];
        for end in ends {
            assert!(
                telemetry::is_listed(telemetry::DISCONNECTS, end.as_str()),
                "{end:?}"
            );
        }
    }

    #[test]
    fn v2_gives_each_end_its_own_code_and_v1_keeps_the_seeds() {
        use crate::auth::TokenError;
        let cases = [
            (End::Shutdown, 1001, 1001),
            (End::BindTimeout, 1008, 4005),
            (End::TokenTimeout, 1008, 4005),
            (End::BinaryUid, 1003, 4007),
            (End::Closed(CloseReason::Disconnected), 4001, 4001),
            (End::Closed(CloseReason::Replaced), 4002, 4002),
            (End::Closed(CloseReason::SlowConsumer), 1008, 4006),
            (End::Token(TokenError::BadSignature), 1008, 4003),
            (End::Token(TokenError::Expired), 1008, 4004),
            (End::TokenExpired, 1008, 4004),
            (End::TooBig, 1009, 1009),
            (End::Missed, 1008, 4006),
        ];
        for (end, v1, v2) in cases {
            assert_eq!(end.close_frame(false).map(|f| f.0), Some(v1), "{end:?}");
            assert_eq!(end.close_frame(true).map(|f| f.0), Some(v2), "{end:?}");
        }
        assert_eq!(
            End::BadBind(BindFrameError::MissingUid)
                .close_frame(true)
                .map(|f| f.0),
            Some(4007)
        );
    }
}
