//! `rolling-deploy`: a rolling deploy under a steady push stream loses
//! nothing for protocol v2 clients that resume.
//!
//! Three nodes share a redis-server the bench starts, all with `--history`.
//! N v2 clients (`--connections`) bind `--uids` uids (client `i` has uid
//! `i % uids`), spread over the nodes (client `i` prefers node `i % 3` and
//! falls back to any live node). Pushers send a steady stream (`--rate`,
//! default 300 a second, over `--concurrency` pushers (default 10), each owning some
//! uids and sending each push after the previous one's answer), alternating
//! between the text port and `POST /push` and round the live nodes. After
//! `--duration`, each node in turn leaves the book, gets SIGTERM (paced
//! drain), exits, starts again on new ports and rejoins, followed by
//! `--duration` more of pushing; with `--crash`, then one node is killed
//! (SIGKILL, no drain), pushing goes on for `--duration` without it, and it
//! starts again. Reported: lost (answered `ok` or stored
//! but never received: must be 0), duplicates (0), out of order (0),
//! reconnects, resumes not recovered, and the longest time a client was
//! without a bound connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::Args;
use crate::ledger::{Ledger, Verdict, ms, promised, quantile};
use crate::nodes::{Addrs, Book, Cluster, Stop};
use crate::push::Http;
use crate::report::Row;
use crate::resume::{SETTLE, wait_complete};
use crate::sys::CpuMeter;
use crate::v2::{Pool, Route, lock};

/// Nodes in the deploy.
const NODES: usize = 3;
/// Longest wait for one push's answer.
const ANSWER_LIMIT: Duration = Duration::from_secs(5);

/// Runs the scenario (see the module) with `n` clients.
pub async fn rolling_deploy(args: &Args, n: usize) -> anyhow::Result<Vec<Row>> {
    let bin = crate::spawn::gateway_bin(args.gateway_bin.as_ref())?;
    let mut cluster = Cluster::start(bin, &args.gateway_args, NODES).await?;
    let uids = args.uids.clamp(1, n.max(1));
    let prefix = crate::scenarios::prefix("d");
    let clients = (0..n)
        .map(|i| {
            let route = Route {
                prefer: i % NODES,
                fallback: true,
            };
            (format!("{prefix}{}", i % uids), route)
        })
        .collect();
    let pool = Pool::start(
        &cluster.book(),
        clients,
        args.parallel_connects,
        args.clients_per_source,
    );
    pool.wait_bound(crate::phase::SETTLE_LIMIT).await?;

    let ledger = Arc::new(Ledger::new(uids));
    let rate = args.rate.unwrap_or(300.0);
    let pushers = args.concurrency.unwrap_or(10).clamp(1, uids);
    let (stop, stopped) = watch::channel(false);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..pushers {
        let pusher = Pusher {
            book: cluster.book(),
            prefix: prefix.clone(),
            uids: (p..uids).step_by(pushers).collect(),
            ledger: ledger.clone(),
            next: next.clone(),
            period: Duration::from_secs_f64(pushers as f64 / rate.max(1.0)),
        };
        tasks.spawn(pusher.run(stopped.clone()));
    }
    let meter = CpuMeter::start(&[], &Default::default());
    let clean_exits = deploy(&mut cluster, args).await?;
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    // The row's rates are those of the push phase.
    let span = meter.stop();
    let settled = wait_complete(&pool, &ledger, |i| i % uids, SETTLE).await;
    if let Err(e) = &settled {
        eprintln!("bench: rolling-deploy: {e:#}");
    }
    let crash = if args.crash { " +crash" } else { "" };
    let variant = format!("{NODES} nodes {uids} uids {rate}/s{crash}");
    let row = Row::new("rolling-deploy", &variant, n, span, 0, 0, None, 0..0);
    Ok(vec![
        tally(row, &pool, &ledger, uids)
            .with("restarts", NODES + usize::from(args.crash))
            .with("clean_exits", clean_exits)
            .with("settled", settled.is_ok()),
    ])
}

/// The deploy itself, pushers running: `--duration`, then each node in
/// turn drained, exited, restarted, and `--duration` more; with `--crash`
/// one node killed as well. Returns how many drained nodes exited 0.
async fn deploy(cluster: &mut Cluster, args: &Args) -> anyhow::Result<usize> {
    tokio::time::sleep(args.duration).await;
    let mut clean_exits = 0;
    for i in 0..NODES {
        let (_, clean) = cluster.stop_node(i, Stop::Term).await?;
        clean_exits += usize::from(clean);
        cluster.start_node(i).await?;
        tokio::time::sleep(args.duration).await;
    }
    if args.crash {
        cluster.stop_node(0, Stop::Kill).await?;
        tokio::time::sleep(args.duration).await;
        cluster.start_node(0).await?;
        tokio::time::sleep(args.duration).await;
    }
    Ok(clean_exits)
}

/// Fills `row` with what the clients' logs (client `i` of uid `i % uids`)
/// say against the ledger.
fn tally(row: Row, pool: &Pool, ledger: &Ledger, uids: usize) -> Row {
    let mut total = Verdict::default();
    let mut gaps = Vec::with_capacity(pool.logs.len());
    let (mut received, mut reconnects, mut offset_faults) = (0u64, 0u64, 0u64);
    let (mut not_recovered, mut failed_connects) = (0u64, 0u64);
    for (i, log) in pool.logs.iter().enumerate() {
        let log = lock(log);
        total.add(&ledger.judge(i % uids, &log, None));
        gaps.push(log.longest_gap);
        received += log.got.len() as u64;
        reconnects += u64::from(log.binds.saturating_sub(1));
        offset_faults += u64::from(log.offset_faults);
        not_recovered += log.not_recovered.len() as u64;
        failed_connects += u64::from(log.failed_connects);
    }
    gaps.sort_unstable();
    let (pushed, required) = ledger.counts();
    let mut row = row.counted(required, received);
    row.integrity.issued = pushed;
    row.integrity.refused = pushed - required;
    row.integrity.lost = total.lost;
    row.integrity.duplicates = total.duplicates;
    row.with("out_of_order", total.out_of_order)
        .with("foreign", total.foreign)
        .with("offset_faults", offset_faults)
        .with("reconnects", reconnects)
        .with("failed_connects", failed_connects)
        .with("not_recovered", not_recovered)
        .with("longest_disconnected_ms", gaps.last().map(|d| ms(*d)))
        .with("disconnected_p99_ms", quantile(&gaps, 0.99).map(ms))
}

/// One pusher: pushes to its uids in turn, each after the previous answer,
/// one every `period`, alternating the text port (even sequence numbers)
/// and `POST /push` (odd), round the live nodes.
struct Pusher {
    book: Book,
    prefix: String,
    /// Uid indices it owns (no other pusher sends to them).
    uids: Vec<usize>,
    ledger: Arc<Ledger>,
    next: Arc<AtomicU64>,
    period: Duration,
}

impl Pusher {
    async fn run(self, stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut turn = 0;
        while !*stop.borrow() {
            tick.tick().await;
            let Some(node) = self.live_node(turn) else {
                continue;
            };
            let uid = self.uids[turn % self.uids.len()];
            turn += 1;
            let seq = self.next.fetch_add(1, Ordering::Relaxed);
            let required = if seq.is_multiple_of(2) {
                self.text(node, uid, seq).await
            } else {
                self.rest(node, uid, seq).await
            };
            self.ledger.push(uid, seq, required);
        }
    }

    /// A live node, turning round the book.
    fn live_node(&self, turn: usize) -> Option<Addrs> {
        let book = self.book.borrow();
        (0..book.len()).find_map(|k| book[(turn + k) % book.len()])
    }

    /// One line on a fresh text-port connection: promised when `ok`.
    async fn text(&self, node: Addrs, uid: usize, seq: u64) -> bool {
        let t = crate::track::now_ns();
        let line = format!(
            "{{\"uid\":\"{}{uid}\",\"s\":{seq},\"t\":{t}}}\n",
            self.prefix
        );
        let once = async {
            let s = TcpStream::connect(node.text).await?;
            let (rd, mut wr) = s.into_split();
            wr.write_all(line.as_bytes()).await?;
            let mut answer = String::new();
            BufReader::new(rd).read_line(&mut answer).await?;
            anyhow::Ok(answer.trim() == "ok")
        };
        matches!(tokio::time::timeout(ANSWER_LIMIT, once).await, Ok(Ok(true)))
    }

    /// One `POST /push` on a fresh connection: promised when delivered or
    /// stored.
    async fn rest(&self, node: Addrs, uid: usize, seq: u64) -> bool {
        let t = crate::track::now_ns();
        let body = format!(
            "{{\"uid\":\"{}{uid}\",\"data\":{{\"s\":{seq},\"t\":{t}}}}}",
            self.prefix
        );
        let once = async {
            let mut http = Http::connect(node.api).await?;
            let (status, answer) = http.request("POST", "/push", body.as_bytes()).await?;
            let v: serde_json::Value = serde_json::from_slice(&answer)?;
            anyhow::Ok(status == 200 && promised(&v))
        };
        matches!(tokio::time::timeout(ANSWER_LIMIT, once).await, Ok(Ok(true)))
    }
}
