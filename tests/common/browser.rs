//! A node driver of Debian's headless chromium (playwright-core, never a
//! downloaded browser), for the browser tests: it is started with a script
//! in `tests/browser/`, takes commands on stdin and prints events as JSON
//! lines on stdout, which [`Browser::event`] waits for. Nothing waits on a
//! sleep.
//!
//! Needs `chromium`, `node` and `npm ci --prefix tests/browser`, which
//! `scripts/install-test-deps.sh` installs when missing.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::{PATIENCE, wait_until};

/// The node driver and, through it, one chromium with its tabs.
pub struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Events read but not yet taken by a test.
    pub pending: Vec<Value>,
    /// The driver's stderr so far, for failure messages.
    stderr: Arc<Mutex<String>>,
    /// The driver's child processes (chromium), killed on drop if still there.
    browser_pids: Vec<u32>,
    /// Tabs opened so far (the test's own count).
    pub tabs: u64,
}

impl Browser {
    /// Starts `tests/browser/<driver>` with `args` under node and waits
    /// until it prints `{"event":"ready"}` (its browser is up).
    pub async fn start(driver: &str, args: &[String]) -> Browser {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
        assert!(
            dir.join("node_modules/playwright-core").is_dir(),
            "tests/browser/node_modules is missing: run scripts/install-test-deps.sh"
        );
        let chromium = chromium_path();
        let mut child = Command::new("node")
            .arg(dir.join(driver))
            .args(args)
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

    /// Writes one command line to the driver.
    pub async fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write a command to the driver");
        stdin.flush().await.expect("flush");
    }
}

impl Browser {
    /// The first event (pending or new) matching `want`; panics on an error
    /// event, the end of the driver's output, or after [`PATIENCE`].
    pub async fn event(&mut self, want: impl Fn(&Value) -> bool) -> Value {
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
    pub async fn quit(mut self) {
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
pub fn chromium_path() -> PathBuf {
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
