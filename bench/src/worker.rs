//! Clients spread over processes. Where one process may not open enough
//! sockets (its open-file limit), the bench starts copies of itself in a
//! hidden `worker` mode; each maps the scenario's shared [`Tracker`] (a
//! `memfd` it inherits) and opens the connections it is told to on stdin
//! (`grow FROM TO`, answered `ok` or `err …`), recording deliveries exactly
//! as in-process clients do. A worker exits when its stdin closes, so it
//! never outlives the bench; the bench also kills it on drop.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::track::Tracker;
use crate::ws::Receivers;

/// Process ids of running workers: their CPU counts as the generator's.
pub static PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A worker process, killed on drop.
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pid: u32,
}

impl Worker {
    /// Starts a worker whose clients connect to `target` and bind `PREFIXi`.
    pub async fn start(
        target: SocketAddr,
        tracker: &Tracker,
        prefix: &str,
        parallel: usize,
    ) -> anyhow::Result<Worker> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["worker", "--http", &target.to_string()])
            .args(["--shm-fd", &tracker.fd.to_string()])
            .args(["--worker-prefix", prefix])
            .args(["--parallel-connects", &parallel.to_string()])
            .args([
                "--clients-per-source",
                &crate::ws::PER_SOURCE
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .to_string(),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a worker process")?;
        let pid = child.id().context("worker pid")?;
        PIDS.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
        Ok(Worker {
            stdin: child.stdin.take().context("worker stdin")?,
            stdout: BufReader::new(child.stdout.take().context("worker stdout")?),
            child,
            pid,
        })
    }

    /// Has the worker open clients `from..to` and waits for its answer.
    pub async fn grow(&mut self, from: usize, to: usize, limit: Duration) -> anyhow::Result<()> {
        self.stdin
            .write_all(format!("grow {from} {to}\n").as_bytes())
            .await?;
        let mut line = String::new();
        tokio::time::timeout(
            limit + Duration::from_secs(5),
            self.stdout.read_line(&mut line),
        )
        .await
        .context("worker did not answer")??;
        match line.trim() {
            "ok" => Ok(()),
            "" => bail!("worker exited"),
            other => bail!("worker: {other}"),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        PIDS.lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|&p| p != self.pid);
        let _ = self.child.start_kill();
    }
}

/// The worker mode's main loop: commands on stdin until it closes.
pub async fn run(target: SocketAddr, fd: i32, prefix: &str, parallel: usize) -> anyhow::Result<()> {
    let tracker = Arc::new(Tracker::attach(fd));
    let mut pool = Receivers::new(tracker, prefix, usize::MAX);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words[..] {
            ["grow", from, to] => {
                let (from, to): (usize, usize) = (from.parse()?, to.parse()?);
                match pool
                    .grow_here(target, from, to, parallel, crate::phase::SETTLE_LIMIT)
                    .await
                {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => format!("err {e:#}"),
                }
            }
            _ => format!("err unknown command {line:?}"),
        };
        out.write_all(format!("{answer}\n").as_bytes()).await?;
        out.flush().await?;
    }
    Ok(())
}
