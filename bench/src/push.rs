//! The pushing side: the text port (pipelined on persistent connections, at a
//! fixed rate, or one connection per push like the seed's PHP client) and the
//! REST API over hand-written keep-alive HTTP/1.1 (its batch form: batch.rs).
//!
//! Every message carries `"s":SEQ,"t":UNIX_NANOS`; SEQ comes from the shared
//! [`Plan`], and the target uid is `PREFIX{SEQ % n}`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::track::{Tracker, now_ns};

/// Longest wait for answers still in flight once the run's time is up.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// What every pusher of one run shares.
pub struct Plan {
    /// Receivers bound `prefix0..prefix{n-1}`.
    pub prefix: String,
    pub n: u64,
    pub tracker: Arc<Tracker>,
    pub deadline: Instant,
    /// Broadcasts: at most this many not yet fully delivered.
    pub window: Option<u64>,
    next_seq: AtomicU64,
    /// First sequence number of this run, and the end of its range.
    pub start: u64,
    end: u64,
    pub ok: AtomicU64,
    pub fail: AtomicU64,
    pub errors: AtomicU64,
}

impl Plan {
    /// Sequence numbers `start..end` (at most), for `run`, to `prefix0..prefix{n-1}`.
    pub fn new(
        prefix: &str,
        n: usize,
        tracker: Arc<Tracker>,
        run: Duration,
        seqs: std::ops::Range<u64>,
    ) -> Plan {
        let end = seqs.end.min(tracker.capacity());
        Plan {
            start: seqs.start,
            end,
            prefix: prefix.to_owned(),
            n: n.max(1) as u64,
            tracker,
            deadline: Instant::now() + run,
            window: None,
            next_seq: AtomicU64::new(seqs.start),
            ok: AtomicU64::new(0),
            fail: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    /// The next sequence number, or None once the time is up (or the
    /// tracker is full).
    pub fn next(&self) -> Option<u64> {
        if Instant::now() >= self.deadline {
            return None;
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        if seq >= self.end {
            self.next_seq.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(seq)
    }

    /// Up to `k` consecutive sequence numbers, or None once the time is up
    /// (or the tracker is full).
    pub fn next_range(&self, k: u64) -> Option<std::ops::Range<u64>> {
        if Instant::now() >= self.deadline {
            return None;
        }
        let mut cur = self.next_seq.load(Ordering::Relaxed);
        loop {
            if cur >= self.end {
                return None;
            }
            let to = cur.saturating_add(k.max(1)).min(self.end);
            match self
                .next_seq
                .compare_exchange_weak(cur, to, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(cur..to),
                Err(now) => cur = now,
            }
        }
    }

    /// The range of sequence numbers handed out so far.
    pub fn issued(&self) -> std::ops::Range<u64> {
        self.start..self.next_seq.load(Ordering::Relaxed)
    }

    /// Records the gateway's answer for `seq`.
    pub fn answered(&self, seq: u64, ok: bool) {
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.fail.fetch_add(1, Ordering::Relaxed);
            self.tracker.refuse(seq);
        }
    }

    /// A push that never reached the gateway (connection failed).
    pub fn errored(&self, seq: u64) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.tracker.refuse(seq);
    }

    /// Appends the text-port line for `seq`.
    fn line(&self, out: &mut Vec<u8>, seq: u64) {
        let mut s = String::with_capacity(64);
        let _ = writeln!(
            s,
            r#"{{"uid":"{}{}","s":{seq},"t":{}}}"#,
            self.prefix,
            seq % self.n,
            now_ns()
        );
        out.extend_from_slice(s.as_bytes());
    }

    /// Broadcast flow control: waits (bounded) until broadcast
    /// `seq - window` has reached every connection.
    async fn gate(&self, seq: u64) {
        let Some(w) = self.window else { return };
        if seq < w {
            return;
        }
        let limit = Instant::now() + Duration::from_secs(5);
        while !self.tracker.done(seq - w) && Instant::now() < limit {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Pushes through one persistent text connection: up to `window` lines in
/// flight, or `rate` lines per second (open loop) when given. Answers are
/// matched to lines in order.
pub async fn text_persistent(
    addr: SocketAddr,
    plan: Arc<Plan>,
    window: usize,
    rate: Option<f64>,
) -> anyhow::Result<()> {
    let stream = TcpStream::connect(addr).await.context("text port")?;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let mut inflight: VecDeque<u64> = VecDeque::with_capacity(window);
    let mut out = Vec::with_capacity(window * 64);
    let mut buf = Vec::with_capacity(16 * 1024);
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut done = false;
    let mut drain_until: Option<Instant> = None;
    loop {
        // How many lines to write now.
        let room = window.saturating_sub(inflight.len()) as u64;
        let want = match rate {
            _ if done => 0,
            Some(r) => ((start.elapsed().as_secs_f64() * r) as u64)
                .saturating_sub(sent)
                .min(room),
            None if inflight.len() <= window / 2 => room,
            None => 0,
        };
        for _ in 0..want {
            let Some(seq) = plan.next() else {
                done = true;
                break;
            };
            plan.line(&mut out, seq);
            inflight.push_back(seq);
            sent += 1;
        }
        if !out.is_empty() {
            wr.write_all(&out).await?;
            out.clear();
        }
        if !done && Instant::now() >= plan.deadline {
            done = true;
        }
        if done && inflight.is_empty() {
            return Ok(());
        }
        if done {
            let until = *drain_until.get_or_insert_with(|| Instant::now() + DRAIN_LIMIT);
            if Instant::now() >= until {
                bail!("{} answers never came", inflight.len());
            }
        }
        // Wait for answers, or for the next line to be due.
        // With the window full only an answer can make progress: never spin.
        let full = inflight.len() >= window;
        let wake = match rate {
            Some(r) if !done && !full => start + Duration::from_secs_f64((sent + 1) as f64 / r),
            _ => Instant::now() + Duration::from_millis(100),
        };
        let read = tokio::select! {
            read = rd.read_buf(&mut buf), if !inflight.is_empty() => Some(read?),
            _ = tokio::time::sleep_until(wake) => None,
        };
        if read == Some(0) {
            bail!("text port closed with {} lines unanswered", inflight.len());
        }
        let mut at = 0;
        while let Some(nl) = buf[at..].iter().position(|&b| b == b'\n') {
            let ok = &buf[at..at + nl] == b"ok";
            let seq = inflight.pop_front().context("an answer to no line")?;
            plan.answered(seq, ok);
            at += nl + 1;
        }
        buf.drain(..at);
    }
}

/// Pushes with a new text connection per line, as the seed's PHP client
/// does: connect, write, read the answer, close.
pub async fn text_per_push(addr: SocketAddr, plan: Arc<Plan>) -> anyhow::Result<()> {
    let mut line = Vec::with_capacity(96);
    while let Some(seq) = plan.next() {
        line.clear();
        plan.line(&mut line, seq);
        let once = async {
            let mut s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            s.write_all(&line).await?;
            let mut answer = [0u8; 8];
            let mut got = 0;
            while !answer[..got].contains(&b'\n') && got < answer.len() {
                let n = s.read(&mut answer[got..]).await?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            anyhow::Ok(answer[..got].starts_with(b"ok\n"))
        };
        match tokio::time::timeout(DRAIN_LIMIT, once).await {
            Ok(Ok(ok)) => plan.answered(seq, ok),
            _ => plan.errored(seq),
        }
    }
    Ok(())
}

/// A keep-alive HTTP/1.1 client connection (just enough for this API).
pub struct Http {
    stream: TcpStream,
    host: SocketAddr,
    buf: Vec<u8>,
}

impl Http {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Http> {
        let stream = TcpStream::connect(addr).await.context("HTTP connect")?;
        stream.set_nodelay(true)?;
        Ok(Http {
            stream,
            host: addr,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends one request and returns (status, body).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if method == "POST" {
            let _ = write!(
                req,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).await?;
        let read = async {
            loop {
                if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                    let status: u16 = head
                        .split(' ')
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .context("bad status line")?;
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .context("no content-length")?;
                    while self.buf.len() < end + 4 + len {
                        if self.stream.read_buf(&mut self.buf).await? == 0 {
                            bail!("closed mid-body");
                        }
                    }
                    let body = self.buf[end + 4..end + 4 + len].to_vec();
                    self.buf.drain(..end + 4 + len);
                    return Ok((status, body));
                }
                if self.buf.len() > 64 * 1024 {
                    bail!("answer head too long");
                }
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    bail!("connection closed");
                }
            }
        };
        tokio::time::timeout(DRAIN_LIMIT, read)
            .await
            .context("HTTP answer timed out")?
    }
}

/// One request on a fresh connection; the JSON body of a 200 answer.
pub async fn get_json(addr: SocketAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    let (status, body) = Http::connect(addr).await?.request("GET", path, b"").await?;
    if status != 200 {
        bail!("GET {path}: {status} {}", String::from_utf8_lossy(&body));
    }
    Ok(serde_json::from_slice(&body)?)
}

/// Pushes (`POST /push`) or broadcasts (`POST /broadcast`) over one
/// keep-alive connection, one request at a time.
pub async fn http_push(addr: SocketAddr, plan: Arc<Plan>, broadcast: bool) -> anyhow::Result<()> {
    let mut http = Http::connect(addr).await?;
    let path = if broadcast { "/broadcast" } else { "/push" };
    let mut body = String::with_capacity(96);
    while let Some(seq) = plan.next() {
        plan.gate(seq).await;
        body.clear();
        let data = format!(r#"{{"s":{seq},"t":{}}}"#, now_ns());
        if broadcast {
            let _ = write!(body, r#"{{"data":{data}}}"#);
        } else {
            let uid = seq % plan.n;
            let _ = write!(body, r#"{{"uid":"{}{uid}","data":{data}}}"#, plan.prefix);
        }
        match http.request("POST", path, body.as_bytes()).await {
            Ok((200, answer)) => {
                let delivered = crate::track::field(&answer, b"\"delivered\":").unwrap_or(0);
                plan.answered(seq, broadcast || delivered > 0);
            }
            Ok((_, _)) => plan.answered(seq, false),
            Err(e) => {
                plan.errored(seq);
                return Err(e);
            }
        }
    }
    Ok(())
}
