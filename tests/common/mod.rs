//! Test harness: runs the real `pushgate` binary on free loopback ports and
//! gives tests real clients (tokio-tungstenite, raw TCP, reqwest).
//!
//! Each gateway is its own process, so its metrics, its open-file budget and
//! its shutdown are its own. The ports are read from the binary's ready line
//! (the one line it prints on standard output, [`Ready`]), so nothing waits
//! on a sleep; every other wait is [`wait_until`] (or its blocking twin) on
//! observable state, with one patience.
#![allow(dead_code)]

pub mod balancer;
pub mod browser;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Held by a test for as long as it runs a gateway on the default API port
/// (see [`Gateway::start_with_default_api_listener`]).
pub static DEFAULT_API_PORT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long any wait in a test may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A running gateway process.
pub struct Gateway {
    child: Child,
    /// The public listener: WebSocket and health (REST only with keys).
    pub http: SocketAddr,
    /// Text port address.
    pub text: SocketAddr,
    /// The API listener (`--api-listen`): REST, metrics and health.
    pub api: SocketAddr,
    /// Every log line so far.
    pub logs: Arc<Mutex<Vec<String>>>,
    /// Standard output after the ready line (nothing); it closes when the
    /// process exits, which is what [`Gateway::wait_exit`] waits for.
    stdout: std_mpsc::Receiver<String>,
}

impl Gateway {
    /// Starts the binary with test-friendly defaults plus `args`.
    pub fn start(args: &[&str]) -> Gateway {
        Gateway::spawn(args, &["--listen", "--text-listen", "--api-listen"])
    }

    /// Starts the binary like [`Gateway::start`] but leaves `--api-listen`
    /// at its default (`127.0.0.1:1235`), for the tests of what the default
    /// exposes. Only one such gateway may run at a time: callers hold
    /// [`DEFAULT_API_PORT`] for its life.
    pub fn start_with_default_api_listener(args: &[&str]) -> Gateway {
        Gateway::spawn(args, &["--listen", "--text-listen"])
    }

    fn spawn(args: &[&str], on_free_ports: &[&str]) -> Gateway {
        // Loopback port 0 unless the test names its own address.
        let mut defaults = vec!["--log-format", "json"];
        for &flag in on_free_ports {
            if !args.contains(&flag) {
                defaults.extend([flag, "127.0.0.1:0"]);
            }
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_pushgate"))
            .args(defaults)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pushgate");
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let logs2 = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                logs2.lock().unwrap().push(line);
            }
        });
        let stdout = stdout_lines(&mut child);
        let ready = match next_ready(&stdout) {
            Ok(ready) => ready,
            Err(e) => panic!("gateway did not start ({e}): {:?}", logs.lock().unwrap()),
        };
        Gateway {
            http: ready.http,
            text: ready.text,
            api: ready.api,
            child,
            stdout,
            logs,
        }
    }

    /// `ws://` URL of `path` on this gateway.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.http, path)
    }

    /// `http://` URL of `path` on the API listener (REST, `/metrics`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.api, path)
    }

    /// `http://` URL of `path` on the public listener (WebSocket, health).
    pub fn public_url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`) to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits at most `limit` for the process to exit: an event, its standard
    /// output closing; reaping it is then immediate.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        match self.stdout.recv_timeout(limit) {
            Ok(line) => panic!("more than the ready line on standard output: {line}"),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {}
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                panic!("gateway did not exit within {limit:?}")
            }
        }
        self.child.wait().expect("wait")
    }

    /// Whether any log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Waits until a log line contains `needle` (lines arrive on a reader
    /// thread, also after the ready line that `start` waits for).
    pub fn wait_logged(&self, needle: &str) {
        wait_until_blocking(&format!("logged {needle:?}"), || {
            self.logged(needle).then_some(()).ok_or(())
        });
    }

    /// Waits until `uid` has exactly `n` bound connections (the bind frame is
    /// processed asynchronously, so tests synchronise on the map's state).
    pub async fn wait_bound(&self, uid: &str, n: u64) {
        wait_until(&format!("{uid} bound {n} times"), || async {
            let v = self.user(uid).await;
            (v["connections"].as_u64() == Some(n))
                .then_some(())
                .ok_or(v)
        })
        .await
    }

    /// `GET /users/{uid}` on this gateway.
    pub async fn user(&self, uid: &str) -> serde_json::Value {
        reqwest::get(self.url(&format!("/users/{uid}")))
            .await
            .expect("GET /users")
            .json()
            .await
            .expect("json")
    }

    /// `GET /stats` on this gateway.
    pub async fn stats(&self) -> serde_json::Value {
        reqwest::get(self.url("/stats"))
            .await
            .expect("GET /stats")
            .json()
            .await
            .expect("json")
    }

    /// The value of one metric series in `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let body = reqwest::get(self.url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("body");
        metric_value(&body, series)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `series` (name plus labels, exactly as rendered) in a
/// Prometheus text body; 0 when absent.
pub fn metric_value(body: &str, series: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// The bound addresses a gateway announces in its ready line, the one line
/// it prints on standard output once it serves:
/// `{"ready":{"http":ADDR,"text":ADDR,"api":ADDR}}`.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    /// The public listener (`--listen`).
    pub http: SocketAddr,
    /// The text push port (`--text-listen`).
    pub text: SocketAddr,
    /// The API listener (`--api-listen`).
    pub api: SocketAddr,
}

impl Ready {
    /// Parses a ready line; `None` when `line` is anything else.
    pub fn parse(line: &str) -> Option<Ready> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let addr = |k: &str| v["ready"][k].as_str()?.parse().ok();
        Some(Ready {
            http: addr("http")?,
            text: addr("text")?,
            api: addr("api")?,
        })
    }
}

/// Waits, at most [`PATIENCE`], for `child`'s ready line on its piped
/// standard output (taken from it). An event, never a poll: the line comes,
/// or standard output closes because the process exited without serving
/// (`Err("exited …")`), or the patience runs out (`Err("no ready line …")`).
pub fn wait_ready(child: &mut Child) -> Result<Ready, String> {
    next_ready(&stdout_lines(child))
}

/// The lines of `child`'s piped standard output (taken from it), forwarded
/// by a thread as they come; the channel closes when the process closes its
/// standard output (it exited).
pub fn stdout_lines(child: &mut Child) -> std_mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("standard output is piped");
    let (tx, rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // A dropped receiver: nobody reads on, so stop.
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line of `lines` ([`stdout_lines`]), which must be a ready line,
/// within [`PATIENCE`].
pub fn next_ready(lines: &std_mpsc::Receiver<String>) -> Result<Ready, String> {
    match lines.recv_timeout(PATIENCE) {
        Ok(line) => Ready::parse(&line).ok_or(format!("not a ready line: {line:?}")),
        Err(std_mpsc::RecvTimeoutError::Disconnected) => Err("exited without a ready line".into()),
        Err(std_mpsc::RecvTimeoutError::Timeout) => {
            Err(format!("no ready line within {PATIENCE:?}"))
        }
    }
}

/// Spawns `cmd` (the gateway binary with its flags) with standard output
/// piped (for [`wait_ready`]) and standard error read to its end on a thread
/// of its own, so a long log never blocks the process; join the handle for
/// the whole log once the process has exited.
pub fn spawn_collecting_stderr(cmd: &mut Command) -> (Child, std::thread::JoinHandle<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pushgate");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let log = std::thread::spawn(move || {
        let mut log = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut log);
        log
    });
    (child, log)
}

/// Runs `cmd` (the gateway binary with its flags) and expects it to refuse
/// to start: it must exit without printing the ready line. Returns its exit
/// status and standard error. Panics (after killing it) if it starts.
pub fn refuses_to_start(cmd: &mut Command) -> (ExitStatus, String) {
    let (mut child, log) = spawn_collecting_stderr(cmd);
    if let Ok(ready) = wait_ready(&mut child) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("it started (ready on {ready:?}): {cmd:?}");
    }
    let status = child.wait().expect("wait");
    (status, log.join().expect("stderr reader"))
}

/// Polls `check` until it returns `Ok`, failing the test after
/// [`PATIENCE`] with `what` and the last value seen. Tests synchronise on
/// the gateway's observable state this way, never on fixed sleeps.
pub async fn wait_until<F, Fut, T>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), T>>,
    T: std::fmt::Debug,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        match check().await {
            Ok(()) => return,
            Err(last) => assert!(Instant::now() < deadline, "never {what}: last {last:?}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// [`wait_until`] for code that cannot await (process handles, blocking
/// clients): the same patience, the same failure message.
pub fn wait_until_blocking<T: std::fmt::Debug>(
    what: &str,
    mut check: impl FnMut() -> Result<(), T>,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match check() {
            Ok(()) => return,
            Err(last) => assert!(Instant::now() < deadline, "never {what}: last {last:?}"),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// POSTs `body` as JSON to `path` on `gw`; returns the status and the JSON
/// answer (a problem document for errors).
pub async fn post_json(
    gw: &Gateway,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(gw.url(path))
        .json(body)
        .send()
        .await
        .expect("POST");
    (r.status().as_u16(), r.json().await.expect("json answer"))
}

/// A WebSocket client.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects a WebSocket client to `url`.
pub async fn ws_connect(url: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connect");
    ws
}

/// Connects and binds `uid`, and waits until the gateway has bound it.
pub async fn ws_bind(gw: &Gateway, uid: &str) -> Ws {
    let before = connections_of(gw, uid).await;
    let mut ws = ws_connect(&gw.ws_url("/ws")).await;
    ws.send(Message::text(uid)).await.expect("send uid");
    gw.wait_bound(uid, before + 1).await;
    ws
}

async fn connections_of(gw: &Gateway, uid: &str) -> u64 {
    gw.user(uid).await["connections"].as_u64().unwrap_or(0)
}

/// The next text message, skipping pings; panics on anything else.
pub async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("timed out waiting for a message")
            .expect("stream ended")
            .expect("ws error");
        match msg {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Waits for the close frame and returns it (code, reason).
pub async fn next_close(ws: &mut Ws) -> Option<CloseFrame> {
    loop {
        let msg = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("timed out waiting for close");
        match msg {
            Some(Ok(Message::Close(frame))) => return frame,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("ws error before close: {e}"),
            None => panic!("stream ended without a close frame"),
        }
    }
}

/// Asserts that nothing more arrives: pushes a marker through the text port
/// to `uid` and checks it is the very next message.
pub async fn assert_nothing_else(gw: &Gateway, ws: &mut Ws, uid: &str) {
    let marker = format!(r#"{{"uid":"{uid}","marker":true}}"#);
    let mut text = TextClient::connect(gw).await;
    assert_eq!(text.send(&marker).await, "ok");
    assert_eq!(
        next_text(ws).await,
        marker,
        "an unexpected message came first"
    );
}

/// A raw TCP client of the text port.
pub struct TextClient {
    reader: TokioBufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl TextClient {
    /// Connects to `gw`'s text port.
    pub async fn connect(gw: &Gateway) -> TextClient {
        let stream = TcpStream::connect(gw.text).await.expect("text connect");
        let (r, w) = stream.into_split();
        TextClient {
            reader: TokioBufReader::new(r),
            writer: w,
        }
    }

    /// Writes raw bytes.
    pub async fn write(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    /// Reads one answer line, without its `\n`.
    pub async fn answer(&mut self) -> String {
        let mut line = String::new();
        let n = tokio::time::timeout(PATIENCE, self.reader.read_line(&mut line))
            .await
            .expect("timed out waiting for an answer")
            .expect("read");
        assert!(n > 0, "connection closed before an answer");
        assert!(line.ends_with('\n'), "answer {line:?} lacks its line end");
        line.pop();
        line
    }

    /// Sends one line (adding `\n`) and reads its answer.
    pub async fn send(&mut self, line: &str) -> String {
        self.write(format!("{line}\n").as_bytes()).await;
        self.answer().await
    }

    /// Whether the server closed the connection (EOF next).
    pub async fn is_closed(&mut self) -> bool {
        let mut line = String::new();
        matches!(
            tokio::time::timeout(PATIENCE, self.reader.read_line(&mut line)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// Opens a WebSocket by hand over raw TCP (for frames a well-behaved client
/// library refuses to send) and returns the stream after the 101 answer.
pub async fn raw_ws(gw: &Gateway) -> TcpStream {
    use tokio::io::AsyncReadExt;
    let mut s = TcpStream::connect(gw.http).await.expect("connect");
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        gw.http
    );
    s.write_all(req.as_bytes()).await.expect("write");
    // Read in chunks (thousands of these open in tests/abuse.rs). The
    // gateway sends nothing after the 101 until the client speaks, so the
    // answer ends the first reads; anything more would be a frame this
    // helper must not swallow, and fails loudly.
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed during handshake");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.ends_with(b"\r\n\r\n"),
        "bytes after the 101 answer were read"
    );
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// A masked client frame header: FIN set, `opcode`, declared `len`.
pub fn frame_header(opcode: u8, len: u64) -> Vec<u8> {
    let mut h = vec![0x80 | opcode];
    if len < 126 {
        h.push(0x80 | len as u8);
    } else if len <= u16::MAX as u64 {
        h.push(0x80 | 126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(0x80 | 127);
        h.extend_from_slice(&len.to_be_bytes());
    }
    h.extend_from_slice(&[0, 0, 0, 0]); // mask key 0: payload goes as is
    h
}

/// Reads server frames from a raw WebSocket until a close frame and returns
/// its code (None if the connection ends without one).
pub async fn raw_close_code(s: &mut TcpStream) -> Option<u16> {
    use tokio::io::AsyncReadExt;
    let read = async {
        loop {
            let mut h = [0u8; 2];
            s.read_exact(&mut h).await.ok()?;
            let mut len = (h[1] & 0x7f) as u64;
            if len == 126 {
                let mut b = [0u8; 2];
                s.read_exact(&mut b).await.ok()?;
                len = u16::from_be_bytes(b) as u64;
            } else if len == 127 {
                let mut b = [0u8; 8];
                s.read_exact(&mut b).await.ok()?;
                len = u64::from_be_bytes(b);
            }
            let mut payload = vec![0u8; len as usize];
            s.read_exact(&mut payload).await.ok()?;
            if h[0] & 0x0f == 0x8 {
                return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("timed out waiting for close")
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A `redis-server` this test started on a free loopback port, so it can
/// stop and restart it. Killed on drop.
pub struct Redis {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    /// Extra arguments (a config file, `--replicaof`, `--sentinel`).
    args: Vec<String>,
}

/// A free loopback port (the listener is closed again at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Redis {
    /// Starts a gateway node in cluster mode on this Redis, with the short
    /// probe interval and Redis timeout the cluster tests use, plus `extra`.
    pub fn node(&self, extra: &[&str]) -> Gateway {
        let url = self.url();
        let mut args = vec![
            "--redis-url",
            url.as_str(),
            "--redis-probe-interval",
            "300ms",
            "--redis-timeout",
            "500ms",
        ];
        args.extend_from_slice(extra);
        Gateway::start(&args)
    }

    /// Starts a fresh redis-server (no persistence) on a free port.
    pub fn start() -> Redis {
        Redis::start_with(free_port(), Vec::new())
    }

    /// Starts redis-server on `port` with extra arguments.
    pub fn start_with(port: u16, args: Vec<String>) -> Redis {
        let mut redis = Redis {
            child: None,
            port,
            args,
        };
        redis.restart();
        redis
    }

    /// Starts a Redis Sentinel on a free port, monitoring `master` as
    /// `mymaster` (quorum 1, quick failure detection).
    pub fn sentinel(master: &Redis) -> Redis {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("pushgate-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "sentinel monitor mymaster 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 5000\n",
                master.port
            ),
        )
        .expect("write sentinel.conf");
        let mut s = Redis {
            child: None,
            port,
            args: vec![conf.display().to_string(), "--sentinel".into()],
        };
        s.restart();
        s
    }

    /// `redis://` URL of this server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let mut cmd = Command::new("redis-server");
        // A config file must come first on redis-server's command line.
        cmd.args(self.args.iter().filter(|a| a.ends_with(".conf")));
        let child = cmd
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(self.args.iter().filter(|a| !a.ends_with(".conf")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/install-test-deps.sh installs it)");
        self.child = Some(child);
        wait_until_blocking("redis-server answering PING", || {
            let answer = self.command("PING");
            // A server started with --requirepass answers NOAUTH: up too.
            (answer.starts_with("+PONG") || answer.starts_with("-NOAUTH"))
                .then_some(())
                .ok_or(answer)
        });
    }

    /// Sends one inline command and returns the first reply line ("" on failure).
    pub fn command(&self, cmd: &str) -> String {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        if s.write_all(format!("{cmd}\r\n").as_bytes()).is_err() {
            return String::new();
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Vec::new();
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.ends_with(b"\r\n") {
                break;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Gateway {
    /// Waits until the node's Redis bus is up (`pushgate_redis_up` is 1).
    pub async fn wait_redis_up(&self) {
        self.wait_metric("pushgate_redis_up", 1.0).await;
    }

    /// Waits until a metric series has `value`.
    pub async fn wait_metric(&self, series: &str, value: f64) {
        wait_until(&format!("{series} == {value}"), || async {
            let v = self.metric(series).await;
            (v == value).then_some(()).ok_or(v)
        })
        .await
    }

    /// Waits until a counter series reaches at least `min`.
    pub async fn wait_metric_at_least(&self, series: &str, min: f64) {
        wait_until(&format!("{series} >= {min}"), || async {
            let v = self.metric(series).await;
            (v >= min).then_some(()).ok_or(v)
        })
        .await
    }

    /// Waits until `uid` is held by exactly `nodes` nodes, as Redis counts
    /// confirmed subscriptions (`GET /users/{uid}`).
    pub async fn wait_nodes(&self, uid: &str, nodes: u64) {
        wait_until(&format!("{uid} held by {nodes} nodes"), || async {
            let v = self.user(uid).await;
            (v["nodes"].as_u64() == Some(nodes)).then_some(()).ok_or(v)
        })
        .await
    }
}

/// The HS256 secret the secure-mode tests share (32 bytes or more, as
/// `--jwt-secret` requires).
pub const SECRET: &str = "a-test-secret-that-is-32-bytes-long";

/// A token with `claims`, signed with [`SECRET`].
pub fn jwt(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode a token")
}

/// The close frame `ws` ends with: its code and reason.
pub async fn close_of(ws: &mut Ws) -> (u16, String) {
    let f = next_close(ws).await.expect("close frame");
    (u16::from(f.code), f.reason.to_string())
}
pub mod sse;
pub mod v2;
