//! What every scenario shares: the gateway(s) under test, waiting for clients
//! to be bound, and one measured push phase (pushers run, deliveries drain,
//! CPU of both sides is read before and after).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::time::Instant;

use crate::push::{self, Plan};
use crate::report::Row;
use crate::spawn::Owned;
use crate::sys::CpuMeter;
use crate::track::Tracker;
use crate::ws::Generator;

/// Longest wait for clients to be bound, or for deliveries to drain.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(60);
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// The gateway under test (node A in the cluster scenario: pushes go here),
/// and the generator measuring it.
pub struct Target {
    /// The API listener pushes go to (REST, `/stats`).
    pub api: SocketAddr,
    pub text: SocketAddr,
    /// Where the WebSocket clients connect (node B in the cluster scenario).
    pub clients_http: SocketAddr,
    /// The API listener of the clients' gateway (its `/stats` counts them).
    pub clients_api: SocketAddr,
    /// Gateway process ids, for CPU and RSS (empty: unknown).
    pub pids: Vec<u32>,
    /// The cluster's redis-server, when the bench started it.
    pub redis_pid: Option<u32>,
    /// Processes the bench started; killed when this drops (never read:
    /// held for its `Drop`).
    #[allow(dead_code)]
    pub owned: Vec<Owned>,
    /// How this bench opens its clients, and its worker processes (their
    /// CPU is the generator's).
    pub generator: Generator,
}

impl Target {
    /// One process the bench started (a pushgate or the floor relay), which
    /// serves the clients itself.
    pub fn single(gw: crate::spawn::Gateway, generator: Generator) -> Target {
        Target {
            api: gw.api,
            text: gw.text,
            clients_http: gw.http,
            clients_api: gw.api,
            pids: vec![gw.process.pid()],
            redis_pid: None,
            owned: vec![gw.process],
            generator,
        }
    }
}

/// The members of a gateway's `GET /stats` answer (pushgate's
/// `http::query::Stats`, which only serializes) that the bench reads.
#[derive(Debug, serde::Deserialize)]
pub struct StatsSeen {
    /// Bound connections.
    pub bound_connections: u64,
    /// Nodes in the deployment: 1 without a cluster, 0 while a cluster node
    /// is not on its bus yet.
    pub nodes: u64,
}

/// A gateway's `GET /stats`.
pub async fn stats(http: SocketAddr) -> anyhow::Result<StatsSeen> {
    let v = push::get_json(http, "/stats").await?;
    serde_json::from_value(v).context("/stats")
}

/// `bound_connections` of a gateway's `GET /stats`.
pub async fn bound(http: SocketAddr) -> anyhow::Result<u64> {
    Ok(stats(http).await?.bound_connections)
}

/// Waits until the gateway reports at least `n` bound connections.
pub async fn wait_bound(http: SocketAddr, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE_LIMIT;
    loop {
        let b = bound(http).await?;
        if b >= n {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("only {b} of {n} connections were bound");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How one phase pushes.
#[derive(Debug, Clone, Copy)]
pub enum Pusher {
    /// `conns` persistent text connections, `window` lines in flight each.
    TextPipelined { conns: usize, window: usize },
    /// `conns` persistent text connections sharing `rate` lines per second.
    TextRate { conns: usize, rate: f64 },
    /// `conns` tasks, each opening a text connection per push.
    TextPerPush { conns: usize },
    /// `conns` keep-alive HTTP connections, `POST /push`.
    Http { conns: usize },
    /// `conns` keep-alive HTTP connections, `POST /push/batch` with `batch`
    /// pushes per request.
    HttpBatch { conns: usize, batch: usize },
    /// `conns` keep-alive HTTP connections, `POST /broadcast`.
    Broadcast { conns: usize },
}

/// Runs the pushers of `plan` to completion.
pub async fn drive(target: &Target, plan: &Arc<Plan>, pusher: Pusher) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let (text, http) = (target.text, target.api);
    match pusher {
        Pusher::TextPipelined { conns, window } => {
            for _ in 0..conns.max(1) {
                tasks.spawn(push::text_persistent(text, plan.clone(), window, None));
            }
        }
        Pusher::TextRate { conns, rate } => {
            let each = rate / conns.max(1) as f64;
            let window = ((each / 100.0) as usize).clamp(64, 4096);
            for _ in 0..conns.max(1) {
                tasks.spawn(push::text_persistent(
                    text,
                    plan.clone(),
                    window,
                    Some(each),
                ));
            }
        }
        Pusher::TextPerPush { conns } => {
            for _ in 0..conns.max(1) {
                tasks.spawn(push::text_per_push(text, plan.clone()));
            }
        }
        Pusher::HttpBatch { conns, batch } => {
            for _ in 0..conns.max(1) {
                tasks.spawn(crate::batch::http_batch(http, plan.clone(), batch));
            }
        }
        Pusher::Http { conns } | Pusher::Broadcast { conns } => {
            let broadcast = matches!(pusher, Pusher::Broadcast { .. });
            for _ in 0..conns.max(1) {
                tasks.spawn(push::http_push(http, plan.clone(), broadcast));
            }
        }
    }
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done.map_err(anyhow::Error::from).and_then(|r| r) {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Waits (bounded) until every expected copy of `seqs` has arrived.
pub async fn drain(tracker: &Tracker, seqs: std::ops::Range<u64>) {
    let want = tracker.expected(seqs.start, seqs.end);
    let deadline = Instant::now() + DRAIN_LIMIT;
    while tracker.received_in(seqs.start, seqs.end) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One measured phase: pushes `plan` with `pusher`, waits for deliveries,
/// and returns its row.
pub async fn measure(
    scenario: &str,
    variant: &str,
    target: &Target,
    connections: usize,
    plan: Plan,
    pusher: Pusher,
) -> anyhow::Result<Row> {
    let plan = Arc::new(plan);
    let tracker = plan.tracker.clone();
    tracker.reset_latency();
    let workers = &target.generator.workers;
    let meter = CpuMeter::start(&target.pids, workers);
    let redis = target.redis_pid.map(|p| CpuMeter::start(&[p], workers));
    drive(target, &plan, pusher).await?;
    let seqs = plan.issued();
    drain(&tracker, seqs.clone()).await;
    let span = meter.stop();
    let deliveries = tracker.received_in(seqs.start, seqs.end);
    let pushes = plan.ok.load(Ordering::Relaxed);
    let mut row = Row::new(
        scenario,
        variant,
        connections,
        span,
        pushes,
        deliveries,
        Some(&tracker),
        seqs,
    );
    if let Some(r) = redis.and_then(|m| m.stop().gateway_cpu_s) {
        row = row.with("redis_cpu_s", (r * 1000.0).round() / 1000.0);
    }
    let errors = plan.errors.load(Ordering::Relaxed);
    if errors > 0 {
        row = row.with("push_errors", errors);
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pushgates_stats() {
        let answer = pushgate::http::query::Stats {
            connections: 3,
            bound_connections: 2,
            bound_uids: 1,
            nodes: 1,
        };
        let seen: StatsSeen =
            serde_json::from_value(serde_json::to_value(answer).unwrap()).unwrap();
        assert_eq!((seen.bound_connections, seen.nodes), (2, 1));
    }
}
