//! `resume`: N protocol v2 clients resume after their node restarts.
//!
//! Two nodes (A and B) share a redis-server the bench starts, both with
//! `--history` (kept in Redis). N clients bind on B, one uid each; one push
//! to every uid through B's text port (all answered `ok`, all received);
//! then B is stopped — SIGTERM, its paced drain, exit (or SIGKILL with
//! `--resume-kill`) — and while it is down `--pushes` more go through A's
//! `POST /push/batch` (stored in Redis for the uids whose clients are away).
//! B then starts again. Every client reconnects with `since`: half of them
//! at once to A (their balancer fails over), the other half to B once it is
//! back (a sticky balancer). Reported: clients resumed (`recovered: true`),
//! `recovered: false`, messages lost (pushes answered `ok` or stored that a
//! client never got: must be 0), duplicates (must be 0), and the time from
//! the restart until every client was bound again and held everything, with
//! its p50/p99 over the clients.
//!
//! There is no single-node variant: a single node keeps history in memory,
//! which its restart loses (the stream's epoch changes), so a resume across
//! a single node's restart is `recovered: false` by design.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::Args;
use crate::ledger::{Ledger, Verdict, ms, quantile};
use crate::nodes::{Cluster, Stop};
use crate::push::Http;
use crate::report::Row;
use crate::sys::CpuMeter;
use crate::v2::{Pool, Route, lock};

/// Longest wait for every client to hold everything after the restart.
pub const SETTLE: Duration = Duration::from_secs(120);
/// Pushes per `POST /push/batch` while B is down.
const BATCH: usize = 100;

/// Node indices in the cluster.
const A: usize = 0;
const B: usize = 1;

/// Runs the scenario (see the module) with `n` clients.
pub async fn resume(args: &Args, n: usize) -> anyhow::Result<Vec<Row>> {
    let bin = crate::spawn::gateway_bin(args.gateway_bin.as_ref())?;
    let mut cluster = Cluster::start(bin, &args.gateway_args, 2).await?;
    let prefix = crate::scenarios::prefix("r");
    let clients = (0..n)
        .map(|i| {
            let route = Route {
                prefer: B,
                fallback: i % 2 == 0,
            };
            (format!("{prefix}{i}"), route)
        })
        .collect();
    let pool = Pool::start(
        &cluster.book(),
        clients,
        args.parallel_connects,
        args.clients_per_source,
    );
    pool.wait_bound(crate::phase::SETTLE_LIMIT).await?;
    let ledger = Arc::new(Ledger::new(n));
    let b = cluster.addrs(B).context("node B is down")?;
    text_round(b.text, &prefix, n, &ledger).await?;
    wait_complete(&pool, &ledger, |i| i, crate::phase::SETTLE_LIMIT)
        .await
        .context("before the restart")?;

    let meter = CpuMeter::start(&[], &Default::default());
    let how = if args.resume_kill {
        Stop::Kill
    } else {
        Stop::Term
    };
    let (t0, clean) = cluster.stop_node(B, how).await?;
    let down_after = t0.elapsed();
    let a = cluster.addrs(A).context("node A is down")?;
    let m = args.pushes.unwrap_or(n);
    batch_pushes(a.api, &prefix, n, n as u64..(n + m) as u64, &ledger).await?;
    cluster.start_node(B).await?;
    let restart = Restart {
        at: t0,
        clean,
        down_after,
        back_after: t0.elapsed(),
    };
    let settled = wait_complete(&pool, &ledger, |i| i, SETTLE).await;
    let span = meter.stop();
    if let Err(e) = &settled {
        eprintln!("bench: resume: {e:#}");
    }
    let variant = format!(
        "{} +{m} while down",
        if args.resume_kill { "kill" } else { "term" }
    );
    let row = Row::new("resume", &variant, n, span, 0, 0, None, 0..0);
    Ok(vec![
        tally(row, &pool, &ledger, &restart).with("settled", settled.is_ok()),
    ])
}

/// Node B's restart, as the resume times count it.
struct Restart {
    /// When B was signalled: every client's resume time starts here.
    at: Instant,
    /// Whether B exited with status 0.
    clean: bool,
    /// From the signal until B had exited.
    down_after: Duration,
    /// From the signal until B served again.
    back_after: Duration,
}

/// Fills `row` with what the clients' logs say against the ledger.
fn tally(row: Row, pool: &Pool, ledger: &Ledger, restart: &Restart) -> Row {
    let mut total = Verdict::default();
    let mut times = Vec::with_capacity(pool.logs.len());
    let (mut recovered, mut not_recovered, mut reasons) = (0u64, 0u64, Vec::new());
    // Clients that came back without a position to resume from (history
    // off, or the store unreadable when they first bound).
    let mut blind = 0u64;
    let (mut received, mut reconnects, mut offset_faults) = (0u64, 0u64, 0u64);
    for (uid, log) in pool.logs.iter().enumerate() {
        let log = lock(log);
        let v = ledger.judge(uid, &log, Some(restart.at));
        total.add(&v);
        times.extend(v.resumed_after);
        recovered += u64::from(log.recovered);
        blind += u64::from(log.recovered == 0 && log.not_recovered.is_empty());
        not_recovered += log.not_recovered.len() as u64;
        reasons.extend(log.not_recovered.iter().cloned());
        received += log.got.len() as u64;
        reconnects += u64::from(log.binds.saturating_sub(1));
        offset_faults += u64::from(log.offset_faults);
    }
    times.sort_unstable();
    reasons.sort_unstable();
    reasons.dedup();
    let (pushed, required) = ledger.counts();
    let mut row = row.counted(required, received);
    row.integrity.issued = pushed;
    row.integrity.refused = pushed - required;
    row.integrity.lost = total.lost;
    row.integrity.duplicates = total.duplicates;
    let all = times.last().copied();
    row.with("rebound_complete", times.len())
        .with("without_since", blind)
        .with("recovered", recovered)
        .with("not_recovered", not_recovered)
        .with("not_recovered_reasons", reasons)
        .with("out_of_order", total.out_of_order)
        .with("foreign", total.foreign)
        .with("offset_faults", offset_faults)
        .with("reconnects", reconnects)
        .with("exit_clean", restart.clean)
        .with("down_ms", ms(restart.down_after))
        .with("back_ms", ms(restart.back_after))
        .with("all_resumed_ms", all.map(ms))
        .with(
            "all_resumed_after_back_ms",
            all.map(|d| ms(d.saturating_sub(restart.back_after))),
        )
        .with("resume_p50_ms", quantile(&times, 0.5).map(ms))
        .with("resume_p99_ms", quantile(&times, 0.99).map(ms))
}

/// Waits (at most `limit`) until every client is bound and holds every
/// required push of its uid (client `i` has uid `uid_of(i)`).
pub async fn wait_complete(
    pool: &Pool,
    ledger: &Ledger,
    uid_of: impl Fn(usize) -> usize,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let mut pending: Vec<usize> = (0..pool.logs.len()).collect();
    loop {
        // A client once complete stays so (pushes have stopped): only the
        // others are checked again, and every client's binding at the end.
        pending.retain(|&i| !ledger.complete(uid_of(i), &lock(&pool.logs[i])));
        let behind = if pending.is_empty() {
            pool.logs.len() - pool.bound_now()
        } else {
            pending.len()
        };
        if behind == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{behind} clients still unbound or missing pushes after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One push to each of uids `PREFIX0..PREFIX{n-1}` (sequence number = uid
/// index) on one pipelined text connection.
async fn text_round(
    text: std::net::SocketAddr,
    prefix: &str,
    n: usize,
    ledger: &Ledger,
) -> anyhow::Result<()> {
    let stream = TcpStream::connect(text).await.context("text port")?;
    let (rd, mut wr) = stream.into_split();
    let lines: String = (0..n)
        .map(|i| {
            let t = crate::track::now_ns();
            format!("{{\"uid\":\"{prefix}{i}\",\"s\":{i},\"t\":{t}}}\n")
        })
        .collect();
    let writer = tokio::spawn(async move { wr.write_all(lines.as_bytes()).await.map(|()| wr) });
    let mut rd = BufReader::new(rd);
    let mut answer = String::new();
    for i in 0..n {
        answer.clear();
        let read = tokio::time::timeout(Duration::from_secs(10), rd.read_line(&mut answer));
        if read.await.context("text answers")?? == 0 {
            bail!("the text port closed after {i} of {n} answers");
        }
        ledger.push(i, i as u64, answer.trim() == "ok");
    }
    writer.await??;
    Ok(())
}

/// Pushes sequence numbers `seqs` (to uid `seq % n`) through `POST
/// /push/batch` at `api`, `BATCH` a request, one request at a time.
async fn batch_pushes(
    api: std::net::SocketAddr,
    prefix: &str,
    n: usize,
    seqs: std::ops::Range<u64>,
    ledger: &Ledger,
) -> anyhow::Result<()> {
    let mut http = Http::connect(api).await?;
    let mut from = seqs.start;
    while from < seqs.end {
        let to = (from + BATCH as u64).min(seqs.end);
        let t = crate::track::now_ns();
        let pushes: Vec<serde_json::Value> = (from..to)
            .map(|s| {
                let uid = format!("{prefix}{}", s % n as u64);
                serde_json::json!({"uid": uid, "data": {"s": s, "t": t}})
            })
            .collect();
        let body = serde_json::json!({ "pushes": pushes }).to_string();
        let (status, answer) = http.request("POST", "/push/batch", body.as_bytes()).await?;
        if status != 200 {
            bail!(
                "POST /push/batch: {status} {}",
                String::from_utf8_lossy(&answer)
            );
        }
        let answer: serde_json::Value = serde_json::from_slice(&answer)?;
        let results = answer["results"].as_array().context("no results")?;
        for (s, r) in (from..to).zip(results) {
            ledger.push((s % n as u64) as usize, s, crate::ledger::promised(r));
        }
        from = to;
    }
    Ok(())
}
