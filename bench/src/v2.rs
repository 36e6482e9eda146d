//! Protocol v2 clients that resume (docs/protocol-v2.md): each offers the
//! subprotocol `pushgate.v2`, binds with `{"uid":…}` and, once it holds a
//! position, `{"uid":…,"since":{"offset":…,"epoch":"…"}}`; it keeps the
//! `offset`/`epoch` of the last `message` (or of `bound` when none came, or
//! after `recovered: false`) and reconnects with it whenever its connection
//! ends, to a node of the [`Book`] chosen by its [`Route`].
//!
//! Like the v1 clients (`ws.rs`, `track.rs`), they find each push by the
//! sequence number `"s"` the bench put in it (the `data` of a `message`), and
//! log what arrived and when; [`crate::ledger`] judges the logs against
//! what was pushed. Unlike them they parse every frame as JSON and live in
//! this process only: they measure correctness and resume time, not the
//! generator's cost per delivery.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::nodes::{Addrs, Book};
use crate::ws::{client_frame, handshake};

/// The subprotocol that opts a WebSocket into protocol v2.
pub const SUBPROTOCOL: &str = "pushgate.v2";

/// Longest wait for one connect and upgrade.
const CONNECT_LIMIT: Duration = Duration::from_secs(5);
/// Pause after a failed connect before choosing a node again.
const RETRY: Duration = Duration::from_millis(50);
/// Largest frame a client accepts (the gateway's pushes are far smaller).
const MAX_FRAME: usize = 1 << 20;

/// Where a client connects: node `prefer` while it is in the book; when it
/// is not, with `fallback` any other live node, without it (a client behind
/// a sticky balancer) it waits for `prefer` to come back.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub prefer: usize,
    pub fallback: bool,
}

/// The node `route` chooses in `book` on the `attempt`-th connect.
fn pick(book: &[Option<Addrs>], route: Route, attempt: usize) -> Option<Addrs> {
    if let Some(Some(a)) = book.get(route.prefer) {
        return Some(*a);
    }
    if !route.fallback || book.is_empty() {
        return None;
    }
    (0..book.len()).find_map(|k| book[(route.prefer + attempt + k) % book.len()])
}

/// What one client saw.
#[derive(Debug, Default)]
pub struct Log {
    /// Sequence numbers received, in arrival order, with when.
    pub got: Vec<(u64, Instant)>,
    /// `bound` answers received (the first bind and every reconnect).
    pub binds: u32,
    /// Resumes answered `recovered: true`.
    pub recovered: u32,
    /// Resumes answered otherwise, with each `reason`.
    pub not_recovered: Vec<String>,
    /// When the last `bound` arrived.
    pub last_bound: Option<Instant>,
    /// Longest time from losing a bound connection to the next `bound`.
    pub longest_gap: Duration,
    /// When the current connection was lost, while it is not replaced yet.
    pub lost_at: Option<Instant>,
    /// `message` frames whose offset did not follow the previous one in
    /// the same epoch (a gap or a repeat the client itself can see).
    pub offset_faults: u32,
    /// Connects or upgrades that failed.
    pub failed_connects: u32,
    /// Frames that were no JSON, or a `message` without a sequence number.
    pub unreadable: u32,
}

/// A client's shared log.
pub type Shared = Arc<Mutex<Log>>;

/// Locks a log (a log stays readable even if a holder panicked).
pub fn lock(log: &Shared) -> MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

/// The server frames a client reads (protocol v2 §Server → client frames);
/// unknown members and types are ignored, as the protocol asks.
#[derive(Debug, Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    offset: Option<u64>,
    epoch: Option<String>,
    recovered: Option<bool>,
    reason: Option<String>,
    data: Option<serde_json::Value>,
}

/// The last position a client holds: `(offset, epoch)`.
type Position = Option<(u64, String)>;

/// One client: its uid, index (source address choice) and route.
struct Client {
    uid: String,
    index: usize,
    route: Route,
    per_source: usize,
    log: Shared,
}

/// Resuming clients, one task each; they stop when the pool drops.
pub struct Pool {
    stop: watch::Sender<bool>,
    /// Each client's log, by client index.
    pub logs: Vec<Shared>,
}

impl Pool {
    /// Starts one client per `(uid, route)`, at most `parallel` upgrades
    /// in flight across the pool, `per_source` clients per loopback source
    /// address.
    pub fn start(
        book: &Book,
        clients: Vec<(String, Route)>,
        parallel: usize,
        per_source: usize,
    ) -> Pool {
        let (stop, _) = watch::channel(false);
        let gate = Arc::new(Semaphore::new(parallel.max(1)));
        let mut logs = Vec::with_capacity(clients.len());
        for (index, (uid, route)) in clients.into_iter().enumerate() {
            let log = Shared::default();
            logs.push(log.clone());
            let client = Client {
                uid,
                index,
                route,
                per_source,
                log,
            };
            tokio::spawn(client.run(book.clone(), gate.clone(), stop.subscribe()));
        }
        Pool { stop, logs }
    }

    /// Clients bound now (their last connection answered `bound` and has
    /// not ended).
    pub fn bound_now(&self) -> usize {
        self.logs
            .iter()
            .filter(|l| {
                let l = lock(l);
                l.binds > 0 && l.lost_at.is_none()
            })
            .count()
    }

    /// Waits (at most `limit`) until every client is bound.
    pub async fn wait_bound(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let n = self.bound_now();
            if n == self.logs.len() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!("only {n} of {} v2 clients were bound", self.logs.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Client {
    /// Connects, reads, and reconnects with `since` until `stop`.
    async fn run(self, mut book: Book, gate: Arc<Semaphore>, mut stop: watch::Receiver<bool>) {
        let mut since: Position = None;
        let mut attempt = 0;
        while !*stop.borrow() {
            let node = tokio::select! {
                n = choose(&mut book, self.route, attempt) => n,
                _ = stop.changed() => return,
            };
            attempt += 1;
            let opened = {
                let Ok(_permit) = gate.acquire().await else {
                    return;
                };
                tokio::time::timeout(
                    CONNECT_LIMIT,
                    handshake(node.http, self.index, self.per_source, Some(SUBPROTOCOL)),
                )
                .await
            };
            let Ok(Ok((stream, rest))) = opened else {
                lock(&self.log).failed_connects += 1;
                tokio::time::sleep(RETRY).await;
                continue;
            };
            let stopped = self.session(stream, rest, &mut since, &mut stop).await;
            let mut log = lock(&self.log);
            if log.binds > 0 && log.lost_at.is_none() {
                log.lost_at = Some(Instant::now());
            }
            if stopped {
                return;
            }
        }
    }

    /// One connection: the bind frame, then frames until it ends; true when
    /// it ended because the pool stopped.
    async fn session(
        &self,
        mut s: TcpStream,
        mut buf: Vec<u8>,
        since: &mut Position,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut bind = serde_json::json!({ "uid": self.uid });
        if let Some((offset, epoch)) = since.as_ref() {
            bind["since"] = serde_json::json!({ "offset": offset, "epoch": epoch });
        }
        if s.write_all(&client_frame(0x1, bind.to_string().as_bytes()))
            .await
            .is_err()
        {
            return false;
        }
        let resuming = since.is_some();
        loop {
            let mut at = 0;
            while let Some((opcode, payload, used)) = next_frame(&buf[at..]) {
                match opcode {
                    0x0 | 0x1 => {
                        self.frame(&buf[at + payload.start..at + payload.end], since, resuming)
                    }
                    0x8 => return false,
                    0x9 => {
                        let pong = client_frame(0xA, &buf[at + payload.start..at + payload.end]);
                        if s.write_all(&pong).await.is_err() {
                            return false;
                        }
                    }
                    _ => {}
                }
                at += used;
            }
            buf.drain(..at);
            if buf.len() > MAX_FRAME {
                return false;
            }
            tokio::select! {
                read = s.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return false,
                    Ok(_) => {}
                },
                _ = stop.changed() => return true,
            }
        }
    }

    /// Handles one text frame.
    fn frame(&self, payload: &[u8], since: &mut Position, resuming: bool) {
        let now = Instant::now();
        let mut log = lock(&self.log);
        let Ok(f) = serde_json::from_slice::<Frame>(payload) else {
            log.unreadable += 1;
            return;
        };
        match f.kind.as_str() {
            "bound" => {
                log.binds += 1;
                log.last_bound = Some(now);
                if let Some(lost) = log.lost_at.take() {
                    log.longest_gap = log.longest_gap.max(now - lost);
                }
                let recovered = f.recovered == Some(true);
                if resuming && recovered {
                    log.recovered += 1;
                } else if resuming {
                    let why = f.reason.unwrap_or_else(|| "no reason".into());
                    log.not_recovered.push(why);
                }
                // After `recovered: false` the client starts from the top.
                if !resuming || !recovered {
                    *since = f.offset.zip(f.epoch);
                }
            }
            "message" => {
                if let (Some(offset), Some(epoch)) = (f.offset, f.epoch) {
                    if let Some((last, last_epoch)) = since.as_ref()
                        && *last_epoch == epoch
                        && offset != last + 1
                    {
                        log.offset_faults += 1;
                    }
                    *since = Some((offset, epoch));
                }
                match f.data.as_ref().and_then(|d| d.get("s")?.as_u64()) {
                    Some(seq) => log.got.push((seq, now)),
                    None => log.unreadable += 1,
                }
            }
            _ => {}
        }
    }
}

/// Waits until `route` finds a live node in `book`.
async fn choose(book: &mut Book, route: Route, attempt: usize) -> Addrs {
    loop {
        if let Some(a) = pick(&book.borrow_and_update(), route, attempt) {
            return a;
        }
        if book.changed().await.is_err() {
            // The cluster is gone: the pool is stopping.
            std::future::pending::<()>().await;
        }
    }
}

/// The first complete server frame in `buf`: its opcode, the range of its
/// payload, and the bytes it takes. Server frames are unmasked (RFC 6455
/// §5.1).
fn next_frame(buf: &[u8]) -> Option<(u8, std::ops::Range<usize>, usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    let (len, hdr): (usize, usize) = match b1 & 0x7f {
        126 => (
            usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            4,
        ),
        127 => {
            let b: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (usize::try_from(u64::from_be_bytes(b)).ok()?, 10)
        }
        n => (usize::from(n), 2),
    };
    let end = len.checked_add(hdr)?;
    (buf.len() >= end).then_some((b0 & 0x0f, hdr..end, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_where_their_length_says() {
        let mut buf = vec![0x81, 3, b'a', b'b', b'c', 0x89, 126, 0, 1];
        assert_eq!(next_frame(&buf), Some((1, 2..5, 5)));
        assert_eq!(next_frame(&buf[5..]), None);
        buf.push(b'x');
        assert_eq!(next_frame(&buf[5..]), Some((9, 4..5, 5)));
    }

    #[test]
    fn a_route_waits_for_its_node_unless_it_may_fall_back() {
        let a = |p| Addrs {
            http: ([127, 0, 0, 1], p).into(),
            text: ([127, 0, 0, 1], p).into(),
            api: ([127, 0, 0, 1], p).into(),
        };
        let book = [Some(a(1)), None, Some(a(3))];
        let sticky = Route {
            prefer: 1,
            fallback: false,
        };
        let loose = Route {
            prefer: 1,
            fallback: true,
        };
        assert_eq!(pick(&book, sticky, 0), None);
        assert!(pick(&book, loose, 0).is_some());
        assert_eq!(
            pick(
                &book,
                Route {
                    prefer: 2,
                    fallback: false
                },
                5
            ),
            Some(a(3))
        );
    }
}
