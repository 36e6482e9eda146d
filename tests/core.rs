//! End-to-end tests of the core gateway against the real binary: WebSocket
//! clients, the text port, REST, metrics and health.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn text_push_reaches_the_bound_client_byte_for_byte() {
    let gw = Gateway::start(&[]);
    let mut ws = ws_bind(&gw, "uid1").await;
    let mut text = TextClient::connect(&gw).await;
    let line = r#"{"uid":"uid1","percent":"88%","msg":"\u4f60\u597d a\/b","n":1.50}"#;
    assert_eq!(text.send(line).await, "ok");
    assert_eq!(next_text(&mut ws).await, line);
}

#[tokio::test]
async fn the_upgrade_works_on_root_too() {
    let gw = Gateway::start(&[]);
    let mut ws = ws_connect(&gw.ws_url("/")).await;
    ws.send(Message::text("root")).await.unwrap();
    gw.wait_bound("root", 1).await;
    let mut text = TextClient::connect(&gw).await;
    assert_eq!(text.send(r#"{"uid":"root"}"#).await, "ok");
    assert_eq!(next_text(&mut ws).await, r#"{"uid":"root"}"#);
}

#[tokio::test]
async fn a_request_that_is_not_a_valid_upgrade_gets_a_problem_naming_the_header() {
    let gw = Gateway::start(&[]);
    let http = reqwest::Client::new();
    let upgrade = [("connection", "Upgrade"), ("upgrade", "websocket")];
    let key = ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    let v13 = ("sec-websocket-version", "13");
    // (expected status, what the problem must name, the request's headers)
    type Case<'a> = (u16, &'a str, Vec<(&'a str, &'a str)>);
    let cases: [Case; 5] = [
        (400, "Connection", vec![]),
        (400, "Upgrade", vec![("connection", "keep-alive, Upgrade")]),
        (
            400,
            "Sec-WebSocket-Version",
            vec![upgrade[0], upgrade[1], key],
        ),
        (400, "Sec-WebSocket-Key", vec![upgrade[0], upgrade[1], v13]),
        // Another version: 426 and the version spoken here (RFC 6455 §4.4).
        (
            426,
            "Sec-WebSocket-Version: 13",
            vec![upgrade[0], upgrade[1], key, ("sec-websocket-version", "8")],
        ),
    ];
    for (status, named, headers) in cases {
        let mut req = http.get(gw.public_url("/ws"));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{named}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{named}"
        );
        if status == 426 {
            assert_eq!(r.headers()["sec-websocket-version"], "13");
        }
        let problem: Value = r.json().await.unwrap();
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(named), "{named}: {detail}");
    }
    // The gateway still upgrades a proper request.
    let _ws = ws_bind(&gw, "after-bad-upgrades").await;
}

#[tokio::test]
async fn offline_and_invalid_lines_fail_and_the_connection_keeps_working() {
    let gw = Gateway::start(&[]);
    let mut ws = ws_bind(&gw, "u").await;
    let mut text = TextClient::connect(&gw).await;
    assert_eq!(text.send(r#"{"uid":"nobody","x":1}"#).await, "fail");
    for bad in [
        "not json",
        r#"{"percent":"88%"}"#,
        r#"{"uid":1.5}"#,
        r#"{"uid":null}"#,
        r#"{"uid":["u"]}"#,
        r#"{"uid":""}"#,
        "",
    ] {
        assert_eq!(text.send(bad).await, "fail", "{bad:?}");
    }
    assert_eq!(text.send(r#"{"uid":"u","after":"errors"}"#).await, "ok");
    assert_eq!(next_text(&mut ws).await, r#"{"uid":"u","after":"errors"}"#);
}

#[tokio::test]
async fn crlf_lines_and_pipelined_lines_are_answered_in_order() {
    let gw = Gateway::start(&[]);
    let mut ws = ws_bind(&gw, "p").await;
    let mut text = TextClient::connect(&gw).await;
    let mut batch = String::new();
    let mut expected = vec![];
    for i in 0..100 {
        if i % 3 == 0 {
            batch.push_str("{\"uid\":\"offline\"}\r\n");
            expected.push("fail");
        } else {
            batch.push_str(&format!("{{\"uid\":\"p\",\"i\":{i}}}\r\n"));
            expected.push("ok");
        }
    }
    text.write(batch.as_bytes()).await;
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(text.answer().await, *want, "answer {i}");
    }
    for i in (0..100).filter(|i| i % 3 != 0) {
        assert_eq!(
            next_text(&mut ws).await,
            format!("{{\"uid\":\"p\",\"i\":{i}}}")
        );
    }
}

#[tokio::test]
async fn a_number_uid_reaches_the_client_bound_by_its_decimal_text() {
    let gw = Gateway::start(&[]);
    let mut ws = ws_bind(&gw, "42").await;
    let mut text = TextClient::connect(&gw).await;
    assert_eq!(text.send(r#"{"uid":42,"v":"n"}"#).await, "ok");
    assert_eq!(next_text(&mut ws).await, r#"{"uid":42,"v":"n"}"#);
    let (_, r) = post_json(&gw, "/push", &json!({"uid": 42, "data": "via rest"})).await;
    assert_eq!(r["delivered"], 1);
    assert_eq!(next_text(&mut ws).await, "via rest");
}

#[tokio::test]
async fn a_connection_per_push_works_like_the_seeds_php_client() {
    let gw = Gateway::start(&[]);
    let mut ws = ws_bind(&gw, "c").await;
    for i in 0..200 {
        let mut text = TextClient::connect(&gw).await;
        assert_eq!(text.send(&format!(r#"{{"uid":"c","i":{i}}}"#)).await, "ok");
    }
    for i in 0..200 {
        assert_eq!(
            next_text(&mut ws).await,
            format!(r#"{{"uid":"c","i":{i}}}"#)
        );
    }
    assert_nothing_else(&gw, &mut ws, "c").await;
}

#[tokio::test]
async fn every_tab_of_a_uid_receives_and_closing_one_keeps_the_others() {
    let gw = Gateway::start(&[]);
    let mut tabs = vec![];
    for _ in 0..3 {
        tabs.push(ws_bind(&gw, "multi").await);
    }
    let mut text = TextClient::connect(&gw).await;
    assert_eq!(text.send(r#"{"uid":"multi","n":1}"#).await, "ok");
    for tab in &mut tabs {
        assert_eq!(next_text(tab).await, r#"{"uid":"multi","n":1}"#);
    }
    // The oldest tab closes while newer ones of the same uid stay: they keep
    // receiving (the seed's map lost them).
    let mut oldest = tabs.remove(0);
    oldest.close(None).await.unwrap();
    gw.wait_bound("multi", 2).await;
    assert_eq!(text.send(r#"{"uid":"multi","n":2}"#).await, "ok");
    for tab in &mut tabs {
        assert_eq!(next_text(tab).await, r#"{"uid":"multi","n":2}"#);
        assert_nothing_else(&gw, tab, "multi").await;
    }
    for mut tab in tabs {
        tab.close(None).await.unwrap();
    }
    gw.wait_bound("multi", 0).await;
    assert_eq!(text.send(r#"{"uid":"multi","n":3}"#).await, "fail");
}

#[tokio::test]
async fn a_reconnect_while_the_old_socket_is_still_open_keeps_the_new_one() {
    let gw = Gateway::start(&[]);
    let old = ws_bind(&gw, "re").await;
    let mut new = ws_bind(&gw, "re").await;
    // The old socket vanishes without a close handshake (a dropped TCP).
    drop(old);
    gw.wait_bound("re", 1).await;
    let mut text = TextClient::connect(&gw).await;
    assert_eq!(text.send(r#"{"uid":"re"}"#).await, "ok");
    assert_eq!(next_text(&mut new).await, r#"{"uid":"re"}"#);
}

#[tokio::test]
async fn broadcast_reaches_every_bound_connection_and_no_unbound_one() {
    let gw = Gateway::start(&[]);
    let mut a = ws_bind(&gw, "a").await;
    let mut b1 = ws_bind(&gw, "b").await;
    let mut b2 = ws_bind(&gw, "b").await;
    let mut unbound = ws_connect(&gw.ws_url("/ws")).await;
    let r: Value = reqwest::Client::new()
        .post(gw.url("/broadcast"))
        .header("content-type", "application/json")
        .body(r#"{"data": {"z": 1, "a": [1.0, "x"]}}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r,
        json!({"delivered": 3, "dropped": 0, "remote_deliveries": 0})
    );
    for ws in [&mut a, &mut b1, &mut b2] {
        assert_eq!(next_text(ws).await, r#"{"z": 1, "a": [1.0, "x"]}"#);
    }
    // The unbound client now binds; the next message it sees is the marker,
    // so the broadcast never reached it.
    unbound.send(Message::text("late")).await.unwrap();
    gw.wait_bound("late", 1).await;
    assert_nothing_else(&gw, &mut unbound, "late").await;
}

#[tokio::test]
async fn rest_push_counts_connections_and_names_offline_uids() {
    let gw = Gateway::start(&[]);
    let mut x1 = ws_bind(&gw, "x").await;
    let mut x2 = ws_bind(&gw, "x").await;
    let mut y = ws_bind(&gw, "y").await;
    let http = reqwest::Client::new();
    let raw = r#"{"uid":["x","y","gone","x"],"data":{"b":2,"a":1e3,"s":"é"}}"#;
    let r = http
        .post(gw.url("/push"))
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r: Value = r.json().await.unwrap();
    assert_eq!(
        r,
        json!({"delivered": 3, "dropped": 0, "remote_deliveries": 0, "offline": ["gone"]})
    );
    for ws in [&mut x1, &mut x2, &mut y] {
        assert_eq!(next_text(ws).await, r#"{"b":2,"a":1e3,"s":"é"}"#);
    }
    // A JSON string is sent as its text.
    let r: Value = http
        .post(gw.url("/push"))
        .json(&json!({"uid": "y", "data": "plain \"text\""}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["delivered"], 1);
    assert_eq!(next_text(&mut y).await, "plain \"text\"");
}

async fn assert_problem(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

#[tokio::test]
async fn rest_errors_are_problem_documents() {
    let gw = Gateway::start(&["--max-body-bytes", "1000"]);
    let http = reqwest::Client::new();
    let post = |path: &str, ct: &str, body: String| {
        http.post(gw.url(path))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    assert_problem(
        post("/push", "application/json", "{nope".into())
            .await
            .unwrap(),
        400,
    )
    .await;
    let missing = assert_problem(
        post("/push", "application/json", r#"{"uid":"a"}"#.into())
            .await
            .unwrap(),
        400,
    )
    .await;
    assert!(
        missing["detail"].as_str().unwrap().contains("data"),
        "{missing}"
    );
    assert_problem(
        post(
            "/push",
            "application/json",
            r#"{"uid":1.5,"data":1}"#.into(),
        )
        .await
        .unwrap(),
        400,
    )
    .await;
    assert_problem(
        post("/broadcast", "application/json", "{}".into())
            .await
            .unwrap(),
        400,
    )
    .await;
    let big = format!(r#"{{"uid":"a","data":"{}"}}"#, "x".repeat(2000));
    assert_problem(post("/push", "application/json", big).await.unwrap(), 413).await;
    assert_problem(
        post("/push", "text/plain", r#"{"uid":"a","data":1}"#.into())
            .await
            .unwrap(),
        415,
    )
    .await;
    assert_problem(http.get(gw.url("/nope")).send().await.unwrap(), 404).await;
    assert_problem(http.get(gw.url("/users/%FF")).send().await.unwrap(), 400).await;
    let long = "u".repeat(257);
    assert_problem(
        http.get(gw.url(&format!("/users/{long}")))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_problem(http.get(gw.url("/push")).send().await.unwrap(), 405).await;
    // Still serving after all that.
    let ok = post(
        "/push",
        "application/json",
        r#"{"uid":"a","data":1}"#.into(),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn without_keys_the_public_listener_serves_websocket_and_health_only() {
    let gw = Gateway::start(&[]);
    let http = reqwest::Client::new();
    for path in ["/push", "/push/batch", "/broadcast", "/disconnect"] {
        let r = http
            .post(gw.public_url(path))
            .json(&json!({"uid": "a", "data": 1}))
            .send()
            .await
            .unwrap();
        assert_problem(r, 404).await;
    }
    for path in ["/users/a", "/stats", "/metrics"] {
        let r = http.get(gw.public_url(path)).send().await.unwrap();
        assert_problem(r, 404).await;
    }
    for path in ["/healthz", "/readyz"] {
        let r = http.get(gw.public_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // The loopback API listener serves REST unkeyed, whatever headers say.
    let r = http
        .post(gw.url("/push"))
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({"uid": "a", "data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for path in ["/metrics", "/healthz", "/readyz", "/stats"] {
        assert_eq!(http.get(gw.url(path)).send().await.unwrap().status(), 200);
    }
    // No WebSocket on the API listener.
    assert!(
        tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.api))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let gw = Gateway::start(&[]);
    let r = reqwest::get(gw.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::get(gw.url("/readyz")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ready");
}

#[tokio::test]
async fn metrics_count_connections_pushes_and_deliveries() {
    let gw = Gateway::start(&[]);
    let mut a = ws_bind(&gw, "m").await;
    let _b = ws_bind(&gw, "m").await;
    let _unbound = ws_connect(&gw.ws_url("/ws")).await;
    let mut text = TextClient::connect(&gw).await;
    assert_eq!(text.send(r#"{"uid":"m"}"#).await, "ok");
    assert_eq!(text.send(r#"{"uid":"zz"}"#).await, "fail");
    assert_eq!(text.send("bad").await, "fail");
    next_text(&mut a).await;
    post_json(&gw, "/push", &json!({"uid": "m", "data": 1})).await;
    let body = reqwest::get(gw.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v = |s: &str| metric_value(&body, s);
    assert_eq!(v("pushgate_ws_connections"), 3.0, "{body}");
    assert_eq!(v("pushgate_bound_uids"), 1.0);
    assert_eq!(v("pushgate_text_connections"), 1.0);
    assert_eq!(
        v(r#"pushgate_pushes_total{source="text",result="ok"}"#),
        1.0
    );
    assert_eq!(
        v(r#"pushgate_pushes_total{source="text",result="fail"}"#),
        2.0
    );
    assert_eq!(
        v(r#"pushgate_pushes_total{source="http",result="ok"}"#),
        1.0
    );
    assert_eq!(v("pushgate_deliveries_total"), 4.0);
    // One sample per routed batch (issue 13 split the old mixed histogram).
    assert!(
        v("pushgate_push_batch_enqueue_seconds_count") >= 2.0,
        "{body}"
    );
    assert!(
        body.contains("# TYPE pushgate_push_batch_enqueue_seconds histogram"),
        "{body}"
    );
    assert!(!body.contains("\"m\""), "a uid must never be a label");
}

#[tokio::test]
async fn a_slow_consumer_is_disconnected_while_a_fast_one_keeps_receiving() {
    let gw = Gateway::start(&["--queue-len", "16", "--write-timeout", "30s"]);
    let mut fast = ws_bind(&gw, "fast").await;
    // Binds, then never reads again: its socket buffers fill, then its queue.
    let _slow = ws_bind(&gw, "slow").await;
    let http = reqwest::Client::new();
    let chunk = "x".repeat(60 * 1024);
    let mut sent = 0;
    let mut slow_dropped = false;
    while !slow_dropped {
        assert!(sent < 5000, "the slow consumer was never disconnected");
        let r: Value = http
            .post(gw.url("/push"))
            .json(&json!({"uid": ["fast", "slow"], "data": format!("{sent} {chunk}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            r["offline"].as_array().unwrap().iter().all(|u| u == "slow"),
            "{r}"
        );
        slow_dropped = r["dropped"] == 1 || r["offline"] == json!(["slow"]);
        // The fast client keeps up: it reads each message as it comes.
        let got = next_text(&mut fast).await;
        assert!(
            got.starts_with(&format!("{sent} ")),
            "fast client got message out of order"
        );
        sent += 1;
    }
    gw.wait_bound("slow", 0).await;
    assert_eq!(
        gw.metric(r#"pushgate_disconnects_total{reason="slow_consumer"}"#)
            .await,
        1.0
    );
    assert!(
        gw.metric(r#"pushgate_dropped_messages_total{reason="slow_consumer"}"#)
            .await
            >= 1.0
    );
    assert_nothing_else(&gw, &mut fast, "fast").await;
}

#[tokio::test]
async fn bad_bind_frames_close_with_1008() {
    let gw = Gateway::start(&[]);
    for uid in [String::new(), "u".repeat(257)] {
        let mut ws = ws_connect(&gw.ws_url("/ws")).await;
        ws.send(Message::text(uid)).await.unwrap();
        let frame = next_close(&mut ws).await.expect("close frame");
        assert_eq!(u16::from(frame.code), 1008);
        assert!(frame.reason.contains("uid"), "{}", frame.reason);
    }
    // 256 bytes is still fine.
    let long = "u".repeat(256);
    let _ws = ws_bind(&gw, &long).await;
}

#[tokio::test]
async fn frames_after_the_bind_are_ignored() {
    let gw = Gateway::start(&[]);
    let mut ws = ws_bind(&gw, "first").await;
    ws.send(Message::text("second")).await.unwrap();
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_nothing_else(&gw, &mut ws, "first").await;
    let v: Value = reqwest::get(gw.url("/users/second"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["online"], false);
}

#[tokio::test]
async fn a_client_that_never_binds_is_closed_after_the_bind_timeout() {
    let gw = Gateway::start(&["--bind-timeout", "300ms"]);
    let mut ws = ws_connect(&gw.ws_url("/ws")).await;
    let frame = next_close(&mut ws).await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1008);
    assert!(frame.reason.contains("bind timeout"));
}

#[tokio::test]
async fn unanswered_pings_drop_the_connection() {
    let gw = Gateway::start(&["--ping-interval", "100ms", "--pong-timeout", "200ms"]);
    // Answers pings while it is polled (tungstenite replies on read).
    let mut alive = ws_bind(&gw, "alive").await;
    // Never polled again after binding: pings go unanswered.
    let _dead = ws_bind(&gw, "dead").await;
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = alive.next().await {} });
    gw.wait_bound("dead", 0).await;
    assert_eq!(
        gw.metric(r#"pushgate_disconnects_total{reason="pong_timeout"}"#)
            .await,
        1.0
    );
    let v: Value = reqwest::get(gw.url("/users/alive"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["connections"], 1, "a client that answers pings stays");
    assert_eq!(gw.metric("pushgate_ws_connections").await, 1.0);
    reader.abort();
}

#[tokio::test]
async fn a_batch_of_pushes_is_answered_push_by_push_in_order() {
    let gw = Gateway::start(&[]);
    let mut a = ws_bind(&gw, "a").await;
    let mut b = ws_bind(&gw, "b").await;
    let http = reqwest::Client::new();
    let body = r#"{"pushes":[
        {"uid":"a","data":1},
        {"uid":["b","x"],"data":{"k":[1,2]}},
        {"uid":"off","data":"s"},
        {"uid":"a","data":"second"}
    ]}"#;
    let r: Value = http
        .post(gw.url("/push/batch"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let empty: Vec<String> = vec![];
    assert_eq!(
        r,
        json!({"delivered": 3, "dropped": 0, "remote_deliveries": 0, "results": [
            {"delivered": 1, "dropped": 0, "remote_deliveries": 0, "offline": empty, "unrouted": empty},
            {"delivered": 1, "dropped": 0, "remote_deliveries": 0, "offline": ["x"], "unrouted": empty},
            {"delivered": 0, "dropped": 0, "remote_deliveries": 0, "offline": ["off"], "unrouted": empty},
            {"delivered": 1, "dropped": 0, "remote_deliveries": 0, "offline": empty, "unrouted": empty},
        ]})
    );
    assert_eq!(next_text(&mut a).await, "1");
    assert_eq!(next_text(&mut a).await, "second");
    assert_eq!(next_text(&mut b).await, r#"{"k":[1,2]}"#);
    // Bounded: more than 10,000 pushes is a bad request, and nothing is sent.
    let pushes: Vec<Value> = (0..10_001)
        .map(|_| json!({"uid": "a", "data": 0}))
        .collect();
    let r = http
        .post(gw.url("/push/batch"))
        .json(&json!({ "pushes": pushes }))
        .send()
        .await
        .unwrap();
    assert_problem(r, 400).await;
    // Every push is checked before any is routed: a bad `data` (a lone
    // surrogate escape) after a good push is a 400 and delivers nothing.
    let r = http
        .post(gw.url("/push/batch"))
        .header("content-type", "application/json")
        .body(r#"{"pushes":[{"uid":"a","data":"first"},{"uid":"a","data":"\ud800"}]}"#)
        .send()
        .await
        .unwrap();
    assert_problem(r, 400).await;
    assert_nothing_else(&gw, &mut a, "a").await;
}

/// Starts a gateway whose queues let a client stall without being a slow
/// consumer, binds `uid`, and pushes it 48 MB through the text port while
/// it reads nothing: far more than the two socket buffers hold
/// (net.ipv4.tcp_wmem allows 4 MB here), so the gateway's write to this
/// client is left part-way through a frame. Returns once every push is
/// queued, with the lines pushed.
async fn client_stuck_mid_frame(uid: &str) -> (Gateway, Ws, Vec<String>) {
    let gw = Gateway::start(&[
        "--queue-len",
        "10000",
        "--queue-bytes",
        "100000000",
        "--write-timeout",
        "60s",
    ]);
    let ws = ws_bind(&gw, uid).await;
    let mut text = TextClient::connect(&gw).await;
    let pad = "x".repeat(60_000);
    let lines: Vec<String> = (0..800)
        .map(|i| format!(r#"{{"uid":"{uid}","n":{i},"pad":"{pad}"}}"#))
        .collect();
    for line in &lines {
        text.write(format!("{line}\n").as_bytes()).await;
    }
    for _ in &lines {
        assert_eq!(text.answer().await, "ok");
    }
    (gw, ws, lines)
}

#[tokio::test]
async fn a_reader_that_stalls_gets_every_message_whole_and_in_order() {
    let (gw, mut ws, lines) = client_stuck_mid_frame("stall").await;
    // The writes resume where they stopped.
    for (i, line) in lines.iter().enumerate() {
        let got = next_text(&mut ws).await;
        assert!(got == *line, "message {i} came wrong or out of order");
    }
    assert_nothing_else(&gw, &mut ws, "stall").await;
}

#[tokio::test]
async fn a_ping_gets_its_pong_and_a_close_gets_its_answer() {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let gw = Gateway::start(&[]);
    let mut ws = ws_bind(&gw, "pinger").await;
    ws.send(Message::Ping("are you there".into()))
        .await
        .unwrap();
    let answer = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("timed out waiting for the pong")
        .expect("stream ended")
        .expect("ws error");
    assert_eq!(answer, Message::Pong("are you there".into()));
    // The connection still delivers after a control frame.
    assert_nothing_else(&gw, &mut ws, "pinger").await;

    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    let frame = next_close(&mut ws)
        .await
        .expect("the close answer has a code");
    assert_eq!(frame.code, CloseCode::Normal);
    gw.wait_bound("pinger", 0).await;
}

#[tokio::test]
async fn a_client_kicked_in_the_middle_of_a_write_gets_whole_frames_then_its_close() {
    let (gw, mut ws, lines) = client_stuck_mid_frame("kicked").await;
    let (status, _) = post_json(&gw, "/disconnect", &json!({"uid": "kicked"})).await;
    assert_eq!(status, 200);
    // The client reads on: the frames already on their way arrive whole and
    // in order, then the close frame with 4001, and no protocol error.
    let mut received = 0;
    let code = loop {
        let msg = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("timed out")
            .expect("stream ended without a close frame")
            .expect("the stream broke: a frame was cut");
        match msg {
            Message::Text(t) => {
                assert!(
                    lines.get(received).is_some_and(|l| t.as_str() == l),
                    "message {received} came wrong"
                );
                received += 1;
            }
            Message::Close(frame) => break frame.map(|f| u16::from(f.code)),
            _ => {}
        }
    };
    assert_eq!(code, Some(4001), "after {received} whole messages");
}

#[tokio::test]
async fn a_bind_frame_sent_with_the_upgrade_request_is_not_lost() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::start(&[]);
    // The upgrade request and the bind frame in one write, before the 101:
    // the server's HTTP layer has read the frame already when it hands the
    // connection over.
    let mut bytes = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        gw.http
    )
    .into_bytes();
    bytes.extend(frame_header(0x1, 5));
    bytes.extend(b"early");
    let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    s.write_all(&bytes).await.unwrap();
    gw.wait_bound("early", 1).await;

    let mut text = TextClient::connect(&gw).await;
    let line = r#"{"uid":"early","n":1}"#;
    assert_eq!(text.send(line).await, "ok");
    // After the 101 answer comes the pushed frame, unmasked, as sent.
    let mut expected = vec![0x81, line.len() as u8];
    expected.extend(line.as_bytes());
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.ends_with(&expected) {
        let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
            .await
            .expect("timed out waiting for the push")
            .unwrap();
        assert!(n > 0, "closed before the push; got {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101"));
}

#[tokio::test]
async fn a_client_that_reads_gets_a_whole_burst_with_the_default_queues() {
    // push.php's Workerman buffered 1 MB for a client; a burst of small
    // pushes to one uid (a REST batch, pipelined progress lines) must not
    // make a reading client a slow consumer.
    let gw = Gateway::start(&[]);
    let mut ws = ws_bind(&gw, "burst").await;
    let pushes: Vec<serde_json::Value> = (0..1100)
        .map(|i| serde_json::json!({"uid": "burst", "data": {"n": i}}))
        .collect();
    let (status, answer) =
        post_json(&gw, "/push/batch", &serde_json::json!({"pushes": pushes})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["delivered"], 1100, "{answer}");
    assert_eq!(answer["dropped"], 0, "{answer}");
    for i in 0..1100 {
        assert_eq!(next_text(&mut ws).await, format!(r#"{{"n":{i}}}"#));
    }
    let mut text = TextClient::connect(&gw).await;
    let lines: String = (0..5000)
        .map(|i| format!("{{\"uid\":\"burst\",\"percent\":\"{i}%\"}}\n"))
        .collect();
    text.write(lines.as_bytes()).await;
    for _ in 0..5000 {
        assert_eq!(text.answer().await, "ok");
    }
    for i in 0..5000 {
        assert_eq!(
            next_text(&mut ws).await,
            format!("{{\"uid\":\"burst\",\"percent\":\"{i}%\"}}")
        );
    }
}
