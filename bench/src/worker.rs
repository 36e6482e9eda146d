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
use crate::ws::{Generator, Receivers};

/// Process ids of the running workers of one bench run (their CPU counts as
/// the generator's): a cheap clone shared by the pools that start workers and
/// the CPU meters that read them.
#[derive(Debug, Clone, Default)]
pub struct WorkerPids(Arc<Mutex<Vec<u32>>>);

impl WorkerPids {
    /// The workers running now.
    pub fn running(&self) -> Vec<u32> {
        self.lock().clone()
    }

    fn add(&self, pid: u32) {
        self.lock().push(pid);
    }

    fn remove(&self, pid: u32) {
        self.lock().retain(|&p| p != pid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u32>> {
        // A list of numbers stays whole even if a holder panicked.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A worker process, killed on drop.
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pid: u32,
    /// Where its pid is listed while it runs.
    pids: WorkerPids,
}

impl Worker {
    /// Starts a worker whose clients connect to `target` and bind
    /// `PREFIXi`, as `generator` says; lists it in `generator.workers`.
    pub async fn start(
        target: SocketAddr,
        tracker: &Tracker,
        prefix: &str,
        parallel: usize,
        generator: &Generator,
    ) -> anyhow::Result<Worker> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["worker", "--http", &target.to_string()])
            .args(["--shm-fd", &tracker.fd().to_string()])
            .args(["--worker-prefix", prefix])
            .args(["--parallel-connects", &parallel.to_string()])
            .args(["--clients-per-source", &generator.per_source.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a worker process")?;
        let pid = child.id().context("worker pid")?;
        generator.workers.add(pid);
        Ok(Worker {
            stdin: child.stdin.take().context("worker stdin")?,
            stdout: BufReader::new(child.stdout.take().context("worker stdout")?),
            child,
            pid,
            pids: generator.workers.clone(),
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
        self.pids.remove(self.pid);
        let _ = self.child.start_kill();
    }
}

/// The worker mode's main loop: commands on stdin until it closes. Its
/// clients record into the tracker at the inherited descriptor `fd`, `per_source`
/// of them per loopback source address.
pub async fn run(
    target: SocketAddr,
    fd: i32,
    prefix: &str,
    parallel: usize,
    per_source: usize,
) -> anyhow::Result<()> {
    let tracker = Arc::new(Tracker::attach(fd)?);
    // A worker holds every client it is given: it starts no workers itself.
    let generator = Generator {
        per_source,
        per_process: usize::MAX,
        workers: WorkerPids::default(),
    };
    let mut pool = Receivers::new(tracker, prefix, &generator);
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
