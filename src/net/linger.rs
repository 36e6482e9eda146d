//! The staged close both hand-written servers use (the WebSocket session
//! after its close frame, the `GET /sse` path after its answer): closing a
//! socket that still has unread bytes from the client makes the kernel send
//! a reset, which can destroy the end of what was written before the client
//! read it — a close frame seen as 1006, an answer cut short (RFC 9112
//! §9.6; RFC 6455 §7.1.1: the server closes the TCP connection first). So
//! the server half-closes and reads, dropping it, what the client still
//! sends until it closes its side too, within a byte bound and [`LINGER`].

use std::io;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// How long a staged close waits for the client to close its side: a
/// client that got everything closes within a round trip, so this only
/// bounds one that does not.
pub const LINGER: Duration = Duration::from_secs(2);

/// Half-closes `tcp`, then reads and drops what the client sends until it
/// closes, fails or sends more than `max_discard` bytes, at most
/// [`LINGER`]. Past either bound the socket is left to its caller, which
/// drops it (a reset, for a client that keeps sending).
pub async fn staged_close(tcp: &mut TcpStream, max_discard: usize) {
    let _ = timeout(LINGER, async move {
        if tcp.shutdown().await.is_ok() {
            until_closed(tcp, &mut 0, max_discard).await;
        }
    })
    .await;
}

/// Resolves once the client closed its side, failed, or sent more than
/// `max_discard` bytes in all (`discarded` counts them across calls); what
/// it sends is dropped. No deadline of its own: the caller's.
pub async fn until_closed(tcp: &TcpStream, discarded: &mut usize, max_discard: usize) {
    while tcp.readable().await.is_ok() && discard(tcp, discarded, max_discard) {}
}

/// Reads what the socket has and drops it: `false` once the client closed
/// or failed, or `discarded` passed `max_discard`; `true` when the socket
/// has nothing more for now. A plain function, so its buffer is on the
/// stack for the call, not in an idle connection's future.
fn discard(tcp: &TcpStream, discarded: &mut usize, max_discard: usize) -> bool {
    let mut scratch = [0u8; 4096];
    loop {
        match tcp.try_read(&mut scratch) {
            Ok(0) => return false,
            Ok(n) => {
                *discarded += n;
                if *discarded > max_discard {
                    tracing::debug!("a closing client kept sending past the bound; dropped");
                    return false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}
