//! A handle on the HTTP connection a streamed answer runs on, for the rare
//! answer that must end it: a stream whose client stopped reading.
//!
//! Whoever writes a streamed body to the socket (hyper, or the accept
//! loop's own writer for a connection that opens with a stream, see
//! `http::serve`) does so only as fast as the socket takes it, and while
//! the socket is full it polls nothing else of that answer, so a body
//! cannot end a stuck connection by itself. The accept loop therefore
//! names, in each [`ConnectionAbort`], the task that serves the connection:
//! [`ConnectionAbort::abort`] drops that task, and with it the socket.
//!
//! It also carries the other direction: a writer that gave up on a stuck
//! socket says so ([`ConnectionAbort::fail_write`]) before it drops the
//! body, so the stream counts the end as a failed write rather than as a
//! client that left.
//!
//! Only requests for a streamed path are handed one, so a REST request
//! costs nothing for it, and the connection task waits on nothing for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::task::AbortHandle;

/// Ends the HTTP connection it was handed with; see the module docs.
/// Cheap to clone (one `Arc`).
#[derive(Clone, Debug, Default)]
pub struct ConnectionAbort(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// The task serving the connection, named once it is spawned.
    task: OnceLock<AbortHandle>,
    /// [`ConnectionAbort::abort`] was called (perhaps before the task was
    /// named: [`ConnectionAbort::bind`] then aborts it at once).
    aborted: AtomicBool,
    /// The connection's writer gave up: a write did not get through in
    /// time.
    write_failed: AtomicBool,
}

impl ConnectionAbort {
    /// A handle for a connection whose task is not spawned yet; name it
    /// with [`ConnectionAbort::bind`]. Until then (and for ever, for a
    /// handle never bound) [`ConnectionAbort::abort`] only records itself.
    pub fn new() -> ConnectionAbort {
        ConnectionAbort::default()
    }

    /// Names the task that serves the connection, once, right after it is
    /// spawned. An abort that came first takes effect now. A second call is
    /// ignored.
    pub fn bind(&self, task: AbortHandle) {
        if self.0.task.set(task).is_ok() && self.0.aborted.load(Ordering::SeqCst) {
            self.abort();
        }
    }

    /// Drops the connection's task: its socket closes, whatever is
    /// unwritten is lost. Idempotent.
    pub fn abort(&self) {
        // SeqCst pairs with `bind`: of a racing `abort` and `bind`, at
        // least one sees the other's write, so the task is surely aborted.
        self.0.aborted.store(true, Ordering::SeqCst);
        if let Some(task) = self.0.task.get() {
            task.abort();
        }
    }

    /// Records that the connection's writer gave up on a write that did
    /// not get through within its deadline; called before it drops the
    /// body, so the stream sees it when the body closes.
    pub fn fail_write(&self) {
        self.0.write_failed.store(true, Ordering::Release);
    }

    /// Whether [`ConnectionAbort::fail_write`] was called.
    pub fn write_failed(&self) -> bool {
        self.0.write_failed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_abort_before_the_task_is_named_still_ends_it() {
        let abort = ConnectionAbort::new();
        abort.abort();
        let task = tokio::spawn(std::future::pending::<()>());
        abort.bind(task.abort_handle());
        assert!(task.await.is_err_and(|e| e.is_cancelled()));

        let abort = ConnectionAbort::new();
        let task = tokio::spawn(std::future::pending::<()>());
        abort.bind(task.abort_handle());
        assert!(!abort.write_failed());
        abort.clone().abort();
        assert!(task.await.is_err_and(|e| e.is_cancelled()));
    }
}
