//! One WebSocket's wire, below axum: tungstenite reads and answers, pushgate
//! writes its pushes itself.
//!
//! Why not axum's `WebSocket`: a broadcast writes the same short text frame
//! to thousands of sockets, and through `WebSocket` → tokio-tungstenite →
//! tungstenite each frame costs a sink round (waker registrations, a frame
//! built and copied into a per-connection write buffer) before the one
//! `send`. Here a batch of queued pushes goes to the kernel in one system
//! call: small frames assembled in a buffer each runtime thread reuses (one
//! `send`), large ones as a `writev` of their 2–10 byte headers and their
//! payloads straight from the shared `Bytes`. Nothing is buffered per
//! connection unless the socket is full.
//!
//! tungstenite's [`WebSocketContext`] still does everything else: it parses
//! and unmasks client frames, enforces the size limits and UTF-8, answers
//! pings and close frames, and writes pushgate's own pings and close frame.
//! The two writers never interleave: a batch is written whole (or the
//! session ends) before anything is read again, and tungstenite's pending
//! bytes are flushed before a batch starts.

use std::io::{self, IoSlice, Read, Write};
use std::time::Duration;

use bytes::Bytes;
use smallvec::SmallVec;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, FrameHeader};
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Error as WsError, Message};

use crate::model::Payload;
use crate::net::linger;

/// Most queued messages written per system call; bounds one write's size and
/// keeps a busy connection from starving its own inbound reads.
pub(super) const MAX_FRAMES_PER_WRITE: usize = 64;

/// A server's text frame header is at most 10 bytes (no mask).
const MAX_HEADER: usize = 10;

/// Batches up to this size are copied into [`SCRATCH`] and written with one
/// `send`; larger ones (large messages) go out as a `writev` of their parts.
const SCRATCH_LIMIT: usize = 64 * 1024;

thread_local! {
    /// Each runtime thread's buffer for assembling a batch of small frames;
    /// it lives across batches, so no connection holds a write buffer.
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A WebSocket connection after the upgrade.
pub struct Socket {
    tcp: TcpStream,
    ctx: WebSocketContext,
    /// A message was just read, so tungstenite may hold more already read
    /// from the socket: the next read must not wait for the socket.
    more: bool,
    /// A read failed: tungstenite's reader is left mid-frame and must not be
    /// called again.
    failed: bool,
    /// What the socket has not taken yet of the last batch. Nothing else
    /// may be written before it, or a frame would be cut: it is finished
    /// before a close frame too. Boxed: one pointer in every idle session
    /// rather than a buffer and an offset (the session's task allocation
    /// grows in steps of 128 bytes, and 16 more bytes cost a step).
    unsent: Option<Box<Unsent>>,
}

/// Bytes of a batch still to write, and how far writing has got.
struct Unsent {
    bytes: Vec<u8>,
    at: usize,
}

/// tungstenite's view of the socket: it never blocks, and `WouldBlock`
/// (which also clears tokio's readiness) means wait for the socket.
struct Io<'a>(&'a TcpStream);

impl Read for Io<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Io<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn would_block(e: &WsError) -> bool {
    matches!(e, WsError::Io(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// A control frame handed to tungstenite: `WouldBlock` only means it waits
/// in tungstenite's buffer for [`Socket::flush_control`].
fn sent_or_queued(result: Result<(), WsError>) -> io::Result<()> {
    match result {
        Err(e) if would_block(&e) => Ok(()),
        other => other.map_err(into_io),
    }
}

impl Socket {
    /// Wraps an upgraded connection; `read_ahead` is what the HTTP server
    /// had already read past the upgrade request.
    pub(super) fn new(tcp: TcpStream, read_ahead: Bytes, config: WebSocketConfig) -> Socket {
        let ctx = if read_ahead.is_empty() {
            WebSocketContext::new(Role::Server, Some(config))
        } else {
            WebSocketContext::from_partially_read(read_ahead.to_vec(), Role::Server, Some(config))
        };
        Socket {
            tcp,
            ctx,
            more: !read_ahead.is_empty(),
            failed: false,
            unsent: None,
        }
    }

    /// Resolves when [`Socket::try_read`] may have something. Cancel-safe.
    pub(super) async fn readable(&self) -> io::Result<()> {
        if self.more {
            return Ok(());
        }
        std::future::poll_fn(|cx| self.tcp.poll_read_ready(cx)).await
    }

    /// The next message from the client if one can be read without waiting
    /// (`Ok(None)`: wait for [`Socket::readable`]). Answers to the client's
    /// pings and close frame are written along the way.
    pub(super) fn try_read(&mut self) -> Result<Option<Message>, WsError> {
        if self.failed {
            return Err(WsError::AlreadyClosed);
        }
        match self.ctx.read(&mut Io(&self.tcp)) {
            Ok(message) => {
                self.more = true;
                Ok(Some(message))
            }
            Err(e) if would_block(&e) => {
                self.more = false;
                Ok(None)
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// Writes `first` and up to [`MAX_FRAMES_PER_WRITE`]` - 1` further messages that
    /// `more` takes (given the room left and where to put each) as text
    /// frames, in one system call when the socket takes them.
    ///
    /// Returns whether the socket took it all. If not, what it did not take
    /// is kept (copied, so the queue's payloads are released) for
    /// [`Socket::finish_writes`]. Synchronous on purpose: the batch lives on
    /// the stack, not in every idle session's future.
    pub(super) fn write_texts(
        &mut self,
        first: Payload,
        more: impl FnOnce(usize, &mut dyn FnMut(Payload)),
    ) -> io::Result<bool> {
        // Bytes tungstenite still holds (a pong that found the socket full)
        // go first, and so would the rest of an earlier batch (the session
        // finishes each batch before the next; this keeps the order even if
        // it did not). If they cannot go now, this batch waits behind them.
        let blocked = self.unsent.is_some()
            || match self.ctx.flush(&mut Io(&self.tcp)) {
                Ok(()) => false,
                Err(e) if would_block(&e) => true,
                Err(e) => return Err(into_io(e)),
            };
        let mut batch: SmallVec<[Payload; MAX_FRAMES_PER_WRITE]> = SmallVec::new();
        batch.push(first);
        more(MAX_FRAMES_PER_WRITE - 1, &mut |payload| batch.push(payload));
        let mut headers: SmallVec<[([u8; MAX_HEADER], usize); MAX_FRAMES_PER_WRITE]> =
            SmallVec::new();
        let mut total = 0;
        for payload in &batch {
            let mut header = [0u8; MAX_HEADER];
            let len = text_header(payload.len(), &mut header)?;
            headers.push((header, len));
            total += len + payload.len();
        }
        let frames = batch
            .iter()
            .zip(&headers)
            .flat_map(|(payload, (header, len))| [&header[..*len], payload.as_bytes()]);
        if total <= SCRATCH_LIMIT {
            // Small frames are copied into one buffer: the kernel's cost per
            // `writev` segment exceeds a copy of a hundred bytes.
            let mut scratch = SCRATCH.take();
            scratch.clear();
            frames.for_each(|part| scratch.extend_from_slice(part));
            let written = self.write_now(blocked, |tcp| tcp.try_write(&scratch));
            if let Ok(written) = written
                && written < total
            {
                self.keep_unsent(scratch[written..].to_vec());
            }
            SCRATCH.set(scratch);
            return written.map(|written| written == total);
        }
        let slices: SmallVec<[IoSlice<'_>; 2 * MAX_FRAMES_PER_WRITE]> =
            frames.map(IoSlice::new).collect();
        let written = self.write_now(blocked, |tcp| tcp.try_write_vectored(&slices))?;
        if written < total {
            self.keep_unsent(unwritten(&slices, written, total));
        }
        Ok(written == total)
    }

    /// Keeps `rest` behind whatever is still unsent.
    fn keep_unsent(&mut self, rest: Vec<u8>) {
        match &mut self.unsent {
            Some(unsent) => {
                unsent.bytes.drain(..unsent.at);
                unsent.bytes.extend_from_slice(&rest);
                unsent.at = 0;
            }
            None => self.unsent = Some(Box::new(Unsent { bytes: rest, at: 0 })),
        }
    }

    /// How much one non-blocking write took (0 if the socket is full, or
    /// if tungstenite's bytes must go first).
    fn write_now(
        &self,
        blocked: bool,
        write: impl FnOnce(&TcpStream) -> io::Result<usize>,
    ) -> io::Result<usize> {
        if blocked {
            return Ok(0);
        }
        match write(&self.tcp) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Finishes a batch [`Socket::write_texts`] could not write at once.
    /// Cancel-safe (what is written stays written, the rest stays kept);
    /// the caller bounds it in time.
    pub(super) async fn finish_writes(&mut self) -> io::Result<()> {
        // tungstenite's bytes, if any, were queued before the batch.
        self.flush_control().await?;
        while let Some(unsent) = &mut self.unsent {
            if unsent.at == unsent.bytes.len() {
                // Done: the buffer (up to a batch of large messages) goes.
                self.unsent = None;
                break;
            }
            self.tcp.writable().await?;
            match self.tcp.try_write(&unsent.bytes[unsent.at..]) {
                Ok(n) => unsent.at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends a ping. The caller bounds it in time.
    pub(super) async fn ping(&mut self) -> io::Result<()> {
        let ping = self
            .ctx
            .write(&mut Io(&self.tcp), Message::Ping(Bytes::new()));
        sent_or_queued(ping)?;
        self.flush_control().await
    }

    /// The peer's address, for a log line (the proxy's, behind one).
    pub(super) fn peer_ip(&self) -> Option<std::net::IpAddr> {
        self.tcp.peer_addr().ok().map(|a| a.ip())
    }

    /// Sends whatever tungstenite has queued, without waiting: the answer
    /// to a client's close frame, before the socket is dropped.
    pub(super) fn flush_now(&mut self) {
        let _ = self.ctx.flush(&mut Io(&self.tcp));
    }

    /// Sends a close frame and reads until the client's answer (or an
    /// error) ends the stream, so the client sees a clean close with the
    /// code rather than a reset. A batch cut short is finished first, so
    /// the close frame does not land inside a frame. Bounded by `limit`.
    /// After a failed read (a protocol error, a frame over the limit)
    /// nothing more can be parsed, so it only sends.
    ///
    /// Then, if the close frame reached the kernel, the staged close of
    /// [`Socket::linger`], dropping at most `max_discard` more bytes from
    /// the client: without it, bytes the client sent that were never read
    /// (the rest of a frame over the limit, frames after a bad one) make
    /// the kernel answer the socket's close with a reset, and a reset
    /// destroys the close frame before the client reads it (browsers then
    /// report 1006 instead of the code).
    pub(super) async fn close(
        &mut self,
        code: u16,
        reason: &'static str,
        limit: Duration,
        max_discard: usize,
    ) {
        let mut sent = false;
        let handshake = async {
            if self.finish_writes().await.is_err() {
                return;
            }
            let frame = CloseFrame {
                code: code.into(),
                reason: reason.into(),
            };
            let close = self.ctx.close(&mut Io(&self.tcp), Some(frame));
            if sent_or_queued(close).is_err() || self.flush_control().await.is_err() {
                return;
            }
            sent = true;
            if self.failed {
                return;
            }
            loop {
                if self.readable().await.is_err() {
                    return;
                }
                if self.try_read().is_err() {
                    return;
                }
            }
        };
        let _ = timeout(limit, handshake).await;
        // A close frame that never left has nothing to protect, and a
        // socket that did not take it is likely stuck: dropped at once.
        if sent {
            self.linger(max_discard).await;
        }
    }

    /// The staged close (RFC 6455 §7.1.1: the server closes the TCP
    /// connection first; RFC 9112 §9.6): half-closes, so the client reads
    /// the close frame then the end of the stream, and reads and drops what
    /// the client still sends until it closes its side too, fails, sends
    /// more than `max_discard` bytes, or [`linger::LINGER`] passes. Past either
    /// bound the socket is dropped as it is (a reset, for a client that
    /// keeps sending): the wait never outlives them.
    async fn linger(&mut self, max_discard: usize) {
        linger::staged_close(&mut self.tcp, max_discard).await;
    }

    /// Writes out what tungstenite has queued (pings, pongs, the close
    /// frame), waiting for the socket as needed.
    async fn flush_control(&mut self) -> io::Result<()> {
        loop {
            match self.ctx.flush(&mut Io(&self.tcp)) {
                Ok(()) => return Ok(()),
                Err(e) if would_block(&e) => self.tcp.writable().await?,
                Err(e) => return Err(into_io(e)),
            }
        }
    }
}

/// Writes a server text frame's header for `len` payload bytes into `out`;
/// returns its length. tungstenite does the encoding.
fn text_header(len: usize, out: &mut [u8; MAX_HEADER]) -> io::Result<usize> {
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    };
    let mut w: &mut [u8] = out;
    header
        .format(len as u64, &mut w)
        .map_err(|_| io::Error::other("frame header longer than 10 bytes"))?;
    let left = w.len();
    Ok(MAX_HEADER - left)
}

/// The bytes of `slices` after the first `written`, in one buffer.
fn unwritten(slices: &[IoSlice<'_>], mut written: usize, total: usize) -> Vec<u8> {
    let mut rest = Vec::with_capacity(total - written);
    for slice in slices {
        if written >= slice.len() {
            written -= slice.len();
            continue;
        }
        rest.extend_from_slice(&slice[written..]);
        written = 0;
    }
    rest
}

fn into_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        e => io::Error::other(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_headers_use_the_shortest_length_form() {
        let mut h = [0u8; MAX_HEADER];
        assert_eq!(text_header(5, &mut h).ok(), Some(2));
        assert_eq!(&h[..2], &[0x81, 5]);
        assert_eq!(text_header(126, &mut h).ok(), Some(4));
        assert_eq!(&h[..4], &[0x81, 126, 0, 126]);
        assert_eq!(text_header(70_000, &mut h).ok(), Some(10));
        assert_eq!(&h[..10], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }

    #[test]
    fn the_unwritten_rest_starts_mid_slice() {
        let a = [1u8, 2, 3];
        let b = [4u8, 5];
        let c = [6u8];
        let slices = [IoSlice::new(&a), IoSlice::new(&b), IoSlice::new(&c)];
        assert_eq!(unwritten(&slices, 0, 6), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(unwritten(&slices, 4, 6), vec![5, 6]);
        assert_eq!(unwritten(&slices, 5, 6), vec![6]);
    }
}
