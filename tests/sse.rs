//! Server-Sent Events end to end: the real binary, a real HTTP client
//! reading the event stream as it arrives (reqwest, parsed by
//! tests/common/sse.rs), and once `curl -N` as an independent client.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::sse::{self, Item, Raw};
use common::*;
use serde_json::{Value, json};

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The `event: close` the stream ends with, and that it then ends.
async fn close_event(s: &mut sse::SseStream) -> (u64, Option<u64>) {
    let close = loop {
        match s.next_event().await {
            Some(item) if item.kind() == "close" => break item,
            Some(_) => continue,
            None => panic!("the stream ended without a close event"),
        }
    };
    assert_eq!(s.next().await, None, "nothing after the close event");
    let retry = match &close {
        Item::Event { retry, .. } => *retry,
        Item::Comment(_) => None,
    };
    (close.json()["code"].as_u64().unwrap(), retry)
}

#[tokio::test]
async fn a_legacy_stream_binds_its_uid_and_receives_text_port_and_rest_pushes_and_broadcasts() {
    let gw = Gateway::start(&[]);
    let mut s = sse::open(&gw, "uid=u1", &[]).await;
    let h = s.response.headers().clone();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    let bound = s.next_event().await.unwrap();
    assert_eq!(bound.kind(), "bound");
    assert_eq!(
        bound.json(),
        json!({"type":"bound","uid":"u1","history":false})
    );
    assert_eq!(bound.id(), None, "no history, no position");
    gw.wait_bound("u1", 1).await;
    assert_eq!(gw.metric("pushgate_sse_connections").await, 1.0);

    let mut text = TextClient::connect(&gw).await;
    assert_eq!(text.send(r#"{"uid":"u1","percent":"88%"}"#).await, "ok");
    let m = s.next_event().await.unwrap();
    assert_eq!(m.kind(), "message");
    assert_eq!(m.id(), None, "not stored: no id");
    assert_eq!(
        m.json(),
        json!({"type":"message","data":{"uid":"u1","percent":"88%"}})
    );
    let (status, _) = post_json(&gw, "/push", &json!({"uid": "u1", "data": "a\nb"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        s.next_event().await.unwrap().json(),
        json!({"type":"message","data":"a\nb"})
    );
    // JSON text with line breaks of its own travels as several data lines.
    post_json(
        &gw,
        "/push",
        &json!({"uid": "u1", "data": "{\n\"k\":\r\n1}"}),
    )
    .await;
    assert_eq!(
        s.next_event().await.unwrap().json(),
        json!({"type":"message","data":{"k":1}})
    );
    post_json(&gw, "/broadcast", &json!({"data": {"all": true}})).await;
    let b = s.next_event().await.unwrap();
    assert_eq!(b.id(), None);
    assert_eq!(b.json(), json!({"type":"broadcast","data":{"all":true}}));

    drop(s);
    gw.wait_bound("u1", 0).await;
    wait_until("the stream gauge back to 0", || async {
        let v = gw.metric("pushgate_sse_connections").await;
        (v == 0.0).then_some(()).ok_or(v)
    })
    .await;
}

#[tokio::test]
async fn a_secure_stream_binds_the_tokens_subject_from_the_query_or_a_bearer_header() {
    let gw = Gateway::start(&["--jwt-secret", SECRET]);
    let token = jwt(json!({"sub": "alice", "exp": unix_now() + 600}));
    let mut by_query = sse::open(&gw, &format!("token={token}&uid=mallory"), &[]).await;
    assert_eq!(by_query.next_event().await.unwrap().json()["uid"], "alice");
    let bearer = format!("Bearer {token}");
    let mut by_header = sse::open(&gw, "", &[("authorization", &bearer)]).await;
    assert_eq!(by_header.next_event().await.unwrap().json()["uid"], "alice");
    gw.wait_bound("alice", 2).await;
    assert_eq!(gw.user("mallory").await["connections"], 0);
}

#[tokio::test]
async fn bad_requests_are_refused_with_problem_answers_before_any_stream() {
    let gw = Gateway::start(&["--allowed-origins", "https://app.example"]);
    let no_accept = reqwest::get(gw.public_url("/sse?uid=u")).await.unwrap();
    assert_eq!(no_accept.status(), 406);
    assert_eq!(
        no_accept.headers()["content-type"],
        "application/problem+json"
    );
    // A forbidden origin is forbidden whatever it asks for.
    let evil_no_accept = reqwest::Client::new()
        .get(gw.public_url("/sse?uid=u"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(evil_no_accept.status(), 403);
    // `q=0` says the type is not acceptable (RFC 9110 §12.4.2).
    let weight_zero = reqwest::Client::new()
        .get(gw.public_url("/sse?uid=u"))
        .header("accept", "text/event-stream;q=0, text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(weight_zero.status(), 406);
    assert_eq!(gw.user("u").await["connections"], 0);
    for (query, headers, status) in [
        ("", vec![], 400),
        ("uid=", vec![], 400),
        ("uid=u&since=nonsense", vec![], 400),
        ("uid=u", vec![("last-event-id", "12")], 400),
        ("uid=u", vec![("origin", "https://evil.example")], 403),
    ] {
        let r = sse::request(&gw, query, &headers).await;
        assert_eq!(r.status(), status, "{query} {headers:?}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    let ok = sse::request(&gw, "uid=u", &[("origin", "https://app.example")]).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(
        gw.metric(r#"pushgate_sse_refused_total{reason="bad_request"}"#)
            .await,
        4.0
    );
    for (reason, count) in [("not_acceptable", 2.0), ("origin", 2.0)] {
        let series = format!(r#"pushgate_sse_refused_total{{reason="{reason}"}}"#);
        assert_eq!(gw.metric(&series).await, count, "{reason}");
    }
}

/// `HEAD /sse` as one request of `raw` (keep-alive): its head, after
/// checking it has no body (the next answer follows it at once).
async fn head_of_stream(raw: &mut Raw, query: &str, accept: bool) -> sse::Head {
    let accept = if accept {
        "Accept: text/event-stream\r\n"
    } else {
        ""
    };
    raw.send(
        format!(
            "HEAD /sse?{query} HTTP/1.1\r\nHost: x\r\n{accept}\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let head = raw.head().await;
    let next = raw.head().await;
    assert_eq!(next.status, 200, "no body after the HEAD answer: {next:?}");
    raw.body(&next).await;
    head
}

#[tokio::test]
async fn a_head_request_gets_the_head_of_a_stream_and_binds_nothing() {
    let gw = Gateway::start(&["--jwt-secret", SECRET, "--max-conns-per-uid", "1"]);
    let token = jwt(json!({"sub": "h", "exp": unix_now() + 600}));
    let mut live = sse::open(&gw, &format!("token={token}"), &[]).await;
    assert_eq!(live.next_event().await.unwrap().kind(), "bound");
    gw.wait_bound("h", 1).await;

    // A client's HEAD, on a connection of its own (hyper's: only a GET
    // opens the lean path).
    let head = reqwest::Client::new()
        .head(gw.public_url(&format!("/sse?token={token}")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    let h = head.headers();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    // A GET's body has no length: a HEAD must not claim one (RFC 9110 §8.6).
    assert!(!h.contains_key("content-length"), "{h:?}");
    // As the first request of a connection and as a later one; refused
    // like a GET when a GET would be.
    let mut raw = Raw::connect(&gw).await;
    assert_eq!(
        head_of_stream(&mut raw, &format!("token={token}"), true)
            .await
            .status,
        200
    );
    assert_eq!(
        head_of_stream(&mut raw, &format!("token={token}"), false)
            .await
            .status,
        406
    );
    assert_eq!(
        head_of_stream(&mut raw, &format!("token={token}x"), true)
            .await
            .status,
        403
    );
    assert_eq!(head_of_stream(&mut raw, "", true).await.status, 401);

    // Nothing was bound: the live stream was not kicked (4002) and still
    // gets its pushes, and no stream was counted.
    let (status, _) = post_json(&gw, "/push", &json!({"uid": "h", "data": "still here"})).await;
    assert_eq!(status, 200);
    let next = live.next_event().await.unwrap();
    assert_eq!(next.kind(), "message", "{next:?}");
    assert_eq!(gw.user("h").await["connections"], 1);
    assert_eq!(gw.metric("pushgate_sse_connections").await, 1.0);
    assert_eq!(
        gw.metric(r#"pushgate_sse_disconnects_total{reason="kicked"}"#)
            .await
            + gw.metric(r#"pushgate_sse_disconnects_total{reason="too_many_for_uid"}"#)
                .await,
        0.0
    );
}

#[tokio::test]
async fn a_missing_or_expired_token_is_401_and_a_forged_one_403() {
    let gw = Gateway::start(&["--jwt-secret", SECRET, "--jwt-leeway", "0s"]);
    assert_eq!(sse::request(&gw, "uid=u", &[]).await.status(), 401);
    let expired = jwt(json!({"sub": "u", "exp": unix_now() - 60}));
    assert_eq!(
        sse::request(&gw, &format!("token={expired}"), &[])
            .await
            .status(),
        401
    );
    let forged = format!("{}x", jwt(json!({"sub": "u", "exp": unix_now() + 60})));
    let r = sse::request(&gw, &format!("token={forged}"), &[]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn streams_count_against_the_connection_cap_and_are_refused_503_past_it() {
    let gw = Gateway::start(&["--max-connections", "1"]);
    let _first = sse::bind(&gw, "one").await;
    let r = sse::request(&gw, "uid=two", &[]).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        gw.metric(r#"pushgate_sse_refused_total{reason="connection_cap"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn an_idle_stream_gets_a_heartbeat_comment_every_ping_interval() {
    let gw = Gateway::start(&["--ping-interval", "100ms"]);
    let mut s = sse::bind(&gw, "idle").await;
    for _ in 0..2 {
        assert_eq!(s.next().await, Some(Item::Comment("ping".into())));
    }
}

#[tokio::test]
async fn a_resume_from_another_epoch_is_answered_not_recovered_with_the_current_top() {
    let gw = Gateway::start(&["--history"]);
    let mut s = sse::open(&gw, "uid=r&since=abc:3", &[]).await;
    let bound = s.next_event().await.unwrap();
    let frame = bound.json();
    assert_eq!(frame["recovered"], false, "{frame}");
    assert_eq!(frame["reason"], "epoch_changed");
    let top = format!("{}:{}", frame["epoch"].as_str().unwrap(), frame["offset"]);
    assert_eq!(
        bound.id(),
        Some(top.as_str()),
        "the browser resumes from the top"
    );
    // Last-Event-ID is read the same way (and wins over ?since=).
    let mut again = sse::open(&gw, "uid=r&since=zz", &[("last-event-id", "abc:3")]).await;
    assert_eq!(
        again.next_event().await.unwrap().json()["reason"],
        "epoch_changed"
    );
}

#[tokio::test]
async fn stored_pushes_carry_their_position_as_id_and_a_resume_replays_what_was_missed() {
    let gw = Gateway::start(&["--history"]);
    let mut s = sse::bind(&gw, "h").await;
    let mut ids = Vec::new();
    for i in 1..=3 {
        post_json(&gw, "/push", &json!({"uid": "h", "data": i})).await;
        let m = s.next_event().await.unwrap();
        assert_eq!(m.json()["offset"], i);
        ids.push(m.id().expect("a stored push has an id").to_owned());
    }
    drop(s);
    gw.wait_bound("h", 0).await;
    post_json(&gw, "/push", &json!({"uid": "h", "data": 4})).await;
    for (how, headers) in [
        (format!("uid=h&since={}", ids[0]), vec![]),
        ("uid=h".to_owned(), vec![("last-event-id", ids[0].as_str())]),
    ] {
        let mut r = sse::open(&gw, &how, &headers).await;
        let bound = r.next_event().await.unwrap();
        assert_eq!(bound.json()["recovered"], true, "{how}");
        assert_eq!(
            bound.id(),
            None,
            "a replay follows: the bound event keeps the client's id"
        );
        for want in 2..=4 {
            assert_eq!(r.next_event().await.unwrap().json()["data"], want, "{how}");
        }
    }
    // Then live pushes, each once, in order after the replay.
    let mut live = sse::open(&gw, &format!("uid=h&since={}", ids[2]), &[]).await;
    assert_eq!(live.next_event().await.unwrap().json()["recovered"], true);
    assert_eq!(live.next_event().await.unwrap().json()["data"], 4);
    post_json(&gw, "/push", &json!({"uid": "h", "data": 5})).await;
    let five = live.next_event().await.unwrap();
    assert_eq!(five.json()["data"], 5);
    assert!(five.id().unwrap().ends_with(":5"), "{five:?}");
}

#[tokio::test]
async fn a_disconnect_by_the_backend_ends_the_stream_with_close_4001() {
    let gw = Gateway::start(&[]);
    let mut s = sse::bind(&gw, "kick").await;
    gw.wait_bound("kick", 1).await;
    let (status, _) = post_json(&gw, "/disconnect", &json!({"uid": "kick"})).await;
    assert_eq!(status, 200);
    assert_eq!(close_event(&mut s).await, (4001, None));
    gw.wait_bound("kick", 0).await;
}

#[tokio::test]
async fn the_oldest_stream_past_the_per_uid_cap_is_closed_with_4002() {
    let gw = Gateway::start(&["--max-conns-per-uid", "1"]);
    let mut old = sse::bind(&gw, "cap").await;
    let _new = sse::bind(&gw, "cap").await;
    assert_eq!(close_event(&mut old).await.0, 4002);
}

#[tokio::test]
async fn a_token_that_expires_while_streaming_ends_it_with_4004() {
    let gw = Gateway::start(&["--jwt-secret", SECRET, "--jwt-leeway", "0s"]);
    let token = jwt(json!({"sub": "brief", "exp": unix_now() + 2}));
    let mut s = sse::open(&gw, &format!("token={token}"), &[]).await;
    assert_eq!(s.next_event().await.unwrap().kind(), "bound");
    assert_eq!(close_event(&mut s).await.0, 4004);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_a_slow_consumer_closed_with_4006() {
    let gw = Gateway::start(&["--queue-len", "2", "--write-timeout", "60s"]);
    let mut slow = sse::bind(&gw, "slow").await;
    gw.wait_bound("slow", 1).await;
    // The client reads nothing now: hyper's buffer and the sockets' fill,
    // then the queue overflows.
    let big = "x".repeat(256 * 1024);
    let mut pushes = 0;
    while gw.user("slow").await["connections"] != 0 {
        pushes += 1;
        assert!(pushes < 2000, "the queue never overflowed");
        post_json(&gw, "/push", &json!({"uid": "slow", "data": big})).await;
    }
    // The map drops a full queue at once; the session counts it as it ends.
    wait_until("the slow consumer counted", || async {
        let v = gw
            .metric(r#"pushgate_sse_disconnects_total{reason="slow_consumer"}"#)
            .await;
        (v == 1.0).then_some(()).ok_or(v)
    })
    .await;
    // Reading again, the client finds the close event after what was sent.
    assert_eq!(close_event(&mut slow).await.0, 4006);
}

#[tokio::test]
async fn sigterm_ends_each_stream_with_close_1001_and_a_retry_delay_and_refuses_new_ones() {
    let mut gw = Gateway::start(&["--shutdown-timeout", "15s", "--write-timeout", "15s"]);
    let mut s = sse::bind(&gw, "d").await;
    // A WebSocket that never answers its close frame holds the drain open.
    let _holder = ws_bind(&gw, "holder").await;
    gw.wait_bound("d", 1).await;
    gw.signal("TERM");
    let (code, retry) = close_event(&mut s).await;
    assert_eq!(code, 1001);
    assert!(
        retry.is_some_and(|ms| (500..=2500).contains(&ms)),
        "{retry:?}"
    );
    let r = sse::request(&gw, "uid=late", &[]).await;
    assert_eq!(r.status(), 503);
    drop(_holder);
    assert!(gw.wait_exit(PATIENCE).success());
}

#[tokio::test]
async fn cors_answers_allowed_origins_and_only_them() {
    let gw = Gateway::start(&["--allowed-origins", "https://app.example"]);
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, gw.public_url("/sse"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let ok = preflight("https://app.example").await.unwrap();
    assert!(ok.status().is_success(), "{}", ok.status());
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization"),
        "{h:?}"
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );

    let s = sse::request(&gw, "uid=c", &[("origin", "https://app.example")]).await;
    assert_eq!(
        s.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let js = client
        .get(gw.public_url("/pushgate.mjs"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(!js.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn without_an_origin_list_any_origin_may_use_the_stream_and_the_client() {
    let gw = Gateway::start(&[]);
    for path in ["/sse?uid=any", "/pushgate.js"] {
        let r = reqwest::Client::new()
            .get(gw.public_url(path))
            .header("origin", "https://elsewhere.example")
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["access-control-allow-origin"], "*", "{path}");
    }
}

#[tokio::test]
async fn the_client_files_and_the_demo_page_are_served_with_their_types_and_validators() {
    let gw = Gateway::start(&[]);
    let client = reqwest::Client::new();
    for (path, file, kind) in [
        (
            "/pushgate.js",
            "clients/js/dist/pushgate.js",
            "text/javascript; charset=utf-8",
        ),
        (
            "/pushgate.mjs",
            "clients/js/dist/pushgate.mjs",
            "text/javascript; charset=utf-8",
        ),
        (
            "/demo",
            "clients/js/examples/index.html",
            "text/html; charset=utf-8",
        ),
    ] {
        let r = client.get(gw.public_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], kind, "{path}");
        assert!(r.headers().contains_key("cache-control"), "{path}");
        let etag = r.headers()["etag"].clone();
        let body = r.text().await.unwrap();
        let on_disk =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_owned() + file)
                .unwrap();
        assert_eq!(body, on_disk, "{path}");
        if path == "/demo" {
            // An icon of its own, so a browser asks for no /favicon.ico
            // (a 404 here); and the push hint names the API listener as
            // configurable, not one fixed address.
            assert!(body.contains(r#"<link rel="icon" href="data:,">"#));
            assert!(body.contains("--api-listen"));
            assert!(!body.contains("localhost:1235"));
        }
        let again = client
            .get(gw.public_url(path))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
    }
}

#[tokio::test]
async fn curl_reads_the_stream_as_it_comes() {
    let gw = Gateway::start(&[]);
    let mut curl = Command::new("curl")
        .args(["-N", "-s", "-H", "Accept: text/event-stream"])
        .arg(gw.public_url("/sse?uid=curl"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("run curl");
    let stdout = curl.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_data = || loop {
        let line = lines.recv_timeout(PATIENCE).expect("a line from curl");
        if let Some(data) = line.strip_prefix("data: ") {
            return serde_json::from_str::<Value>(data).unwrap();
        }
    };
    assert_eq!(next_data()["type"], "bound");
    gw.wait_bound("curl", 1).await;
    let mut text = TextClient::connect(&gw).await;
    assert_eq!(text.send(r#"{"uid":"curl","n":1}"#).await, "ok");
    assert_eq!(next_data()["data"], json!({"uid":"curl","n":1}));
    let _ = curl.kill();
    let _ = curl.wait();
    gw.wait_bound("curl", 0).await;
}

#[tokio::test]
async fn a_stream_that_was_never_read_leaves_nothing_behind_after_the_client_goes() {
    let gw = Gateway::start(&["--ping-interval", "50ms"]);
    let s = sse::bind(&gw, "gone").await;
    gw.wait_bound("gone", 1).await;
    drop(s);
    gw.wait_bound("gone", 0).await;
    assert_eq!(gw.stats().await["connections"], 0);
}

/// Opens a stream over a raw socket (no client library in the way) and
/// reads until its bound event has arrived.
async fn raw_stream(gw: &Gateway, uid: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let request =
        format!("GET /sse?uid={uid} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(13).any(|w| w == b"event: bound\n") || !got.ends_with(b"\n\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
            .await
            .expect("the opening in time")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_streams_cost_a_few_kib_each() {
    use futures_util::StreamExt;
    /// Whole-process growth per idle stream: the session (under 1 KiB, see
    /// `an_idle_stream_fits_its_memory_budget`), its hand-over slot and
    /// body, the map's entry, and the writer task the accept loop runs for
    /// a connection that opens with a stream (no buffers: under hyper, its
    /// read and write buffers made it about 15 KiB). Measured: about 3 KiB.
    /// The bound leaves room for the allocator's moods, and none for
    /// hyper's buffers.
    const KIB_PER_IDLE_STREAM: u64 = 8;
    let n = 1000;
    let soft = rlimit::increase_nofile_limit(u64::MAX).expect("raise the open-file limit");
    assert!(
        soft >= 2 * n + 200,
        "an open-file limit of {soft} is too low"
    );
    let gw = Gateway::start(&["--ping-interval", "120s"]);
    let warm = raw_stream(&gw, "warm").await;
    let before = rss_kib(gw.pid());
    let streams: Vec<_> = futures_util::stream::iter(0..n)
        .map(|i| {
            let gw = &gw;
            async move { raw_stream(gw, &format!("u{i}")).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let after = rss_kib(gw.pid());
    let growth = after.saturating_sub(before);
    eprintln!(
        "{n} idle SSE streams: gateway RSS {before} KiB -> {after} KiB: {:.2} KiB per stream",
        growth as f64 / n as f64
    );
    assert!(
        growth < n * KIB_PER_IDLE_STREAM,
        "{n} idle streams grew RSS by {growth} KiB (limit {KIB_PER_IDLE_STREAM} KiB each)"
    );
    drop((streams, warm));
}

// ---- a connection that opens with a stream, served below hyper ----------

const STREAM_REQUEST: &str = "HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";

/// The problem document of a refusal read from `raw`: its JSON, after
/// checking the answer says so and closes.
async fn refusal(raw: &mut Raw, status: u16) -> Value {
    refusal_and_head(raw, status).await.0
}

/// [`refusal`], and the answer's head.
async fn refusal_and_head(raw: &mut Raw, status: u16) -> (Value, sse::Head) {
    let head = raw.head().await;
    assert_eq!(head.status, status, "{head:?}");
    assert_eq!(head.headers["content-type"], "application/problem+json");
    assert_eq!(head.headers["connection"], "close");
    let body = raw.body(&head).await;
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["status"], status);
    assert_eq!(
        raw.rest().await,
        b"",
        "nothing after the refusal, then the close"
    );
    (problem, head)
}

/// A gateway whose refusals of a stream request's head are checked to be
/// counted, logged and readable by a browser like the route's own.
fn gateway_for_head_refusals(extra: &[&str]) -> Gateway {
    let mut args = vec!["--allowed-origins", "https://app.example", "--access-log"];
    args.extend_from_slice(extra);
    Gateway::start(&args)
}

/// Checks that a refused stream request head (its answer's `head`) was
/// answered with CORS for the allowed origin it named, counted under
/// `reason` (`count` so far) and in the request metrics of `/sse`, and
/// logged.
async fn head_refusal_is_observed(gw: &Gateway, head: &sse::Head, reason: &str, count: f64) {
    assert_eq!(
        head.headers
            .get("access-control-allow-origin")
            .map(String::as_str),
        Some("https://app.example"),
        "{head:?}"
    );
    gw.wait_metric(
        &format!(r#"pushgate_sse_refused_total{{reason="{reason}"}}"#),
        count,
    )
    .await;
    gw.wait_metric(
        r#"pushgate_http_requests_total{route="/sse",status_class="4xx"}"#,
        count,
    )
    .await;
    let status = format!("\"status\":{}", head.status);
    wait_until("the refusal's access log line", || async {
        let logs = gw.logs.lock().unwrap().clone();
        logs.iter()
            .any(|l| l.contains("pushgate::access") && l.contains("/sse") && l.contains(&status))
            .then_some(())
            .ok_or("not yet")
    })
    .await;
}

#[tokio::test]
async fn a_request_that_comes_in_pieces_while_its_path_is_looked_at_gets_one_header_read_timeout() {
    let gw = Gateway::start(&["--header-read-timeout", "4s"]);
    let mut raw = Raw::connect(&gw).await;
    // Could be `GET /sse`: the gateway waits for more before handing the
    // connection to hyper.
    raw.send(b"GET /s").await;
    // The client is slow: most of the timeout later, the rest of a
    // request line for hyper, and the head never ends.
    tokio::time::sleep(Duration::from_secs(3)).await;
    raw.send(b"tats HTTP/1.1\r\nHost: x\r\n").await;
    let late = Instant::now();
    assert_eq!(raw.rest().await, b"", "closed without an answer");
    // One timeout from the accept, about a second after the last piece;
    // not a whole timeout again from there (hyper's own timer).
    let after = late.elapsed();
    assert!(
        after < Duration::from_secs(4),
        "closed {after:?} after the last piece"
    );
}

#[tokio::test]
async fn a_stream_request_whose_head_comes_in_pieces_is_served_with_the_usual_head() {
    let gw = Gateway::start(&["--allowed-origins", "https://app.example"]);
    let mut raw = Raw::connect(&gw).await;
    for piece in [
        "GE",
        "T /s",
        "se?uid=split HT",
        "TP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nAcc",
        "ept: text/event-stream\r\n",
        "\r\n",
    ] {
        raw.send(piece.as_bytes()).await;
    }
    let head = raw.head().await;
    assert_eq!((head.version.as_str(), head.status), ("HTTP/1.1", 200));
    let h = &head.headers;
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["transfer-encoding"], "chunked");
    assert_eq!(h["connection"], "close", "one request per such connection");
    assert!(h.contains_key("date"));
    // One chunk: its size in hex, the bound event, CRLF.
    let opening = String::from_utf8(raw.until(b"\n\n\r\n").await).unwrap();
    let (size, event) = opening.split_once("\r\n").unwrap();
    assert_eq!(usize::from_str_radix(size, 16), Ok(event.len() - 2));
    assert!(event.starts_with("event: bound\n"), "{opening:?}");
    gw.wait_bound("split", 1).await;
    let (status, _) = post_json(&gw, "/push", &json!({"uid": "split", "data": 1})).await;
    assert_eq!(status, 200);
    raw.until(br#""data":1}"#).await;
}

#[tokio::test]
async fn an_http_1_0_stream_is_answered_in_1_0_and_ends_with_the_connection() {
    let gw = Gateway::start(&[]);
    let mut raw = Raw::connect(&gw).await;
    raw.send(b"GET /sse?uid=old HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n")
        .await;
    let head = raw.head().await;
    assert_eq!((head.version.as_str(), head.status), ("HTTP/1.0", 200));
    assert!(!head.headers.contains_key("transfer-encoding"), "{head:?}");
    assert!(!head.headers.contains_key("content-length"), "{head:?}");
    let opening = raw.until(b"\n\n").await;
    assert!(opening.starts_with(b"event: bound\n"), "no chunk framing");
    gw.wait_bound("old", 1).await;
    post_json(&gw, "/disconnect", &json!({"uid": "old"})).await;
    let rest = String::from_utf8(raw.rest().await).unwrap();
    assert!(rest.starts_with("event: close\n"), "{rest:?}");
    assert!(rest.ends_with("\n\n"), "no last chunk: {rest:?}");
}

#[tokio::test]
async fn a_stream_request_head_over_32_kib_is_refused_431_with_a_problem() {
    let gw = gateway_for_head_refusals(&[]);
    let mut raw = Raw::connect(&gw).await;
    let big = "a".repeat(40 * 1024);
    let request = format!(
        "GET /sse?uid=big HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nAccept: text/event-stream\r\nX-Big: {big}\r\n\r\n"
    );
    raw.send(request.as_bytes()).await;
    let (_, head) = refusal_and_head(&mut raw, 431).await;
    head_refusal_is_observed(&gw, &head, "head_too_large", 1.0).await;
    let mut many = Raw::connect(&gw).await;
    let lines: String = (0..101).map(|i| format!("X-{i}: 1\r\n")).collect();
    many.send(
        format!("GET /sse?uid=many HTTP/1.1\r\nOrigin: https://app.example\r\n{lines}\r\n")
            .as_bytes(),
    )
    .await;
    let (_, head) = refusal_and_head(&mut many, 431).await;
    head_refusal_is_observed(&gw, &head, "head_too_large", 2.0).await;
    assert_eq!(gw.user("big").await["connections"], 0);
}

#[tokio::test]
async fn a_stream_request_head_that_stalls_is_answered_408_at_the_header_read_timeout() {
    let gw = gateway_for_head_refusals(&["--header-read-timeout", "1s"]);
    let mut stalled = Raw::connect(&gw).await;
    stalled
        .send(b"GET /sse?uid=slow HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nAcc")
        .await;
    let (problem, head) = refusal_and_head(&mut stalled, 408).await;
    head_refusal_is_observed(&gw, &head, "head_timeout", 1.0).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("head"),
        "{problem}"
    );
    // A connection that sends nothing is closed without an answer, as
    // hyper closes one; so is one that stops inside `GET /sse`.
    let mut silent = Raw::connect(&gw).await;
    assert_eq!(silent.rest().await, b"");
    let mut prefix = Raw::connect(&gw).await;
    prefix.send(b"GET /ss").await;
    assert_eq!(prefix.rest().await, b"");
}

#[tokio::test]
async fn a_malformed_stream_request_head_is_refused_400() {
    let gw = gateway_for_head_refusals(&[]);
    let mut raw = Raw::connect(&gw).await;
    raw.send(b"GET /sse?uid=m HTTP/1.1\r\nOrigin: https://app.example\r\nNo colon here\r\n\r\n")
        .await;
    let (_, head) = refusal_and_head(&mut raw, 400).await;
    head_refusal_is_observed(&gw, &head, "bad_request", 1.0).await;
}

#[tokio::test]
async fn a_refused_stream_request_gets_its_problem_and_the_pipelined_one_is_never_answered() {
    let gw = Gateway::start(&[]);
    let mut raw = Raw::connect(&gw).await;
    // No Accept: 406, then the close, whatever follows on the connection.
    raw.send(b"GET /sse?uid=r HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let problem = refusal(&mut raw, 406).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("text/event-stream")
    );
    gw.wait_metric(
        r#"pushgate_sse_refused_total{reason="not_acceptable"}"#,
        1.0,
    )
    .await;
    gw.wait_metric(
        r#"pushgate_http_requests_total{route="/sse",status_class="4xx"}"#,
        1.0,
    )
    .await;
}

#[tokio::test]
async fn bytes_after_a_stream_request_are_dropped_and_never_answered_while_the_stream_goes_on() {
    let gw = Gateway::start(&[]);
    let mut raw = Raw::connect(&gw).await;
    // A body (meaningless on a GET) and a pipelined request, in the same
    // segment as the head.
    raw.send(
        b"GET /sse?uid=pipe HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nContent-Length: 5\r\n\r\nhello\
          GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    let head = raw.head().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["connection"], "close");
    raw.until(b"event: bound\n").await;
    gw.wait_bound("pipe", 1).await;
    // More of the same, later: dropped too.
    raw.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    post_json(&gw, "/push", &json!({"uid": "pipe", "data": "after"})).await;
    raw.until(br#""data":"after"}"#).await;
    post_json(&gw, "/disconnect", &json!({"uid": "pipe"})).await;
    let rest = String::from_utf8(raw.rest().await).unwrap();
    assert!(rest.contains("event: close\n"), "{rest:?}");
    assert!(
        rest.ends_with("\r\n0\r\n\r\n"),
        "the last chunk, then the close: {rest:?}"
    );
    assert!(
        !rest.contains("HTTP/1.1"),
        "a pipelined request was answered: {rest:?}"
    );
}

#[tokio::test]
async fn a_client_that_sends_too_much_after_its_stream_request_is_dropped() {
    let gw = Gateway::start(&[]);
    let mut raw = Raw::connect(&gw).await;
    raw.send(format!("GET /sse?uid=chatty {STREAM_REQUEST}").as_bytes())
        .await;
    raw.until(b"event: bound\n").await;
    gw.wait_bound("chatty", 1).await;
    // 64 KiB may follow the head and be dropped; 100 KiB is no client.
    let junk = vec![b'x'; 100 * 1024];
    let _ = tokio::io::AsyncWriteExt::write_all(&mut raw.tcp, &junk).await;
    gw.wait_bound("chatty", 0).await;
    let _ = raw.rest().await;
}

/// A stream on a socket with a small receive buffer, read up to its bound
/// event and then never again. With `first`, the connection first asks for
/// that path and reads its answer, so the stream is its second request
/// (served by hyper).
async fn stuck_stream(gw: &Gateway, uid: &str, first: Option<&str>) -> Raw {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut raw = Raw::new(socket.connect(gw.http).await.unwrap());
    if let Some(path) = first {
        raw.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        let head = raw.head().await;
        assert_eq!(head.status, 200);
        assert!(!head.headers.contains_key("connection"), "{head:?}");
        raw.body(&head).await;
    }
    raw.send(format!("GET /sse?uid={uid} {STREAM_REQUEST}").as_bytes())
        .await;
    let head = raw.head().await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.headers.get("connection").map(String::as_str),
        first.is_none().then_some("close"),
        "only a connection that opens with the stream closes after it"
    );
    raw.until(b"event: bound\n").await;
    gw.wait_bound(uid, 1).await;
    raw
}

/// Pushes 256 KiB messages to `uid` until its one stream is gone.
async fn push_until_dropped(gw: &Gateway, uid: &str) {
    let big = "x".repeat(256 * 1024);
    let mut pushes = 0;
    while gw.user(uid).await["connections"] != 0 {
        pushes += 1;
        assert!(pushes < 2000, "the stream was never dropped");
        post_json(gw, "/push", &json!({"uid": uid, "data": big})).await;
    }
}

#[tokio::test]
async fn a_stream_whose_client_stops_reading_is_dropped_at_the_write_timeout_on_either_path() {
    // The queue could hold all the pushes: only the write timeout ends it.
    // And an idle keep-alive connection would outlive the test.
    let gw = Gateway::start(&[
        "--write-timeout",
        "1s",
        "--queue-bytes",
        "1073741824",
        "--header-read-timeout",
        "60s",
    ]);
    let failed = r#"pushgate_sse_disconnects_total{reason="write_failed"}"#;
    // Below hyper: the connection opened with the stream.
    let mut lean = stuck_stream(&gw, "stuck-lean", None).await;
    push_until_dropped(&gw, "stuck-lean").await;
    gw.wait_metric(failed, 1.0).await;
    // The connection is closed, not only the stream: reading again, the
    // client gets what the kernel held, cut inside a chunk, then the end.
    assert!(!lean.rest().await.ends_with(b"0\r\n\r\n"));
    // On hyper: a keep-alive connection that asked for something else
    // first; the stream's abort handle ends hyper's connection task (else
    // hyper would finish the answer once the client reads, and wait for
    // a next request).
    let mut kept = stuck_stream(&gw, "stuck-kept", Some("/healthz")).await;
    push_until_dropped(&gw, "stuck-kept").await;
    gw.wait_metric(failed, 2.0).await;
    assert!(!kept.rest().await.ends_with(b"0\r\n\r\n"));
    assert_eq!(
        gw.metric(r#"pushgate_sse_disconnects_total{reason="slow_consumer"}"#)
            .await,
        0.0
    );
}

/// A uid that is not UTF-8 once percent-decoded is refused: the form
/// decoder would turn each bad byte into U+FFFD, making `%fe` and `%ff` one
/// uid.
#[tokio::test]
async fn a_query_that_is_not_utf8_once_decoded_is_refused() {
    let gw = Gateway::start(&[]);
    for query in ["uid=%fe", "uid=%ff", "uid=a%C3"] {
        let r = common::sse::request(&gw, query, &[("accept", "text/event-stream")]).await;
        assert_eq!(r.status(), 400, "{query}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{query}"
        );
    }
    // Percent-encoded UTF-8 is a uid like any other.
    let r = common::sse::request(&gw, "uid=%C3%A9", &[("accept", "text/event-stream")]).await;
    assert_eq!(r.status(), 200);
}
