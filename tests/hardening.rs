//! Secure mode, access control, limits and bad input, each against the real
//! binary: every case here fails without the behaviour it names.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn online(gw: &Gateway, uid: &str) -> bool {
    let v: Value = reqwest::get(gw.url(&format!("/users/{uid}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["online"].as_bool().unwrap()
}

#[tokio::test]
async fn secure_mode_binds_the_tokens_sub_from_the_query_or_the_first_frame() {
    let gw = Gateway::start(&["--jwt-secret", SECRET]);
    let token = jwt(json!({"sub": "alice", "exp": now() + 600}));
    let mut q = ws_connect(&gw.ws_url(&format!("/ws?token={token}"))).await;
    gw.wait_bound("alice", 1).await;
    let mut f = ws_connect(&gw.ws_url("/ws")).await;
    f.send(Message::text(jwt(
        json!({"sub": "bob", "exp": now() + 600}),
    )))
    .await
    .unwrap();
    gw.wait_bound("bob", 1).await;
    let mut text = TextClient::connect(&gw).await;
    assert_eq!(text.send(r#"{"uid":"alice"}"#).await, "ok");
    assert_eq!(text.send(r#"{"uid":"bob"}"#).await, "ok");
    assert_eq!(next_text(&mut q).await, r#"{"uid":"alice"}"#);
    assert_eq!(next_text(&mut f).await, r#"{"uid":"bob"}"#);
    gw.wait_logged("connection capacity");
    assert!(
        !gw.logged("LEGACY MODE"),
        "no legacy warning in secure mode"
    );
}

#[tokio::test]
async fn bad_tokens_close_with_1008_and_never_bind() {
    let gw = Gateway::start(&["--jwt-secret", SECRET, "--jwt-leeway", "0s"]);
    let expired = jwt(json!({"sub": "eve", "exp": now() - 30}));
    let wrong_key = encode(
        &Header::default(),
        &json!({"sub": "eve", "exp": now() + 600}),
        &EncodingKey::from_secret(b"another"),
    )
    .unwrap();
    // alg none: header {"alg":"none","typ":"JWT"}, claims {"sub":"eve","exp":9999999999}.
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJldmUiLCJleHAiOjk5OTk5OTk5OTl9.";
    for (token, reason) in [
        (expired.as_str(), "token expired"),
        (wrong_key.as_str(), "invalid token"),
        (none, "invalid token"),
        ("eve", "invalid token"),
    ] {
        let mut ws = ws_connect(&gw.ws_url(&format!("/ws?token={token}"))).await;
        assert_eq!(
            close_of(&mut ws).await,
            (1008, reason.to_string()),
            "query {token}"
        );
        let mut ws = ws_connect(&gw.ws_url("/ws")).await;
        ws.send(Message::text(token)).await.unwrap();
        assert_eq!(
            close_of(&mut ws).await,
            (1008, reason.to_string()),
            "frame {token}"
        );
    }
    assert!(!online(&gw, "eve").await);
}

#[tokio::test]
async fn a_missing_token_closes_at_the_bind_timeout() {
    let gw = Gateway::start(&["--jwt-secret", SECRET, "--bind-timeout", "200ms"]);
    let mut ws = ws_connect(&gw.ws_url("/ws")).await;
    assert_eq!(close_of(&mut ws).await.0, 1008);
}

#[tokio::test]
async fn audience_and_issuer_are_enforced_when_configured() {
    let gw = Gateway::start(&[
        "--jwt-secret",
        SECRET,
        "--jwt-audience",
        "app",
        "--jwt-issuer",
        "auth",
    ]);
    let exp = now() + 600;
    for (claims, ok) in [
        (
            json!({"sub": "a", "exp": exp, "aud": "app", "iss": "auth"}),
            true,
        ),
        (
            json!({"sub": "b", "exp": exp, "aud": "other", "iss": "auth"}),
            false,
        ),
        (
            json!({"sub": "c", "exp": exp, "aud": "app", "iss": "other"}),
            false,
        ),
        (json!({"sub": "d", "exp": exp}), false),
    ] {
        let sub = claims["sub"].as_str().unwrap().to_owned();
        let mut ws = ws_connect(&gw.ws_url(&format!("/ws?token={}", jwt(claims)))).await;
        if ok {
            gw.wait_bound(&sub, 1).await;
        } else {
            assert_eq!(close_of(&mut ws).await.0, 1008);
        }
    }
}

#[tokio::test]
async fn a_token_that_expires_while_open_closes_the_connection() {
    let gw = Gateway::start(&["--jwt-secret", SECRET, "--jwt-leeway", "0s"]);
    let mut ws = ws_connect(&gw.ws_url(&format!(
        "/ws?token={}",
        jwt(json!({"sub": "short", "exp": now() + 2}))
    )))
    .await;
    gw.wait_bound("short", 1).await;
    assert_eq!(close_of(&mut ws).await, (1008, "token expired".to_string()));
    assert!(!online(&gw, "short").await);
}

#[tokio::test]
async fn api_keys_are_required_and_several_are_valid_at_once() {
    let dir = std::env::temp_dir().join(format!("pushgate-keys-{}", std::process::id()));
    std::fs::write(&dir, "# rotated in\nfrom-file\n\n").unwrap();
    let gw = Gateway::start(&[
        "--api-key",
        "old-key",
        "--api-key",
        "new-key",
        "--api-key-file",
        dir.to_str().unwrap(),
    ]);
    let mut ws = ws_bind_with_key(&gw, "k", "new-key").await;
    let http = reqwest::Client::new();
    let push = |key: Option<&str>| {
        let mut r = http
            .post(gw.url("/push"))
            .json(&json!({"uid": "k", "data": "hi"}));
        if let Some(key) = key {
            r = r.bearer_auth(key);
        }
        r.send()
    };
    let r = push(None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(push(Some("wrong")).await.unwrap().status(), 401);
    assert_eq!(push(Some("old-ke")).await.unwrap().status(), 401);
    for key in ["old-key", "new-key", "from-file"] {
        assert_eq!(push(Some(key)).await.unwrap().status(), 200, "{key}");
        assert_eq!(next_text(&mut ws).await, "hi");
    }
    // Two Authorization headers: refused, not judged by the first.
    let r = http
        .post(gw.url("/push"))
        .header("authorization", "Bearer old-key")
        .header("authorization", "Bearer wrong")
        .json(&json!({"uid": "k", "data": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The scheme is case-insensitive (RFC 9110 §11.1).
    for scheme in ["bearer", "BEARER"] {
        let r = http
            .post(gw.url("/push"))
            .header("authorization", format!("{scheme} old-key"))
            .json(&json!({"uid": "k", "data": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{scheme}");
        assert_eq!(next_text(&mut ws).await, "hi");
    }
    // A key works through a proxy too: it is the key, not the address, that counts.
    let r = http
        .get(gw.url("/stats"))
        .bearer_auth("old-key")
        .header("x-forwarded-for", "203.0.113.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        http.get(gw.url("/stats")).send().await.unwrap().status(),
        401
    );
    assert_eq!(
        http.get(gw.url("/users/k")).send().await.unwrap().status(),
        401
    );
    for open in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(
            http.get(gw.url(open)).send().await.unwrap().status(),
            200,
            "{open}"
        );
    }
    gw.wait_logged("connection capacity");
    assert!(!gw.logged("no API key configured"));
    let _ = std::fs::remove_file(dir);
}

/// Binds `uid` on a gateway whose online query needs `key`.
async fn ws_bind_with_key(gw: &Gateway, uid: &str, key: &str) -> Ws {
    let mut ws = ws_connect(&gw.ws_url("/ws")).await;
    ws.send(Message::text(uid)).await.unwrap();
    let http = reqwest::Client::new();
    wait_until(&format!("{uid} online"), || async {
        let v: Value = http
            .get(gw.url(&format!("/users/{uid}")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (v["online"] == true).then_some(()).ok_or(v)
    })
    .await;
    ws
}

#[tokio::test]
async fn an_empty_api_key_is_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args([
            "--api-key",
            "",
            "--listen",
            "127.0.0.1:0",
            "--text-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must not be empty"));
}

#[tokio::test]
async fn with_keys_the_public_listener_serves_rest_keyed_and_never_metrics() {
    let gw = Gateway::start(&["--api-key", "pub-key"]);
    gw.wait_logged("REST (API key required)");
    let mut ws = ws_bind_with_key(&gw, "pub", "pub-key").await;
    let http = reqwest::Client::new();
    let push = |key: Option<&str>| {
        let mut r = http
            .post(gw.public_url("/push"))
            .json(&json!({"uid": "pub", "data": "public"}));
        if let Some(key) = key {
            r = r.bearer_auth(key);
        }
        r.send()
    };
    assert_eq!(push(None).await.unwrap().status(), 401);
    assert_eq!(push(Some("pub-key")).await.unwrap().status(), 200);
    assert_eq!(next_text(&mut ws).await, "public");
    let r = http.get(gw.public_url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // The loopback API listener needs the key too once keys exist.
    let r = http.get(gw.url("/stats")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_non_loopback_api_listener_without_keys_refuses_rest_but_serves_metrics() {
    let gw = Gateway::start(&["--api-listen", "0.0.0.0:0"]);
    gw.wait_logged("API keys are required on a non-loopback API listener");
    let api = format!("http://127.0.0.1:{}", gw.api.port());
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{api}/broadcast"))
        .json(&json!({"data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let problem: Value = r.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("API keys are required")),
        "{problem}"
    );
    let r = http.get(format!("{api}/users/x")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    for open in ["/metrics", "/healthz", "/readyz"] {
        let r = http.get(format!("{api}{open}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{open}");
    }
}

/// Runs the binary with `args` until it exits; returns its status and its
/// log. For start-up failures only: a gateway that starts would run on.
fn start_failure(args: &[&str]) -> (std::process::ExitStatus, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "a refused start prints no ready line"
    );
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn an_api_listener_equal_to_the_public_one_is_refused_at_start() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let same = format!("127.0.0.1:{port}");
    let (status, log) = start_failure(&[
        "--listen",
        &same,
        "--api-listen",
        &same,
        "--text-listen",
        "127.0.0.1:0",
    ]);
    assert!(!status.success());
    assert!(log.contains("--api-listen"), "{log}");
    assert!(log.contains("must differ from --listen"), "{log}");
    assert!(!log.contains("listening"), "{log}");
}

#[tokio::test]
async fn a_start_up_error_is_one_line_and_nothing_is_bound() {
    let missing =
        std::env::temp_dir().join(format!("pushgate-no-such-key-{}.pem", std::process::id()));
    let (status, log) = start_failure(&[
        "--jwt-public-key",
        missing.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--api-listen",
        "127.0.0.1:0",
        "--text-listen",
        "127.0.0.1:0",
    ]);
    assert!(!status.success());
    assert!(!log.contains("listening"), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    let line = errors[0];
    assert!(line.contains(missing.to_str().unwrap()), "{line}");
    // The cause (no such file) is given once, not repeated by an error chain.
    assert_eq!(line.matches("No such file").count(), 1, "{line}");
    assert!(!log.contains("Caused by"), "{log}");
}

#[tokio::test]
async fn listen_addresses_may_be_host_names() {
    let gw = Gateway::start(&[
        "--listen",
        "localhost:0",
        "--api-listen",
        "localhost:0",
        "--text-listen",
        "localhost:0",
    ]);
    assert!(gw.http.ip().is_loopback() && gw.api.ip().is_loopback());
    let mut ws = ws_bind(&gw, "named").await;
    let mut text = TextClient::connect(&gw).await;
    assert_eq!(text.send(r#"{"uid":"named"}"#).await, "ok");
    assert_eq!(next_text(&mut ws).await, r#"{"uid":"named"}"#);
}

#[tokio::test]
async fn zero_conns_per_uid_means_no_limit() {
    let gw = Gateway::start(&["--max-conns-per-uid", "0"]);
    // One more than the default cap of 32.
    let mut tabs = Vec::new();
    for _ in 0..33 {
        tabs.push(ws_bind(&gw, "many").await);
    }
    let mut text = TextClient::connect(&gw).await;
    assert_eq!(text.send(r#"{"uid":"many"}"#).await, "ok");
    for ws in &mut tabs {
        assert_eq!(next_text(ws).await, r#"{"uid":"many"}"#);
    }
}

async fn ws_with_header(gw: &Gateway, name: &'static str, value: &str) -> Result<Ws, u16> {
    let mut req = gw.ws_url("/ws").into_client_request().unwrap();
    req.headers_mut().insert(name, value.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn per_ip_caps_use_forwarded_addresses_only_from_trusted_proxies() {
    let trusted = Gateway::start(&[
        "--max-conns-per-ip",
        "1",
        "--trusted-proxies",
        "127.0.0.1/32",
    ]);
    let _a = ws_with_header(&trusted, "x-forwarded-for", "198.51.100.1")
        .await
        .unwrap();
    let _b = ws_with_header(&trusted, "x-forwarded-for", "198.51.100.2")
        .await
        .unwrap();
    assert_eq!(
        ws_with_header(&trusted, "x-forwarded-for", "198.51.100.1")
            .await
            .err(),
        Some(503)
    );

    let untrusted = Gateway::start(&["--max-conns-per-ip", "1"]);
    let _a = ws_with_header(&untrusted, "x-forwarded-for", "198.51.100.1")
        .await
        .unwrap();
    // The header is ignored: both come from 127.0.0.1.
    assert_eq!(
        ws_with_header(&untrusted, "x-forwarded-for", "198.51.100.2")
            .await
            .err(),
        Some(503)
    );
    assert_eq!(
        untrusted
            .metric(r#"pushgate_rejected_upgrades_total{reason="per_ip_cap"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn the_global_cap_and_the_connect_rate_answer_503() {
    let gw = Gateway::start(&["--max-connections", "2"]);
    let _a = ws_connect(&gw.ws_url("/ws")).await;
    let _b = ws_connect(&gw.ws_url("/ws")).await;
    assert_eq!(ws_with_header(&gw, "x-test", "1").await.err(), Some(503));
    assert_eq!(
        gw.metric(r#"pushgate_rejected_upgrades_total{reason="connection_cap"}"#)
            .await,
        1.0
    );

    let gw = Gateway::start(&["--max-connects-per-ip", "3"]);
    for _ in 0..3 {
        drop(ws_connect(&gw.ws_url("/ws")).await);
    }
    assert_eq!(ws_with_header(&gw, "x-test", "1").await.err(), Some(503));
    assert_eq!(
        gw.metric(r#"pushgate_rejected_upgrades_total{reason="per_ip_rate"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn kick_closes_every_connection_of_the_uid_with_4001() {
    let gw = Gateway::start(&[]);
    let mut a = ws_bind(&gw, "kick").await;
    let mut b = ws_bind(&gw, "kick").await;
    let mut other = ws_bind(&gw, "stay").await;
    let (_, r) = post_json(&gw, "/disconnect", &json!({"uid": "kick"})).await;
    assert_eq!(r, json!({"disconnected": 2, "remote_deliveries": 0}));
    assert_eq!(close_of(&mut a).await.0, 4001);
    assert_eq!(close_of(&mut b).await.0, 4001);
    assert!(!online(&gw, "kick").await);
    assert_nothing_else(&gw, &mut other, "stay").await;
}

#[tokio::test]
async fn past_the_per_uid_cap_the_oldest_connection_is_closed_with_4002() {
    let gw = Gateway::start(&["--max-conns-per-uid", "2"]);
    let mut first = ws_bind(&gw, "tabs").await;
    let mut second = ws_bind(&gw, "tabs").await;
    let mut third = ws_connect(&gw.ws_url("/ws")).await;
    third.send(Message::text("tabs")).await.unwrap();
    assert_eq!(close_of(&mut first).await.0, 4002);
    let mut text = TextClient::connect(&gw).await;
    assert_eq!(text.send(r#"{"uid":"tabs"}"#).await, "ok");
    assert_eq!(next_text(&mut second).await, r#"{"uid":"tabs"}"#);
    assert_eq!(next_text(&mut third).await, r#"{"uid":"tabs"}"#);
}

#[tokio::test]
async fn the_text_allow_list_closes_other_peers_at_accept() {
    let gw = Gateway::start(&["--text-allow", "10.0.0.0/8"]);
    let mut text = TextClient::connect(&gw).await;
    text.write(b"{\"uid\":\"x\"}\n").await;
    assert!(text.is_closed().await);
    assert_eq!(
        gw.metric(r#"pushgate_text_disconnects_total{reason="not_allowed"}"#)
            .await,
        1.0
    );

    let gw = Gateway::start(&["--text-allow", "127.0.0.0/8,::1/128"]);
    let mut text = TextClient::connect(&gw).await;
    assert_eq!(text.send(r#"{"uid":"x"}"#).await, "fail");
}

#[tokio::test]
async fn a_text_port_open_to_the_world_is_warned_about() {
    let gw = Gateway::start(&["--text-listen", "0.0.0.0:0"]);
    gw.wait_logged("accepts pushes from any peer");
    gw.wait_logged("LEGACY MODE");
    gw.wait_logged("no API key configured");
}

#[tokio::test]
async fn origins_outside_the_allow_list_get_403() {
    let gw = Gateway::start(&[
        "--allowed-origins",
        "https://app.example,http://localhost:8080",
    ]);
    assert_eq!(
        ws_with_header(&gw, "origin", "https://evil.example")
            .await
            .err(),
        Some(403)
    );
    assert!(
        ws_with_header(&gw, "origin", "https://app.example")
            .await
            .is_ok()
    );
    assert!(
        ws_with_header(&gw, "origin", "http://localhost:8080")
            .await
            .is_ok()
    );
    // No Origin header (a non-browser client) passes.
    let _ws = ws_connect(&gw.ws_url("/ws")).await;
    // Two Origin headers are refused, not judged by the first.
    let mut req = gw.ws_url("/ws").into_client_request().unwrap();
    req.headers_mut()
        .append("origin", "https://app.example".parse().unwrap());
    req.headers_mut()
        .append("origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403)
        }
        other => panic!("two origins: {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn oversized_frames_close_with_1009_without_buffering() {
    let gw = Gateway::start(&["--max-message-bytes", "1024"]);
    let before = rss_kib(gw.pid());
    // A 100 MB frame is announced; only its header and a little data come.
    let mut s = raw_ws(&gw).await;
    s.write_all(&frame_header(0x1, 100 * 1024 * 1024))
        .await
        .unwrap();
    s.write_all(&[b'a'; 4096]).await.unwrap();
    assert_eq!(raw_close_code(&mut s).await, Some(1009));
    let after = rss_kib(gw.pid());
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    // A message over the limit in several small frames is refused too.
    let mut ws = ws_connect(&gw.ws_url("/ws")).await;
    ws.send(Message::text("x".repeat(2000))).await.unwrap();
    assert_eq!(close_of(&mut ws).await.0, 1009);
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007_and_a_binary_uid_with_1003() {
    let gw = Gateway::start(&[]);
    let mut s = raw_ws(&gw).await;
    s.write_all(&frame_header(0x1, 2)).await.unwrap();
    s.write_all(&[0xc3, 0x28]).await.unwrap();
    assert_eq!(raw_close_code(&mut s).await, Some(1007));

    let mut ws = ws_connect(&gw.ws_url("/ws")).await;
    ws.send(Message::binary(b"uid1".to_vec())).await.unwrap();
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1003);
    assert!(reason.contains("text frame"), "{reason}");
}

#[tokio::test]
async fn text_lines_over_the_limit_answer_fail_and_close() {
    let gw = Gateway::start(&["--max-line-bytes", "100"]);
    let mut text = TextClient::connect(&gw).await;
    assert_eq!(
        text.send(&format!(r#"{{"uid":"a","x":"{}"}}"#, "y".repeat(200)))
            .await,
        "fail"
    );
    assert!(text.is_closed().await);
    // A line that never ends is cut at the limit, not buffered.
    let mut text = TextClient::connect(&gw).await;
    text.write(&[b'x'; 500]).await;
    assert_eq!(text.answer().await, "fail");
    assert!(text.is_closed().await);
    assert_eq!(
        gw.metric(r#"pushgate_text_disconnects_total{reason="line_too_long"}"#)
            .await,
        2.0
    );
}

#[tokio::test]
async fn an_idle_text_connection_is_closed() {
    let gw = Gateway::start(&["--text-idle-timeout", "200ms"]);
    let mut text = TextClient::connect(&gw).await;
    text.write(b"{\"uid\":").await;
    assert!(text.is_closed().await);
    assert_eq!(
        gw.metric(r#"pushgate_text_disconnects_total{reason="idle_timeout"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let gw = Gateway::start(&["--header-read-timeout", "500ms"]);
    let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // One header byte every 100 ms, as a slowloris client does; the gateway
    // must close long before the 200 bytes are sent.
    let mut closed = false;
    for _ in 0..200 {
        if s.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(_)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(closed, "the gateway kept a slowloris connection open");
}

#[tokio::test]
async fn public_key_mode_accepts_es256_and_rs256_and_refuses_algorithm_confusion() {
    use jsonwebtoken::Algorithm;
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
    for (alg, private, public) in [
        (Algorithm::ES256, "ec-private.pem", "ec-public.pem"),
        (Algorithm::RS256, "rsa-private.pem", "rsa-public.pem"),
    ] {
        let public_path = format!("{keys}/{public}");
        let gw = Gateway::start(&["--jwt-public-key", &public_path]);
        let pem = std::fs::read(format!("{keys}/{private}")).unwrap();
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
            _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
        };
        let claims = json!({"sub": "pk", "exp": now() + 600});
        let good = encode(&Header::new(alg), &claims, &key).unwrap();
        let mut ws = ws_connect(&gw.ws_url(&format!("/ws?token={good}"))).await;
        gw.wait_bound("pk", 1).await;
        let mut text = TextClient::connect(&gw).await;
        assert_eq!(text.send(r#"{"uid":"pk"}"#).await, "ok");
        assert_eq!(next_text(&mut ws).await, r#"{"uid":"pk"}"#);
        // HS256 signed with the public key as the secret: the classic
        // algorithm-confusion attack.
        let public_bytes = std::fs::read(&public_path).unwrap();
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "mallory", "exp": now() + 600}),
            &EncodingKey::from_secret(&public_bytes),
        )
        .unwrap();
        let mut bad = ws_connect(&gw.ws_url(&format!("/ws?token={forged}"))).await;
        assert_eq!(
            close_of(&mut bad).await,
            (1008, "invalid token".to_string())
        );
        assert!(!online(&gw, "mallory").await);
    }
}

#[tokio::test]
async fn a_burst_of_concurrent_upgrades_cannot_exceed_the_global_cap() {
    let gw = Gateway::start(&["--max-connections", "5"]);
    let url = gw.ws_url("/ws");
    let attempts: Vec<_> = (0..40)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { tokio_tungstenite::connect_async(url).await })
        })
        .collect();
    let mut open = Vec::new();
    let mut refused = 0;
    for a in attempts {
        match a.await.unwrap() {
            Ok((ws, _)) => open.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 503 => {
                refused += 1
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(open.len(), 5, "admitted past the cap");
    assert_eq!(refused, 35);
}

/// A message over the default `--max-message-bytes` (64 KiB) that the
/// loopback cannot take whole while the gateway reads nothing (its receive
/// window is about 64 KiB, the client's send buffer is made small): the
/// client is still writing when the gateway refuses it, as a browser
/// sending 70 kB over a real network is. Without the staged close, the
/// gateway's reset fails that write (browsers report 1006, Python's
/// websocket-client `ConnectionResetError`) and ends the stream before the
/// close frame is read.
const OVER_LIMIT: usize = 512 * 1024;

/// A masked binary frame of `len` bytes, whole: what a client that does not
/// know the limit sends.
fn whole_frame(len: usize) -> Vec<u8> {
    let mut frame = frame_header(0x2, len as u64);
    frame.resize(frame.len() + len, b'x');
    frame
}

/// A TCP connection to the gateway's public port with a small send buffer,
/// so a large write waits on the gateway's reads.
async fn slow_sender(gw: &Gateway) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_send_buffer_size(4096).expect("SO_SNDBUF");
    socket.connect(gw.http).await.expect("connect")
}

/// A WebSocket client on a [`slow_sender`] connection to `/ws`, offering
/// `subprotocol` if given.
async fn slow_ws(gw: &Gateway, subprotocol: Option<&str>) -> Ws {
    let mut request = gw.ws_url("/ws").into_client_request().expect("a ws URL");
    if let Some(name) = subprotocol {
        let value = name.parse().expect("a header value");
        request
            .headers_mut()
            .insert("sec-websocket-protocol", value);
    }
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(slow_sender(gw).await);
    let (ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("ws connect");
    ws
}

/// A raw WebSocket (see `raw_ws`) on a [`slow_sender`] connection.
async fn slow_raw_ws(gw: &Gateway) -> TcpStream {
    let mut s = slow_sender(gw).await;
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        gw.http
    );
    s.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = s.read(&mut byte).await.expect("read");
        assert!(n > 0, "closed during the handshake");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    s
}

/// Writes `bytes` whole, then reads the close code, then checks that the
/// stream ends with the gateway's FIN rather than a reset.
async fn raw_refused(s: &mut TcpStream, bytes: &[u8]) -> (Option<u16>, bool) {
    s.write_all(bytes).await.expect("the whole write");
    let code = raw_close_code(s).await;
    let mut rest = [0u8; 64];
    let end = tokio::time::timeout(PATIENCE, s.read(&mut rest))
        .await
        .expect("timed out waiting for the end of the stream");
    (code, matches!(end, Ok(0)))
}

/// Sends `message` whole, then reads the close code, then checks that the
/// stream ends cleanly (the close handshake completes, no reset).
async fn refused(ws: &mut Ws, message: Message) -> (u16, bool) {
    ws.send(message).await.expect("the whole message is sent");
    let code = close_of(ws).await.0;
    let end = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("timed out waiting for the end of the stream");
    (code, end.is_none())
}

/// The plain TCP stream under a client, for bytes the client library
/// would not send or to see what has arrived without reading it.
fn tcp_of(ws: &mut Ws) -> &mut TcpStream {
    match ws.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(s) => s,
        _ => panic!("the tests connect without TLS"),
    }
}

#[tokio::test]
async fn a_whole_message_over_the_limit_gets_its_1009_not_a_reset() {
    let gw = Gateway::start(&[]);
    let mut v1 = slow_ws(&gw, None).await;
    v1.send(Message::text("big")).await.unwrap();
    gw.wait_bound("big", 1).await;
    let big = Message::text("x".repeat(OVER_LIMIT));
    assert_eq!(refused(&mut v1, big).await, (1009, true), "v1, bound");

    let mut v2 = slow_ws(&gw, Some(common::v2::V2)).await;
    let bind = json!({"uid": "a", "pad": "x".repeat(OVER_LIMIT)});
    let bind = Message::text(bind.to_string());
    assert_eq!(refused(&mut v2, bind).await, (1009, true), "v2 bind");

    let mut v2 = slow_ws(&gw, Some(common::v2::V2)).await;
    common::v2::send_json(&mut v2, &json!({"uid": "big2"})).await;
    assert_eq!(common::v2::next_frame(&mut v2).await["type"], "bound");
    let big = Message::binary(vec![0u8; OVER_LIMIT]);
    assert_eq!(refused(&mut v2, big).await, (1009, true), "v2, bound");

    let mut s = slow_raw_ws(&gw).await;
    let frame = whole_frame(OVER_LIMIT);
    assert_eq!(raw_refused(&mut s, &frame).await, (Some(1009), true));
}

#[tokio::test]
async fn bad_frames_with_more_behind_them_get_their_close_code_not_a_reset() {
    let gw = Gateway::start(&[]);
    let behind = whole_frame(OVER_LIMIT);
    // Text that is not UTF-8: 1007.
    let mut s = slow_raw_ws(&gw).await;
    let mut bytes = frame_header(0x1, 2);
    bytes.extend_from_slice(&[0xc3, 0x28]);
    bytes.extend_from_slice(&behind);
    assert_eq!(raw_refused(&mut s, &bytes).await, (Some(1007), true));

    // A frame with a reserved bit set breaks the protocol: 1002.
    let mut s = slow_raw_ws(&gw).await;
    let mut bytes = frame_header(0x1, 1);
    bytes[0] |= 0x40;
    bytes.push(b'a');
    bytes.extend_from_slice(&behind);
    assert_eq!(raw_refused(&mut s, &bytes).await, (Some(1002), true));

    // An empty uid (1008), then a frame over the limit while the gateway
    // waits for the client's close frame.
    let mut s = slow_raw_ws(&gw).await;
    let mut bytes = frame_header(0x1, 0);
    bytes.extend_from_slice(&behind);
    assert_eq!(raw_refused(&mut s, &bytes).await, (Some(1008), true));

    // v2: a bind frame that is not one (4007), the same way.
    let mut v2 = slow_ws(&gw, Some(common::v2::V2)).await;
    let mut bytes = frame_header(0x1, 4);
    bytes.extend_from_slice(b"nope");
    bytes.extend_from_slice(&behind);
    tcp_of(&mut v2)
        .write_all(&bytes)
        .await
        .expect("the whole write");
    assert_eq!(close_of(&mut v2).await.0, 4007);
    assert!(v2.next().await.is_none(), "v2: the stream ends cleanly");
}

#[tokio::test]
async fn a_close_frame_already_sent_survives_what_the_client_sends_after_it() {
    // The client writes before it reads the gateway's close frame, as any
    // busy client may: a message over the limit ends the gateway's wait for
    // the client's close frame with bytes still unread.
    let gw = Gateway::start(&["--bind-timeout", "200ms", "--max-conns-per-uid", "1"]);
    let mut v2 = slow_ws(&gw, Some(common::v2::V2)).await;
    arrived(&mut v2).await;
    let big = Message::binary(vec![0u8; OVER_LIMIT]);
    assert_eq!(refused(&mut v2, big).await, (4005, true), "v2 bind timeout");

    let mut kicked = slow_ws(&gw, None).await;
    kicked.send(Message::text("kicked")).await.unwrap();
    gw.wait_bound("kicked", 1).await;
    let (_, r) = post_json(&gw, "/disconnect", &json!({"uid": "kicked"})).await;
    assert_eq!(r["disconnected"], 1);
    arrived(&mut kicked).await;
    let big = Message::binary(vec![0u8; OVER_LIMIT]);
    assert_eq!(refused(&mut kicked, big).await, (4001, true), "kicked");

    let mut replaced = slow_ws(&gw, None).await;
    replaced.send(Message::text("tab")).await.unwrap();
    gw.wait_bound("tab", 1).await;
    let mut newer = ws_connect(&gw.ws_url("/ws")).await;
    newer.send(Message::text("tab")).await.unwrap();
    arrived(&mut replaced).await;
    let big = Message::binary(vec![0u8; OVER_LIMIT]);
    assert_eq!(refused(&mut replaced, big).await, (4002, true), "replaced");

    // Last: the drain of a shutdown (1001).
    let mut drained = slow_ws(&gw, None).await;
    drained.send(Message::text("drained")).await.unwrap();
    gw.wait_bound("drained", 1).await;
    gw.signal("TERM");
    arrived(&mut drained).await;
    let big = Message::binary(vec![0u8; OVER_LIMIT]);
    assert_eq!(refused(&mut drained, big).await, (1001, true), "drained");
}

/// Waits until the gateway's next frame has arrived at `ws`'s socket,
/// without reading it.
async fn arrived(ws: &mut Ws) {
    let mut first = [0u8; 1];
    let seen = tokio::time::timeout(PATIENCE, tcp_of(ws).peek(&mut first))
        .await
        .expect("timed out waiting for the gateway's frame");
    assert_eq!(seen.ok(), Some(1), "the stream ended instead");
}
