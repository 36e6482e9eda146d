//! The seed's browser code, unchanged but for its port, in a real browser:
//! Debian's headless chromium, driven by `tests/browser/drive.js`
//! (playwright-core, never a downloaded browser). The page
//! (`tests/browser/seed.html`) opens `ws://127.0.0.1:PORT`, sends `uid1` on
//! open and records every `e.data`; the driver prints each as a JSON line,
//! and the test reads them from its stdout. Nothing waits on a sleep.
//!
//! Needs `chromium`, `node` and `npm ci --prefix tests/browser`, which
//! `scripts/install-test-deps.sh` installs when missing.

mod common;

use common::browser::Browser;
use common::*;
use serde_json::Value;

const UID: &str = "uid1";

/// Starts `tests/browser/drive.js` for the gateway `gw`.
async fn seed_browser(gw: &Gateway) -> Browser {
    Browser::start("drive.js", &[gw.http.port().to_string()]).await
}

impl Browser {
    /// Opens a new tab with the seed's page; returns its number.
    async fn open_tab(&mut self) -> u64 {
        self.command("open").await;
        self.tabs += 1;
        let tab = self.tabs;
        self.event(|e| e["tab"] == tab && e["event"] == "open")
            .await;
        tab
    }

    /// Closes tab `tab` as a person closing it would.
    async fn close_tab(&mut self, tab: u64) {
        self.command(&format!("close {tab}")).await;
        self.event(|e| e["tab"] == tab && e["event"] == "closed")
            .await;
    }

    /// The next message tab `tab` received (its `e.data`).
    async fn message(&mut self, tab: u64) -> String {
        let e = self
            .event(|e| e["tab"] == tab && e["event"] == "message")
            .await;
        e["data"]
            .as_str()
            .unwrap_or_else(|| panic!("e.data is not a string: {e}"))
            .to_owned()
    }
}

async fn text_push(gw: &Gateway, line: &str) {
    let mut text = TextClient::connect(gw).await;
    assert_eq!(text.send(line).await, "ok", "text push {line}");
}

async fn rest_push(gw: &Gateway, body: &str) -> Value {
    reqwest::Client::new()
        .post(gw.url("/push"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("POST /push")
        .json()
        .await
        .expect("json answer")
}

#[tokio::test]
async fn the_seeds_page_in_chromium_receives_text_and_rest_pushes_in_every_tab() {
    let gw = Gateway::start(&[]);
    let mut browser = seed_browser(&gw).await;

    // One tab: the seed's page binds uid1 by its first frame.
    let first = browser.open_tab().await;
    gw.wait_bound(UID, 1).await;

    // Through the text port, as the seed's PHP backend writes it: the page
    // gets the line itself, escapes and all.
    let line = r#"{"uid":"uid1","percent":"88%","msg":"\u4f60\u597d a\/b"}"#;
    text_push(&gw, line).await;
    assert_eq!(browser.message(first).await, line);

    // Through REST: a string `data` arrives as that text, an object as its
    // JSON text exactly as written in the request.
    let r = rest_push(&gw, r#"{"uid":"uid1","data":"plain text: 你好 \"q\""}"#).await;
    assert_eq!(r["delivered"], 1, "{r}");
    assert_eq!(browser.message(first).await, r#"plain text: 你好 "q""#);
    let r = rest_push(
        &gw,
        r#"{"uid":"uid1","data":{"percent": "99%", "msg":"你好 a/b"}}"#,
    )
    .await;
    assert_eq!(r["delivered"], 1, "{r}");
    assert_eq!(
        browser.message(first).await,
        r#"{"percent": "99%", "msg":"你好 a/b"}"#
    );

    // A second tab of the same uid: both get every push.
    let second = browser.open_tab().await;
    gw.wait_bound(UID, 2).await;
    let line = r#"{"uid":"uid1","tabs":2}"#;
    text_push(&gw, line).await;
    let r = rest_push(&gw, r#"{"uid":"uid1","data":"rest to both"}"#).await;
    assert_eq!(r["delivered"], 2, "{r}");
    for tab in [first, second] {
        assert_eq!(browser.message(tab).await, line, "tab {tab}");
        assert_eq!(browser.message(tab).await, "rest to both", "tab {tab}");
    }

    // The older tab closes; the newer one keeps receiving (the seed's map
    // dropped the uid here, and the newer tab silently stopped receiving).
    browser.close_tab(first).await;
    gw.wait_bound(UID, 1).await;
    let line = r#"{"uid":"uid1","after":"first tab closed"}"#;
    text_push(&gw, line).await;
    assert_eq!(browser.message(second).await, line);
    let r = rest_push(&gw, r#"{"uid":"uid1","data":"still here"}"#).await;
    assert_eq!(r["delivered"], 1, "{r}");
    assert_eq!(browser.message(second).await, "still here");
    // Nothing else came first: a marker is the very next message.
    let marker = r#"{"uid":"uid1","marker":true}"#;
    text_push(&gw, marker).await;
    assert_eq!(browser.message(second).await, marker);

    // Closing the browser unbinds the last tab.
    browser.quit().await;
    gw.wait_bound(UID, 0).await;
    let mut text = TextClient::connect(&gw).await;
    assert_eq!(text.send(r#"{"uid":"uid1","gone":true}"#).await, "fail");
}
