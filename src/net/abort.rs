//! A handle on the HTTP connection a request came on, for the rare answer
//! that must end it: a streamed response whose client stopped reading.
//!
//! hyper writes a streamed body only as fast as the socket takes it, and
//! while its buffer is full it polls neither the body nor anything else of
//! that response, so a body cannot end a stuck connection by itself. The
//! accept loop (`http::serve`) puts one [`ConnectionAbort`] in every
//! request's extensions and drops the connection, socket and all, when it
//! is fired; it also fires it when the connection ends, so a waiter learns
//! that too.

use tokio_util::sync::CancellationToken;

/// Ends the HTTP connection it was handed with; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct ConnectionAbort(CancellationToken);

impl ConnectionAbort {
    /// A handle for a new connection.
    pub fn new() -> ConnectionAbort {
        ConnectionAbort::default()
    }

    /// Drops the connection (its socket closes, whatever is unwritten is
    /// lost). Idempotent.
    pub fn abort(&self) {
        self.0.cancel();
    }

    /// Resolves once the connection is aborted or has ended. Cancel-safe.
    pub async fn ended(&self) {
        self.0.cancelled().await
    }
}
