//! The `ConnectionMap`: the one service every front end calls.
//!
//! It maps each uid to all of its live connections (several tabs of one user
//! all receive), routes pushes and broadcasts into their bounded queues, and
//! publishes them through the broker ([`broker`]: the seam; Redis in cluster
//! mode, nothing on a single node) so the nodes holding the uid deliver too.
//! The WebSocket, text-port and REST front ends only translate their wire
//! format into calls on this type; none of them holds routing state, and none
//! talks to the broker: presence, `/stats` and readiness are asked of the map
//! too ([`ConnectionMap::nodes_holding`], [`ConnectionMap::stats`],
//! [`ConnectionMap::readiness`]). History ([`crate::store`]) sits behind it
//! too: in the table on a single node, in the broker's backend in cluster
//! mode; front ends read it through [`Connection::bind_stream`],
//! [`ConnectionMap::history`] and [`ConnectionMap::delete_history`].
//!
//! Files: `table.rs` (the locked uid table, local operations), `route.rs`
//! (push, broadcast, disconnect and their accounting), `resume.rs` (binds
//! that resume, history reads), `sweep.rs` (history's expiry without
//! traffic), `mailbox.rs` (the bounded queue per
//! connection), `connection.rs` (the drop guard), `broker.rs` (the seam).
//!
//! Like mini-redis' `Db`, it is a cheap `Clone` handle over shared state, and
//! its std `Mutex` is never held across an `.await`: every operation under the
//! lock is a hash lookup plus non-blocking `try_send`s (see `table.rs`).

pub mod broker;
mod connection;
mod mailbox;
mod resume;
mod route;
mod sweep;
mod table;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub use connection::Connection;
pub use mailbox::{CloseReason, Delivery};
pub use resume::{Bound, HistoryError};
use table::Table;

use broker::{Broker, BrokerError, ClusterStats, LocalNode, PresenceChange, Readiness};

use crate::broker::AnyBroker;
use crate::model::{ConnId, Message, Payload, Position, Uid};
use crate::shutdown::Shutdown;
use crate::store::HistoryLimits;
use crate::store::memory::MemoryHistory;
use crate::telemetry::Metrics;

/// Per-connection outbound queue bounds.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Messages.
    pub max_len: usize,
    /// Bytes.
    pub max_bytes: usize,
}

/// What one push achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// Connections on this node that accepted the message into their queue.
    pub delivered: usize,
    /// Bound connections on this node whose queue was full (now being
    /// disconnected).
    pub dropped: usize,
    /// Other nodes that received it through the bus (cluster mode), as
    /// Redis counted their confirmed subscriptions.
    pub remote_nodes: usize,
    /// Where it was stored in the uid's history (history on, store
    /// reachable), whether or not anyone was online.
    pub stored: Option<Position>,
}

impl PushOutcome {
    /// The legacy `ok`: at least one connection, here or on another node,
    /// took it.
    pub fn is_ok(&self) -> bool {
        self.delivered > 0 || self.remote_nodes > 0
    }
}

/// Why a push could not be routed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// Cluster mode, Redis unreachable (or another node uses this node's
    /// id), and no local connection took it: whether another node holds the
    /// uid is unknown. What was delivered locally is in the outcome.
    #[error("{1}")]
    ClusterUnavailable(PushOutcome, BrokerError),
}

/// Handle to the routing table. Clone it freely.
#[derive(Clone)]
pub struct ConnectionMap {
    shared: Arc<Shared>,
}

struct Shared {
    table: Mutex<Table>,
    max_per_uid: usize,
    next_id: AtomicU64,
    open: AtomicUsize,
    limits: QueueLimits,
    metrics: Metrics,
    broker: AnyBroker,
    /// History's bounds; `None`: history is off.
    history: Option<HistoryLimits>,
}

/// Why a bind was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// A connection binds once; later frames are ignored, not re-bound.
    #[error("connection is already bound")]
    AlreadyBound,
}

impl ConnectionMap {
    /// An empty map whose connections get queues bounded by `limits`, with at
    /// most `max_per_uid` connections per uid (0: no limit), reaching other
    /// nodes through `broker`, keeping history within `history` (`None`:
    /// none; on a single node in memory, in cluster mode in the broker's
    /// backend).
    pub fn new(
        limits: QueueLimits,
        max_per_uid: usize,
        broker: AnyBroker,
        history: Option<HistoryLimits>,
    ) -> ConnectionMap {
        let single = broker.node_id().is_none();
        let mut table = Table::default();
        table.history = history.filter(|_| single).map(MemoryHistory::new);
        ConnectionMap {
            shared: Arc::new(Shared {
                table: Mutex::new(table),
                max_per_uid,
                next_id: AtomicU64::new(1),
                open: AtomicUsize::new(0),
                limits,
                metrics: Metrics::new(),
                broker,
                history,
            }),
        }
    }

    /// Registers a new, not yet bound connection. Dropping the returned
    /// [`Connection`] removes it (and only it) from the map.
    pub fn open(&self) -> Connection {
        let id = ConnId(self.shared.next_id.fetch_add(1, Ordering::Relaxed));
        let (outbox, inbox) =
            mailbox::channel(id, self.shared.limits.max_len, self.shared.limits.max_bytes);
        self.shared.open.fetch_add(1, Ordering::Relaxed);
        self.shared.metrics.ws_connections.increment(1.0);
        Connection {
            id,
            map: self.clone(),
            pending: Some(outbox),
            inbox,
            uid: None,
        }
    }

    /// Open connections on this node, bound or not.
    pub fn connections(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Nodes holding `uid` (this one included), as a push would reach them:
    /// in cluster mode only subscriptions the broker has confirmed. Errors:
    /// the broker is unavailable.
    pub async fn nodes_holding(&self, uid: &Uid) -> Result<usize, BrokerError> {
        let held_here = self.connections_of(uid) > 0;
        self.shared.broker.nodes_holding(uid, held_here).await
    }

    /// Counts for `GET /stats`: this node's, or the cluster's totals.
    /// Errors: the broker is unavailable.
    pub async fn stats(&self) -> Result<ClusterStats, BrokerError> {
        self.shared.broker.stats(self.local_stats()).await
    }

    /// Whether the broker lets this node take traffic.
    pub fn readiness(&self) -> Readiness {
        self.shared.broker.readiness()
    }

    /// This node's id on the broker; `None` on a single node.
    pub fn node_id(&self) -> Option<&str> {
        self.shared.broker.node_id()
    }

    /// Runs the broker's background task until the stop phase of
    /// `shutdown` (returns at once on a single node).
    pub async fn run_broker(self, shutdown: Shutdown) {
        let shared = self.shared.clone();
        shared.broker.run(self, shutdown).await;
    }

    /// Whether pushes are kept in history (`--history`).
    pub fn history_enabled(&self) -> bool {
        self.shared.history.is_some()
    }

    /// Binds `outbox` to `uid`, then tells the broker (outside the lock).
    fn bind(&self, uid: &Uid, outbox: mailbox::Outbox) {
        let change = self.bind_locked(uid, outbox);
        self.presence_changed(change.as_slice());
    }

    /// Removes exactly connection `id` from `uid`'s list, so a closing socket
    /// never removes a newer connection of the same uid (the seed's bug);
    /// then tells the broker (outside the lock).
    fn unbind(&self, uid: &Uid, id: ConnId) {
        let change = self.unbind_locked(uid, id);
        self.presence_changed(change.as_slice());
    }

    /// Counts presence changes and hands them to the broker; never called
    /// with the table lock held.
    fn presence_changed(&self, changes: &[PresenceChange]) {
        if changes.is_empty() {
            return;
        }
        for change in changes {
            if change.held {
                self.shared.metrics.bound_uids.increment(1.0);
            } else {
                self.shared.metrics.bound_uids.decrement(1.0);
            }
        }
        self.shared.broker.presence_changed(changes);
    }
}

impl LocalNode for ConnectionMap {
    /// No push is counted here: the node that took it counted it.
    fn deliver_local(&self, uid: &Uid, message: &Message) {
        let mut gone = Vec::new();
        let outcome = self.push_local(uid, message, &mut gone);
        self.presence_changed(&gone);
        self.count_deliveries(outcome);
    }

    fn broadcast_local(&self, payload: &Payload) {
        let mut gone = Vec::new();
        let outcome = self.broadcast_local_outcome(payload, &mut gone);
        self.presence_changed(&gone);
        self.count_deliveries(outcome);
    }

    fn disconnect_local(&self, uid: &Uid) -> usize {
        let (n, change) = self.disconnect_locked(uid);
        self.presence_changed(change.as_slice());
        n
    }

    fn held_uids(&self) -> Vec<Uid> {
        self.uids()
    }

    fn holds(&self, uid: &Uid) -> bool {
        self.connections_of(uid) > 0
    }

    fn local_stats(&self) -> ClusterStats {
        ClusterStats {
            nodes: 1,
            connections: self.connections(),
            bound_connections: self.bound_connections(),
            bound_uids: self.bound_uids(),
        }
    }
}
