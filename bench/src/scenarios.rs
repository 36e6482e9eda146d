//! The scenarios. Each opens its WebSocket receivers (uid `PREFIXi` for
//! connection i, one connection per uid), waits until the gateway reports
//! them bound, then measures one or more phases.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;

use crate::Args;
use crate::phase::{Pusher, Target, bound, measure, wait_bound};
use crate::push::Plan;
use crate::report::Row;
use crate::sys::{CpuMeter, rss_kib};
use crate::track::Tracker;
use crate::ws::Receivers;

/// Sequence numbers a tracker keeps for `phases` phases of `run` each
/// (generously above any rate two cores reach).
fn capacity(run: Duration, phases: usize) -> usize {
    ((run.as_secs_f64() * 1.5e6 * phases as f64) as usize).clamp(100_000, 64_000_000)
}

/// A uid prefix unique to this bench process and scenario.
pub fn prefix(tag: &str) -> String {
    format!("{tag}{}-", std::process::id())
}

/// Opens `n` receivers on the clients' gateway and waits until bound.
async fn receivers(
    target: &Target,
    args: &Args,
    tracker: &Arc<Tracker>,
    prefix: &str,
    n: usize,
) -> anyhow::Result<Receivers> {
    let mut pool = Receivers::new(tracker.clone(), prefix, &target.generator);
    let base = bound(target.clients_api).await?;
    grow(target, args, &mut pool, n, base).await?;
    Ok(pool)
}

async fn grow(
    target: &Target,
    args: &Args,
    pool: &mut Receivers,
    upto: usize,
    base: u64,
) -> anyhow::Result<()> {
    pool.grow(
        target.clients_http,
        upto,
        args.parallel_connects,
        crate::phase::SETTLE_LIMIT,
    )
    .await?;
    wait_bound(target.clients_api, base + upto as u64).await
}

/// `idle`: N bound connections; gateway RSS per connection.
pub async fn idle(target: &Target, args: &Args, steps: &[usize]) -> anyhow::Result<Vec<Row>> {
    let Some(&pid) = target.pids.first() else {
        bail!("idle needs --gateway-pid (or --spawn) to read the gateway's RSS");
    };
    let tracker = Arc::new(Tracker::new(1, 1)?);
    let prefix = prefix("i");
    let mut pool = Receivers::new(tracker.clone(), &prefix, &target.generator);
    let base = bound(target.clients_api).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0 = rss_kib(pid).unwrap_or(0);
    let mut rows = Vec::new();
    let mut last = 0;
    for &n in steps {
        let meter = CpuMeter::start(&target.pids, &target.generator.workers);
        grow(target, args, &mut pool, n, base).await?;
        let span = meter.stop();
        // Let allocations settle after the connect burst.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = rss_kib(pid).unwrap_or(0);
        let per_conn = rss.saturating_sub(rss0) as f64 / n.max(1) as f64;
        let new = (n - last).max(1) as f64;
        let mut row = Row::new("idle", &n.to_string(), n, span, 0, 0, None, 0..0);
        // Per-op costs of this step are per new connection.
        row.gateway_us_per_op = span.gateway_cpu_s.map(|c| c * 1e6 / new);
        row.generator_us_per_op = span.generator_cpu_s * 1e6 / new;
        let row = row
            .with("rss_base_kib", rss0)
            .with("rss_kib", rss)
            .with("rss_per_conn_kib", (per_conn * 100.0).round() / 100.0)
            .with("connect_secs", (span.wall_s * 100.0).round() / 100.0);
        rows.push(row);
        last = n;
    }
    Ok(rows)
}

/// `push-text`: pipelined lines on persistent connections, then a connection
/// per push.
pub async fn push_text(target: &Target, args: &Args, n: usize) -> anyhow::Result<Vec<Row>> {
    let run = args.duration;
    let tracker = Arc::new(Tracker::new(capacity(run, 2), 1)?);
    let prefix = prefix("t");
    let _pool = receivers(target, args, &tracker, &prefix, n).await?;
    let conns = args.concurrency.unwrap_or(2);
    let plan = Plan::new(&prefix, n, tracker.clone(), run, 0..u64::MAX);
    let pipelined = Pusher::TextPipelined {
        conns,
        window: args.window,
    };
    let v = format!("pipelined c={conns} w={}", args.window);
    let a = measure("push-text", &v, target, n, plan, pipelined).await?;
    let from = a.integrity.issued;
    let per = args.concurrency.unwrap_or(16);
    let plan = Plan::new(&prefix, n, tracker.clone(), run, from..u64::MAX);
    let v = format!("conn-per-push c={per}");
    let b = measure(
        "push-text",
        &v,
        target,
        n,
        plan,
        Pusher::TextPerPush { conns: per },
    )
    .await?;
    Ok(vec![a, b])
}

/// `push-http`: `POST /push` on keep-alive connections; then, when `batch`
/// > 0, `POST /push/batch` with `batch` pushes per request.
pub async fn push_http(
    target: &Target,
    args: &Args,
    n: usize,
    batch: usize,
) -> anyhow::Result<Vec<Row>> {
    let run = args.duration;
    let tracker = Arc::new(Tracker::new(capacity(run, 2), 1)?);
    let prefix = prefix("h");
    let _pool = receivers(target, args, &tracker, &prefix, n).await?;
    let conns = args.concurrency.unwrap_or(32);
    let plan = Plan::new(&prefix, n, tracker.clone(), run, 0..u64::MAX);
    let v = format!("keep-alive c={conns}");
    let row = measure("push-http", &v, target, n, plan, Pusher::Http { conns }).await?;
    if batch == 0 {
        return Ok(vec![row]);
    }
    let batch = batch.min(crate::batch::MAX_BATCH);
    let from = row.integrity.issued;
    let conns = args.batch_concurrency;
    let plan = Plan::new(&prefix, n, tracker.clone(), run, from..u64::MAX);
    let v = format!("batch={batch} c={conns}");
    let pusher = Pusher::HttpBatch { conns, batch };
    let b = measure("push-http", &v, target, n, plan, pusher).await?;
    Ok(vec![row, b.with("batch", batch)])
}

/// `latency`: push→receive percentiles at a fixed rate over the text port.
pub async fn latency(target: &Target, args: &Args, n: usize) -> anyhow::Result<Vec<Row>> {
    let run = args.duration;
    let tracker = Arc::new(Tracker::new(capacity(run, 1), 1)?);
    let prefix = prefix("l");
    let _pool = receivers(target, args, &tracker, &prefix, n).await?;
    let conns = args.concurrency.unwrap_or(1);
    let plan = Plan::new(&prefix, n, tracker.clone(), run, 0..u64::MAX);
    let rate = args.rate.unwrap_or(10_000.0);
    let v = format!("text {rate}/s c={conns}");
    let row = measure(
        "latency",
        &v,
        target,
        n,
        plan,
        Pusher::TextRate { conns, rate },
    )
    .await?;
    Ok(vec![row])
}

/// `broadcast`: deliveries per second to N connections (at most `--window`
/// broadcasts not yet fully delivered), then the time single broadcasts take
/// to reach every connection.
pub async fn broadcast(target: &Target, args: &Args, n: usize) -> anyhow::Result<Vec<Row>> {
    let run = args.duration;
    let cap = (run.as_secs_f64() * 5000.0) as usize + 100;
    let tracker = Arc::new(Tracker::new(cap, n as u32)?);
    let prefix = prefix("b");
    let _pool = receivers(target, args, &tracker, &prefix, n).await?;
    let conns = args.concurrency.unwrap_or(2);
    let window = (args.window as u64).clamp(1, 64);
    let mut plan = Plan::new(&prefix, n, tracker.clone(), run, 0..u64::MAX);
    plan.window = Some(window);
    let v = format!("c={conns} window={window}");
    let pusher = Pusher::Broadcast { conns };
    let mut row = measure("broadcast", &v, target, n, plan, pusher).await?;
    // Single broadcasts, one at a time: time until the last connection has it.
    let first = row.integrity.issued;
    let mut reach = Vec::new();
    for seq in first..first + 5 {
        let plan = Plan::new(&prefix, n, tracker.clone(), run, seq..seq + 1);
        let one = measure("broadcast", "single", target, n, plan, pusher).await?;
        if !one.clean() {
            row.integrity.lost += one.integrity.lost;
            row.integrity.duplicates += one.integrity.duplicates;
        }
        reach.extend(tracker.reach_us(seq));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reach.sort_unstable();
    let median = reach.get(reach.len() / 2).copied();
    Ok(vec![
        row.with("reach_all_median_us", median)
            .with("reach_all_max_us", reach.last().copied()),
    ])
}

/// `growth`: per-push cost (pipelined text port) as connections grow.
pub async fn growth(target: &Target, args: &Args, steps: &[usize]) -> anyhow::Result<Vec<Row>> {
    let run = args.duration;
    let tracker = Arc::new(Tracker::new(capacity(run, steps.len()), 1)?);
    let prefix = prefix("g");
    let mut pool = Receivers::new(tracker.clone(), &prefix, &target.generator);
    let base = bound(target.clients_api).await?;
    let conns = args.concurrency.unwrap_or(2);
    let mut rows: Vec<Row> = Vec::new();
    let mut seq = 0;
    for &n in steps {
        grow(target, args, &mut pool, n, base).await?;
        let plan = Plan::new(&prefix, n, tracker.clone(), run, seq..u64::MAX);
        let pusher = Pusher::TextPipelined {
            conns,
            window: args.window,
        };
        let mut row = measure("growth", &n.to_string(), target, n, plan, pusher).await?;
        seq += row.integrity.issued;
        if let (Some(first), Some(now)) = (
            rows.first().and_then(|r| r.gateway_us_per_op),
            row.gateway_us_per_op,
        ) {
            row = row.with("vs_first", (now / first * 100.0).round() / 100.0);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// `cluster`: receivers on node B, pushes on node A's text port, through
/// Redis: latency at `--rate`, then pipelined throughput.
pub async fn cluster(target: &Target, args: &Args, n: usize) -> anyhow::Result<Vec<Row>> {
    let run = args.duration;
    let tracker = Arc::new(Tracker::new(capacity(run, 2), 1)?);
    let prefix = prefix("c");
    let _pool = receivers(target, args, &tracker, &prefix, n).await?;
    warm_up(target, &prefix, n).await?;
    let conns = args.concurrency.unwrap_or(1);
    let rate = args.rate.unwrap_or(10_000.0);
    let plan = Plan::new(&prefix, n, tracker.clone(), run, 0..u64::MAX);
    let v = format!("A->redis->B {rate}/s");
    let a = measure(
        "cluster",
        &v,
        target,
        n,
        plan,
        Pusher::TextRate { conns, rate },
    )
    .await?;
    let from = a.integrity.issued;
    let plan = Plan::new(&prefix, n, tracker.clone(), run, from..u64::MAX);
    let pusher = Pusher::TextPipelined {
        conns: args.concurrency.unwrap_or(2),
        window: args.window,
    };
    let b = measure("cluster", "A->redis->B pipelined", target, n, plan, pusher).await?;
    Ok(vec![a, b])
}

/// Pushes an untracked line to every uid through node A until each answers
/// `ok`: node B's subscriptions are confirmed by Redis only after a short
/// batch window.
async fn warm_up(target: &Target, prefix: &str, n: usize) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::TcpStream::connect(target.text).await?;
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut pending: Vec<usize> = (0..n).collect();
    let deadline = Instant::now() + crate::phase::SETTLE_LIMIT;
    while !pending.is_empty() {
        if Instant::now() >= deadline {
            bail!(
                "{} uids never became reachable through Redis",
                pending.len()
            );
        }
        let mut out = String::new();
        for i in &pending {
            out.push_str(&format!("{{\"uid\":\"{prefix}{i}\",\"warm\":1}}\n"));
        }
        wr.write_all(out.as_bytes()).await?;
        let mut still = Vec::new();
        for &i in &pending {
            let mut answer = String::new();
            rd.read_line(&mut answer).await?;
            if answer.trim() != "ok" {
                still.push(i);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}
