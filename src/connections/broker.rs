//! The broker seam: what the routing side needs from whatever carries pushes
//! between nodes (Redis pub/sub today; Redis Cluster or NATS later).
//!
//! The routing side owns these types; an implementation lives in
//! `crate::broker` and sees the map only through [`LocalNode`], so the
//! dependency runs one way: a broker never reaches into the table, and the
//! table never calls a broker while its lock is held (it returns
//! [`PresenceChange`]s, which the map hands over after unlocking).
//!
//! Dispatch is static (`async fn` in a trait, one enum over the
//! implementations in `crate::broker::AnyBroker`): the single node pays
//! nothing on the push path. Adding a broker is one module implementing
//! [`Broker`] plus one variant of that enum.

use std::future::Future;

use crate::model::{Message, Payload, Position, Uid};
use crate::shutdown::Shutdown;
use crate::store::{HistoryPage, HistoryQuery};

/// How a push reaches this node's own connections of its uid.
///
/// The order guarantee (a push sent after another push's answer is
/// delivered after it) needs every push to a uid to reach its connections in
/// one order. The broker's publish order is that order, so a node delivers
/// its own pushes for a uid it is subscribed to only when they come back on
/// its subscription, exactly as another node's pushes do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Delivered here directly (or nobody here holds the uid): the node's
    /// subscription to the uid is not confirmed (yet), or there is no bus
    /// (a single node, or the broker is down). The bus message says so, and
    /// this node skips its own copy if it comes back.
    Here,
    /// Delivered here when this node's own confirmed subscription brings it
    /// back, in the broker's publish order.
    Bus,
}

/// What the broker did with one push.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// Other nodes' subscriptions that received it.
    pub others: usize,
    /// [`Route::Bus`] only: this node's own subscription received it, so its
    /// connections of the uid get it when it comes back.
    pub here: bool,
    /// Its place in the uid's history (history on).
    pub stored: Option<Position>,
}

/// A uid gained its first, or lost its last, connection on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    /// The uid whose local presence changed.
    pub uid: Uid,
    /// `true`: this node now holds the uid; `false`: it no longer does.
    pub held: bool,
}

/// Why the broker could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// No connection to the broker right now, or it failed or timed out.
    #[error("Redis is unavailable")]
    Unavailable,
    /// Another process uses this node's id: receivers on other nodes cannot
    /// be counted (nor told from the twin), so nothing is published.
    #[error("another node uses this node's id")]
    DuplicateNodeId,
}

impl BrokerError {
    /// The `reason` label of a push that failed for this (metric label
    /// values, unchanged since the bus was Redis only).
    pub fn reason(&self) -> &'static str {
        match self {
            BrokerError::Unavailable => "redis_unavailable",
            BrokerError::DuplicateNodeId => "duplicate_node_id",
        }
    }
}

/// Counts across the deployment, for `GET /stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClusterStats {
    /// Nodes counted (for a cluster: those whose report has not expired).
    pub nodes: usize,
    /// Open WebSocket connections.
    pub connections: usize,
    /// Bound connections.
    pub bound_connections: usize,
    /// Bound uids, summed over nodes (a uid on two nodes counts twice).
    pub bound_uids: usize,
}

/// Whether the broker lets this node take traffic (`/readyz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// No broker: a single node is always ready.
    SingleNode,
    /// Connected and subscribed.
    Up,
    /// Not connected (yet, or any more).
    Down,
    /// Another process uses this node's id (see [`BrokerError::DuplicateNodeId`]).
    DuplicateNodeId,
}

/// What a broker may ask of this node's routing table: deliver what other
/// nodes published, and read this node's presence and counts. Implemented by
/// [`ConnectionMap`](super::ConnectionMap).
pub trait LocalNode: Clone + Send + Sync + 'static {
    /// Delivers a push published on the bus (by another node, or by this
    /// one when its own subscription carries its pushes in order).
    fn deliver_local(&self, uid: &Uid, message: &Message);
    /// Delivers a broadcast another node published.
    fn broadcast_local(&self, payload: &Payload);
    /// Closes this node's connections of `uid` (4001); returns how many.
    fn disconnect_local(&self, uid: &Uid) -> usize;
    /// Every uid bound on this node (a snapshot, for resubscribing).
    fn held_uids(&self) -> Vec<Uid>;
    /// Whether at least one connection of `uid` is bound on this node.
    fn holds(&self, uid: &Uid) -> bool;
    /// This node's own counts (`nodes` = 1).
    fn local_stats(&self) -> ClusterStats;
}

/// The broker boundary. Every method that waits on the network is bounded by
/// the broker's own timeout.
pub trait Broker: Send + Sync + 'static {
    /// How a push to `uid` taken now reaches this node's connections of
    /// it. Decided before publishing, so the bus message can say whether
    /// this node skips its own copy: there is no window in which a push is
    /// delivered twice or not at all here.
    fn route(&self, uid: &Uid) -> Route;

    /// Publishes pushes in order (one round trip), each marked with its
    /// `routes` entry (same length); with history on (cluster mode), each is
    /// first stored at the next offset of its uid's stream, in the same
    /// atomic step as its publication. Returns, per push and in order, what was done. A shorter
    /// list (the single node answers an empty one, so its push path
    /// allocates nothing) means [`Published::default`] for the pushes past
    /// its end.
    fn publish_pushes(
        &self,
        pushes: &[(Uid, Payload)],
        routes: &[Route],
    ) -> impl Future<Output = Result<Vec<Published>, BrokerError>> + Send;

    /// Publishes a broadcast; returns how many other nodes received it.
    fn publish_broadcast(
        &self,
        payload: &Payload,
    ) -> impl Future<Output = Result<usize, BrokerError>> + Send;

    /// Asks the other nodes to close `uid`'s connections; returns how many
    /// other nodes received the request.
    fn publish_disconnect(
        &self,
        uid: &Uid,
    ) -> impl Future<Output = Result<usize, BrokerError>> + Send;

    /// Notes uids this node started or stopped holding. Never waits: an
    /// implementation batches them for its background task.
    fn presence_changed(&self, changes: &[PresenceChange]);

    /// Nodes holding `uid`; `held_here` is whether this node does.
    fn nodes_holding(
        &self,
        uid: &Uid,
        held_here: bool,
    ) -> impl Future<Output = Result<usize, BrokerError>> + Send;

    /// Totals across the deployment; `local` is this node's own counts.
    fn stats(
        &self,
        local: ClusterStats,
    ) -> impl Future<Output = Result<ClusterStats, BrokerError>> + Send;

    /// Whether the broker lets this node take traffic.
    fn readiness(&self) -> Readiness;

    /// Waits, bounded by the broker's timeout, until pushes published from
    /// now on to `uid` reach this node (its subscription is confirmed), so a
    /// resume's read of history cannot miss a push that is neither in the
    /// read nor delivered live.
    fn await_subscribed(&self, uid: &Uid) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Reads `uid`'s stream kept in the broker's backend (cluster mode with
    /// history on): its top, and the messages `query` asks for, none older
    /// than the history's TTL. A stream that does not exist yet is created
    /// empty (its epoch holds from now). Errors: unavailable, or history off.
    fn read_history(
        &self,
        uid: &Uid,
        query: &HistoryQuery,
    ) -> impl Future<Output = Result<HistoryPage, BrokerError>> + Send;

    /// Drops `uid`'s stream and starts a new epoch at offset 0; returns it.
    fn delete_history(
        &self,
        uid: &Uid,
    ) -> impl Future<Output = Result<Position, BrokerError>> + Send;

    /// This node's id on the broker; `None` for a single node.
    fn node_id(&self) -> Option<&str>;

    /// Runs the broker's background task (connection, subscriptions, probes)
    /// for `local` until the stop phase of `shutdown`.
    fn run<L: LocalNode>(&self, local: L, shutdown: Shutdown) -> impl Future<Output = ()> + Send;
}

/// The single node: no other node to reach, always ready, and the counts are
/// this node's own.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl Broker for Single {
    fn route(&self, _: &Uid) -> Route {
        Route::Here
    }

    async fn publish_pushes(
        &self,
        _: &[(Uid, Payload)],
        _: &[Route],
    ) -> Result<Vec<Published>, BrokerError> {
        Ok(Vec::new())
    }

    async fn publish_broadcast(&self, _: &Payload) -> Result<usize, BrokerError> {
        Ok(0)
    }

    async fn publish_disconnect(&self, _: &Uid) -> Result<usize, BrokerError> {
        Ok(0)
    }

    fn presence_changed(&self, _: &[PresenceChange]) {}

    async fn nodes_holding(&self, _: &Uid, held_here: bool) -> Result<usize, BrokerError> {
        Ok(usize::from(held_here))
    }

    async fn stats(&self, local: ClusterStats) -> Result<ClusterStats, BrokerError> {
        Ok(local)
    }

    fn readiness(&self) -> Readiness {
        Readiness::SingleNode
    }

    async fn await_subscribed(&self, _: &Uid) -> Result<(), BrokerError> {
        Ok(())
    }

    /// Never asked: a single node keeps history in the map's own table.
    async fn read_history(&self, _: &Uid, _: &HistoryQuery) -> Result<HistoryPage, BrokerError> {
        Err(BrokerError::Unavailable)
    }

    /// Never asked, as [`Single::read_history`].
    async fn delete_history(&self, _: &Uid) -> Result<Position, BrokerError> {
        Err(BrokerError::Unavailable)
    }

    fn node_id(&self) -> Option<&str> {
        None
    }

    async fn run<L: LocalNode>(&self, _: L, _: Shutdown) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::AnyBroker;
    use crate::connections::{ConnectionMap, QueueLimits};

    fn uid(s: &str) -> Uid {
        Uid::new(s).unwrap()
    }

    #[tokio::test]
    async fn a_single_node_reaches_no_other_node_and_is_always_ready() {
        let single = Single;
        let pushes = [(uid("u"), Payload::from("x"))];
        // Empty: 0 for every push, and nothing allocated on the push path.
        assert_eq!(single.route(&uid("u")), Route::Here);
        let routes = [Route::Here];
        assert_eq!(
            single.publish_pushes(&pushes, &routes).await,
            Ok(Vec::new())
        );
        assert_eq!(single.publish_broadcast(&Payload::from("x")).await, Ok(0));
        assert_eq!(single.publish_disconnect(&uid("u")).await, Ok(0));
        assert_eq!(single.nodes_holding(&uid("u"), true).await, Ok(1));
        assert_eq!(single.nodes_holding(&uid("u"), false).await, Ok(0));
        assert_eq!(single.readiness(), Readiness::SingleNode);
        assert_eq!(single.node_id(), None);
    }

    #[tokio::test]
    async fn the_map_answers_presence_stats_and_readiness_for_a_single_node() {
        let limits = QueueLimits {
            max_len: 4,
            max_bytes: 1024,
        };
        let map = ConnectionMap::new(limits, 0, AnyBroker::Single(Single), None);
        let _unbound = map.open();
        let mut a = map.open();
        a.bind(uid("a")).unwrap();
        assert_eq!(map.nodes_holding(&uid("a")).await, Ok(1));
        assert_eq!(map.nodes_holding(&uid("b")).await, Ok(0));
        assert_eq!(
            map.stats().await,
            Ok(ClusterStats {
                nodes: 1,
                connections: 2,
                bound_connections: 1,
                bound_uids: 1,
            })
        );
        assert_eq!(map.readiness(), Readiness::SingleNode);
        assert_eq!(map.node_id(), None);
    }
}
