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

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const UID: &str = "uid1";

/// The node driver and, through it, one chromium with its tabs.
struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Events read but not yet taken by a test.
    pending: Vec<Value>,
    /// The driver's stderr so far, for failure messages.
    stderr: Arc<Mutex<String>>,
    /// The driver's child processes (chromium), killed on drop if still there.
    browser_pids: Vec<u32>,
    /// Tabs opened so far.
    tabs: u64,
}

impl Browser {
    /// Starts the driver for the gateway `gw` and waits until the browser is up.
    async fn start(gw: &Gateway) -> Browser {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
        assert!(
            dir.join("node_modules/playwright-core").is_dir(),
            "tests/browser/node_modules is missing: run scripts/install-test-deps.sh"
        );
        let chromium = chromium_path();
        let mut child = Command::new("node")
            .arg(dir.join("drive.js"))
            .arg(gw.http.port().to_string())
            .env("CHROMIUM_PATH", &chromium)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node (is nodejs installed?)");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("piped stderr");
        let stderr2 = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                stderr2
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut browser = Browser {
            child,
            stdin,
            stdout,
            pending: vec![],
            stderr,
            browser_pids: vec![],
            tabs: 0,
        };
        browser.event(|e| e["event"] == "ready").await;
        browser.browser_pids = children_of(browser.child.id().expect("node pid"));
        assert!(
            !browser.browser_pids.is_empty(),
            "the driver started no browser process"
        );
        browser
    }

    async fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write a command to the driver");
        stdin.flush().await.expect("flush");
    }

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

    /// The first event (pending or new) matching `want`; panics on an error
    /// event, the end of the driver's output, or after [`PATIENCE`].
    async fn event(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.pending.iter().position(&want) {
            return self.pending.remove(i);
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match tokio::time::timeout(left, self.stdout.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(_) => panic!(
                    "the driver ended; events {:?}; stderr: {}",
                    self.pending,
                    self.stderr.lock().unwrap()
                ),
                Err(_) => panic!(
                    "timed out waiting for an event; events {:?}; stderr: {}",
                    self.pending,
                    self.stderr.lock().unwrap()
                ),
            };
            let e: Value = serde_json::from_str(&line)
                .unwrap_or_else(|err| panic!("driver printed {line:?}: {err}"));
            assert_ne!(
                e["event"],
                "error",
                "driver error: {e}; stderr: {}",
                self.stderr.lock().unwrap()
            );
            if want(&e) {
                return e;
            }
            self.pending.push(e);
        }
    }

    /// Asks the driver to close the browser and exit; checks that it did,
    /// that no message arrived that the test did not take, and that no
    /// browser process is left.
    async fn quit(mut self) {
        self.command("quit").await;
        drop(self.stdin.take());
        let mut rest = std::mem::take(&mut self.pending);
        while let Ok(Ok(Some(line))) = tokio::time::timeout(PATIENCE, self.stdout.next_line()).await
        {
            rest.push(serde_json::from_str(&line).expect("json event"));
        }
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("the driver did not exit")
            .expect("wait");
        assert!(
            status.success(),
            "driver exited with {status}; stderr: {}",
            self.stderr.lock().unwrap()
        );
        let unexpected: Vec<_> = rest.iter().filter(|e| e["event"] == "message").collect();
        assert!(
            unexpected.is_empty(),
            "messages nobody expected: {unexpected:?}"
        );
        wait_until("the browser exiting with its driver", || async {
            let alive: Vec<_> = self
                .browser_pids
                .iter()
                .filter(|&&pid| alive(pid))
                .collect();
            alive.is_empty().then_some(()).ok_or(alive)
        })
        .await;
    }
}

impl Drop for Browser {
    /// On every path (a failed assertion included) nothing is left running.
    /// The driver first gets SIGTERM, on which it closes the browser (and
    /// removes its profile directory); if it is still there after a few
    /// seconds it is killed (chromium exits when its DevTools pipe closes),
    /// and so is any browser process still there.
    fn drop(&mut self) {
        if let (Ok(None), Some(pid)) = (self.child.try_wait(), self.child.id()) {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.start_kill();
        }
        for &pid in &self.browser_pids {
            if alive(pid) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// Debian's chromium: `/usr/bin/chromium`, or what `PATH` has.
fn chromium_path() -> PathBuf {
    let default = PathBuf::from("/usr/bin/chromium");
    if default.exists() {
        return default;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("chromium"))
                .find(|p| p.exists())
        })
        .expect("chromium is not installed: run scripts/install-test-deps.sh")
}

/// `/proc/PID/stat` split into (command name, fields after it).
fn stat(pid: u32) -> Option<(String, Vec<String>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let rest = stat[close + 1..]
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    Some((comm, rest))
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(_, rest)| rest.first().is_some_and(|s| s != "Z"))
}

/// The live children of `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let ppid = pid.to_string();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| stat(p).is_some_and(|(_, rest)| rest.get(1) == Some(&ppid)))
        .filter(|&p| alive(p))
        .collect()
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
    let mut browser = Browser::start(&gw).await;

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
