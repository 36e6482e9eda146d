//! A cluster the bench can restart node by node: a `redis-server` and
//! several pushgate nodes sharing it, every node with `--history` (kept in
//! Redis, so any node can replay it and it outlives the node), and a
//! [`Book`] of the live nodes' addresses that the resuming clients
//! (`v2.rs`) read to choose where to reconnect — the part a load balancer
//! plays in a deployment: a node leaves the book before it is signalled
//! (as Kubernetes removes a terminating pod's endpoint) and comes back, on
//! new ports, once it serves again.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::spawn::{self, Gateway, Redis};

/// Longest wait for a signalled node to exit: past the gateway's default
/// `--shutdown-timeout` (15 s), whose paced drain may use most of it.
const EXIT_LIMIT: Duration = Duration::from_secs(30);

/// One live node's listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addrs {
    /// WebSocket clients.
    pub http: SocketAddr,
    /// Text port (pushes).
    pub text: SocketAddr,
    /// REST, `/stats`, `/metrics`.
    pub api: SocketAddr,
}

/// The live nodes, by node index (`None`: down or draining); clients wait
/// on it for a node to come back.
pub type Book = watch::Receiver<Vec<Option<Addrs>>>;

/// How a node is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: the paced drain closes every WebSocket with 1001, then the
    /// process exits 0.
    Term,
    /// SIGKILL: no drain; the clients' sockets just die.
    Kill,
}

/// The nodes and their redis-server; all killed on drop.
pub struct Cluster {
    bin: PathBuf,
    /// Killed when the cluster drops (never read: held for its `Drop`).
    #[allow(dead_code)]
    redis: Redis,
    /// Each node's flags, without the per-node id.
    flags: Vec<String>,
    nodes: Vec<Option<Gateway>>,
    book: watch::Sender<Vec<Option<Addrs>>>,
}

/// Whether `flags` already turn history on (a repeated `--history` would be
/// refused by the gateway's argument parser).
fn has_history(flags: &[String]) -> bool {
    flags
        .iter()
        .any(|f| f == "--history" || f.starts_with("--history="))
}

/// `extra`, plus `--history` unless it is there already.
pub fn with_history(extra: &[String]) -> Vec<String> {
    let mut flags = extra.to_vec();
    if !has_history(&flags) {
        flags.push("--history".into());
    }
    flags
}

impl Cluster {
    /// Starts a redis-server and `count` nodes (`bin` with `extra` flags and
    /// `--history`), and waits until every node is on the bus.
    pub async fn start(bin: PathBuf, extra: &[String], count: usize) -> anyhow::Result<Cluster> {
        let redis = tokio::task::spawn_blocking(spawn::redis).await??;
        let mut flags = with_history(extra);
        flags.extend(["--redis-url".into(), redis.url.clone()]);
        let (book, _) = watch::channel(vec![None; count]);
        let mut cluster = Cluster {
            bin,
            redis,
            flags,
            nodes: (0..count).map(|_| None).collect(),
            book,
        };
        for i in 0..count {
            cluster.start_node(i).await?;
        }
        Ok(cluster)
    }

    /// The book of live nodes, for clients.
    pub fn book(&self) -> Book {
        self.book.subscribe()
    }

    /// Node `i`'s addresses while it is up.
    pub fn addrs(&self, i: usize) -> Option<Addrs> {
        self.book.borrow().get(i).copied().flatten()
    }

    /// Starts node `i` (on new ports), waits until it is on the bus, and
    /// puts it in the book.
    pub async fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        let mut flags = self.flags.clone();
        flags.extend(["--node-id".into(), format!("bench-n{i}")]);
        let bin = self.bin.clone();
        let gw = tokio::task::spawn_blocking(move || spawn::gateway(&bin, &flags)).await??;
        crate::wait_ready(gw.api).await?;
        let addrs = Addrs {
            http: gw.http,
            text: gw.text,
            api: gw.api,
        };
        self.nodes[i] = Some(gw);
        self.book.send_modify(|b| b[i] = Some(addrs));
        Ok(())
    }

    /// Takes node `i` out of the book, stops it `how`, and waits until it
    /// has exited; returns when it was signalled and whether it exited 0.
    pub async fn stop_node(&mut self, i: usize, how: Stop) -> anyhow::Result<(Instant, bool)> {
        self.book.send_modify(|b| b[i] = None);
        let mut gw = self.nodes[i].take().context("the node is not running")?;
        let signal = match how {
            Stop::Term => rustix::process::Signal::TERM,
            Stop::Kill => rustix::process::Signal::KILL,
        };
        let at = Instant::now();
        gw.process.signal(signal)?;
        let clean = gw.process.wait_exit(EXIT_LIMIT).await?;
        Ok((at, clean))
    }
}
