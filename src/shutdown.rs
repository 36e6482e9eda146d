//! Graceful shutdown.
//!
//! A shutdown runs in two phases, each with its own token and task tracker:
//!
//! 1. **Drain** ([`Shutdown::begin`]): `/readyz` turns 503, WebSocket upgrades
//!    are refused, the text port stops accepting, every WebSocket is closed
//!    with 1001 and every text connection answers the lines it already has.
//!    The HTTP listener stays up meanwhile, so probes get an honest 503 and
//!    REST requests in flight are answered.
//! 2. **Stop**: once every session task has ended, the HTTP listener closes
//!    and each HTTP connection finishes its request in flight.
//!
//! Upgraded WebSocket connections are invisible to hyper's graceful shutdown
//! (tokio-rs/axum#3003), which is why every session is started through
//! [`Shutdown::sessions`] here rather than left to axum.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shared shutdown state. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    drain: CancellationToken,
    stop: CancellationToken,
    sessions: TaskTracker,
    http: TaskTracker,
    pacer: Arc<Pacer>,
}

/// Spreads WebSocket closes over time during a drain, so a rolling deploy
/// does not make every client reconnect in the same second.
#[derive(Debug, Default)]
struct Pacer {
    /// Closes per second; 0 closes everything at once.
    rate: u32,
    /// Slots go no later than this after the drain starts, so the drain
    /// finishes inside the shutdown timeout.
    last_slot: Duration,
    started: OnceLock<Instant>,
    issued: AtomicU64,
}

impl Shutdown {
    /// A shutdown that has not begun, closing all WebSockets at once.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// A shutdown that closes `rate` WebSockets per second (0: all at once),
    /// the last of them at three quarters of `timeout` at the latest, which
    /// leaves the rest of it for close handshakes and HTTP requests.
    pub fn with_drain_rate(rate: u32, timeout: Duration) -> Shutdown {
        Shutdown {
            pacer: Arc::new(Pacer {
                rate,
                last_slot: timeout.mul_f64(0.75),
                ..Pacer::default()
            }),
            ..Shutdown::default()
        }
    }

    /// Starts the drain phase. Idempotent.
    pub fn begin(&self) {
        self.pacer.started.get_or_init(Instant::now);
        self.drain.cancel();
    }

    /// When this session should close, once the drain has begun: the next
    /// free slot at `--drain-rate` closes per second. The first few go at
    /// once; call it once per session.
    pub fn close_slot(&self) -> Instant {
        let started = *self.pacer.started.get_or_init(Instant::now);
        if self.pacer.rate == 0 {
            return started;
        }
        let n = self.pacer.issued.fetch_add(1, Ordering::Relaxed);
        let offset = Duration::from_secs_f64(n as f64 / f64::from(self.pacer.rate));
        started + offset.min(self.pacer.last_slot)
    }

    /// Whether the drain phase has begun.
    pub fn is_draining(&self) -> bool {
        self.drain.is_cancelled()
    }

    /// Resolves when the drain phase begins.
    pub async fn draining(&self) {
        self.drain.cancelled().await
    }

    /// Resolves when HTTP connections must finish.
    pub async fn stopping(&self) {
        self.stop.cancelled().await
    }

    /// Tracks WebSocket and text-port sessions: the drain waits for them.
    pub fn sessions(&self) -> &TaskTracker {
        &self.sessions
    }

    /// Tracks HTTP connections and accept loops: the stop waits for them.
    pub fn http(&self) -> &TaskTracker {
        &self.http
    }

    /// Runs both phases, bounded by `timeout` in all; returns whether
    /// everything ended in time. What is left is abandoned (closed when the
    /// runtime drops it).
    pub async fn run(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.begin();
        self.sessions.close();
        let drained = tokio::time::timeout_at(deadline, self.sessions.wait())
            .await
            .is_ok();
        self.stop.cancel();
        self.http.close();
        let stopped = tokio::time::timeout_at(deadline, self.http.wait())
            .await
            .is_ok();
        drained && stopped
    }
}

/// Installs the SIGINT and SIGTERM handlers at once, and returns a future
/// that resolves on either (SIGTERM is what Kubernetes sends).
///
/// Installing is done here, not when the future is first polled: a signal
/// that arrives between this call and the first poll (say, right after the
/// `listening` line) then starts the drain rather than killing the process
/// with the default action. SIGHUP is taken over here too (key files are
/// re-read on it, see `reload`), so from this call on it never kills the
/// process either.
pub fn signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let (term, interrupt, hangup) = {
        use tokio::signal::unix::{SignalKind, signal};
        let install = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for {name}");
                None
            }
        };
        (
            install(SignalKind::terminate(), "SIGTERM"),
            install(SignalKind::interrupt(), "SIGINT"),
            install(SignalKind::hangup(), "SIGHUP"),
        )
    };
    async move {
        #[cfg(unix)]
        {
            // Held so SIGHUP keeps its handler; the reload task has its own.
            let _hangup = hangup;
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(interrupt) => tracing::info!("SIGINT received, shutting down"),
                _ = wait(term) => tracing::info!("SIGTERM received, shutting down"),
            }
        }
        #[cfg(not(unix))]
        {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::error!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
            tracing::info!("Ctrl-C received, shutting down");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn run_gives_up_at_the_deadline() {
        let s = Shutdown::new();
        let stuck = s.sessions().spawn(std::future::pending::<()>());
        assert!(!s.run(Duration::from_secs(3)).await);
        assert!(s.is_draining());
        stuck.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn close_slots_are_spread_at_the_rate_and_capped() {
        let s = Shutdown::with_drain_rate(100, Duration::from_secs(4));
        s.begin();
        let start = Instant::now();
        let slots: Vec<Duration> = (0..1000).map(|_| s.close_slot() - start).collect();
        assert_eq!(slots[0], Duration::ZERO);
        assert_eq!(slots[100], Duration::from_secs(1));
        assert_eq!(
            slots[999],
            Duration::from_secs(3),
            "capped at 3/4 of the timeout"
        );
        let at_once = Shutdown::with_drain_rate(0, Duration::from_secs(4));
        at_once.begin();
        assert_eq!(at_once.close_slot(), at_once.close_slot());
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_see_the_drain() {
        let s = Shutdown::new();
        let s2 = s.clone();
        s.sessions().spawn(async move { s2.draining().await });
        assert!(s.run(Duration::from_secs(3)).await);
    }
}
