//! How a stream ends: one enum maps each way to its close event (v2 codes,
//! docs/protocol-v2.md) and its metric label, in one `match` each.

use crate::connections::CloseReason;

/// How a stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// The client went away (the connection's writer dropped the body).
    Peer,
    /// The gateway is draining: this stream's paced slot came.
    Shutdown,
    /// The gateway asked it to close (slow consumer, kicked, replaced).
    Closed(CloseReason),
    /// Secure mode: the token expired while the stream was open.
    TokenExpired,
    /// A write did not get through within `--write-timeout` (the session's
    /// hand-over waited that long, or the connection's writer said so).
    WriteFailed,
    /// A queued message showed that this stream missed some (a gap in the
    /// offsets, see `model::Continuity`): the client resumes.
    Missed,
}

impl End {
    /// The `event: close` code and reason, if the client gets one.
    pub(super) fn close(self) -> Option<(u16, &'static str)> {
        Some(match self {
            End::Peer | End::WriteFailed => return None,
            End::Shutdown => (1001, "server shutting down, reconnect"),
            End::Closed(CloseReason::SlowConsumer) => (4006, "slow consumer: outbound queue full"),
            End::Closed(CloseReason::Disconnected) => (4001, "disconnected by the server"),
            End::Closed(CloseReason::Replaced) => (4002, "too many connections for this uid"),
            End::TokenExpired => (4004, "token expired"),
            End::Missed => (4006, "messages missed: reconnect with since"),
        })
    }

    /// The `reason` label of `pushgate_sse_disconnects_total`; `None` for a
    /// client that left (not the gateway's doing).
    pub(super) fn label(self) -> Option<&'static str> {
        Some(match self {
            End::Peer => return None,
            End::Shutdown => "shutdown",
            End::Closed(reason) => reason.as_str(),
            End::TokenExpired => "token_expired",
            End::WriteFailed => "write_failed",
            End::Missed => "missed_messages",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry;

    #[test]
    fn every_end_the_gateway_causes_has_a_listed_label_and_a_code() {
        let ends = [
            End::Shutdown,
            End::Closed(CloseReason::SlowConsumer),
            End::Closed(CloseReason::Disconnected),
            End::Closed(CloseReason::Replaced),
            End::TokenExpired,
            End::WriteFailed,
            End::Missed,
        ];
        for end in ends {
            let label = end.label().unwrap();
            assert!(
                telemetry::is_listed_sse(telemetry::SSE_DISCONNECTS, label),
                "{end:?}"
            );
            assert_eq!(end.close().is_some(), end != End::WriteFailed);
        }
        assert_eq!(End::Peer.label(), None);
    }
}
