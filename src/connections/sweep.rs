//! The history sweep: a single node's history drops messages past their time
//! to live, and stream records left empty and untouched, even when no push
//! or read comes to do it (a quiet node must still give its memory back and
//! count its `ttl` evictions).

use std::time::{Duration, Instant};

use super::ConnectionMap;
use crate::shutdown::Shutdown;

/// How often the sweep runs: a message outlives its time to live by at most
/// this (a read never returns one that has: it drops its own stream's first).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Most evictions one hold of the table lock does: pushes and binds wait for
/// at most this much work (microseconds), however much came due at once.
const SWEEP_CHUNK: usize = 1024;

impl ConnectionMap {
    /// Runs the sweep every second (`SWEEP_INTERVAL`) until the stop phase of
    /// `shutdown`. Returns at once when this node keeps no history in memory
    /// (history off, or kept in the broker's backend).
    pub async fn run_history_sweep(self, shutdown: Shutdown) {
        if self.lock().history.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.stopping() => return,
                _ = tick.tick() => {}
            }
            while self.sweep_history(Instant::now()) {
                // Let pushers and binds take the lock between chunks.
                tokio::task::yield_now().await;
            }
        }
    }

    /// One chunk of the sweep at `now`, under the table lock; returns whether
    /// more is due.
    pub fn sweep_history(&self, now: Instant) -> bool {
        match self.lock().history.as_mut() {
            Some(history) => history.expire(now, SWEEP_CHUNK),
            None => false,
        }
    }
}
