//! A session's deadlines: one timer serves them all, set to whichever comes
//! first.

use std::time::Duration;

use tokio::time::Instant;

/// When the single timer of a session must fire next: the bind deadline
/// (unbound), the pong deadline or the next ping, or the token's expiry.
pub(super) fn next_wake(
    bound: bool,
    bind_deadline: Instant,
    next_ping: Instant,
    pong_due: Option<Instant>,
    expires: Option<Instant>,
) -> Instant {
    let mut wake = pong_due.unwrap_or(next_ping);
    if !bound {
        wake = wake.min(bind_deadline);
    }
    if let Some(expires) = expires {
        wake = wake.min(expires);
    }
    wake
}

/// `now + wait`, or a deadline that never comes in practice when the sum
/// overflows the clock: `wait` may come from a peer's token, where an `exp`
/// centuries away must not panic the session.
pub(super) fn after(now: Instant, wait: Duration) -> Instant {
    /// What tokio itself uses for "never" (about 30 years).
    const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);
    now.checked_add(wait)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_past_the_clocks_end_is_far_away_never_a_panic() {
        let now = Instant::now();
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(after(now, Duration::MAX) >= now + Duration::from_secs(86_400 * 365));
    }
}
