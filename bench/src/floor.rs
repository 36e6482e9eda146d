//! `floor-relay`: the cheapest relay that speaks pushgate's wire contract —
//! the reference for **the machine's limit**, not a product.
//!
//! Why it exists: on a small machine, pushing over loopback is bounded by the
//! kernel's cost per system call — a delivery is a `sendto` to the
//! receiver's socket, and on loopback that call also runs the receiving
//! side's TCP stack. Profiles of pushgate show most of its CPU there. To say
//! how far pushgate is from what this machine can do, the bench measures the
//! same scenario against this relay (`pushgate-bench SCENARIO --spawn
//! --floor`): it has next to no user-space cost (runtime, queues, timers,
//! limits, JSON), so its figure is what the kernel work of that traffic
//! pattern allows here.
//!
//! What it is not: a bound on how few system calls a gateway can make.
//! Unicast deliveries are written at once, one `send` each; a gateway with
//! per-connection queues (pushgate) that falls behind when saturated writes
//! several frames to a connection in one `send` (measured: 0.64 `sendto` per
//! delivery in the pipelined text pattern against the floor's 0.95), and
//! its receivers read less often too — so it can beat the floor there. And
//! its blocking thread per connection sleeps and wakes where an event loop
//! would not (a connection per push: ~2.8 context switches per push here,
//! against pushgate's ~0.5). Compare CPU per delivery and system calls per
//! delivery, not only rates.
//!
//! So it does the least user-space work per delivery that the contract
//! allows, with std threads and blocking I/O only:
//!
//! - **WebSocket** (`GET` with `Sec-WebSocket-Key` on the HTTP port): answers
//!   101, reads the client's first (masked) text frame as its uid and
//!   registers the socket under that uid. Nobody reads the socket after that.
//! - **Delivery**: one `send` per delivery — a server text frame, its 2–10
//!   byte header and the payload in one buffer — under the connection's own
//!   mutex, so two pushers never interleave frames on one socket. (`send`,
//!   as pushgate's own writes: a `writev` goes through the VFS layer and
//!   cost more kernel time per delivery.)
//! - **Answer first**: a batch is routed (uid → registered sockets), its
//!   answers are written, and then its frames. `ok` / `delivered` mean "a
//!   registered connection is about to be written" — the floor's version of
//!   pushgate's "handed to a connection's queue" — and the pusher can send
//!   its next batch while this one goes out (answering after the writes
//!   stalled the pipeline: one core idle).
//! - **Text port**: one thread per connection; one `read` per batch of
//!   lines, the uid found by a byte scan for `"uid":`, the line (without
//!   `\n` or `\r\n`) relayed as is, one `write` of all the batch's
//!   `ok`/`fail` answers.
//! - **REST** (`http.rs`): `POST /push`, `/push/batch`, `/broadcast` and
//!   `GET /stats` on keep-alive connections, one thread each, answered in
//!   pushgate's shapes.
//! - **Broadcast** as a group commit: a broadcast's frame is appended to
//!   the pending ones; if no sweep runs, its thread sweeps every connection
//!   with one `send` of all pending frames, again and again until none are
//!   pending. With several broadcasts in flight that is one `send` per
//!   connection for several deliveries — what pushgate's per-connection
//!   queues achieve, at the least cost. (One `send` per delivery instead
//!   measured 51k deliveries/s to 10,000 connections here, against
//!   pushgate's 750k/s: at that many sockets each `send` is cache-cold,
//!   ~19 µs, so coalescing is the whole game and a floor without it is no
//!   floor.)
//!
//! Threads: both listeners use `TCP_DEFER_ACCEPT`, so `accept` returns once
//! the client's first bytes (its line, its upgrade request) are in and the
//! first `read` does not block: one sleep and wakeup less per connection.
//! Every thread of a listener blocks in `accept` and serves the
//! connection it accepted itself, so the kernel's accept queue is the only
//! hand-off (no channel, no extra wakeup per connection); when the last
//! waiting one gets a connection it starts another, and a thread whose
//! connection ended goes back to `accept` unless enough already wait. A
//! connection per push or a burst of 19,000 handshakes pays no thread
//! creation each.
//!
//! What it leaves out, on purpose: pings, bind and idle timeouts after the
//! handshake, per-connection queues (a receiver that stops reading blocks
//! its pusher, up to [`WRITE_TIMEOUT`], then is dropped), connection caps,
//! JSON and UTF-8 validation, content-type checks, close handshakes, JWTs,
//! API keys, metrics, clustering, graceful shutdown. Never deploy it.
//!
//! The bench starts it as a separate process (`spawn::floor`), so its CPU is
//! read from `/proc/PID/stat` like pushgate's. It prints pushgate's own
//! ready line on stdout, and exits when its stdin closes, so
//! it never outlives the bench.

mod http;
mod scan;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context;
// Longest text-port line (pushgate's `--max-line-bytes` default): past it,
// `fail` and the connection is closed (lines after it are not answered).
use pushgate::config::DEFAULT_MAX_LINE_BYTES as MAX_LINE;

/// Longest blocking write to a receiver; past it the receiver is dropped.
/// The value of pushgate's `--write-timeout` default, kept here because that
/// default is the text "5s" of its flag, no constant.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Threads of one listener that may wait in `accept` at once.
const MAX_IDLE_THREADS: usize = 256;
/// Stack of each connection thread (buffers live on the heap).
const STACK: usize = 256 * 1024;

/// A registered WebSocket connection.
struct Conn {
    uid: Vec<u8>,
    /// Held for one frame's write at a time.
    stream: Mutex<TcpStream>,
}

/// uid → its connections.
type Map = HashMap<Vec<u8>, Vec<Arc<Conn>>>;

/// The relay's one shared state.
#[derive(Default)]
pub struct Relay {
    map: RwLock<Map>,
    /// Registered connections.
    bound: AtomicUsize,
    /// Broadcast frames not swept yet.
    pending: Mutex<Pending>,
}

/// Broadcasts waiting for a sweep.
#[derive(Default)]
struct Pending {
    /// Their frames, back to back.
    frames: Vec<u8>,
    /// A thread is sweeping; it will take these.
    sweeping: bool,
}

impl Relay {
    /// Registers `stream` under `uid`.
    fn bind(&self, uid: Vec<u8>, stream: TcpStream) {
        let conn = Arc::new(Conn {
            uid: uid.clone(),
            stream: Mutex::new(stream),
        });
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        map.entry(uid).or_default().push(conn);
        self.bound.fetch_add(1, Ordering::Relaxed);
    }

    /// (bound connections, bound uids), for `GET /stats`.
    fn counts(&self) -> (usize, usize) {
        let uids = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        (self.bound.load(Ordering::Relaxed), uids)
    }

    /// Runs `f` with the registry read-locked once for a whole batch of
    /// deliveries; then unregisters the connections whose write failed.
    fn deliver<R>(&self, f: impl FnOnce(&mut Routes<'_>) -> R) -> R {
        let mut dead = Vec::new();
        let out = {
            let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
            f(&mut Routes {
                map: &map,
                dead: &mut dead,
                frame: Vec::new(),
            })
        };
        if !dead.is_empty() {
            self.bury(dead);
        }
        out
    }

    /// Unregisters (and shuts) connections a write failed on.
    fn bury(&self, dead: Vec<Arc<Conn>>) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        for conn in dead {
            let Some(list) = map.get_mut(&conn.uid) else {
                continue;
            };
            let before = list.len();
            list.retain(|c| !Arc::ptr_eq(c, &conn));
            if list.len() < before {
                self.bound.fetch_sub(1, Ordering::Relaxed);
                let s = conn.stream.lock().unwrap_or_else(PoisonError::into_inner);
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            if list.is_empty() {
                map.remove(&conn.uid);
            }
        }
    }

    /// Queues a broadcast of `payload`; returns the connections it will
    /// reach, and whether the caller must sweep (call [`Relay::sweep`]
    /// after answering): false when a running sweep will take it.
    fn queue_broadcast(&self, payload: &[u8]) -> (usize, bool) {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        append_frame(&mut p.frames, payload);
        let must_sweep = !p.sweeping;
        p.sweeping = true;
        (self.bound.load(Ordering::Relaxed), must_sweep)
    }

    /// Sends the pending broadcast frames to every connection, one `send`
    /// per connection per sweep, until none are pending. A sweep is split
    /// over one thread per core (this one and scoped helpers).
    fn sweep(&self) {
        let parts = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut frames = Vec::new();
        loop {
            {
                let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                if p.frames.is_empty() {
                    p.sweeping = false;
                    return;
                }
                // Takes the frames, leaves the emptied buffer for the next.
                std::mem::swap(&mut frames, &mut p.frames);
            }
            std::thread::scope(|scope| {
                for part in 1..parts {
                    let frames = &frames;
                    let helper = std::thread::Builder::new()
                        .stack_size(STACK)
                        .spawn_scoped(scope, move || {
                            self.deliver(|routes| routes.send_all(frames, part, parts))
                        });
                    if helper.is_err() {
                        // No helper: this thread sends that part too.
                        self.deliver(|routes| routes.send_all(frames, part, parts));
                    }
                }
                self.deliver(|routes| routes.send_all(&frames, 0, parts));
            });
            frames.clear();
        }
    }
}

/// The registry, read-locked for one batch of deliveries.
struct Routes<'a> {
    map: &'a Map,
    /// Connections a write failed on, unregistered after the batch.
    dead: &'a mut Vec<Arc<Conn>>,
    /// The frame being sent (reused through the batch).
    frame: Vec<u8>,
}

impl<'a> Routes<'a> {
    /// The connections registered under `uid` (none: empty).
    fn conns(&self, uid: &[u8]) -> &'a [Arc<Conn>] {
        self.map.get(uid).map_or(&[], Vec::as_slice)
    }

    /// Sends `payload` as one text frame to each of `conns`.
    fn send(&mut self, conns: &[Arc<Conn>], payload: &[u8]) {
        self.frame.clear();
        append_frame(&mut self.frame, payload);
        for conn in conns {
            if !send(conn, &self.frame) {
                self.dead.push(conn.clone());
            }
        }
    }

    /// Sends `frames` (whole frames, back to back) to part `part` of
    /// `parts` of the connections (every `parts`-th one).
    fn send_all(&mut self, frames: &[u8], part: usize, parts: usize) {
        let conns = self.map.values().flatten();
        for conn in conns.skip(part).step_by(parts.max(1)) {
            if !send(conn, frames) {
                self.dead.push(conn.clone());
            }
        }
    }
}

/// Appends an unmasked, final text frame carrying `payload` to `out`.
fn append_frame(out: &mut Vec<u8>, payload: &[u8]) {
    let len = payload.len();
    out.push(0x81);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Writes `frames` to `conn` (one `send`, unless the socket takes them in
/// parts); false when the write failed.
fn send(conn: &Conn, frames: &[u8]) -> bool {
    let mut stream = conn.stream.lock().unwrap_or_else(PoisonError::into_inner);
    stream.write_all(frames).is_ok()
}

/// Serves one text-port connection until it closes.
fn text_conn(relay: &Relay, mut s: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut filled = 0;
    let mut answers: Vec<u8> = Vec::with_capacity(4096);
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = match s.read(&mut buf[filled..]) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let fresh = filled;
        filled += n;
        if buf[fresh..filled].contains(&b'\n') {
            let mut at = 0;
            let mut too_long = false;
            // The answers are written with the registry read-locked: binds
            // wait for them, deliveries do not.
            let answered = relay.deliver(|routes| {
                let mut targets = Vec::new();
                while let Some(nl) = buf[at..filled].iter().position(|&b| b == b'\n') {
                    let mut line = &buf[at..at + nl];
                    if let [rest @ .., b'\r'] = line {
                        line = rest;
                    }
                    if line.len() > MAX_LINE {
                        answers.extend_from_slice(b"fail\n");
                        too_long = true;
                        break;
                    }
                    let conns = scan::line_uid(line).map_or(&[][..], |uid| routes.conns(&uid));
                    if conns.is_empty() {
                        answers.extend_from_slice(b"fail\n");
                    } else {
                        answers.extend_from_slice(b"ok\n");
                        targets.push((line, conns));
                    }
                    at += nl + 1;
                }
                let answered = s.write_all(&answers).is_ok();
                for (line, conns) in targets {
                    routes.send(conns, line);
                }
                answered
            });
            if !answered || too_long {
                return;
            }
            answers.clear();
            buf.copy_within(at..filled, 0);
            filled -= at;
        }
        if filled > MAX_LINE {
            let _ = s.write_all(b"fail\n");
            return;
        }
    }
}

/// A listener and the threads serving it.
struct Listener {
    socket: TcpListener,
    name: &'static str,
    /// The relay its connections are served by.
    relay: &'static Relay,
    serve: fn(&'static Relay, TcpStream),
    /// Threads blocked in (or about to enter) `accept`.
    idle: AtomicUsize,
}

impl Listener {
    /// Starts one more thread waiting in `accept`; false if it could not.
    fn add_thread(&'static self) -> bool {
        self.idle.fetch_add(1, Ordering::AcqRel);
        let started = std::thread::Builder::new()
            .name(self.name.into())
            .stack_size(STACK)
            .spawn(move || self.accept_loop());
        if let Err(e) = started {
            self.idle.fetch_sub(1, Ordering::AcqRel);
            log_error(&format!("{}: cannot start a thread: {e}", self.name));
            return false;
        }
        true
    }

    /// One thread: accepts a connection, serves it to its end, and waits
    /// for the next unless [`MAX_IDLE_THREADS`] others already do.
    fn accept_loop(&'static self) {
        loop {
            let s = match self.socket.accept() {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of files, most likely: let some close.
                    log_error(&format!("{}: accept: {e}", self.name));
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            if self.idle.fetch_sub(1, Ordering::AcqRel) == 1 {
                // Nobody is left waiting: one more thread takes over.
                self.add_thread();
            }
            let _ = s.set_nodelay(true);
            (self.serve)(self.relay, s);
            let back = self
                .idle
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < MAX_IDLE_THREADS).then_some(n + 1)
                })
                .is_ok();
            if !back {
                return;
            }
        }
    }
}

/// `TCP_DEFER_ACCEPT`: `accept` waits (up to 10 s) for the first data.
fn defer_accept(socket: &TcpListener) {
    if let Err(e) =
        crate::sys::set_int_option(socket, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, 10)
    {
        log_error(&format!("TCP_DEFER_ACCEPT: {e}"));
    }
}

/// An error, as a JSON log line the bench passes on (`spawn.rs`).
fn log_error(message: &str) {
    let line = serde_json::json!({"level": "ERROR", "fields": {"message": message}});
    eprintln!("{line}");
}

/// `pushgate-bench floor-relay`: listens on free loopback ports, prints
/// pushgate's ready line on stdout and relays until stdin closes.
pub fn run() -> anyhow::Result<()> {
    crate::sys::raise_file_limit();
    let http = TcpListener::bind("127.0.0.1:0").context("floor relay: HTTP listener")?;
    let text = TcpListener::bind("127.0.0.1:0").context("floor relay: text listener")?;
    defer_accept(&http);
    defer_accept(&text);
    // pushgate's ready line (its `main.rs`); everything is served on the
    // one HTTP listener, so that is also the API address.
    let http_addr = http.local_addr()?.to_string();
    let line = serde_json::json!({
        "ready": {"http": http_addr, "text": text.local_addr()?.to_string(), "api": http_addr},
    });
    println!("{line}");
    // Shared by every connection thread of both listeners until the process
    // ends: leaked rather than counted, as the listeners are.
    let relay: &'static Relay = Box::leak(Box::default());
    for (socket, name, serve) in [
        (
            http,
            "floor-http",
            http::serve as fn(&'static Relay, TcpStream),
        ),
        (text, "floor-text", text_conn),
    ] {
        let listener: &'static Listener = Box::leak(Box::new(Listener {
            socket,
            name,
            relay,
            serve,
            idle: AtomicUsize::new(0),
        }));
        if !listener.add_thread() {
            anyhow::bail!("floor relay: cannot start the {name} thread");
        }
    }
    // Until the bench goes away (its end of the pipe closes).
    let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let mut f = Vec::new();
        let head = |f: &mut Vec<u8>, n: usize| {
            f.clear();
            append_frame(f, &vec![b'x'; n]);
            assert_eq!(
                f.len() - n,
                if n < 126 {
                    2
                } else if n < 65_536 {
                    4
                } else {
                    10
                }
            );
            f[..f.len() - n].to_vec()
        };
        assert_eq!(head(&mut f, 0), [0x81, 0]);
        assert_eq!(head(&mut f, 125), [0x81, 125]);
        assert_eq!(head(&mut f, 126), [0x81, 126, 0, 126]);
        assert_eq!(head(&mut f, 65_535), [0x81, 126, 0xff, 0xff]);
        assert_eq!(head(&mut f, 65_536), [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        f.clear();
        append_frame(&mut f, b"hi");
        append_frame(&mut f, b"");
        assert_eq!(f, b"\x81\x02hi\x81\x00");
    }
}
