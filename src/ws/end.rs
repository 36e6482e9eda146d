//! How a WebSocket session ends: one enum maps each way to its close frame
//! and its metric label, in one `match` each.

use tungstenite::error::ProtocolError;
use tungstenite::protocol::frame::coding::CloseCode;

use super::{CLOSE_KICKED, CLOSE_REPLACED};
use crate::auth::TokenError;
use crate::connections::CloseReason;

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
}

impl End {
    /// The close frame to send, if any (a dead peer gets none).
    pub(super) fn close_frame(&self) -> Option<(u16, &'static str)> {
        let code = |c: CloseCode| u16::from(c);
        Some(match self {
            End::Peer | End::PongTimeout | End::WriteFailed => return None,
            End::Shutdown => (code(CloseCode::Away), "server shutting down, reconnect"),
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
            End::BadUid(_) => "invalid_uid",
            End::BinaryUid => "binary_uid",
            End::TooBig => "message_too_big",
            End::BadUtf8 => "invalid_utf8",
            End::Protocol => "protocol_error",
            End::PongTimeout => "pong_timeout",
            End::Closed(reason) => reason.as_str(),
            End::Token(e) => e.metric_label(),
            End::TokenExpired => "token_expired",
            End::WriteFailed => "write_failed",
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
        ];
        for end in ends {
            assert!(
                telemetry::is_listed(telemetry::DISCONNECTS, end.as_str()),
                "{end:?}"
            );
        }
    }
}
