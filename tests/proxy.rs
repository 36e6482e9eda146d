//! A proxy on the same host must not turn the internet into an API caller.
//!
//! A real nginx (Debian's `nginx-light`, with the plain WebSocket snippet
//! from nginx's documentation: no forwarding header) and a TCP forwarder
//! (what socat, stunnel or HAProxy in tcp mode do) are put in front of the
//! public listener of a gateway in its default configuration. Through them
//! WebSocket works and the REST API does not exist. Also: the client address
//! is taken only from the one header the trusted proxy writes.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// An nginx started by the test, as the test's user, everything it writes
/// in a temporary directory; killed on drop.
struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    /// Proxies `127.0.0.1:PORT` to `upstream` with the WebSocket snippet of
    /// nginx's documentation (<https://nginx.org/en/docs/http/websocket.html>).
    fn start(upstream: std::net::SocketAddr) -> Nginx {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("pushgate-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("nginx dir");
        let d = dir.display();
        let conf = format!(
            "worker_processes 1;\n\
             error_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {d}/body;\n\
               proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n\
               uwsgi_temp_path {d}/uwsgi;\n\
               scgi_temp_path {d}/scgi;\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 location / {{\n\
                   proxy_pass http://{upstream};\n\
                   proxy_http_version 1.1;\n\
                   proxy_set_header Upgrade $http_upgrade;\n\
                   proxy_set_header Connection \"upgrade\";\n\
                 }}\n\
               }}\n\
             }}\n"
        );
        let file = dir.join("nginx.conf");
        std::fs::write(&file, conf).expect("write nginx.conf");
        let bin = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|b| Command::new(b).arg("-v").output().is_ok())
            .expect("nginx (scripts/install-test-deps.sh installs nginx-light)");
        let child = Command::new(bin)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&file)
            .arg("-g")
            // One process (no master and workers): killing it on drop leaves
            // no orphaned worker behind.
            .arg(format!(
                "daemon off; master_process off; pid {d}/nginx.pid;"
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let nginx = Nginx { child, port, dir };
        wait_until_blocking("nginx answering", || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .map(drop)
                .map_err(|e| {
                    let log = std::fs::read_to_string(nginx.dir.join("error.log"));
                    (e, log.unwrap_or_default())
                })
        });
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP forwarder on a free loopback port to `upstream`, copying bytes both
/// ways and adding nothing; it stops with the test's runtime.
async fn tcp_forwarder(upstream: std::net::SocketAddr) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}

/// Asserts that through `front` (a proxy to the public listener) the REST
/// API does not exist, and that a WebSocket through it binds and receives a
/// push sent on the API listener.
async fn front_serves_websocket_and_no_api(gw: &Gateway, front: std::net::SocketAddr, uid: &str) {
    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://{front}/broadcast"))
        .json(&json!({"data": "from the internet"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "POST /broadcast through {front}");
    let r = http
        .get(format!("http://{front}/users/{uid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "GET /users through {front}");
    let r = http
        .get(format!("http://{front}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "GET /metrics through {front}");

    let mut ws = ws_connect(&format!("ws://{front}/ws")).await;
    ws.send(Message::text(uid)).await.unwrap();
    gw.wait_bound(uid, 1).await;
    let (status, _) = post_json(gw, "/push", &json!({"uid": uid, "data": "via proxy"})).await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut ws).await, "via proxy");
}

#[tokio::test]
async fn through_nginx_on_the_same_host_the_default_api_is_not_reachable() {
    let _port = DEFAULT_API_PORT.lock().await;
    let gw = Gateway::start_with_default_api_listener(&[]);
    let nginx = Nginx::start(gw.http);
    let front = std::net::SocketAddr::from(([127, 0, 0, 1], nginx.port));
    front_serves_websocket_and_no_api(&gw, front, "via-nginx").await;
}

#[tokio::test]
async fn through_a_tcp_forwarder_on_the_same_host_the_default_api_is_not_reachable() {
    let _port = DEFAULT_API_PORT.lock().await;
    let gw = Gateway::start_with_default_api_listener(&[]);
    let front = tcp_forwarder(gw.http).await;
    front_serves_websocket_and_no_api(&gw, front, "via-forwarder").await;
}

#[tokio::test]
async fn a_client_cannot_pick_its_address_behind_a_proxy_that_writes_forwarded() {
    // The proxy (the test, from 127.0.0.1) writes `Forwarded`; a client's
    // own X-Forwarded-For passes through it untouched and must not count.
    let gw = Gateway::start(&[
        "--trusted-proxies",
        "127.0.0.1/32",
        "--client-ip-header",
        "forwarded",
        "--max-conns-per-ip",
        "1",
    ]);
    let upgrade = |forged: &str| {
        let mut req = gw.ws_url("/ws").into_client_request().unwrap();
        let h = req.headers_mut();
        h.insert("forwarded", "for=203.0.113.7".parse().unwrap());
        h.insert("x-forwarded-for", forged.parse().unwrap());
        tokio_tungstenite::connect_async(req)
    };
    let _first = upgrade("198.51.100.1").await.expect("first connection");
    match upgrade("198.51.100.2").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503, "the per-IP cap of 203.0.113.7")
        }
        other => panic!(
            "a forged X-Forwarded-For dodged the cap: {:?}",
            other.map(|_| ())
        ),
    }
    gw.wait_metric(
        r#"pushgate_rejected_upgrades_total{reason="per_ip_cap"}"#,
        1.0,
    )
    .await;
    // Another real client address behind the same proxy still gets in.
    let mut req = gw.ws_url("/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("forwarded", "for=203.0.113.8".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
}
