//! The gateway under attack: each case plays an attacker against the real
//! binary and checks that an honest client is still served promptly and that
//! the gateway's resident memory stays bounded.
//!
//! The cases share the test process's open-file budget (thousands of sockets
//! in the first), so they run one at a time under [`LOCK`].

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Serialises the cases: they must not share the file budget or the CPU.
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What "promptly" means for an honest client while an attack is under way.
const PROMPT: Duration = Duration::from_secs(2);

/// Idle WebSocket connections the first case opens (fewer if the open-file
/// limit does not allow as many).
const IDLE_SOCKETS: usize = 8_000;

/// Resident memory one idle, unbound WebSocket may cost the gateway.
const KIB_PER_IDLE_SOCKET: u64 = 16;

/// Runs `fut` and fails if it takes longer than [`PROMPT`].
async fn promptly<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    let start = Instant::now();
    let out = tokio::time::timeout(PROMPT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {PROMPT:?}"));
    eprintln!("{what}: {:?}", start.elapsed());
    out
}

/// An honest round trip: a text-port push and a REST push to `ws`, bound to
/// `uid`, each answered and delivered within [`PROMPT`].
async fn honest_round(gw: &Gateway, ws: &mut Ws, uid: &str, tag: &str) {
    let line = format!(r#"{{"uid":"{uid}","via":"text","tag":"{tag}"}}"#);
    promptly("honest text push", async {
        let mut text = TextClient::connect(gw).await;
        assert_eq!(text.send(&line).await, "ok");
        assert_eq!(next_text(ws).await, line);
    })
    .await;
    promptly("honest REST push", async {
        let answer: Value = reqwest::Client::new()
            .post(gw.url("/push"))
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"uid":"{uid}","data":{{"via": "rest", "tag": "{tag}"}}}}"#
            ))
            .send()
            .await
            .expect("POST /push")
            .json()
            .await
            .expect("json");
        assert_eq!(answer["delivered"], 1, "{answer}");
        assert_eq!(
            next_text(ws).await,
            format!(r#"{{"via": "rest", "tag": "{tag}"}}"#)
        );
    })
    .await;
}

/// `GET /stats`.
async fn stats(gw: &Gateway) -> Value {
    reqwest::get(gw.url("/stats"))
        .await
        .expect("GET /stats")
        .json()
        .await
        .expect("json")
}

/// Waits until the gateway counts `n` open WebSocket connections.
async fn wait_connections(gw: &Gateway, n: u64) {
    wait_until(&format!("{n} connections"), || async {
        let s = stats(gw).await;
        (s["connections"].as_u64() == Some(n))
            .then_some(())
            .ok_or(s)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_unbound_websockets_cost_little_and_starve_no_one() {
    let _serial = LOCK.lock().await;
    let soft = rlimit::increase_nofile_limit(u64::MAX).expect("raise the open-file limit");
    // Leave room for the honest clients, reqwest and the harness.
    let n = IDLE_SOCKETS.min(
        usize::try_from(soft)
            .unwrap_or(usize::MAX)
            .saturating_sub(500),
    );
    assert!(
        n >= 1_000,
        "an open-file limit of {soft} is too low for this test"
    );
    let gw = Gateway::start(&["--bind-timeout", "120s", "--ping-interval", "120s"]);

    // Warm up the paths the honest client takes, then measure.
    let mut honest = ws_bind(&gw, "honest").await;
    honest_round(&gw, &mut honest, "honest", "warm-up").await;
    let before = rss_kib(gw.pid());

    let start = Instant::now();
    let idle: Vec<TcpStream> = futures_util::stream::iter(0..n)
        .map(|_| raw_ws(&gw))
        .buffer_unordered(128)
        .collect()
        .await;
    wait_connections(&gw, n as u64 + 1).await;
    let after = rss_kib(gw.pid());
    let growth = after.saturating_sub(before);
    eprintln!(
        "{n} idle WebSockets opened in {:?}; gateway RSS {before} KiB -> {after} KiB: \
         {growth} KiB, {:.2} KiB per connection",
        start.elapsed(),
        growth as f64 / n as f64
    );
    assert!(
        growth < n as u64 * KIB_PER_IDLE_SOCKET,
        "{n} idle connections grew RSS by {growth} KiB (limit {KIB_PER_IDLE_SOCKET} KiB each)"
    );

    // With all of them open, a new honest client binds and is served.
    let mut late = promptly("a new client's bind", ws_bind(&gw, "late")).await;
    honest_round(&gw, &mut late, "late", "under-load").await;
    honest_round(&gw, &mut honest, "honest", "under-load").await;
    // The idle ones are all still there (nothing was shed to serve them).
    assert_eq!(stats(&gw).await["connections"], n as u64 + 2);
    drop(idle);
    wait_connections(&gw, 2).await;
}

#[tokio::test]
async fn one_byte_a_second_on_the_text_port_delays_no_one_and_is_cut_off() {
    let _serial = LOCK.lock().await;
    const ATTACKERS: usize = 5;
    let idle = Duration::from_secs(4);
    let gw = Gateway::start(&["--text-idle-timeout", "4s"]);
    let mut ws = ws_bind(&gw, "honest").await;

    // Each attacker drips a line that never ends, one byte a second, and
    // reports when the gateway closes it.
    let sent = Arc::new(AtomicUsize::new(0));
    let (tick_tx, mut tick_rx) = tokio::sync::watch::channel(0usize);
    let tick_tx = Arc::new(tick_tx);
    let mut attackers = Vec::new();
    for i in 0..ATTACKERS {
        // Timed from before the connect: the gateway's clock starts later.
        let opened = Instant::now();
        let stream = TcpStream::connect(gw.text).await.expect("connect");
        let (sent, tick_tx) = (sent.clone(), tick_tx.clone());
        attackers.push(tokio::spawn(async move {
            let (mut rd, mut wr) = stream.into_split();
            let line = format!(r#"{{"uid":"honest","slow":{i},"pad":"{}"#, "x".repeat(1000));
            let mut bytes = line.bytes();
            let mut pace = tokio::time::interval(Duration::from_secs(1));
            let mut buf = [0u8; 64];
            loop {
                tokio::select! {
                    _ = pace.tick() => {
                        let b = bytes.next().expect("the line outlasts the test");
                        if wr.write_all(&[b]).await.is_err() {
                            return opened.elapsed();
                        }
                        let total = sent.fetch_add(1, Ordering::SeqCst) + 1;
                        tick_tx.send_replace(total);
                    }
                    read = rd.read(&mut buf) => {
                        let got = read.unwrap_or(0);
                        assert_eq!(got, 0, "an unfinished line was answered: {:?}", &buf[..got]);
                        return opened.elapsed();
                    }
                }
            }
        }));
    }

    // While they drip, the honest backend pushes each second and is answered
    // at once, on one persistent connection and on fresh ones.
    let mut backend = TextClient::connect(&gw).await;
    for round in 1..=3 {
        tick_rx
            .wait_for(|&n| n >= round * ATTACKERS)
            .await
            .expect("attackers run");
        let line = format!(r#"{{"uid":"honest","round":{round}}}"#);
        promptly("honest push beside slowloris clients", async {
            assert_eq!(backend.send(&line).await, "ok");
            assert_eq!(next_text(&mut ws).await, line);
        })
        .await;
    }
    honest_round(&gw, &mut ws, "honest", "slowloris").await;

    // The drip never completes a line, so the idle timeout closes them.
    for attacker in attackers {
        let lived = tokio::time::timeout(PATIENCE, attacker)
            .await
            .expect("a slowloris client was never closed")
            .expect("attacker task");
        eprintln!("slowloris client closed after {lived:?}");
        assert!(
            lived >= idle && lived < idle + PROMPT,
            "closed after {lived:?}, idle timeout {idle:?}"
        );
    }
    // The persistent backend is still there.
    assert_eq!(backend.send(r#"{"uid":"honest","after":1}"#).await, "ok");
    assert_eq!(next_text(&mut ws).await, r#"{"uid":"honest","after":1}"#);
}

#[tokio::test]
async fn declared_huge_frames_close_with_1009_and_allocate_nothing() {
    let _serial = LOCK.lock().await;
    let gw = Gateway::start(&[]);
    let mut honest = ws_bind(&gw, "honest").await;
    honest_round(&gw, &mut honest, "honest", "warm-up").await;
    // One exchange on a raw socket first, so its code paths are warm too.
    let mut warm = raw_ws(&gw).await;
    warm.write_all(&frame_header(0x1, 200_000)).await.unwrap();
    assert_eq!(raw_close_code(&mut warm).await, Some(1009));
    let before = rss_kib(gw.pid());

    // Unbound and bound connections declaring 100 MB text and binary frames,
    // and one declaring the largest 63-bit length, each followed by the
    // first kilobyte of "payload".
    let mut attackers = Vec::new();
    for (i, (opcode, len)) in [
        (0x1, 100_000_000),
        (0x2, 100_000_000),
        (0x1, 100_000_000),
        (0x2, 100_000_000),
        (0x1, u64::MAX >> 1),
    ]
    .into_iter()
    .cycle()
    .take(20)
    .enumerate()
    {
        let mut s = raw_ws(&gw).await;
        let mut bytes = Vec::new();
        if i % 2 == 1 {
            let uid = format!("bound{i}");
            bytes.extend(frame_header(0x1, uid.len() as u64));
            bytes.extend(uid.as_bytes());
        }
        bytes.extend(frame_header(opcode, len));
        bytes.extend([b'x'; 1024]);
        s.write_all(&bytes).await.expect("write");
        attackers.push(s);
    }
    for mut s in attackers {
        assert_eq!(raw_close_code(&mut s).await, Some(1009));
    }
    let after = rss_kib(gw.pid());
    eprintln!("20 declared huge frames: gateway RSS {before} KiB -> {after} KiB");
    assert!(
        after < before + 4 * 1024,
        "RSS jumped from {before} KiB to {after} KiB"
    );
    honest_round(&gw, &mut honest, "honest", "after-huge-frames").await;
}

#[tokio::test]
async fn fifty_thousand_garbage_lines_each_fail_and_leave_the_connection_usable() {
    let _serial = LOCK.lock().await;
    const LINES: usize = 50_000;
    let gw = Gateway::start(&[]);
    let mut ws = ws_bind(&gw, "honest").await;
    let stream = TcpStream::connect(gw.text).await.expect("connect");
    let (rd, mut wr) = stream.into_split();
    let mut answers = BufReader::new(rd).lines();

    // Warm up this connection's paths before measuring.
    wr.write_all(b"garbage\n{\"uid\":\"honest\",\"warm\":1}\n")
        .await
        .unwrap();
    assert_eq!(answers.next_line().await.unwrap().as_deref(), Some("fail"));
    assert_eq!(answers.next_line().await.unwrap().as_deref(), Some("ok"));
    assert_eq!(next_text(&mut ws).await, r#"{"uid":"honest","warm":1}"#);
    let before = rss_kib(gw.pid());

    // Every kind of refused line: not JSON, not UTF-8, no uid, a bad uid, a
    // uid of the wrong type, trailing garbage, blank lines.
    let long_uid = format!(r#"{{"uid":"{}"}}"#, "u".repeat(300));
    let kinds: Vec<Vec<u8>> = vec![
        b"not json at all".to_vec(),
        b"{\"uid\":\"\xff\xfe\"}".to_vec(),
        b"\xc3\x28\xa0\xa1".to_vec(),
        br#"{"percent":"88%"}"#.to_vec(),
        br#"{"uid":""}"#.to_vec(),
        long_uid.into_bytes(),
        br#"{"uid":null}"#.to_vec(),
        br#"{"uid":1.5}"#.to_vec(),
        br#"{"uid":["a"]}"#.to_vec(),
        br#"{"uid":"a","uid":"b"}"#.to_vec(),
        br#"{"uid":"honest"} trailing"#.to_vec(),
        br#"["uid","honest"]"#.to_vec(),
        br#"{"uid":"honest""#.to_vec(),
        b"".to_vec(),
        b"\r".to_vec(),
        [b'{'; 2000].to_vec(),
        format!(r#"{{"uid":"nobody-{}","x":1}}"#, "n".repeat(200)).into_bytes(),
    ];
    let mut flood = Vec::new();
    for i in 0..LINES {
        flood.extend_from_slice(&kinds[i % kinds.len()]);
        flood.push(b'\n');
    }
    let flood_bytes = flood.len();

    // Written in one go while the answers are read, as a pipelining client.
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        wr.write_all(&flood).await.expect("write the flood");
        wr
    });
    let honest_during = async {
        let mut other = TextClient::connect(&gw).await;
        promptly("honest push during the flood", async {
            assert_eq!(other.send(r#"{"uid":"honest","during":1}"#).await, "ok");
        })
        .await;
    };
    let read_all = async {
        let mut fails = 0;
        while fails < LINES {
            let line = tokio::time::timeout(PATIENCE, answers.next_line())
                .await
                .expect("answers stalled")
                .expect("read")
                .expect("connection closed during the flood");
            assert_eq!(line, "fail", "answer {fails}");
            fails += 1;
        }
    };
    tokio::join!(read_all, honest_during);
    let mut wr = writer.await.expect("writer");
    eprintln!(
        "{LINES} garbage lines ({flood_bytes} bytes) answered in {:?}",
        start.elapsed()
    );
    assert_eq!(next_text(&mut ws).await, r#"{"uid":"honest","during":1}"#);

    // The same connection still pushes.
    wr.write_all(b"{\"uid\":\"honest\",\"after\":1}\n")
        .await
        .unwrap();
    assert_eq!(answers.next_line().await.unwrap().as_deref(), Some("ok"));
    assert_eq!(next_text(&mut ws).await, r#"{"uid":"honest","after":1}"#);
    let after = rss_kib(gw.pid());
    eprintln!("gateway RSS {before} KiB -> {after} KiB");
    assert!(
        after < before + 2 * 1024,
        "RSS grew from {before} KiB to {after} KiB over {flood_bytes} bytes of garbage"
    );
}
