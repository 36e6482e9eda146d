//! A rolling deploy and a crash lose nothing: three real nodes sharing a
//! real redis-server with history on, v2 clients spread over them, a steady
//! stream of numbered pushes through every node's text port and REST, while
//! each node in turn is drained (SIGTERM), exits and starts again, and then
//! one node is killed with SIGKILL (no drain) and started again.
//!
//! Every client reconnects to any live node with `since` and must end with
//! every push that was answered `ok` or stored (REST answered with an
//! offset), in order, none twice, each resume answered `recovered: true`.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

/// Uids pushed to, each by its own sequential pusher.
const UIDS: usize = 6;
/// Clients per uid (on different nodes).
const CLIENTS_PER_UID: usize = 2;
/// Pause between two pushes of one pusher: 6 pushers at 20 ms make about
/// 300 pushes a second in all.
const PACE: Duration = Duration::from_millis(20);

/// Where a live node listens; `None` while it is down or draining (as a
/// Kubernetes Service removes a terminating pod's endpoint).
#[derive(Clone, Copy)]
struct Addrs {
    http: SocketAddr,
    text: SocketAddr,
    api: SocketAddr,
}

type Book = Arc<Mutex<Vec<Option<Addrs>>>>;

fn addrs(gw: &Gateway) -> Addrs {
    Addrs {
        http: gw.http,
        text: gw.text,
        api: gw.api,
    }
}

/// The `n`-th live node, counting round the book from `n`.
fn pick(book: &Book, n: usize) -> Option<Addrs> {
    let book = book.lock().unwrap();
    (0..book.len()).find_map(|i| book[(n + i) % book.len()])
}

fn start_node(redis: &Redis, id: &str) -> Gateway {
    let url = redis.url();
    Gateway::start(&[
        "--redis-url",
        url.as_str(),
        "--node-id",
        id,
        "--redis-probe-interval",
        "300ms",
        "--redis-timeout",
        "1s",
        "--history",
        "--history-size",
        "100000",
        "--history-ttl",
        "10m",
        "--shutdown-timeout",
        "3s",
        "--drain-rate",
        "20",
    ])
}

/// What one pusher learnt: the numbers it must find at every client of its
/// uid (answered `ok`, or stored), and the last number it sent.
#[derive(Default)]
struct Pushed {
    required: BTreeSet<u64>,
    sent: u64,
}

/// Pushes 1, 2, 3, … to `uid`, each after the previous one's answer,
/// alternating nodes and between the text port and REST, until `stop`.
async fn pusher(book: Book, uid: String, stop: CancellationToken, out: Arc<Mutex<Pushed>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut seq = 0u64;
    while !stop.is_cancelled() {
        seq += 1;
        let Some(node) = pick(&book, seq as usize) else {
            continue;
        };
        let body = json!({"uid": uid, "seq": seq});
        let required = if seq.is_multiple_of(2) {
            push_text(node.text, &body).await == Some("ok".to_owned())
        } else {
            let answer = http
                .post(format!("http://{}/push", node.api))
                .json(&body_rest(&uid, &body))
                .send()
                .await;
            match answer {
                Ok(r) if r.status().is_success() => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["delivered"].as_u64() > Some(0) || stored(&v)),
                // Unknown fate (the node went away mid-request): the
                // number may arrive or not, but never out of order.
                _ => false,
            }
        };
        {
            let mut out = out.lock().unwrap();
            out.sent = seq;
            if required {
                out.required.insert(seq);
            }
        }
        // Pacing, not synchronisation: a steady rate rather than a burst.
        tokio::select! {
            _ = tokio::time::sleep(PACE) => {}
            _ = stop.cancelled() => {}
        }
    }
}

fn body_rest(uid: &str, data: &Value) -> Value {
    json!({"uid": uid, "data": data})
}

/// Whether a REST push answer says the push was stored in history.
fn stored(answer: &Value) -> bool {
    answer["offset"].as_u64().is_some() || answer["remote_deliveries"].as_u64() > Some(0)
}

/// One push line on a fresh text-port connection; its answer, if any.
async fn push_text(addr: SocketAddr, body: &Value) -> Option<String> {
    let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let (r, mut w) = stream.into_split();
    w.write_all(format!("{body}\n").as_bytes()).await.ok()?;
    let mut lines = BufReader::new(r).lines();
    tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .ok()?
        .ok()?
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    /// Push numbers in arrival order.
    numbers: Vec<u64>,
    /// Every problem found on the way (a gap, a duplicate offset, a resume
    /// that did not recover).
    faults: Vec<String>,
    /// Binds answered (the first one before any push is sent).
    connects: usize,
}

/// A v2 client of `uid` that reconnects to the next live node with `since`
/// whenever its connection ends, until `stop`.
async fn client(
    book: Book,
    uid: String,
    first: usize,
    stop: CancellationToken,
    seen: Arc<Mutex<Seen>>,
) {
    let mut since: Option<(u64, String)> = None;
    let mut attempt = first;
    while !stop.is_cancelled() {
        attempt += 1;
        let Some(node) = pick(&book, attempt) else {
            tokio::task::yield_now().await;
            continue;
        };
        let mut request = format!("ws://{}/ws", node.http)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "pushgate.v2".parse().unwrap());
        let Ok(Ok((mut ws, _))) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio_tungstenite::connect_async(request),
        )
        .await
        else {
            continue;
        };
        let mut bind = json!({"uid": uid});
        if let Some((offset, epoch)) = &since {
            bind["since"] = json!({"offset": offset, "epoch": epoch});
        }
        if ws.send(Message::text(bind.to_string())).await.is_err() {
            continue;
        }
        loop {
            let frame = tokio::select! {
                f = ws.next() => f,
                _ = stop.cancelled() => return,
            };
            let text = match frame {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            let mut seen = seen.lock().unwrap();
            match v["type"].as_str() {
                Some("bound") => {
                    seen.connects += 1;
                    if since.is_some() && v["recovered"] != json!(true) {
                        seen.faults.push(format!("resume not recovered: {v}"));
                    }
                    if since.is_none() || v["recovered"] != json!(true) {
                        since = Some((
                            v["offset"].as_u64().unwrap_or(0),
                            v["epoch"].as_str().unwrap_or("").to_owned(),
                        ));
                    }
                }
                Some("message") => {
                    let offset = v["offset"].as_u64().unwrap_or(0);
                    let epoch = v["epoch"].as_str().unwrap_or("").to_owned();
                    if let Some((last, last_epoch)) = &since
                        && *last_epoch == epoch
                        && offset != last + 1
                    {
                        seen.faults.push(format!("offset {offset} after {last}"));
                    }
                    since = Some((offset, epoch));
                    seen.numbers.push(v["data"]["seq"].as_u64().unwrap());
                }
                _ => {}
            }
        }
    }
}

/// Waits until `n` more pushes in all have been sent.
async fn wait_pushes(pushed: &[Arc<Mutex<Pushed>>], n: u64) {
    let total = || pushed.iter().map(|p| p.lock().unwrap().sent).sum::<u64>();
    let target = total() + n;
    wait_until(&format!("{n} more pushes"), || async {
        let t = total();
        (t >= target).then_some(()).ok_or(t)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_deploy_and_a_crash_lose_nothing_for_resuming_clients() {
    let redis = Redis::start();
    let mut nodes: Vec<Gateway> = (0..3)
        .map(|i| start_node(&redis, &format!("n{i}")))
        .collect();
    for n in &nodes {
        n.wait_redis_up().await;
    }
    let book: Book = Arc::new(Mutex::new(nodes.iter().map(|n| Some(addrs(n))).collect()));
    let stop_push = CancellationToken::new();
    let stop_clients = CancellationToken::new();
    let uids: Vec<String> = (0..UIDS).map(|i| format!("user{i}")).collect();

    let mut seen = Vec::new();
    let mut tasks = Vec::new();
    for (u, uid) in uids.iter().enumerate() {
        for c in 0..CLIENTS_PER_UID {
            let s = Arc::new(Mutex::new(Seen::default()));
            seen.push((u, s.clone()));
            tasks.push(tokio::spawn(client(
                book.clone(),
                uid.clone(),
                u + c,
                stop_clients.clone(),
                s,
            )));
        }
    }
    wait_until("every client connected", || async {
        let n = seen
            .iter()
            .filter(|(_, s)| s.lock().unwrap().connects > 0)
            .count();
        (n == seen.len()).then_some(()).ok_or(n)
    })
    .await;
    let pushed: Vec<Arc<Mutex<Pushed>>> = uids.iter().map(|_| Arc::default()).collect();
    let mut pushers = Vec::new();
    for (uid, out) in uids.iter().zip(&pushed) {
        pushers.push(tokio::spawn(pusher(
            book.clone(),
            uid.clone(),
            stop_push.clone(),
            out.clone(),
        )));
    }
    wait_pushes(&pushed, 200).await;

    // The rolling deploy: each node in turn leaves rotation, drains, exits
    // cleanly and comes back (with new ports, as a new pod would).
    let drains = Arc::new(AtomicUsize::new(0));
    for (i, node) in nodes.iter_mut().enumerate() {
        book.lock().unwrap()[i] = None;
        node.signal("TERM");
        let status = node.wait_exit(Duration::from_secs(20));
        assert!(status.success(), "node {i} exited with {status:?}");
        drains.fetch_add(1, Ordering::Relaxed);
        *node = start_node(&redis, &format!("n{i}"));
        node.wait_redis_up().await;
        book.lock().unwrap()[i] = Some(addrs(node));
        wait_pushes(&pushed, 150).await;
    }
    // A crash: no drain, the clients' sockets just die.
    book.lock().unwrap()[0] = None;
    nodes[0].signal("KILL");
    nodes[0].wait_exit(Duration::from_secs(20));
    wait_pushes(&pushed, 100).await;
    nodes[0] = start_node(&redis, "n0");
    nodes[0].wait_redis_up().await;
    book.lock().unwrap()[0] = Some(addrs(&nodes[0]));
    wait_pushes(&pushed, 150).await;

    stop_push.cancel();
    for p in pushers {
        p.await.unwrap();
    }
    // Every client catches up with everything its uid was required to get.
    for (u, s) in &seen {
        let required = pushed[*u].lock().unwrap().required.clone();
        wait_until("the client has every required push", || async {
            let got: BTreeSet<u64> = s.lock().unwrap().numbers.iter().copied().collect();
            let missing: Vec<u64> = required.difference(&got).copied().take(10).collect();
            missing.is_empty().then_some(()).ok_or(missing)
        })
        .await;
    }
    stop_clients.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    let mut total = 0;
    for (u, s) in &seen {
        let s = s.lock().unwrap();
        assert!(s.faults.is_empty(), "uid {u}: {:?}", s.faults);
        assert!(
            s.numbers.windows(2).all(|w| w[0] < w[1]),
            "uid {u}: out of order or duplicated: {:?}",
            s.numbers.windows(2).find(|w| w[0] >= w[1])
        );
        assert!(
            s.connects >= 2,
            "uid {u}: the client never had to reconnect"
        );
        total += s.numbers.len();
    }
    let required: usize = pushed
        .iter()
        .map(|p| p.lock().unwrap().required.len())
        .sum();
    assert!(
        required > 500,
        "only {required} pushes were answered ok or stored"
    );
    eprintln!(
        "{} drains, {required} required pushes, {total} deliveries, {} connects",
        drains.load(Ordering::Relaxed),
        seen.iter()
            .map(|(_, s)| s.lock().unwrap().connects)
            .sum::<usize>()
    );
}
