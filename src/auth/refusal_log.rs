//! The "token refused" log lines, limited per second.

use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::TokenError;

/// Rate-limits the "token refused" log lines: a fixed one-second window
/// with at most [`RefusalLog::PER_SECOND`] lines; the first line of a later
/// window says how many were left out before it.
pub(super) struct RefusalLog {
    window: Mutex<Window>,
}

struct Window {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

impl RefusalLog {
    /// Refusal lines logged per second at most.
    const PER_SECOND: u32 = 10;

    pub(super) fn new() -> RefusalLog {
        RefusalLog {
            window: Mutex::new(Window {
                start: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether this refusal may be logged now, and how many were left out
    /// since the last one that was.
    fn admit(&self, now: Instant) -> Option<u64> {
        // A poisoned lock only means another thread panicked mid-count; the
        // counts are still usable.
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_duration_since(w.start) >= Duration::from_secs(1) {
            w.start = now;
            w.logged = 0;
        }
        if w.logged >= Self::PER_SECOND {
            w.suppressed = w.suppressed.saturating_add(1);
            return None;
        }
        w.logged += 1;
        Some(std::mem::take(&mut w.suppressed))
    }

    pub(super) fn log(&self, error: &TokenError, peer: Option<IpAddr>) {
        let Some(suppressed) = self.admit(Instant::now()) else {
            return;
        };
        let peer = PeerField(peer);
        if suppressed > 0 {
            tracing::warn!(
                reason = %error,
                %peer,
                suppressed,
                "token refused ({suppressed} earlier refusals not logged: rate limit)"
            );
        } else {
            tracing::warn!(reason = %error, %peer, "token refused");
        }
    }
}

/// A peer address for a log field; `-` when the socket no longer knows it.
pub(super) struct PeerField(pub(super) Option<IpAddr>);

impl fmt::Display for PeerField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => f.write_str("-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_lines_are_limited_per_second_and_count_what_they_left_out() {
        let log = RefusalLog::new();
        let start = Instant::now();
        let admitted = (0..1000).filter(|_| log.admit(start).is_some()).count();
        assert_eq!(admitted, RefusalLog::PER_SECOND as usize);
        let later = start + Duration::from_secs(1);
        assert_eq!(
            log.admit(later),
            Some(1000 - u64::from(RefusalLog::PER_SECOND))
        );
        assert_eq!(log.admit(later), Some(0));
    }
}
