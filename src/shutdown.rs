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
}

impl Shutdown {
    /// A shutdown that has not begun.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Starts the drain phase. Idempotent.
    pub fn begin(&self) {
        self.drain.cancel();
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

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what Kubernetes sends).
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        _ = term => tracing::info!("SIGTERM received, shutting down"),
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
    async fn sessions_see_the_drain() {
        let s = Shutdown::new();
        let s2 = s.clone();
        s.sessions().spawn(async move { s2.draining().await });
        assert!(s.run(Duration::from_secs(3)).await);
    }
}
