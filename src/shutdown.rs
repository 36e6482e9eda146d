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
    services: TaskTracker,
    pacer: Arc<Pacer>,
}

/// Spreads WebSocket closes over time during a drain, so a rolling deploy
/// does not make every client reconnect in the same second.
///
/// The pace is fixed when the drain begins, from the sessions open then (N)
/// and the time the drain has (T, three quarters of the shutdown timeout):
/// one close every `min(1 / rate, T / N)`. So the drain is never slower than
/// `--drain-rate`, and when N closes at that rate would not fit in T it goes
/// faster, still evenly, instead of closing the rest in one burst at T.
#[derive(Debug, Default)]
struct Pacer {
    /// Closes per second; 0 closes everything at once.
    rate: u32,
    /// Slots go no later than this after the drain starts, so the drain
    /// finishes inside the shutdown timeout (T above).
    last_slot: Duration,
    /// When the drain began and the interval between closes.
    plan: OnceLock<(Instant, Duration)>,
    issued: AtomicU64,
}

impl Pacer {
    /// The interval between closes for `sessions` sessions to close.
    fn interval(&self, sessions: usize) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        let at_rate = Duration::from_secs(1) / self.rate;
        match u32::try_from(sessions) {
            Ok(0) => at_rate,
            Ok(n) => at_rate.min(self.last_slot / n),
            // More sessions than a u32 counts: as fast as the timer goes.
            Err(_) => Duration::ZERO,
        }
    }

    fn plan(&self, sessions: usize) -> (Instant, Duration) {
        *self
            .plan
            .get_or_init(|| (Instant::now(), self.interval(sessions)))
    }
}

impl Shutdown {
    /// A shutdown that has not begun, closing all WebSockets at once.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// A shutdown that closes WebSockets at `rate` per second at least (0:
    /// all at once), the last of them at three quarters of `timeout` at the
    /// latest, which leaves the rest of it for close handshakes and HTTP
    /// requests. See [`Shutdown::begin_with`] for how the pace is chosen.
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

    /// Starts the drain phase, pacing closes at `--drain-rate` (as for an
    /// unknown number of sessions). Idempotent.
    pub fn begin(&self) {
        self.begin_with(0);
    }

    /// Starts the drain phase with `sessions` WebSockets to close (0:
    /// unknown). Their closes are spaced evenly, one every
    /// `min(1 / rate, T / sessions)` where T is three quarters of the
    /// shutdown timeout: at `--drain-rate` when they fit in T at that pace,
    /// faster when they would not. Only the first call counts.
    pub fn begin_with(&self, sessions: usize) {
        self.pacer.plan(sessions);
        self.drain.cancel();
    }

    /// When this session should close, once the drain has begun: the next
    /// free slot of the pace fixed by [`Shutdown::begin_with`], never later
    /// than three quarters of the shutdown timeout (a session that was not
    /// counted then still closes in time). The first goes at once; call it
    /// once per session.
    pub fn close_slot(&self) -> Instant {
        let (started, interval) = self.pacer.plan(0);
        if interval.is_zero() {
            return started;
        }
        let n = self.pacer.issued.fetch_add(1, Ordering::Relaxed);
        let offset = interval.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
        started + offset.min(self.pacer.last_slot)
    }

    /// Whether the drain phase has begun.
    #[inline]
    pub fn is_draining(&self) -> bool {
        self.drain.is_cancelled()
    }

    /// Resolves when the drain phase begins.
    #[inline]
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

    /// Tracks the services around the sessions: HTTP connections, the
    /// accept loops (HTTP and text port) and the broker's bus task. The stop
    /// waits for them.
    pub fn services(&self) -> &TaskTracker {
        &self.services
    }

    /// Runs both phases, bounded by `timeout` in all, pacing the closes of
    /// `sessions` WebSockets (see [`Shutdown::begin_with`]); returns whether
    /// everything ended in time. What is left is abandoned (closed when the
    /// runtime drops it).
    pub async fn run(&self, timeout: Duration, sessions: usize) -> bool {
        let deadline = Instant::now() + timeout;
        self.begin_with(sessions);
        self.sessions.close();
        let drained = tokio::time::timeout_at(deadline, self.sessions.wait())
            .await
            .is_ok();
        self.stop.cancel();
        self.services.close();
        let stopped = tokio::time::timeout_at(deadline, self.services.wait())
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
        assert!(!s.run(Duration::from_secs(3), 1).await);
        assert!(s.is_draining());
        stuck.abort();
    }

    fn slots_of(s: &Shutdown, n: usize) -> Vec<Duration> {
        let start = Instant::now();
        (0..n).map(|_| s.close_slot() - start).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn closes_go_at_the_drain_rate_when_they_fit_in_the_time() {
        // 200 closes at 100/s take 2 s, inside 3/4 of 4 s.
        let s = Shutdown::with_drain_rate(100, Duration::from_secs(4));
        s.begin_with(200);
        let slots = slots_of(&s, 200);
        assert_eq!(slots[0], Duration::ZERO);
        assert_eq!(slots[100], Duration::from_secs(1));
        assert_eq!(slots[199], Duration::from_millis(1990));
    }

    #[tokio::test(start_paused = true)]
    async fn closes_that_would_not_fit_are_spread_evenly_over_the_time_left() {
        // 1000 closes at 100/s would take 10 s; 3 s are available, so one
        // every 3 ms, and no slot is shared.
        let s = Shutdown::with_drain_rate(100, Duration::from_secs(4));
        s.begin_with(1000);
        let slots = slots_of(&s, 1000);
        assert_eq!(slots[1], Duration::from_millis(3));
        assert_eq!(slots[999], Duration::from_millis(2997));
        assert!(
            slots
                .windows(2)
                .all(|w| w[1] - w[0] == Duration::from_millis(3))
        );
        // The case: 200 clients, 20/s, 4 s timeout: no 0.1 s window
        // holds more than 15 % of them.
        let s = Shutdown::with_drain_rate(20, Duration::from_secs(4));
        s.begin_with(200);
        let slots = slots_of(&s, 200);
        for first in &slots {
            let window = slots
                .iter()
                .filter(|t| **t >= *first && **t - *first < Duration::from_millis(100))
                .count();
            assert!(window <= 30, "{window} closes within 0.1 s of {first:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_not_counted_at_the_start_still_close_by_the_cap() {
        let s = Shutdown::with_drain_rate(100, Duration::from_secs(4));
        s.begin_with(10);
        let slots = slots_of(&s, 1000);
        assert_eq!(slots[9], Duration::from_millis(90));
        assert_eq!(
            slots[999],
            Duration::from_secs(3),
            "capped at 3/4 of the timeout"
        );
        let unknown = Shutdown::with_drain_rate(100, Duration::from_secs(4));
        unknown.begin();
        assert_eq!(slots_of_one(&unknown, 101), Duration::from_secs(1));
        let at_once = Shutdown::with_drain_rate(0, Duration::from_secs(4));
        at_once.begin_with(1000);
        assert_eq!(at_once.close_slot(), at_once.close_slot());
    }

    fn slots_of_one(s: &Shutdown, n: usize) -> Duration {
        slots_of(s, n)[n - 1]
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_see_the_drain() {
        let s = Shutdown::new();
        let s2 = s.clone();
        s.sessions().spawn(async move { s2.draining().await });
        assert!(s.run(Duration::from_secs(3), 1).await);
    }
}
