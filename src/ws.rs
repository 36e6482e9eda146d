//! The WebSocket front end: upgrade, bind, and one task per connection.
//!
//! A client binds by sending its uid as the first text frame (the seed's
//! contract). After that, frames from the client are read (so pings, pongs
//! and close frames work) and otherwise ignored, bounded by
//! `--max-message-bytes`.
//!
//! Each connection runs one `select!` over its outbound queue, inbound frames,
//! one timer (bind deadline, next ping or pong deadline) and the shutdown
//! signal. Queued messages are written together: feed, feed, flush.

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use tokio::time::{Instant, timeout};

use crate::App;
use crate::connections::{Connection, Delivery};
use crate::http::error::ApiError;
use crate::model::Uid;
use crate::telemetry;

/// Most queued messages written per socket flush; bounds one write's size and
/// keeps a busy connection from starving its own inbound reads.
const MAX_BATCH: usize = 64;

/// How long a slow consumer gets to take its close frame.
const SLOW_CLOSE_LIMIT: Duration = Duration::from_secs(1);

/// `GET /` and `GET /ws`: the WebSocket upgrade.
pub async fn upgrade(State(app): State<App>, ws: WebSocketUpgrade) -> Response {
    if app.shutdown.is_draining() {
        telemetry::rejected_upgrade("shutting_down");
        return ApiError::Unavailable("the gateway is shutting down".into()).into_response();
    }
    let cfg = &app.config;
    // The tracker counts this session from now, not from when the upgrade
    // completes, so a shutdown never misses a connection mid-handshake.
    let token = app.shutdown.sessions().token();
    ws
        // tungstenite's 128 KiB default read buffer per connection is what
        // makes idle connections expensive; clients send little after binding.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(cfg.queue_bytes.saturating_mul(2).max(64 * 1024))
        .max_message_size(cfg.max_message_bytes)
        .max_frame_size(cfg.max_message_bytes)
        .on_upgrade(move |socket| async move {
            let conn = app.map.open();
            session(socket, conn, &app).await;
            drop(token);
        })
}

/// How a session ends; decides the close frame and the metrics label.
#[derive(Debug)]
enum End {
    /// The client closed or went away.
    Peer,
    /// The gateway is shutting down.
    Shutdown,
    /// No uid within `--bind-timeout`.
    BindTimeout,
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
    /// The outbound queue overflowed.
    SlowConsumer,
    /// A write did not complete in time, or failed.
    WriteFailed,
}

impl End {
    /// The close frame to send, if any (a dead peer gets none).
    fn close_frame(&self) -> Option<(u16, &'static str)> {
        Some(match self {
            End::Peer | End::PongTimeout | End::WriteFailed => return None,
            End::Shutdown => (close_code::AWAY, "server shutting down, reconnect"),
            End::BindTimeout => (close_code::POLICY, "bind timeout: send the uid first"),
            End::BadUid(why) => (close_code::POLICY, why),
            End::BinaryUid => (close_code::UNSUPPORTED, "the uid must be a text frame"),
            End::TooBig => (close_code::SIZE, "message too big"),
            End::BadUtf8 => (close_code::INVALID, "text is not valid UTF-8"),
            End::Protocol => (close_code::PROTOCOL, "protocol error"),
            End::SlowConsumer => (close_code::POLICY, "slow consumer: outbound queue full"),
        })
    }

    fn as_str(&self) -> &'static str {
        match self {
            End::Peer => "peer_closed",
            End::Shutdown => "shutdown",
            End::BindTimeout => "bind_timeout",
            End::BadUid(_) => "invalid_uid",
            End::BinaryUid => "binary_uid",
            End::TooBig => "message_too_big",
            End::BadUtf8 => "invalid_utf8",
            End::Protocol => "protocol_error",
            End::PongTimeout => "pong_timeout",
            End::SlowConsumer => "slow_consumer",
            End::WriteFailed => "write_failed",
        }
    }
}

/// What the single timer of a session stands for when it fires.
fn next_wake(
    bound: bool,
    bind_deadline: Instant,
    next_ping: Instant,
    pong_due: Option<Instant>,
) -> Instant {
    let heartbeat = pong_due.unwrap_or(next_ping);
    if bound {
        heartbeat
    } else {
        heartbeat.min(bind_deadline)
    }
}

async fn session(mut socket: WebSocket, mut conn: Connection, app: &App) {
    let cfg = &app.config;
    let write_timeout = cfg.write_timeout;
    let bind_deadline = Instant::now() + cfg.bind_timeout;
    let mut next_ping = Instant::now() + cfg.ping_interval;
    let mut pong_due: Option<Instant> = None;

    let end = loop {
        let bound = conn.uid().is_some();
        let wake = next_wake(bound, bind_deadline, next_ping, pong_due);
        tokio::select! {
            biased;
            _ = app.shutdown.draining() => break End::Shutdown,
            delivery = conn.next(), if bound => match delivery {
                Delivery::Message(first) => {
                    match write_batch(&mut socket, &mut conn, first, write_timeout).await {
                        Ok(()) => {}
                        Err(WriteError::Closing) => break End::SlowConsumer,
                        Err(WriteError::Failed) => break End::WriteFailed,
                    }
                }
                Delivery::Close(_) => break End::SlowConsumer,
            },
            frame = socket.recv() => {
                pong_due = None;
                match frame {
                    None | Some(Ok(Message::Close(_))) => break End::Peer,
                    Some(Ok(Message::Text(text))) if !bound => {
                        match Uid::new(text.as_str()) {
                            Ok(uid) => {
                                tracing::debug!(conn = conn.id().0, %uid, "bound");
                                // A fresh connection's first bind cannot fail.
                                let _ = conn.bind(uid);
                            }
                            Err(e) => break End::BadUid(uid_error_reason(e)),
                        }
                    }
                    Some(Ok(Message::Binary(_))) if !bound => break End::BinaryUid,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break classify_read_error(e),
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if !bound && now >= bind_deadline {
                    break End::BindTimeout;
                }
                if pong_due.is_some_and(|due| now >= due) {
                    break End::PongTimeout;
                }
                if now >= next_ping {
                    let ping = socket.send(Message::Ping(Default::default()));
                    if !matches!(timeout(write_timeout, ping).await, Ok(Ok(()))) {
                        break End::WriteFailed;
                    }
                    pong_due = Some(now + cfg.pong_timeout);
                    next_ping = now + cfg.ping_interval;
                }
            }
        }
    };

    if !matches!(end, End::Peer) {
        telemetry::ws_disconnect(end.as_str());
    }
    tracing::debug!(
        conn = conn.id().0,
        reason = end.as_str(),
        "websocket closed"
    );
    // Unbind before the close handshake: a closing connection takes no pushes.
    drop(conn);
    if let Some((code, reason)) = end.close_frame() {
        // A slow consumer's socket is likely stuck: try briefly, then drop it.
        let limit = match end {
            End::SlowConsumer => write_timeout.min(SLOW_CLOSE_LIMIT),
            _ => write_timeout,
        };
        close(&mut socket, code, reason, limit).await;
    }
}

/// Why a batch write did not complete.
enum WriteError {
    /// The gateway asked the connection to close meanwhile (its queue
    /// overflowed while the socket was stuck).
    Closing,
    /// The write failed or took longer than `--write-timeout`.
    Failed,
}

/// Writes `first` and whatever else is already queued, then flushes once.
async fn write_batch(
    socket: &mut WebSocket,
    conn: &mut Connection,
    first: crate::model::Payload,
    limit: Duration,
) -> Result<(), WriteError> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match conn.try_next() {
            Some(next) => batch.push(next),
            None => break,
        }
    }
    let write = async {
        for msg in batch {
            socket.feed(Message::Text(msg)).await?;
        }
        socket.flush().await
    };
    tokio::select! {
        written = timeout(limit, write) => match written {
            Ok(Ok(())) => Ok(()),
            _ => Err(WriteError::Failed),
        },
        _ = conn.close_requested() => Err(WriteError::Closing),
    }
}

/// Sends a close frame and waits (bounded) for the client's answer, so the
/// client sees a clean close with the code rather than a reset.
async fn close(socket: &mut WebSocket, code: u16, reason: &'static str, limit: Duration) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let handshake = async {
        if socket.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        // Read until the client's close frame (or an error) ends the stream.
        while let Some(Ok(_)) = socket.recv().await {}
    };
    let _ = timeout(limit, handshake).await;
}

fn uid_error_reason(e: crate::model::UidError) -> &'static str {
    match e {
        crate::model::UidError::Empty => "invalid uid: empty",
        crate::model::UidError::TooLong => "invalid uid: longer than 256 bytes",
    }
}

fn classify_read_error(e: axum::Error) -> End {
    match e.into_inner().downcast::<tungstenite::Error>() {
        Ok(e) => match *e {
            tungstenite::Error::Capacity(_) => End::TooBig,
            tungstenite::Error::Utf8(_) => End::BadUtf8,
            tungstenite::Error::Protocol(_) => End::Protocol,
            _ => End::Peer,
        },
        Err(_) => End::Peer,
    }
}
