//! Graceful shutdown of the real binary under SIGTERM and SIGINT.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;

#[tokio::test]
async fn sigterm_drains_with_1001_turns_unready_and_exits_0() {
    let mut gw = Gateway::start(&["--shutdown-timeout", "15s", "--write-timeout", "15s"]);
    let mut clients = vec![];
    for i in 0..20 {
        clients.push(ws_bind(&gw, &format!("u{i}")).await);
    }
    let mut text = TextClient::connect(&gw).await;
    assert_eq!(text.send(r#"{"uid":"u0"}"#).await, "ok");
    assert_eq!(next_text(&mut clients[0]).await, r#"{"uid":"u0"}"#);

    gw.signal("TERM");

    // The first client takes its close frame but does not answer yet, which
    // holds the gateway in its drain phase while we look at it.
    let frame = next_close(&mut clients[0]).await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1001);
    let r = reqwest::get(gw.url("/readyz")).await.unwrap();
    assert_eq!(
        r.status(),
        503,
        "readyz must fail as soon as the drain begins"
    );
    match tokio_tungstenite::connect_async(gw.ws_url("/ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503)
        }
        other => panic!("a new WebSocket must be refused while draining: {other:?}"),
    }
    assert!(
        tokio::net::TcpStream::connect(gw.text).await.is_err() || text.is_closed().await,
        "the text port stops taking work"
    );

    for ws in clients.iter_mut().skip(1) {
        let frame = next_close(ws).await.expect("close frame");
        assert_eq!(u16::from(frame.code), 1001);
        assert!(frame.reason.contains("shutting down"));
    }
    // Now the close replies go out and the drain can finish.
    for mut ws in clients {
        while let Some(Ok(_)) = ws.next().await {}
    }
    let status = gw.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}");
    gw.wait_logged("shutdown complete");
}

#[tokio::test]
async fn sigint_exits_0_too() {
    let mut gw = Gateway::start(&[]);
    let mut ws = ws_bind(&gw, "a").await;
    gw.signal("INT");
    assert_eq!(u16::from(next_close(&mut ws).await.unwrap().code), 1001);
    while let Some(Ok(_)) = ws.next().await {}
    assert!(gw.wait_exit(Duration::from_secs(20)).success());
}

#[tokio::test]
async fn a_client_that_never_answers_cannot_hold_the_shutdown_past_its_timeout() {
    let mut gw = Gateway::start(&["--shutdown-timeout", "1s", "--write-timeout", "60s"]);
    let _silent = ws_bind(&gw, "silent").await;
    let start = Instant::now();
    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(10));
    assert!(status.success());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    gw.wait_logged("shutdown timeout reached");
}

#[tokio::test]
async fn a_text_connection_gets_its_answers_then_is_closed_by_the_drain() {
    let mut gw = Gateway::start(&["--shutdown-timeout", "15s", "--write-timeout", "15s"]);
    let mut ws = ws_bind(&gw, "t").await;
    let mut text = TextClient::connect(&gw).await;
    // Sent before the signal, read after it: the answer is not lost.
    text.write(b"{\"uid\":\"t\"}\n{\"uid\":\"nobody\"}\n").await;
    gw.signal("TERM");
    assert_eq!(text.answer().await, "ok");
    assert_eq!(text.answer().await, "fail");
    assert!(
        text.is_closed().await,
        "the drain closes idle text connections"
    );
    assert_eq!(next_text(&mut ws).await, r#"{"uid":"t"}"#);
    assert_eq!(u16::from(next_close(&mut ws).await.unwrap().code), 1001);
    while let Some(Ok(_)) = ws.next().await {}
    assert!(gw.wait_exit(Duration::from_secs(20)).success());
}

/// Opens `n` WebSockets bound to `{prefix}{i}` and waits until the gateway
/// has bound them all. Each task returns its close code and when the close
/// frame arrived.
async fn bound_clients(
    gw: &Gateway,
    n: usize,
    prefix: &str,
) -> Vec<tokio::task::JoinHandle<(Option<u16>, Instant)>> {
    let mut tasks = Vec::with_capacity(n);
    let (bound_tx, mut bound_rx) = tokio::sync::mpsc::channel::<()>(n);
    for i in 0..n {
        let url = gw.ws_url("/ws");
        let bound_tx = bound_tx.clone();
        let uid = format!("{prefix}{i}");
        tasks.push(tokio::spawn(async move {
            use futures_util::SinkExt;
            let mut ws = ws_connect(&url).await;
            ws.send(tokio_tungstenite::tungstenite::Message::text(uid))
                .await
                .unwrap();
            bound_tx.send(()).await.unwrap();
            let code = next_close(&mut ws).await.map(|f| u16::from(f.code));
            let at = Instant::now();
            while let Some(Ok(_)) = ws.next().await {}
            (code, at)
        }));
    }
    for _ in 0..n {
        bound_rx.recv().await.unwrap();
    }
    // Every bind frame is sent; wait until the gateway has bound them all.
    wait_until("every client bound", || async {
        let v: serde_json::Value = reqwest::get(gw.url("/stats"))
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if v["bound_connections"] == n {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await;
    tasks
}

/// Waits for every client and returns the close times, checking each got 1001.
async fn close_times(tasks: Vec<tokio::task::JoinHandle<(Option<u16>, Instant)>>) -> Vec<Instant> {
    let mut times = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (code, at) = task.await.unwrap();
        assert_eq!(code, Some(1001));
        times.push(at);
    }
    times.sort();
    times
}

#[tokio::test]
async fn a_drain_spreads_closes_over_time_at_the_drain_rate() {
    let mut gw = Gateway::start(&["--drain-rate", "1000", "--shutdown-timeout", "15s"]);
    const CLIENTS: usize = 2000;
    let tasks = bound_clients(&gw, CLIENTS, "d").await;
    gw.signal("TERM");
    let times = close_times(tasks).await;
    let first = times[0];
    let spread = times[CLIENTS - 1] - first;
    // 2,000 closes at 1,000 per second take about two seconds, not one burst.
    assert!(
        spread >= Duration::from_millis(1500),
        "closes spread over only {spread:?}"
    );
    let in_first_quarter_second = times
        .iter()
        .filter(|t| **t - first < Duration::from_millis(250))
        .count();
    assert!(
        in_first_quarter_second < CLIENTS / 2,
        "{in_first_quarter_second} closed at once"
    );
    assert!(gw.wait_exit(Duration::from_secs(20)).success());
}

#[tokio::test]
async fn a_drain_that_cannot_close_everyone_at_the_drain_rate_goes_faster_evenly() {
    // 200 clients at 20/s would take 10 s; 3/4 of 4 s is 3 s, so the drain
    // closes one every 15 ms instead of 60 at 20/s and the other 140 in one
    // burst at 3 s.
    let mut gw = Gateway::start(&["--drain-rate", "20", "--shutdown-timeout", "4s"]);
    const CLIENTS: usize = 200;
    let tasks = bound_clients(&gw, CLIENTS, "e").await;
    gw.signal("TERM");
    let times = close_times(tasks).await;
    let busiest = times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|t| **t >= *start && **t - *start < Duration::from_millis(100))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        busiest <= CLIENTS * 15 / 100,
        "{busiest} of {CLIENTS} closes fell in one 0.1 s window"
    );
    assert!(gw.wait_exit(Duration::from_secs(20)).success());
}
