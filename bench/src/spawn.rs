//! `--spawn`: the bench starts the gateway itself (the `pushgate` binary next
//! to its own executable, or `--gateway-bin`) on free loopback ports, and for
//! the cluster scenario a `redis-server` and two nodes; with `--floor`, the
//! floor relay (`floor.rs`) instead of pushgate. Everything it starts
//! is killed when its handle drops (normal exit, error, Ctrl-C or SIGTERM).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a spawned process may take to start.
const START_LIMIT: Duration = Duration::from_secs(20);

/// A child process killed on drop.
pub struct Owned(Child);

impl Owned {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Sends `signal` (a graceful `TERM`, or `KILL`).
    pub fn signal(&self, signal: rustix::process::Signal) -> anyhow::Result<()> {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.pid())?)
            .context("a child with pid 0")?;
        rustix::process::kill_process(pid, signal).context("kill")?;
        Ok(())
    }

    /// Waits (polling, at most `limit`) until the process has exited;
    /// whether it exited with status 0.
    pub async fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait()? {
                return Ok(status.success());
            }
            if Instant::now() >= deadline {
                bail!("process {} still running after {limit:?}", self.pid());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A gateway the bench started.
pub struct Gateway {
    /// The public listener (WebSocket clients).
    pub http: SocketAddr,
    /// The API listener (REST, `/stats`, `/metrics`); the floor relay serves
    /// everything on `http`.
    pub api: SocketAddr,
    pub text: SocketAddr,
    pub process: Owned,
}

/// The `pushgate` binary to run: `--gateway-bin`, else the one beside this
/// executable (same build profile).
pub fn gateway_bin(explicit: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("pushgate");
    if !bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release) or pass --gateway-bin",
            bin.display()
        );
    }
    Ok(bin)
}

/// Starts a gateway on free loopback ports with `extra` flags and waits for
/// its ready line.
pub fn gateway(bin: &PathBuf, extra: &[String]) -> anyhow::Result<Gateway> {
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", "127.0.0.1:0", "--text-listen", "127.0.0.1:0"])
        .args(["--api-listen", "127.0.0.1:0"])
        .args(["--log-format", "json"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    ready(child, "the gateway")
}

/// Starts the floor relay (`floor.rs`: this executable in its hidden
/// `floor-relay` mode) on free loopback ports and waits for its ready
/// line. Its stdin is a pipe held by the handle: if the bench dies without
/// killing it, the pipe closes and the relay exits.
pub fn floor() -> anyhow::Result<Gateway> {
    let child = Command::new(std::env::current_exe()?)
        .arg("floor-relay")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start the floor relay")?;
    ready(child, "the floor relay")
}

/// Waits for `child`'s ready line, the one line pushgate prints on stdout
/// once it serves (`{"ready":{"http":ADDR,"text":ADDR,"api":ADDR}}`; the
/// floor relay prints the same shape). Its JSON log on stderr is drained so
/// the child never blocks on a full pipe; errors in it are passed on.
fn ready(mut child: Child, what: &str) -> anyhow::Result<Gateway> {
    let stdout = child.stdout.take().context("piped stdout")?;
    let stderr = child.stderr.take().context("piped stderr")?;
    let process = Owned(child);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("\"ERROR\"") {
                eprintln!("gateway: {line}");
            }
        }
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        // Zero bytes read: stdout closed, the child exited without serving.
        let read = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(read.map(|n| (n, line)));
    });
    let (n, line) = rx
        .recv_timeout(START_LIMIT)
        .with_context(|| format!("{what} printed no ready line within {START_LIMIT:?}"))?
        .with_context(|| format!("cannot read {what}'s stdout"))?;
    if n == 0 {
        bail!("{what} exited without a ready line");
    }
    let v: serde_json::Value = serde_json::from_str(&line)
        .with_context(|| format!("{what}: not a ready line: {line:?}"))?;
    let addr = |k: &str| -> anyhow::Result<SocketAddr> {
        v["ready"][k]
            .as_str()
            .with_context(|| format!("no `{k}` address in the ready line {line:?}"))?
            .parse()
            .context("bad address in the ready line")
    };
    Ok(Gateway {
        http: addr("http")?,
        api: addr("api")?,
        text: addr("text")?,
        process,
    })
}

/// A free loopback port (bound, read, released).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A redis-server on a free loopback port, without persistence.
pub struct Redis {
    pub url: String,
    pub process: Owned,
}

pub fn redis() -> anyhow::Result<Redis> {
    let port = free_port()?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start redis-server (scripts/install-test-deps.sh installs it)")?;
    let process = Owned(child);
    let deadline = Instant::now() + START_LIMIT;
    loop {
        use std::io::{Read, Write};
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let mut b = [0u8; 7];
            if s.write_all(b"PING\r\n").is_ok() && s.read(&mut b).is_ok() && b.starts_with(b"+PONG")
            {
                break;
            }
        }
        if Instant::now() >= deadline {
            bail!("redis-server did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Redis {
        url: format!("redis://127.0.0.1:{port}/"),
        process,
    })
}
