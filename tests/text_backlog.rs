//! A text-port client that writes lines and does not read its answers
//! (issue 12, section 3): its lines keep being routed, answers past
//! `--text-answer-backlog` are dropped and counted, a connection that
//! neither reads nor writes is closed by the idle timeout, and a shutdown
//! never waits for it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const DROPPED: &str = "pushgate_text_answers_dropped_total";

/// Lines whose answers (`fail\n`, 5 bytes, for 99 in 100) are more than
/// the kernel can hold for a client that does not read: up to the largest
/// send buffer (`net.ipv4.tcp_wmem`, 4 MiB by default) plus the client's
/// small receive buffer. Anything less may fit in the socket unseen.
const FULL: usize = 1_000_000;

/// Flags that let one WebSocket client take every line of a flood.
const BIG_QUEUES: [&str; 4] = ["--queue-len", "1000000", "--queue-bytes", "1000000000"];

/// Line `i` of a flood: to `uid` when `to_uid(i)`, else to nobody.
fn line(i: usize, to_uid: bool) -> String {
    let uid = if to_uid { "w" } else { "nobody" };
    format!("{{\"uid\":\"{uid}\",\"n\":{i}}}")
}

/// Connects to the text port with a small receive buffer, so the answers it
/// never reads fill the socket quickly, and writes `n` lines. Returns the
/// socket once every line is written (the gateway must keep reading for
/// that).
async fn flood(gw: &Gateway, n: usize, to_uid: fn(usize) -> bool) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(gw.text).await.unwrap();
    let mut lines = String::new();
    for i in 0..n {
        lines.push_str(&line(i, to_uid(i)));
        lines.push('\n');
    }
    // A million lines take a few seconds to route in a debug build.
    tokio::time::timeout(3 * PATIENCE, s.write_all(lines.as_bytes()))
        .await
        .expect("the gateway stopped reading the lines")
        .unwrap();
    s
}

/// Reads from `ws` every line of a flood of `n` that went to it, in order.
async fn receive_all(ws: &mut Ws, n: usize, to_uid: fn(usize) -> bool) {
    for i in (0..n).filter(|i| to_uid(*i)) {
        assert_eq!(next_text(ws).await, line(i, true), "line {i}");
    }
}

#[tokio::test]
async fn a_client_that_never_reads_its_answers_keeps_having_its_lines_routed() {
    // The default backlog, 1 MiB: 1,200,000 answers of mostly 5 bytes are
    // more than it and the socket buffers (see FULL) can hold.
    let gw = Gateway::start(&BIG_QUEUES);
    let mut ws = ws_bind(&gw, "w").await;
    let rss_before = rss_kib(gw.pid());
    const N: usize = 1_200_000;
    let to_uid: fn(usize) -> bool = |i| i % 100 == 0;
    let (s, ()) = tokio::join!(flood(&gw, N, to_uid), receive_all(&mut ws, N, to_uid));
    let dropped = gw.metric(DROPPED).await;
    assert!(
        dropped > 0.0,
        "the answers were never more than the socket took"
    );
    assert!(dropped < N as f64);
    assert_eq!(gw.metric("pushgate_text_connections").await, 1.0);
    let grown = rss_kib(gw.pid()).saturating_sub(rss_before);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    drop(s);
}

#[tokio::test]
async fn a_client_that_reads_late_gets_its_first_answers_in_order_then_no_more() {
    let mut args = vec!["--text-answer-backlog", "4096", "--text-idle-timeout", "1s"];
    args.extend(BIG_QUEUES);
    let gw = Gateway::start(&args);
    let mut ws = ws_bind(&gw, "w").await;
    const N: usize = FULL;
    let to_uid: fn(usize) -> bool = |i| i % 100 == 0;
    let (s, ()) = tokio::join!(flood(&gw, N, to_uid), receive_all(&mut ws, N, to_uid));
    let mut s = s;
    // Every line is routed and the socket is full; now read everything the
    // gateway sends until it closes the idle connection.
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut got))
        .await
        .expect("never closed")
        .unwrap();
    let got = String::from_utf8(got).unwrap();
    let answers: Vec<&str> = got.lines().collect();
    assert!(got.ends_with('\n'), "a partial answer was written");
    assert!(
        !answers.is_empty() && answers.len() < N,
        "{}",
        answers.len()
    );
    for (i, answer) in answers.iter().enumerate() {
        let expected = if to_uid(i) { "ok" } else { "fail" };
        assert_eq!(*answer, expected, "answer {i}");
    }
    assert_eq!(
        gw.metric(DROPPED).await,
        (N - answers.len()) as f64,
        "every answer not read was dropped and counted"
    );
}

#[tokio::test]
async fn a_client_that_neither_reads_nor_writes_is_closed_by_the_idle_timeout() {
    let mut args = vec!["--text-answer-backlog", "4096", "--text-idle-timeout", "1s"];
    args.extend(BIG_QUEUES);
    let gw = Gateway::start(&args);
    let mut ws = ws_bind(&gw, "w").await;
    const N: usize = FULL;
    let to_uid: fn(usize) -> bool = |i| i % 100 == 0;
    let (_s, ()) = tokio::join!(flood(&gw, N, to_uid), receive_all(&mut ws, N, to_uid));
    assert!(gw.metric(DROPPED).await > 0.0);
    gw.wait_metric(
        r#"pushgate_text_disconnects_total{reason="idle_timeout"}"#,
        1.0,
    )
    .await;
    gw.wait_metric("pushgate_text_connections", 0.0).await;
}

#[tokio::test]
async fn sigterm_does_not_wait_for_a_text_client_that_never_reads() {
    let mut args = vec!["--text-answer-backlog", "4096", "--shutdown-timeout", "30s"];
    args.extend(BIG_QUEUES);
    let mut gw = Gateway::start(&args);
    let mut ws = ws_bind(&gw, "w").await;
    const N: usize = FULL;
    let to_uid: fn(usize) -> bool = |i| i % 100 == 0;
    let (_s, ()) = tokio::join!(flood(&gw, N, to_uid), receive_all(&mut ws, N, to_uid));
    assert!(gw.metric(DROPPED).await > 0.0, "the socket is full");
    drop(ws);
    let start = Instant::now();
    gw.signal("TERM");
    // The queued answers get --write-timeout (5 s) to go out, not the 30 s.
    let status = gw.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
    gw.wait_logged("shutdown complete");
}
