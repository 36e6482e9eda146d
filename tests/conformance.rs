//! HTTP and WebSocket conformance on the wire (issue 12, sections 3 and 6):
//! the upgrade's method and key (RFC 6455 §4.2.1), the headers 426 and 503
//! answers carry (RFC 9110 §15.5.22, §10.2.3), refusals that leave a body
//! unread (RFC 9112 §9.6), and the deadline on a request body.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` as is and reads the answer's status line and headers
/// (lower-cased names), leaving the stream after them.
async fn raw_request(addr: std::net::SocketAddr, request: &[u8]) -> (String, TcpStream) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let head = read_head(&mut s).await;
    (head, s)
}

/// Reads one answer's head, byte by byte so nothing after it is consumed.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let read = async {
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            let n = s.read(&mut b).await.expect("read");
            assert!(n > 0, "closed before an answer: {head:?}");
            head.push(b[0]);
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("no answer in time");
    String::from_utf8_lossy(&head).to_ascii_lowercase()
}

/// The value of header `name` (lower case) in `head`, if present.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Whether the peer closes `s` (EOF after any body bytes) within `limit`.
async fn closes_within(s: &mut TcpStream, limit: Duration) -> bool {
    let drain = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, drain).await.is_ok()
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade_request(method: &str, keys: &[&str]) -> String {
    let mut req = format!(
        "{method} /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\n"
    );
    for key in keys {
        req.push_str(&format!("Sec-WebSocket-Key: {key}\r\n"));
    }
    req.push_str("\r\n");
    req
}

#[tokio::test]
async fn an_upgrade_must_be_a_get_with_one_sixteen_byte_key() {
    let gw = Gateway::start(&[]);
    let cases: [(&str, &str, Vec<&str>); 6] = [
        ("HEAD", "method", vec![KEY]),
        ("POST", "method", vec![KEY]),
        ("GET", "Sec-WebSocket-Key", vec!["not-a-key"]),
        (
            "GET",
            "Sec-WebSocket-Key",
            vec!["AAAAAAAAAAAAAAAAAAAAAAAAAAAA"],
        ),
        ("GET", "Sec-WebSocket-Key", vec!["dGhlIHNhbXBsZSBub25jZQ"]),
        ("GET", "Sec-WebSocket-Key", vec![KEY, KEY]),
    ];
    for (method, named, keys) in cases {
        let (head, mut s) = raw_request(gw.http, upgrade_request(method, &keys).as_bytes()).await;
        assert!(
            head.starts_with("http/1.1 400") || head.starts_with("http/1.1 405"),
            "{method} {keys:?}: {head}"
        );
        assert_eq!(
            header(&head, "content-type"),
            Some("application/problem+json"),
            "{head}"
        );
        if method != "HEAD" {
            let len: usize = header(&head, "content-length")
                .and_then(|v| v.parse().ok())
                .expect("content-length");
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).await.unwrap();
            let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let detail = problem["detail"].as_str().unwrap_or_default();
            assert!(detail.contains(named), "{method} {keys:?}: {detail}");
        }
    }
    // RFC 6455's own example key still upgrades, and the session works.
    let (head, _s) = raw_request(gw.http, upgrade_request("GET", &[KEY]).as_bytes()).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let _ws = ws_bind(&gw, "after-bad-keys").await;
}

#[tokio::test]
async fn a_426_names_the_protocol_and_version_to_upgrade_to() {
    let gw = Gateway::start(&[]);
    // Another WebSocket version, and a connection that cannot be upgraded
    // (HTTP/1.0).
    for (http, version) in [("1.1", "8"), ("1.0", "13")] {
        let req = format!(
            "GET /ws HTTP/{http}\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: {version}\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
        );
        let (head, _s) = raw_request(gw.http, req.as_bytes()).await;
        assert!(head.starts_with(&format!("http/{http} 426")), "{head}");
        assert_eq!(header(&head, "upgrade"), Some("websocket"), "{head}");
        assert_eq!(header(&head, "connection"), Some("upgrade"), "{head}");
        assert_eq!(header(&head, "sec-websocket-version"), Some("13"), "{head}");
    }
}

/// The status and `Retry-After` of a WebSocket upgrade's answer.
async fn upgrade_refusal(gw: &Gateway) -> (u16, Option<String>) {
    match tokio_tungstenite::connect_async(gw.ws_url("/ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            resp.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ),
        other => panic!("expected a refusal: {other:?}"),
    }
}

#[tokio::test]
async fn every_503_says_when_to_retry() {
    let five = Some("5".to_owned());
    // The connection caps.
    let gw = Gateway::start(&["--max-connections", "1"]);
    let _held = ws_connect(&gw.ws_url("/ws")).await;
    assert_eq!(upgrade_refusal(&gw).await, (503, five.clone()));
    let gw = Gateway::start(&["--max-conns-per-ip", "1"]);
    let _held = ws_connect(&gw.ws_url("/ws")).await;
    assert_eq!(upgrade_refusal(&gw).await, (503, five.clone()));
    let gw = Gateway::start(&["--max-connects-per-ip", "1"]);
    drop(ws_connect(&gw.ws_url("/ws")).await);
    assert_eq!(upgrade_refusal(&gw).await, (503, five.clone()));

    // Redis unavailable, in REST answers.
    let mut redis = Redis::start();
    let gw = Gateway::start(&["--redis-url", &redis.url(), "--require-redis"]);
    gw.wait_redis_up().await;
    redis.kill();
    gw.wait_metric("pushgate_redis_up", 0.0).await;
    let http = reqwest::Client::new();
    for (path, body) in [
        ("/push", json!({"uid": "elsewhere", "data": 1})),
        ("/broadcast", json!({"data": 1})),
        ("/disconnect", json!({"uid": "elsewhere"})),
    ] {
        let r = http.post(gw.url(path)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 503, "{path}");
        assert_eq!(r.headers()["retry-after"], "5", "{path}");
    }
    for path in ["/users/elsewhere", "/stats", "/readyz"] {
        let r = reqwest::get(gw.url(path)).await.unwrap();
        assert_eq!(r.status(), 503, "{path}");
        assert_eq!(r.headers()["retry-after"], "5", "{path}");
    }

    // Draining: a client holds the drain open by not answering its close.
    let mut gw = Gateway::start(&["--shutdown-timeout", "15s"]);
    let mut held = ws_bind(&gw, "held").await;
    gw.signal("TERM");
    assert_eq!(
        next_close(&mut held).await.map(|f| u16::from(f.code)),
        Some(1001)
    );
    assert_eq!(upgrade_refusal(&gw).await, (503, five.clone()));
    let r = reqwest::get(gw.url("/readyz")).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5", "readyz while draining");
    drop(held);
    assert!(gw.wait_exit(PATIENCE).success());
}

#[tokio::test]
async fn a_body_declared_over_the_limit_is_refused_before_it_is_sent() {
    let gw = Gateway::start(&["--max-body-bytes", "1000"]);
    let req = b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Content-Length: 2000000\r\nExpect: 100-continue\r\n\r\n";
    let (head, mut s) = raw_request(gw.api, req).await;
    assert!(
        head.starts_with("http/1.1 413"),
        "the first answer must be the 413, not 100 Continue: {head}"
    );
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
    assert!(closes_within(&mut s, PATIENCE).await);
}

#[tokio::test]
async fn every_refusal_that_leaves_a_body_unread_closes_the_connection_and_says_so() {
    let keyed = Gateway::start(&["--max-body-bytes", "1000", "--api-key", "k"]);
    // Without API keys, an API listener on a non-loopback address refuses
    // REST: 403.
    let open = Gateway::start(&["--api-listen", "0.0.0.0:0"]);
    let auth = "Authorization: Bearer k\r\n";
    let json = "Content-Type: application/json\r\n";
    // (gateway, status, method, path, extra headers, declared length); each
    // sends 10 bytes of its body and waits for the answer.
    let cases = [
        (&keyed, 401, "POST", "/push", json.to_owned(), 100),
        (&open, 403, "POST", "/push", json.to_owned(), 100),
        (
            &keyed,
            404,
            "POST",
            "/nowhere",
            format!("{auth}{json}"),
            100,
        ),
        (&keyed, 405, "PUT", "/push", format!("{auth}{json}"), 100),
        (
            &keyed,
            415,
            "POST",
            "/push",
            format!("{auth}Content-Type: text/plain\r\n"),
            100,
        ),
        (&keyed, 413, "POST", "/push", format!("{auth}{json}"), 5000),
    ];
    for (gw, status, method, path, headers, length) in cases {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {length}\r\n\r\n{{\"uid\":\"a"
        );
        let (head, mut s) = raw_request(gw.api, req.as_bytes()).await;
        let what = format!("{method} {path} ({status})");
        assert!(
            head.starts_with(&format!("http/1.1 {status}")),
            "{what}: {head}"
        );
        assert_eq!(header(&head, "connection"), Some("close"), "{what}: {head}");
        assert!(closes_within(&mut s, PATIENCE).await, "{what}: left open");
    }
    // A chunked body over the limit: refused once the limit is read, the
    // rest of it unread.
    let req = format!(
        "POST /push HTTP/1.1\r\nHost: x\r\n{auth}{json}Transfer-Encoding: chunked\r\n\r\n\
         1388\r\n{}",
        "x".repeat(2000)
    );
    let (head, mut s) = raw_request(keyed.http, req.as_bytes()).await;
    assert!(head.starts_with("http/1.1 413"), "chunked: {head}");
    assert_eq!(
        header(&head, "connection"),
        Some("close"),
        "chunked: {head}"
    );
    assert!(closes_within(&mut s, PATIENCE).await, "chunked: left open");
    // A request whose body was read keeps its connection for the next one.
    let body = r#"{"uid":"a","data":1}"#;
    let push = format!(
        "POST /push HTTP/1.1\r\nHost: x\r\n{auth}{json}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (head, mut s) = raw_request(keyed.http, push.as_bytes()).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_ne!(header(&head, "connection"), Some("close"), "{head}");
    let len: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .expect("content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_head(&mut s).await.starts_with("http/1.1 200"));
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_408_and_the_connection_closes() {
    let gw = Gateway::start(&["--body-read-timeout", "500ms", "--api-key", "k"]);
    let req = b"POST /push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n\
                Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"uid\":\"a";
    let start = Instant::now();
    let (head, mut s) = raw_request(gw.http, req).await;
    assert!(head.starts_with("http/1.1 408"), "{head}");
    assert_eq!(
        header(&head, "content-type"),
        Some("application/problem+json"),
        "{head}"
    );
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
    assert!(closes_within(&mut s, PATIENCE).await, "left open");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}
