//! The gateway's timers, in process and in paused time (mini-redis' way):
//! `pushgate::run` on listeners the test binds on port 0, real WebSocket and
//! TCP clients, and `#[tokio::test(start_paused = true)]`, so a 7 s ping
//! deadline takes no wall-clock time. Tokio advances the paused clock only
//! when every task is idle (waiting on a socket or a timer), so the instants
//! read here are the ones the gateway's timers fired at, exactly.
//!
//! These are beside the end-to-end tests of the same behaviour (which run the
//! binary in real time), not instead of them.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use pushgate::{Config, Listeners, StartError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Deadline of any wait, in paused time: far above every timer under test,
/// so it only ends a test that would otherwise hang.
const PATIENCE: Duration = Duration::from_secs(120);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A gateway running in this test's runtime.
struct Gateway {
    http: SocketAddr,
    text: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: JoinHandle<Result<(), StartError>>,
}

impl Gateway {
    /// Runs `pushgate::run` with `flags` (as on the command line) on three
    /// loopback listeners bound on port 0.
    async fn start(flags: &[&str]) -> Gateway {
        let args = std::iter::once("pushgate").chain(flags.iter().copied());
        let config = Config::try_parse_from(args).expect("the test's flags parse");
        let bind = || TcpListener::bind("127.0.0.1:0");
        let listeners = Listeners {
            http: bind().await.expect("bind http"),
            text: bind().await.expect("bind text"),
            api: bind().await.expect("bind api"),
        };
        let http = listeners.http.local_addr().expect("http address");
        let text = listeners.text.local_addr().expect("text address");
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(pushgate::run(config, listeners, async {
            let _ = stopped.await;
        }));
        Gateway {
            http,
            text,
            stop: Some(stop),
            done,
        }
    }

    /// A WebSocket client on `/ws`.
    async fn connect(&self) -> Ws {
        let url = format!("ws://{}/ws", self.http);
        let (ws, _) = within(tokio_tungstenite::connect_async(url))
            .await
            .expect("WebSocket handshake");
        ws
    }

    /// A client bound to `uid` (legacy mode: its first text frame), returned
    /// once a text-port push to `uid` answers `ok`, i.e. once the gateway
    /// holds the bind (it is processed asynchronously).
    async fn bound(&self, uid: &str) -> Ws {
        let mut ws = self.connect().await;
        ws.send(Message::text(uid)).await.expect("send the uid");
        let line = format!("{{\"uid\":\"{uid}\",\"bound\":true}}\n");
        common::wait_until(&format!("{uid} bound"), || async {
            let text = within(TcpStream::connect(self.text))
                .await
                .expect("connect to the text port");
            let mut text = BufReader::new(text);
            text.get_mut()
                .write_all(line.as_bytes())
                .await
                .expect("push");
            let mut answer = String::new();
            within(text.read_line(&mut answer)).await.expect("answer");
            (answer == "ok\n").then_some(()).ok_or(answer)
        })
        .await;
        ws
    }

    /// Triggers the shutdown (what SIGTERM does in the binary) and waits for
    /// `run` to return, at most `limit` of paused time.
    async fn shut_down(mut self, limit: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = timeout(limit, &mut self.done)
            .await
            .unwrap_or_else(|_| panic!("the gateway did not stop within {limit:?}"));
        result.expect("the gateway task").expect("the gateway ran");
    }
}

/// `future`, failing the test after [`PATIENCE`] of paused time.
async fn within<F: std::future::Future>(future: F) -> F::Output {
    timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("no progress within {PATIENCE:?}"))
}

/// Pings every 5 s, 2 s to answer each.
const PING_FLAGS: [&str; 4] = ["--ping-interval", "5s", "--pong-timeout", "2s"];

/// Asserts a timer fired at `due`. Paused time is exact; the slack covers
/// the clients' own steps (a bind retried after 5 ms), far below any
/// interval under test.
fn assert_at(elapsed: Duration, due: Duration, timer: &str) {
    let slack = Duration::from_millis(20);
    assert!(
        elapsed >= due && elapsed <= due + slack,
        "{timer}: at {elapsed:?}, due at {due:?}"
    );
}

/// Reads `ws` until the server's close frame (pings and pushes skipped).
async fn next_close(ws: &mut Ws) -> CloseFrame {
    loop {
        match within(ws.next()).await {
            Some(Ok(Message::Close(Some(frame)))) => return frame,
            Some(Ok(Message::Close(None))) => panic!("a close frame without a code"),
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_binds_is_closed_with_1008_at_the_bind_timeout() {
    let gw = Gateway::start(&["--bind-timeout", "3s"]).await;
    let mut ws = gw.connect().await;
    let opened = Instant::now();
    let close = next_close(&mut ws).await;
    let waited = opened.elapsed();
    assert_eq!(u16::from(close.code), 1008, "{close:?}");
    assert!(close.reason.contains("bind timeout"), "{close:?}");
    assert_at(waited, Duration::from_secs(3), "the bind timeout");
    gw.shut_down(Duration::from_secs(15)).await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_ignores_pings_is_dropped_after_interval_plus_pong_timeout() {
    let gw = Gateway::start(&PING_FLAGS).await;
    // The ping timer starts with the connection, a little before the bind.
    let opened = Instant::now();
    let ws = gw.bound("deaf").await;
    // Read the raw socket: a WebSocket client would answer the pings.
    let mut raw = ws.into_inner();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match within(raw.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    let dropped = opened.elapsed();
    // A ping frame (opcode 9, unmasked from the server) came first.
    assert!(bytes.contains(&0x89), "no ping: {bytes:?}");
    // Dropped at the first ping (5 s) plus the pong timeout (2 s).
    assert_at(
        dropped,
        Duration::from_secs(7),
        "the first ping + the pong timeout",
    );
    gw.shut_down(Duration::from_secs(15)).await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_answers_pings_stays() {
    let gw = Gateway::start(&PING_FLAGS).await;
    let mut ws = gw.bound("awake").await;
    // Three ping rounds; tungstenite answers each ping as the stream is read.
    let until = Instant::now() + Duration::from_secs(17);
    let mut pings = 0;
    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Ping(_))) => pings += 1,
                Some(Ok(Message::Text(_))) => {}
                other => panic!("closed while answering pings: {other:?}"),
            },
            () = tokio::time::sleep_until(until) => break,
        }
    }
    assert_eq!(pings, 3, "a ping every 5 s for 17 s");
    gw.shut_down(Duration::from_secs(15)).await;
}

/// Starts a gateway with `--drain-rate rate --shutdown-timeout timeout`,
/// binds `n` clients, shuts it down and returns when each got its 1001 close,
/// counted from the shutdown, in order.
async fn drain_closes(rate: &str, shutdown_timeout: &str, n: usize) -> Vec<Duration> {
    let flags = ["--drain-rate", rate, "--shutdown-timeout", shutdown_timeout];
    let gw = Gateway::start(&flags).await;
    let mut clients = Vec::new();
    for i in 0..n {
        let mut ws = gw.bound(&format!("drain{i}")).await;
        clients.push(tokio::spawn(async move {
            let close = next_close(&mut ws).await;
            assert_eq!(u16::from(close.code), 1001, "{close:?}");
            Instant::now()
        }));
    }
    let began = Instant::now();
    gw.shut_down(PATIENCE).await;
    let mut closes = Vec::new();
    for client in clients {
        closes.push(client.await.expect("client task") - began);
    }
    closes.sort();
    closes
}

/// Asserts `closes` are `interval` apart, the first at once.
fn assert_even(closes: &[Duration], interval: Duration) {
    for (k, at) in closes.iter().enumerate() {
        let due = interval * u32::try_from(k).expect("few clients");
        assert_at(*at, due, &format!("close {k} of {closes:?}"));
    }
}

#[tokio::test(start_paused = true)]
async fn a_drain_closes_at_the_drain_rate_when_it_fits() {
    // 4 closes at 2 a second fit in 3/4 of 20 s: one every 500 ms.
    let closes = drain_closes("2", "20s", 4).await;
    assert_even(&closes, Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn a_drain_goes_faster_and_still_evenly_when_the_rate_would_not_fit() {
    // 6 closes at 1 a second would take 6 s; 3/4 of 4 s is 3 s: one every
    // 500 ms instead, never a burst at the end.
    let closes = drain_closes("1", "4s", 6).await;
    assert_even(&closes, Duration::from_millis(500));
    assert!(closes[5] <= Duration::from_secs(3), "{closes:?}");
}
