//! A minimal WebSocket client, written for the load generator's own cost: one
//! small buffer per connection, no per-message allocation. It performs the
//! handshake, sends the uid as its first (masked) text frame, then reads
//! server frames, hands each text payload to the [`Tracker`], answers pings
//! and stops at a close frame or when told to.
//!
//! Past [`Generator::per_source`] connections (`--clients-per-source`) it binds client
//! sockets to further loopback source addresses (127.0.0.2, 127.0.0.3, …):
//! one source address has only ~28k ephemeral ports towards one server port,
//! and the kernel's search for a free one slows as they fill up.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::track::Tracker;
use crate::worker::WorkerPids;

/// The generator's own side of one bench run, handed to every pool and CPU
/// meter (no process-wide state): how its clients connect and which worker
/// processes it runs.
#[derive(Debug, Clone)]
pub struct Generator {
    /// Connections per loopback source address before moving to the next
    /// one (`--clients-per-source`).
    pub per_source: usize,
    /// Clients this process holds; more are opened by worker processes.
    pub per_process: usize,
    /// The worker processes running now: their CPU counts as the generator's.
    pub workers: WorkerPids,
}

/// Connects from a loopback source address chosen by `index`, `per_source`
/// connections per address (the kernel's choice below `per_source`).
pub async fn connect_from(
    target: SocketAddr,
    index: usize,
    per_source: usize,
) -> anyhow::Result<TcpStream> {
    let slot = index / per_source.max(1);
    let stream = if slot == 0 || !target.ip().is_loopback() {
        TcpStream::connect(target).await?
    } else {
        let octet = u8::try_from(1 + slot).context("too many source addresses")?;
        let socket = TcpSocket::new_v4()?;
        bind_address_no_port(&socket);
        socket.bind(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet)),
            0,
        ))?;
        socket.connect(target).await?
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// `IP_BIND_ADDRESS_NO_PORT`: the port is chosen at `connect` by the
/// 4-tuple, not at `bind` against every port bound on the host (that search
/// is slow with tens of thousands of sockets).
fn bind_address_no_port(socket: &TcpSocket) {
    // A failure only makes connecting slower.
    let _ = crate::sys::set_int_option(socket, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1);
}

/// A client frame: FIN, `opcode`, masked with a zero key (valid, and the
/// payload goes as is).
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Opens a WebSocket to `target` (connection `index`, `per_source` per
/// source address) and binds `uid`; returns the stream and any bytes that
/// arrived after the handshake answer.
pub async fn open(
    target: SocketAddr,
    index: usize,
    per_source: usize,
    uid: &str,
) -> anyhow::Result<(TcpStream, Vec<u8>)> {
    let (mut s, buf) = handshake(target, index, per_source, None).await?;
    s.write_all(&client_frame(0x1, uid.as_bytes())).await?;
    Ok((s, buf))
}

/// The upgrade alone, offering `subprotocol` when given (`pushgate.v2`:
/// protocol v2, which the answer must confirm); returns the stream and any
/// bytes that arrived after the handshake answer.
pub async fn handshake(
    target: SocketAddr,
    index: usize,
    per_source: usize,
    subprotocol: Option<&str>,
) -> anyhow::Result<(TcpStream, Vec<u8>)> {
    let mut s = connect_from(target, index, per_source).await?;
    let offer = subprotocol.map_or(String::new(), |p| {
        format!("Sec-WebSocket-Protocol: {p}\r\n")
    });
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(2048);
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > 4096 {
            bail!("handshake answer too long");
        }
        if s.read_buf(&mut buf).await? == 0 {
            bail!("closed during handshake");
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    if !head.starts_with("HTTP/1.1 101") {
        bail!("upgrade refused: {}", head.lines().next().unwrap_or(""));
    }
    if let Some(p) = subprotocol {
        let agreed = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.eq_ignore_ascii_case("sec-websocket-protocol") && v.trim() == p
            })
        });
        if !agreed {
            bail!("the gateway did not accept the subprotocol {p}");
        }
    }
    buf.drain(..end);
    Ok((s, buf))
}

/// Reads frames until close, error or `stop`; records text payloads.
async fn read_loop(
    mut s: TcpStream,
    mut buf: Vec<u8>,
    tracker: Arc<Tracker>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        // Parse every complete frame in the buffer.
        let mut at = 0;
        while buf.len() - at >= 2 {
            let (b0, b1) = (buf[at], buf[at + 1]);
            let (len, hdr) = match b1 & 0x7f {
                126 if buf.len() - at >= 4 => {
                    (u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize, 4)
                }
                127 if buf.len() - at >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[at + 2..at + 10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if buf.len() - at < hdr + len {
                if buf.capacity() < hdr + len {
                    buf.reserve(hdr + len);
                }
                break;
            }
            let payload = &buf[at + hdr..at + hdr + len];
            match b0 & 0x0f {
                0x1 | 0x0 => tracker.record(payload),
                0x8 => return,
                0x9 => {
                    let pong = client_frame(0xA, payload);
                    if s.write_all(&pong).await.is_err() {
                        return;
                    }
                }
                _ => {}
            }
            at += hdr + len;
        }
        buf.drain(..at);
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(2048);
        }
        tokio::select! {
            read = s.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = stop.changed() => return,
        }
    }
}

/// A pool of receiving WebSocket clients, one task each; connections past
/// [`Generator::per_process`] are opened by worker processes (see
/// `worker.rs`) that record into the same shared [`Tracker`].
pub struct Receivers {
    stop: watch::Sender<bool>,
    /// Connections opened so far (also the next index for source addresses).
    pub opened: usize,
    /// Connections that failed to open.
    pub failed: Arc<AtomicUsize>,
    tracker: Arc<Tracker>,
    prefix: String,
    generator: Generator,
    workers: Vec<crate::worker::Worker>,
}

impl Receivers {
    /// An empty pool whose clients bind `PREFIXi` and record into
    /// `tracker`, opened as `generator` says.
    pub fn new(tracker: Arc<Tracker>, prefix: &str, generator: &Generator) -> Receivers {
        Receivers {
            stop: watch::channel(false).0,
            opened: 0,
            failed: Arc::new(AtomicUsize::new(0)),
            tracker,
            prefix: prefix.to_owned(),
            generator: generator.clone(),
            workers: Vec::new(),
        }
    }

    /// Opens clients `self.opened..upto`: this process's share here, the
    /// rest in worker processes (started as needed).
    pub async fn grow(
        &mut self,
        target: SocketAddr,
        upto: usize,
        parallel: usize,
        limit: Duration,
    ) -> anyhow::Result<()> {
        while self.opened < upto {
            let from = self.opened;
            let per_process = self.generator.per_process.max(1);
            let chunk = from / per_process;
            let to = upto.min((chunk + 1).saturating_mul(per_process));
            if chunk == 0 {
                self.grow_here(target, from, to, parallel, limit).await?;
            } else {
                while self.workers.len() < chunk {
                    let w = crate::worker::Worker::start(
                        target,
                        &self.tracker,
                        &self.prefix,
                        parallel,
                        &self.generator,
                    )
                    .await?;
                    self.workers.push(w);
                }
                self.workers[chunk - 1].grow(from, to, limit).await?;
            }
            self.opened = to;
        }
        Ok(())
    }

    /// Opens clients `from..to` in this process, at most `parallel`
    /// handshakes at a time; returns once every handshake has finished (or
    /// `limit` passed).
    pub async fn grow_here(
        &mut self,
        target: SocketAddr,
        from: usize,
        to: usize,
        parallel: usize,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let sem = Arc::new(Semaphore::new(parallel.max(1)));
        let mut handshakes = tokio::task::JoinSet::new();
        for i in from..to {
            let permit = sem.clone().acquire_owned().await?;
            let (tracker, failed) = (self.tracker.clone(), self.failed.clone());
            let stop = self.stop.subscribe();
            let per_source = self.generator.per_source;
            let uid = format!("{}{i}", self.prefix);
            handshakes.spawn(async move {
                let opened = tokio::time::timeout(limit, open(target, i, per_source, &uid)).await;
                drop(permit);
                match opened {
                    Ok(Ok((s, rest))) => {
                        tokio::spawn(read_loop(s, rest, tracker, stop));
                    }
                    Ok(Err(e)) => {
                        if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("bench: connection {i} failed: {e:#}");
                        }
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            // Reap finished handshakes as we go so the set stays small.
            while handshakes.try_join_next().is_some() {}
        }
        let all = async { while handshakes.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(limit, all).await;
        let failed = self.failed.load(Ordering::Relaxed);
        if failed > 0 {
            bail!("{failed} of {to} WebSocket connections failed to open");
        }
        Ok(())
    }

    /// Tells every client to stop reading (their sockets close) and ends the
    /// workers.
    pub fn close(&mut self) {
        let _ = self.stop.send(true);
        self.workers.clear();
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        self.close();
    }
}
