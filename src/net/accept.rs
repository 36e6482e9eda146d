//! What an accept loop does when `accept` fails.

use std::io;
use std::time::Duration;

/// How long an accept loop pauses after a failed `accept`: long enough not
/// to spin, short enough that a freed descriptor is used at once.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Out of file descriptors (or a similar transient failure) would otherwise
/// spin the accept loop at full speed; logs `e`, pauses briefly, and lets
/// the caller retry.
pub async fn error_pause(e: &io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}
