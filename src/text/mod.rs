//! The legacy text push port, as Workerman's `text://` worker spoke it.
//!
//! A backend writes one JSON object per line (`{"uid":"uid1","percent":"88%"}\n`)
//! and reads `ok\n` (a connection bound to that uid took the line) or `fail\n`
//! (offline, invalid JSON, no usable uid). The line itself, byte for byte and
//! without its line end (every trailing `\r` goes too), is what the browser
//! receives. Lines on one connection
//! are answered in order; answers to pipelined lines are written together.
//! A client that does not read its answers still has its lines routed; its
//! answers past `--text-answer-backlog` bytes are dropped (see `Answers`).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tracing::Instrument;

use crate::App;
use crate::model::{Payload, Source, Uid, parse_text_line};
use crate::{net, telemetry};

mod codec;

pub use codec::{LineCodec, LineCodecError};

/// Accepts text-port connections until the drain begins.
pub async fn serve(listener: TcpListener, app: App) {
    loop {
        let accepted = tokio::select! {
            _ = app.shutdown.draining() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let allowed = &app.config.text.text_allow;
                let ip = peer.ip().to_canonical();
                if !allowed.is_empty() && !allowed.iter().any(|net| net.contains(&ip)) {
                    telemetry::text_disconnect("not_allowed");
                    tracing::info!(%peer, "text port: peer not in --text-allow, closed");
                    drop(stream);
                    continue;
                }
                // Debug level, as for WebSocket sessions: disabled, it costs
                // only its handle; enabled, every line names the peer.
                let span = tracing::debug_span!("text_port", %peer);
                let session = handle(stream, peer, app.clone());
                app.shutdown.sessions().spawn(session.instrument(span));
            }
            Err(e) => net::accept::error_pause(&e).await,
        }
    }
}

/// Why a text connection ended, as a metrics label.
#[derive(Debug, Clone, Copy)]
enum End {
    PeerClosed,
    LineTooLong,
    Idle,
    Shutdown,
    Io,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::PeerClosed => "peer_closed",
            End::LineTooLong => "line_too_long",
            End::Idle => "idle_timeout",
            End::Shutdown => "shutdown",
            End::Io => "io_error",
        }
    }
}

async fn handle(stream: TcpStream, peer: SocketAddr, app: App) {
    let gauge = telemetry::text_connections();
    gauge.increment(1.0);
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let end = match session(rd, &mut wr, &app).await {
        Ok(end) => end,
        Err(_) => End::Io,
    };
    gauge.decrement(1.0);
    if !matches!(end, End::PeerClosed) {
        telemetry::text_disconnect(end.as_str());
    }
    tracing::debug!(%peer, reason = end.as_str(), "text connection closed");
    // Closed only now, so a client that sees the close sees it counted.
    drop(wr);
}

/// Most lines routed as one batch: what is readable at once, up to this.
const MAX_LINES_PER_BATCH: usize = 64;

/// What stopped the gathering of a batch.
enum After {
    /// Nothing more readable now (or the batch is full): go on.
    More,
    /// The peer closed.
    Closed,
    /// A line over the limit.
    TooLong,
    /// The socket failed.
    Io(io::Error),
}

/// Answers not yet written to one connection, at most
/// `--text-answer-backlog` bytes (Workerman's send buffer was 1 MB).
///
/// Writing answers never holds up reading and routing lines: a backend that
/// writes lines and never reads its answers (fire-and-forget PHP exists)
/// keeps being served. Once an answer does not fit, it and every later
/// answer on the connection are dropped and counted: what a client reads is
/// always the answers to its first lines, in order, and then nothing more.
struct Answers {
    buf: BytesMut,
    max: usize,
    /// An answer was dropped: no later one is queued.
    dropping: bool,
    dropped: metrics::Counter,
}

impl Answers {
    fn new(max: usize) -> Answers {
        Answers {
            buf: BytesMut::new(),
            max,
            dropping: false,
            dropped: telemetry::text_answers_dropped(),
        }
    }

    fn push(&mut self, answer: &'static [u8]) {
        if !self.dropping && self.buf.len() + answer.len() <= self.max {
            self.buf.extend_from_slice(answer);
        } else {
            if !self.dropping {
                tracing::debug!("text client does not read its answers; dropping them");
            }
            self.dropping = true;
            self.dropped.increment(1);
        }
    }

    /// Writes what is queued, giving up at `deadline`; what is left then
    /// is counted as dropped.
    async fn flush_until(&mut self, wr: &mut OwnedWriteHalf, deadline: Instant) -> io::Result<()> {
        while !self.buf.is_empty() {
            match tokio::time::timeout_at(deadline, wr.write(&self.buf)).await {
                Ok(Ok(n)) => self.buf.advance(n),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    let left = self.buf.iter().filter(|&&b| b == b'\n').count();
                    self.dropped.increment(left as u64);
                    self.buf.clear();
                }
            }
        }
        Ok(())
    }
}

/// One connection's life: lines are read and routed as they come, answers
/// written as the socket takes them (see [`Answers`]). It ends when the peer
/// closes, on a line over the limit, when neither a complete line arrives
/// nor an answer can be written for `--text-idle-timeout`, or at the drain.
/// Answers still queued then get at most `--write-timeout` to go out, so a
/// client that does not read never holds a shutdown.
async fn session(rd: OwnedReadHalf, wr: &mut OwnedWriteHalf, app: &App) -> io::Result<End> {
    let mut lines =
        FramedRead::with_capacity(rd, LineCodec::new(app.config.text.max_line_bytes), 4096);
    let mut answers = Answers::new(app.config.text.text_answer_backlog);
    let idle = app.config.text.text_idle_timeout;
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    let mut batch: Vec<Bytes> = Vec::new();
    let end = loop {
        tokio::select! {
            first = lines.next() => {
                idle_timer.as_mut().reset(Instant::now() + idle);
                let after = gather(first, &mut lines, &mut batch);
                // Earlier lines keep their answers, in order, whatever ends
                // the connection after them.
                answer_batch(app, &mut batch, &mut answers).await;
                match after {
                    After::More => {}
                    After::Closed => break End::PeerClosed,
                    After::TooLong => {
                        app.map.refused(Source::Text);
                        answers.push(b"fail\n");
                        break End::LineTooLong;
                    }
                    After::Io(e) => return Err(e),
                }
            }
            written = wr.write(&answers.buf), if !answers.buf.is_empty() => {
                answers.buf.advance(written?);
                idle_timer.as_mut().reset(Instant::now() + idle);
            }
            _ = &mut idle_timer => break End::Idle,
            _ = app.shutdown.draining() => {
                // Lines that already arrived are answered, then close.
                while let Some(Some(Ok(line))) = lines.next().now_or_never() {
                    batch.push(line);
                }
                answer_batch(app, &mut batch, &mut answers).await;
                break End::Shutdown;
            }
        }
    };
    // Idle means nothing could be written for a whole idle timeout already:
    // one try, then what is left is counted as dropped.
    let grace = match end {
        End::Idle => Duration::ZERO,
        _ => app.config.websocket.write_timeout,
    };
    answers.flush_until(wr, Instant::now() + grace).await?;
    Ok(end)
}

/// Adds `first` and every line readable now to `batch`: they are routed
/// together (one Redis round trip in cluster mode) and answered together.
fn gather(
    first: Option<Result<Bytes, LineCodecError>>,
    lines: &mut FramedRead<OwnedReadHalf, LineCodec>,
    batch: &mut Vec<Bytes>,
) -> After {
    let mut next = Some(first);
    while let Some(item) = next.take() {
        match item {
            Some(Ok(line)) => batch.push(line),
            None => return After::Closed,
            Some(Err(LineCodecError::TooLong)) => return After::TooLong,
            Some(Err(LineCodecError::Io(e))) => return After::Io(e),
        }
        if batch.len() < MAX_LINES_PER_BATCH {
            next = lines.next().now_or_never();
        }
    }
    After::More
}

/// Routes every line of `batch` (emptying it) and queues their answers in
/// order: `ok`, or `fail` for offline uids, bad lines and — in cluster mode
/// with Redis unreachable — uids not held here (never a false `ok`).
async fn answer_batch(app: &App, batch: &mut Vec<Bytes>, answers: &mut Answers) {
    if batch.is_empty() {
        return;
    }
    let parsed: Vec<Option<(Uid, Payload)>> = batch
        .drain(..)
        .map(|line| match parse_text_line(line) {
            Ok(push) => Some(push),
            Err(e) => {
                tracing::debug!(error = %e, "refused text line");
                app.map.refused(Source::Text);
                None
            }
        })
        .collect();
    let pushes: Vec<(Uid, Payload)> = parsed.iter().flatten().cloned().collect();
    let mut results = app.map.push_batch(Source::Text, &pushes).await.into_iter();
    for line in &parsed {
        let ok = line.is_some() && matches!(results.next(), Some(Ok(outcome)) if outcome.is_ok());
        answers.push(if ok { b"ok\n" } else { b"fail\n" });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_disconnect_label_is_exported_from_the_start() {
        for end in [End::LineTooLong, End::Idle, End::Shutdown, End::Io] {
            assert!(telemetry::is_listed(
                telemetry::TEXT_DISCONNECTS,
                end.as_str()
            ));
        }
        assert!(telemetry::is_listed(
            telemetry::TEXT_DISCONNECTS,
            "not_allowed"
        ));
    }
}
