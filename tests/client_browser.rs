//! The JavaScript client (clients/js) in a real browser: Debian's headless
//! chromium driven by `tests/browser/client-drive.js` (playwright-core). The
//! page lives on its own origin and loads the client with one script tag
//! from the gateway (`/pushgate.js`), as README shows; every event the
//! client emits comes back as a JSON line.
//!
//! Nodes go away the way they do in production: behind a load balancer
//! ([`Balancer`], as a Kubernetes Service) that stops sending new
//! connections to a node, which is then killed, drained or restarted.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::balancer::Balancer;
use common::browser::Browser;
use common::*;
use serde_json::{Value, json};

/// The client pages, in tabs of one browser.
struct Pages {
    browser: Browser,
}

impl Pages {
    async fn start() -> Pages {
        Pages {
            browser: Browser::start("client-drive.js", &[]).await,
        }
    }

    /// Opens a page whose client connects to `gateway` with `options`;
    /// returns its tab number.
    async fn open(&mut self, gateway: &str, options: Value) -> u64 {
        self.open_with(gateway, options, &[], false).await
    }

    async fn open_with(
        &mut self,
        gateway: &str,
        options: Value,
        tokens: &[String],
        block_websocket: bool,
    ) -> u64 {
        let cmd = json!({
            "cmd": "open",
            "gateway": gateway,
            "options": options,
            "tokens": tokens,
            "blockWebSocket": block_websocket,
        });
        self.browser.command(&cmd.to_string()).await;
        self.browser.tabs += 1;
        self.browser.tabs
    }

    /// The detail of the next `name` event of `tab`'s client.
    async fn next(&mut self, tab: u64, name: &str) -> Value {
        let e = self
            .browser
            .event(|e| e["tab"] == tab && (e["event"] == name || e["event"] == "page-error"))
            .await;
        assert_ne!(e["event"], "page-error", "{e}");
        e["detail"].clone()
    }

    /// The data of the next `message` of `tab`, with its offset.
    async fn message(&mut self, tab: u64) -> (Value, Option<u64>) {
        let m = self.next(tab, "message").await;
        (m["data"].clone(), m["offset"].as_u64())
    }

    /// Events of `tab` received so far but not taken, named `name`.
    fn pending(&self, tab: u64, name: &str) -> Vec<Value> {
        self.browser
            .pending
            .iter()
            .filter(|e| e["tab"] == tab && e["event"] == name)
            .cloned()
            .collect()
    }

    async fn quit(self) {
        self.browser.quit().await;
    }
}

async fn push(gw: &Gateway, uid: &str, data: Value) -> Value {
    let (status, answer) = post_json(gw, "/push", &json!({"uid": uid, "data": data})).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

fn history_node(redis: &Redis) -> Gateway {
    let url = redis.url();
    Gateway::start(&[
        "--redis-url",
        url.as_str(),
        "--redis-probe-interval",
        "300ms",
        "--redis-timeout",
        "1s",
        "--history",
        "--shutdown-timeout",
        "3s",
    ])
}

/// Two nodes with history in one Redis, and a page connected to node A
/// through the balancer.
struct TwoNodes {
    _redis: Redis,
    a: Gateway,
    b: Gateway,
    lb: Balancer,
    pages: Pages,
    tab: u64,
}

impl TwoNodes {
    async fn with_page(uid: &str) -> TwoNodes {
        let redis = Redis::start();
        let (a, b) = (history_node(&redis), history_node(&redis));
        a.wait_redis_up().await;
        b.wait_redis_up().await;
        let lb = Balancer::start(vec![a.http]).await;
        let mut pages = Pages::start().await;
        let tab = pages.open(&lb.url(), json!({"uid": uid})).await;
        pages.next(tab, "connected").await;
        TwoNodes {
            _redis: redis,
            a,
            b,
            lb,
            pages,
            tab,
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_page_using_the_client_receives_pushes_and_broadcasts() {
    let gw = Gateway::start(&[]);
    let mut pages = Pages::start().await;
    let tab = pages
        .open(&gw.public_url(""), json!({"uid": "alice"}))
        .await;
    let connected = pages.next(tab, "connected").await;
    assert_eq!(connected["transport"], "websocket", "{connected}");
    assert_eq!(connected["uid"], "alice");
    assert_eq!(connected["history"], false);

    let mut text = TextClient::connect(&gw).await;
    assert_eq!(text.send(r#"{"uid":"alice","percent":"88%"}"#).await, "ok");
    assert_eq!(
        pages.message(tab).await.0,
        json!({"uid": "alice", "percent": "88%"})
    );
    push(&gw, "alice", json!("plain text")).await;
    assert_eq!(pages.message(tab).await.0, json!("plain text"));
    let (status, _) = post_json(&gw, "/broadcast", &json!({"data": {"all": true}})).await;
    assert_eq!(status, 200);
    assert_eq!(
        pages.next(tab, "broadcast").await["data"],
        json!({"all": true})
    );
    pages.quit().await;
}

#[tokio::test]
async fn the_page_resumes_on_another_node_when_its_node_is_killed() {
    let TwoNodes {
        _redis,
        mut a,
        b,
        lb,
        mut pages,
        tab,
    } = TwoNodes::with_page("pat").await;
    for n in 1..=2 {
        push(&a, "pat", json!({"n": n})).await;
        assert_eq!(pages.message(tab).await, (json!({"n": n}), Some(n)));
    }

    // Node A dies; the balancer has no node for a moment, so the pushes
    // meanwhile can only reach the page through history.
    lb.set(vec![]);
    a.signal("KILL");
    a.wait_exit(PATIENCE);
    let gone = pages.next(tab, "disconnected").await;
    assert_eq!(gone["willReconnect"], true, "{gone}");
    for n in 3..=4 {
        let answer = push(&b, "pat", json!({"n": n})).await;
        assert_eq!(answer["delivered"], 0, "the page is offline: {answer}");
    }
    lb.set(vec![b.http]);
    let back = pages.next(tab, "connected").await;
    assert_eq!(back["recovered"], true, "{back}");
    for n in 3..=4 {
        assert_eq!(pages.message(tab).await, (json!({"n": n}), Some(n)));
    }
    push(&b, "pat", json!({"n": 5})).await;
    assert_eq!(pages.message(tab).await, (json!({"n": 5}), Some(5)));
    assert!(pages.pending(tab, "gap").is_empty());
    pages.quit().await;
}

#[tokio::test]
async fn a_restarted_single_node_makes_the_page_report_that_it_could_not_recover() {
    let mut first = Gateway::start(&["--history", "--shutdown-timeout", "3s"]);
    let lb = Balancer::start(vec![first.http]).await;
    let mut pages = Pages::start().await;
    let tab = pages.open(&lb.url(), json!({"uid": "sam"})).await;
    pages.next(tab, "connected").await;
    push(&first, "sam", json!("before")).await;
    assert_eq!(pages.message(tab).await, (json!("before"), Some(1)));

    // History in memory goes with the process: the new one has a new epoch.
    lb.set(vec![]);
    first.signal("TERM");
    assert!(first.wait_exit(PATIENCE).success());
    let second = Gateway::start(&["--history"]);
    lb.set(vec![second.http]);
    let gap = pages.next(tab, "gap").await;
    assert_eq!(gap["reason"], "epoch_changed", "{gap}");
    push(&second, "sam", json!("after")).await;
    assert_eq!(pages.message(tab).await, (json!("after"), Some(1)));
    pages.quit().await;
}

#[tokio::test]
async fn a_drained_node_hands_the_page_to_another_without_loss() {
    let TwoNodes {
        _redis,
        mut a,
        b,
        lb,
        mut pages,
        tab,
    } = TwoNodes::with_page("dee").await;
    push(&a, "dee", json!(1)).await;
    assert_eq!(pages.message(tab).await, (json!(1), Some(1)));

    // A rolling deploy: node A leaves the balancer and drains.
    lb.set(vec![b.http]);
    a.signal("TERM");
    let gone = pages.next(tab, "disconnected").await;
    assert_eq!(gone["code"], 1001, "{gone}");
    assert_eq!(gone["willReconnect"], true, "{gone}");
    for n in 2..=4 {
        push(&b, "dee", json!(n)).await;
    }
    assert!(a.wait_exit(PATIENCE).success());
    for n in 2..=4 {
        assert_eq!(pages.message(tab).await, (json!(n), Some(n)));
    }
    let back = pages.pending(tab, "connected");
    assert!(
        back.iter().all(|c| c["recovered"] != false),
        "a resume failed: {back:?}"
    );
    assert!(pages.pending(tab, "gap").is_empty());
    pages.quit().await;
}

#[tokio::test]
async fn with_websocket_blocked_the_client_falls_back_to_sse_and_receives() {
    let gw = Gateway::start(&["--history"]);
    let mut pages = Pages::start().await;
    let tab = pages
        .open_with(
            &gw.public_url(""),
            json!({"uid": "eve", "sseAfterFailures": 1}),
            &[],
            true,
        )
        .await;
    let connected = pages.next(tab, "connected").await;
    assert_eq!(connected["transport"], "sse", "{connected}");
    push(&gw, "eve", json!({"via": "sse"})).await;
    assert_eq!(pages.message(tab).await, (json!({"via": "sse"}), Some(1)));
    let (status, _) = post_json(&gw, "/broadcast", &json!({"data": "to all"})).await;
    assert_eq!(status, 200);
    assert_eq!(pages.next(tab, "broadcast").await["data"], "to all");
    pages.quit().await;
}

#[tokio::test]
async fn an_expiring_token_is_refreshed_through_the_provider_without_the_page_noticing() {
    let gw = Gateway::start(&["--jwt-secret", SECRET, "--jwt-leeway", "0s", "--history"]);
    let mut pages = Pages::start().await;
    // Made once the browser is up: the first token must outlive the first
    // bind (a second or so) and then expire while the page is connected.
    let short = jwt(json!({"sub": "tom", "exp": now() + 5}));
    let long = jwt(json!({"sub": "tom", "exp": now() + 3600}));
    let tab = pages
        .open_with(&gw.public_url(""), json!({}), &[short, long], false)
        .await;
    pages.next(tab, "connected").await;
    push(&gw, "tom", json!("first")).await;
    assert_eq!(pages.message(tab).await, (json!("first"), Some(1)));
    // The first token expires: the gateway closes with 4004, the client
    // asks the provider for a new token and resumes at once.
    let again = pages.next(tab, "connected").await;
    assert_eq!(again["recovered"], true, "{again}");
    push(&gw, "tom", json!("second")).await;
    assert_eq!(pages.message(tab).await, (json!("second"), Some(2)));
    let stops: Vec<Value> = pages
        .pending(tab, "disconnected")
        .into_iter()
        .filter(|d| d["willReconnect"] != true)
        .collect();
    assert!(stops.is_empty(), "the client gave up: {stops:?}");
    assert!(pages.pending(tab, "gap").is_empty());
    pages.quit().await;
}
