//! Protocol v2 over WebSocket (docs/protocol-v2.md), against the real
//! binary: opting in, the bind frame and its `bound` answer, message and
//! broadcast frames, every v2 close code, and resume after a reconnect
//! (exactly the missed pushes, then live ones; why not, when not).

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use common::v2::*;
use common::*;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Pushes `line` through the text port.
async fn push_line(gw: &Gateway, line: &str) -> String {
    TextClient::connect(gw).await.send(line).await
}

#[tokio::test]
async fn a_client_offering_the_subprotocol_speaks_v2_and_is_answered_with_it() {
    let gw = Gateway::start(&[]);
    let (mut ws, answered) = connect_offering(&gw.ws_url("/ws"), Some("chat, pushgate.v2")).await;
    assert_eq!(answered.as_deref(), Some(V2));
    send_json(&mut ws, &json!({"uid": "u1", "client": "ignored"})).await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"type":"bound","uid":"u1","history":false}"#
    );
    assert_eq!(
        push_line(&gw, r#"{"uid":"u1","percent":"88%"}"#).await,
        "ok"
    );
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"type":"message","data":{"uid":"u1","percent":"88%"}}"#
    );
    // A REST string travels as a JSON string.
    let (status, _) = post_json(&gw, "/push", &json!({"uid": "u1", "data": "done"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"type":"message","data":"done"}"#
    );
}

#[tokio::test]
async fn a_client_that_cannot_set_a_subprotocol_opts_in_with_the_query() {
    let gw = Gateway::start(&[]);
    let (mut ws, answered) = connect_offering(&gw.ws_url("/ws?protocol=pushgate.v2"), None).await;
    assert_eq!(answered, None, "no subprotocol was offered, none answered");
    send_json(&mut ws, &json!({"uid": 42})).await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"type":"bound","uid":"42","history":false}"#
    );
    assert_eq!(push_line(&gw, r#"{"uid":42,"n":1}"#).await, "ok");
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"type":"message","data":{"uid":42,"n":1}}"#
    );
}

#[tokio::test]
async fn a_client_that_does_not_opt_in_keeps_v1_byte_for_byte() {
    let gw = Gateway::start(&[]);
    for path in ["/ws?protocol=pushgate.v1", "/"] {
        let (mut ws, answered) = connect_offering(&gw.ws_url(path), None).await;
        assert_eq!(answered, None, "{path}");
        ws.send(Message::text("plain")).await.unwrap();
        gw.wait_bound("plain", 1).await;
        assert_eq!(push_line(&gw, r#"{"uid":"plain", "x": 1}"#).await, "ok");
        assert_eq!(next_text(&mut ws).await, r#"{"uid":"plain", "x": 1}"#);
        ws.close(None).await.unwrap();
        gw.wait_bound("plain", 0).await;
    }
}

#[tokio::test]
async fn other_subprotocols_are_answered_without_one_in_v1() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::start(&[]);
    // By hand: a client library refuses an answer without the subprotocol
    // it offered, which is exactly the answer to check.
    let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: chat, Pushgate.v2\r\nSec-WebSocket-Protocol: pushgate.v3\r\n\r\n",
        gw.http
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed during handshake");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(!head.contains("sec-websocket-protocol"), "{head}");
    // v1: the uid as the first frame, the push's text as it was pushed.
    let mut bind = frame_header(1, 5);
    bind.extend_from_slice(b"plain");
    s.write_all(&bind).await.unwrap();
    gw.wait_bound("plain", 1).await;
    let line = r#"{"uid":"plain", "x": 1}"#;
    assert_eq!(push_line(&gw, line).await, "ok");
    let mut frame = vec![0u8; 2 + line.len()];
    s.read_exact(&mut frame).await.unwrap();
    assert_eq!(frame[..2], [0x81, line.len() as u8]);
    assert_eq!(&frame[2..], line.as_bytes());
}

#[tokio::test]
async fn a_v2_client_receives_broadcasts_as_broadcast_frames() {
    let gw = Gateway::start(&["--history"]);
    let (mut ws, _) = bind_uid(&gw, "b", None).await;
    let (status, _) = post_json(&gw, "/broadcast", &json!({"data": {"note": "22:00"}})).await;
    assert_eq!(status, 200);
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"type":"broadcast","data":{"note":"22:00"}}"#
    );
}

#[tokio::test]
async fn the_bound_frame_gives_the_streams_top_when_history_is_on() {
    let gw = Gateway::start(&["--history"]);
    let (_ws, bound) = bind_uid(&gw, "h", None).await;
    assert_eq!(bound["history"], true);
    assert_eq!(bound["offset"], 0);
    let epoch = bound["epoch"].as_str().unwrap().to_owned();
    assert_eq!(epoch.len(), 16, "{bound}");
    assert!(bound.get("recovered").is_none(), "{bound}");
    assert_eq!(push_line(&gw, r#"{"uid":"h","n":1}"#).await, "ok");
    let (_ws2, bound) = bind_uid(&gw, "h", None).await;
    assert_eq!(bound["offset"], 1);
    assert_eq!(bound["epoch"], epoch.as_str());
}

#[tokio::test]
async fn a_resume_without_history_is_not_recovered_because_history_is_off() {
    let gw = Gateway::start(&[]);
    let since = json!({"offset": 3, "epoch": "00000000000000ab"});
    let (mut ws, bound) = bind_uid(&gw, "off", Some(&since)).await;
    assert_eq!(
        bound,
        json!({"type": "bound", "uid": "off", "history": false,
               "recovered": false, "reason": "history_off"})
    );
    assert_eq!(push_line(&gw, r#"{"uid":"off","n":1}"#).await, "ok");
    assert_eq!(next_frame(&mut ws).await["data"]["n"], 1);
}

// ---- close codes -------------------------------------------------------

#[tokio::test]
async fn an_invalid_bind_frame_closes_with_4007() {
    let gw = Gateway::start(&[]);
    for frame in [
        "uid1",
        "[]",
        r#"{"since":{"offset":1,"epoch":"ab"}}"#,
        r#"{"uid":""}"#,
        r#"{"uid":"u","since":{"offset":-1,"epoch":"ab"}}"#,
        r#"{"uid":"u","since":{"offset":1,"epoch":"not hex"}}"#,
    ] {
        let mut ws = connect_v2(&gw, "/ws").await;
        ws.send(Message::text(frame)).await.unwrap();
        assert_eq!(close_code(&mut ws).await, 4007, "{frame}");
    }
    let mut ws = connect_v2(&gw, "/ws").await;
    ws.send(Message::binary(&b"{\"uid\":\"u\"}"[..]))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 4007, "a binary bind frame");
}

#[tokio::test]
async fn no_bind_frame_in_time_closes_with_4005_in_v2_and_1008_in_v1() {
    let gw = Gateway::start(&["--bind-timeout", "300ms"]);
    let mut v2 = connect_v2(&gw, "/ws").await;
    let mut v1 = ws_connect(&gw.ws_url("/ws")).await;
    assert_eq!(close_code(&mut v2).await, 4005);
    assert_eq!(close_code(&mut v1).await, 1008);
}

#[tokio::test]
async fn a_backend_disconnect_closes_with_4001() {
    let gw = Gateway::start(&[]);
    let (mut ws, _) = bind_uid(&gw, "kick", None).await;
    let (status, _) = post_json(&gw, "/disconnect", &json!({"uid": "kick"})).await;
    assert_eq!(status, 200);
    assert_eq!(close_code(&mut ws).await, 4001);
}

#[tokio::test]
async fn the_oldest_connection_past_the_per_uid_cap_closes_with_4002() {
    let gw = Gateway::start(&["--max-conns-per-uid", "1"]);
    let (mut old, _) = bind_uid(&gw, "cap", None).await;
    let (_new, _) = bind_uid(&gw, "cap", None).await;
    assert_eq!(close_code(&mut old).await, 4002);
}

#[tokio::test]
async fn a_refused_token_closes_with_4003_and_an_expired_one_with_4004() {
    let gw = Gateway::start(&["--jwt-secret", SECRET, "--jwt-leeway", "0s"]);
    let t = now();
    let cases = [
        (json!({"token": "not-a-jwt"}), 4003),
        (json!({"uid": "eve"}), 4003),
        (
            json!({"token": jwt(json!({"sub": "eve", "exp": t - 30.0}))}),
            4004,
        ),
    ];
    for (frame, code) in cases {
        let mut ws = connect_v2(&gw, "/ws").await;
        send_json(&mut ws, &frame).await;
        assert_eq!(close_code(&mut ws).await, code, "{frame}");
    }
    // A URL token: checked at the upgrade, closed at once.
    let expired = jwt(json!({"sub": "eve", "exp": t - 30.0}));
    let mut ws = connect_v2(&gw, &format!("/ws?token={expired}")).await;
    assert_eq!(close_code(&mut ws).await, 4004);
    let mut ws = connect_v2(&gw, "/ws?token=garbage").await;
    assert_eq!(close_code(&mut ws).await, 4003);
}

#[tokio::test]
async fn a_url_token_binds_with_a_frame_that_omits_it_and_expiry_closes_with_4004() {
    let gw = Gateway::start(&["--jwt-secret", SECRET, "--jwt-leeway", "0s"]);
    let token = jwt(json!({"sub": "alice", "exp": now() + 2.0}));
    let mut ws = connect_v2(&gw, &format!("/ws?token={token}")).await;
    send_json(&mut ws, &json!({"uid": "mallory"})).await;
    let bound = next_frame(&mut ws).await;
    assert_eq!(bound["uid"], "alice", "the token decides: {bound}");
    assert_eq!(close_code(&mut ws).await, 4004, "expired while connected");
}

#[tokio::test]
async fn a_v2_client_that_does_not_read_is_closed_as_a_slow_consumer_with_4006() {
    let gw = Gateway::start(&["--queue-len", "16", "--write-timeout", "30s"]);
    let (mut slow, _) = bind_uid(&gw, "slow", None).await;
    let http = reqwest::Client::new();
    let chunk = "x".repeat(60 * 1024);
    let mut dropped = false;
    for i in 0..5000 {
        let r: Value = http
            .post(gw.url("/push"))
            .json(&json!({"uid": "slow", "data": format!("{i} {chunk}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if r["dropped"] == 1 || r["offline"] == json!(["slow"]) {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the slow consumer was never disconnected");
    assert_eq!(close_code(&mut slow).await, 4006);
}

#[tokio::test]
async fn a_drain_closes_a_v2_client_with_1001_as_in_v1() {
    let gw = Gateway::start(&["--shutdown-timeout", "15s"]);
    let (mut ws, _) = bind_uid(&gw, "drained", None).await;
    gw.signal("TERM");
    assert_eq!(close_code(&mut ws).await, 1001);
}

// ---- resume --------------------------------------------------------------

/// Reads `n` message frames; returns their `data.n` and the last position.
async fn read_numbers(ws: &mut Ws, n: usize) -> (Vec<u64>, Value) {
    let mut got = Vec::new();
    let mut last = Value::Null;
    for _ in 0..n {
        let frame = next_frame(ws).await;
        assert_eq!(frame["type"], "message", "{frame}");
        got.push(frame["data"]["n"].as_u64().expect("a numbered push"));
        last = position(&frame);
    }
    (got, last)
}

#[tokio::test]
async fn a_resume_after_reconnect_gets_exactly_the_missed_pushes_then_live_ones() {
    let gw = Gateway::start(&["--history"]);
    let (mut ws, bound) = bind_uid(&gw, "r", None).await;
    let epoch = bound["epoch"].clone();
    for n in 1..=2 {
        assert_eq!(
            push_line(&gw, &format!(r#"{{"uid":"r","n":{n}}}"#)).await,
            "ok"
        );
    }
    let (got, last) = read_numbers(&mut ws, 2).await;
    assert_eq!(got, [1, 2]);
    assert_eq!(last, json!({"offset": 2, "epoch": epoch}));
    drop(ws);
    gw.wait_bound("r", 0).await;
    for n in 3..=5 {
        // Nobody online: `fail`, but kept in history.
        assert_eq!(
            push_line(&gw, &format!(r#"{{"uid":"r","n":{n}}}"#)).await,
            "fail"
        );
    }
    let (mut ws, bound) = bind_uid(&gw, "r", Some(&last)).await;
    assert_eq!(
        bound,
        json!({"type": "bound", "uid": "r", "history": true, "offset": 5,
               "epoch": epoch, "recovered": true})
    );
    let frame = next_frame(&mut ws).await;
    assert_eq!(
        frame,
        json!({"type": "message", "offset": 3, "epoch": epoch, "data": {"uid": "r", "n": 3}})
    );
    let (got, _) = read_numbers(&mut ws, 2).await;
    assert_eq!(got, [4, 5]);
    assert_eq!(push_line(&gw, r#"{"uid":"r","n":6}"#).await, "ok");
    let frame = next_frame(&mut ws).await;
    assert_eq!(
        (frame["offset"].as_u64(), frame["data"]["n"].as_u64()),
        (Some(6), Some(6))
    );
    // Nothing else was queued: the next frame is the next push.
    assert_eq!(push_line(&gw, r#"{"uid":"r","n":7}"#).await, "ok");
    assert_eq!(next_frame(&mut ws).await["data"]["n"], 7);
}

#[tokio::test]
async fn a_resume_says_why_it_cannot_be_recovered() {
    let gw = Gateway::start(&["--history", "--history-size", "2"]);
    let (ws, bound) = bind_uid(&gw, "e", None).await;
    let start = position(&bound);
    drop(ws);
    gw.wait_bound("e", 0).await;
    for n in 1..=5 {
        push_line(&gw, &format!(r#"{{"uid":"e","n":{n}}}"#)).await;
    }
    let (_ws, bound) = bind_uid(&gw, "e", Some(&start)).await;
    assert_eq!(
        (bound["recovered"].clone(), bound["reason"].clone()),
        (json!(false), json!("evicted"))
    );
    assert_eq!(bound["offset"], 5, "the client starts again from the top");
    let ahead = json!({"offset": 99, "epoch": bound["epoch"]});
    let (_ws, bound) = bind_uid(&gw, "e", Some(&ahead)).await;
    assert_eq!(bound["reason"], "offset_ahead", "{bound}");
    // Nothing follows a refused resume but live pushes.
    let (mut ws, _) = bind_uid(&gw, "e", Some(&ahead)).await;
    assert_eq!(push_line(&gw, r#"{"uid":"e","n":6}"#).await, "ok");
    let frame = next_frame(&mut ws).await;
    assert_eq!(frame["offset"], 6);
    // History deleted by the backend: a new epoch.
    let r = reqwest::Client::new()
        .delete(gw.url("/history/e"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let (_ws, bound) = bind_uid(&gw, "e", Some(&position(&frame))).await;
    assert_eq!(bound["reason"], "epoch_changed", "{bound}");
}

#[tokio::test]
async fn a_resume_across_a_node_restart_reports_the_epoch_changed() {
    let gw = Gateway::start(&["--history"]);
    let (mut ws, _) = bind_uid(&gw, "x", None).await;
    assert_eq!(push_line(&gw, r#"{"uid":"x","n":1}"#).await, "ok");
    let (_, last) = read_numbers(&mut ws, 1).await;
    drop((ws, gw));
    let gw = Gateway::start(&["--history"]);
    let (mut ws, bound) = bind_uid(&gw, "x", Some(&last)).await;
    assert_eq!(bound["recovered"], false);
    assert_eq!(bound["reason"], "epoch_changed");
    assert_ne!(bound["epoch"], last["epoch"]);
    assert_eq!(push_line(&gw, r#"{"uid":"x","n":2}"#).await, "ok");
    let frame = next_frame(&mut ws).await;
    assert_eq!(
        (frame["offset"].clone(), frame["epoch"].clone()),
        (json!(1), bound["epoch"].clone())
    );
}

#[tokio::test]
async fn a_client_that_does_not_read_its_replay_is_dropped_after_the_write_timeout() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let gw = Gateway::start(&[
        "--history",
        "--history-size",
        "5000",
        "--write-timeout",
        "1s",
        // A replay may be as large as the queue: 20 MB here, so this one
        // (10 MB) is sent rather than refused as too large.
        "--queue-bytes",
        "20000000",
    ]);
    let (ws, bound) = bind_uid(&gw, "stuck", None).await;
    let start = position(&bound);
    drop(ws);
    gw.wait_bound("stuck", 0).await;
    // 10 MB of history: more than the kernel holds for a client that does
    // not read (its receive buffer is kept small).
    let pad = "x".repeat(2000);
    let mut text = TextClient::connect(&gw).await;
    for n in 0..5000 {
        let line = format!(r#"{{"uid":"stuck","n":{n},"pad":"{pad}"}}"#);
        assert_eq!(text.send(&line).await, "fail");
    }
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(gw.http).await.unwrap();
    let mut request = gw.ws_url("/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", V2.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    let frame = json!({"uid": "stuck", "since": start}).to_string();
    ws.send(Message::text(frame)).await.unwrap();
    // The replay stalls; the session ends within the write timeout instead
    // of holding the rest.
    gw.wait_metric(r#"pushgate_disconnects_total{reason="write_failed"}"#, 1.0)
        .await;
    gw.wait_bound("stuck", 0).await;
    drop(ws);
}

// ---- the replay/live race ----------------------------------------------

/// Pushes in the race test.
const STREAM: u64 = 3000;

/// Reads the numbered stream, reconnecting with `since` after every burst
/// of a random length, until the last number; returns every number read.
async fn resuming_client(gw: &Gateway, mut ws: Ws, mut at: Value, seed: u64) -> (Vec<u64>, usize) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut got = Vec::new();
    let mut reconnects = 0;
    loop {
        for _ in 0..rng.usize(1..40) {
            let frame = next_frame(&mut ws).await;
            assert_eq!(frame["type"], "message", "{frame}");
            let n = frame["data"]["n"].as_u64().expect("a numbered push");
            got.push(n);
            at = position(&frame);
            if n == STREAM - 1 {
                return (got, reconnects);
            }
        }
        // Gone without a close frame, as a network failure would.
        drop(ws);
        let (next, bound) = bind_uid(gw, "race", Some(&at)).await;
        assert_eq!(bound["recovered"], true, "{bound} after {at}");
        ws = next;
        reconnects += 1;
    }
}

#[tokio::test]
async fn clients_reconnecting_during_a_continuous_stream_get_every_push_once_in_order() {
    let gw = Gateway::start(&["--history", "--history-size", "5000"]);
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(bind_uid(&gw, "race", None).await);
    }
    let pusher = async {
        let mut text = TextClient::connect(&gw).await;
        let http = reqwest::Client::new();
        for n in 0..STREAM {
            if n % 2 == 0 {
                // `fail` when every client is between two connections.
                let answer = text.send(&format!(r#"{{"uid":"race","n":{n}}}"#)).await;
                assert!(answer == "ok" || answer == "fail", "{answer}");
            } else {
                let r = http
                    .post(gw.url("/push"))
                    .json(&json!({"uid": "race", "data": {"n": n}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }
    };
    let readers = futures_util::future::join_all(
        clients
            .into_iter()
            .zip(1..)
            .map(|((ws, bound), seed)| resuming_client(&gw, ws, position(&bound), seed)),
    );
    let ((), results) = tokio::join!(pusher, readers);
    let expected: Vec<u64> = (0..STREAM).collect();
    for (got, reconnects) in results {
        assert!(
            got == expected,
            "a client missed, repeated or reordered pushes"
        );
        assert!(
            reconnects > 20,
            "only {reconnects} reconnects: no race exercised"
        );
    }
}
