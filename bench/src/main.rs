//! `pushgate-bench`: load generator and measuring tool for pushgate.
//!
//! Runs against any gateway (`--http`, `--api`, `--text`, `--gateway-pid`) or starts
//! its own (`--spawn`). Every pushed message carries a sequence number and a
//! send timestamp; the WebSocket clients record push→receive latency and
//! detect loss and duplicates. Beside every throughput figure it reports the
//! gateway's CPU per delivery (`/proc/PID/stat`) and the generator's own CPU
//! (its process CPU clock), since on a small machine both share the cores.
//! Output: a table, and one JSON line per scenario. See BENCHMARKS.md.
//!
//! `--spawn --floor` runs a scenario against the floor relay (`floor.rs`)
//! instead of pushgate: a relay of the same wire contract with next to no
//! user-space work, whose figures show what the kernel work of each traffic
//! pattern allows on this machine (floor.rs says what they do not show).
//!
//! History (issue 15): any scenario runs with history on through
//! `--gateway-arg=--history` (it reaches every node the bench spawns);
//! `history-memory` measures memory per retained message; `resume` and
//! `rolling-deploy` restart nodes of a cluster under protocol v2 clients
//! that resume (`v2.rs`, judged by `ledger.rs`, nodes in `nodes.rs`).
//!
//! No process-wide state: what a run shares (how clients connect, the worker
//! processes) travels in [`ws::Generator`], the floor relay's map in its
//! leaked `Relay`. `unsafe` is denied but in two scoped places: viewing the
//! shared tracker mapping as atomics (`track.rs`) and the two socket options
//! no safe crate wraps (`sys.rs`).

#![deny(unsafe_code)]

mod batch;
mod cli;
mod deploy;
mod floor;
mod histmem;
mod ledger;
mod nodes;
mod phase;
mod push;
mod report;
mod resume;
mod scenarios;
mod spawn;
mod sys;
mod track;
mod v2;
mod worker;
mod ws;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

pub use cli::{ALL, Args, Scenario};
use phase::Target;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.scenario == Scenario::FloorRelay {
        // Std threads only: no runtime in the relay's process.
        return floor::run();
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(args))
}

/// The gateway a row was measured on, as the report names it.
fn gateway_name(args: &Args) -> &'static str {
    if args.floor { "floor" } else { "pushgate" }
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let files = sys::raise_file_limit();
    if args.scenario == Scenario::Worker {
        let (parallel, per_source) = (args.parallel_connects, args.clients_per_source);
        return worker::run(
            args.http,
            args.shm_fd,
            &args.worker_prefix,
            parallel,
            per_source,
        )
        .await;
    }
    if args.floor && !args.spawn {
        bail!("--floor needs --spawn: the bench starts the floor relay itself");
    }
    if args.floor && !args.gateway_args.is_empty() {
        bail!("--gateway-arg does not apply to the floor relay (--floor)");
    }
    let machine = sys::machine();
    let gateway = gateway_name(&args);
    if !args.json {
        println!("machine: {machine}  (bench open-file limit {files})");
        if args.floor {
            println!(
                "gateway: the FLOOR RELAY (pushgate-bench floor-relay), not pushgate: \
                 pushgate's wire contract with next to no user-space work (floor.rs)"
            );
        }
        println!("{}", report::header());
    }
    let scenarios: Vec<Scenario> = match args.scenario {
        // The floor relay has no Redis bus: `all --floor` leaves cluster out.
        Scenario::All if args.floor => {
            eprintln!("bench: --floor: the cluster scenario is left out (no floor for it)");
            ALL.into_iter()
                .filter(|&s| s != Scenario::Cluster)
                .collect()
        }
        Scenario::All => ALL.to_vec(),
        one => vec![one],
    };
    let mut failed = false;
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    };
    tokio::pin!(stop);
    for sc in scenarios {
        // Dropping the run (on a signal) drops its Target: spawned processes die.
        let result = tokio::select! {
            r = run(sc, &args, files) => r,
            _ = &mut stop => bail!("interrupted"),
        };
        match result {
            Ok(rows) => {
                let rows: Vec<report::Row> = if args.floor {
                    rows.into_iter()
                        .map(|r| r.with("gateway", "floor"))
                        .collect()
                } else {
                    rows
                };
                if !args.json {
                    for r in &rows {
                        println!("{}", report::line(r));
                    }
                }
                failed |= !rows.iter().all(report::Row::clean);
                println!("{}", report::json_line(sc.name(), gateway, &rows, &machine));
            }
            Err(e) => {
                failed = true;
                eprintln!("bench: {}: {e:#}", sc.name());
                let line = serde_json::json!({
                    "scenario": sc.name(),
                    "gateway": gateway,
                    "ok": false,
                    "error": format!("{e:#}"),
                });
                println!("{line}");
            }
        }
    }
    if failed {
        bail!("some scenario failed or lost/duplicated messages");
    }
    Ok(())
}

/// Sets up the target for `sc` and runs it.
async fn run(sc: Scenario, args: &Args, files: u64) -> anyhow::Result<Vec<report::Row>> {
    let steps = if args.connections.is_empty() {
        // Defaults stay within what one gateway process may hold here.
        let max = usize::try_from(files.saturating_sub(1100)).unwrap_or(usize::MAX);
        sc.default_connections(max)
    } else {
        args.connections.clone()
    };
    if args.floor && sc == Scenario::Cluster {
        bail!(
            "the cluster scenario has no floor: it measures pushgate's Redis bus, \
             which the floor relay (--floor) does not have"
        );
    }
    if args.per_process() > usize::try_from(files.saturating_sub(100)).unwrap_or(usize::MAX) {
        bail!("--clients-per-process exceeds this process's open-file limit ({files})");
    }
    let n = steps.first().copied().unwrap_or(1000);
    if matches!(sc, Scenario::Resume | Scenario::RollingDeploy) {
        if !args.spawn || args.floor {
            bail!(
                "{} restarts nodes: it needs --spawn (and no --floor)",
                sc.name()
            );
        }
        // Its v2 clients live in this process (no worker processes).
        let room = usize::try_from(files.saturating_sub(200)).unwrap_or(usize::MAX);
        if n > room {
            bail!("{n} v2 clients exceed this process's open-file limit ({files})");
        }
        return match sc {
            Scenario::Resume => resume::resume(args, n).await,
            _ => deploy::rolling_deploy(args, n).await,
        };
    }
    if args.floor && sc == Scenario::HistoryMemory {
        bail!("history-memory measures pushgate's history: the floor relay has none");
    }
    let target = target(sc, args).await?;
    match sc {
        Scenario::Idle => scenarios::idle(&target, args, &steps).await,
        Scenario::PushText => scenarios::push_text(&target, args, n).await,
        Scenario::PushHttp => {
            let batch = match (args.batch, args.scenario) {
                (Some(b), _) => b,
                (None, Scenario::All) => 100,
                (None, _) => 0,
            };
            scenarios::push_http(&target, args, n, batch).await
        }
        Scenario::Broadcast => scenarios::broadcast(&target, args, n).await,
        Scenario::Latency => scenarios::latency(&target, args, n).await,
        Scenario::Growth => scenarios::growth(&target, args, &steps).await,
        Scenario::Cluster => scenarios::cluster(&target, args, n).await,
        Scenario::HistoryMemory => histmem::history_memory(&target, args).await,
        Scenario::Resume | Scenario::RollingDeploy => unreachable!("run above"),
        Scenario::All | Scenario::Worker | Scenario::FloorRelay => {
            unreachable!("handled in main")
        }
    }
}

/// The gateway(s) to measure: given by address, or started now.
async fn target(sc: Scenario, args: &Args) -> anyhow::Result<Target> {
    // Each scenario's own: its workers end with its pools.
    let generator = ws::Generator {
        per_source: args.clients_per_source,
        per_process: args.per_process(),
        workers: worker::WorkerPids::default(),
    };
    if !args.spawn {
        let (clients_http, clients_api) = match sc {
            Scenario::Cluster => (
                args.node_b_http
                    .context("cluster needs --node-b-http (node B, where the clients connect)")?,
                args.node_b_api
                    .context("cluster needs --node-b-api (node B's API listener)")?,
            ),
            _ => (args.http, args.api),
        };
        return Ok(Target {
            api: args.api,
            text: args.text,
            clients_http,
            clients_api,
            pids: args.gateway_pid.clone(),
            redis_pid: None,
            owned: Vec::new(),
            generator,
        });
    }
    if args.floor {
        let relay = tokio::task::spawn_blocking(spawn::floor).await??;
        return Ok(Target::single(relay, generator));
    }
    let bin = spawn::gateway_bin(args.gateway_bin.as_ref())?;
    let started = tokio::task::spawn_blocking({
        let extra = match sc {
            Scenario::HistoryMemory => nodes::with_history(&args.gateway_args),
            _ => args.gateway_args.clone(),
        };
        move || -> anyhow::Result<Target> {
            if sc != Scenario::Cluster {
                return Ok(Target::single(spawn::gateway(&bin, &extra)?, generator));
            }
            let redis = spawn::redis()?;
            let node = |id: &str| {
                let mut flags = extra.clone();
                flags.extend(["--redis-url".into(), redis.url.clone()]);
                flags.extend(["--node-id".into(), id.into()]);
                spawn::gateway(&bin, &flags)
            };
            let (a, b) = (node("bench-a")?, node("bench-b")?);
            Ok(Target {
                api: a.api,
                text: a.text,
                clients_http: b.http,
                clients_api: b.api,
                pids: vec![a.process.pid(), b.process.pid()],
                redis_pid: Some(redis.process.pid()),
                owned: vec![a.process, b.process, redis.process],
                generator,
            })
        }
    })
    .await??;
    if sc == Scenario::Cluster {
        // Both nodes must be on the bus before clients bind.
        wait_ready(started.api).await?;
        wait_ready(started.clients_api).await?;
    }
    Ok(started)
}

/// Waits until a gateway's `/stats` answers (in cluster mode: Redis is up).
async fn wait_ready(http: SocketAddr) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + phase::SETTLE_LIMIT;
    loop {
        match phase::stats(http).await {
            Ok(s) if s.nodes >= 1 => return Ok(()),
            _ if tokio::time::Instant::now() >= deadline => bail!("{http} never became ready"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
