//! Cluster mode: several pushgate nodes share routing through Redis pub/sub.
//!
//! A node SUBSCRIBEs a uid's channel while it holds at least one connection
//! bound to that uid, and UNSUBSCRIBEs when the last one leaves, so a push
//! reaches only the nodes holding the uid (GatewayWorker asked every node).
//! Redis answers each PUBLISH with how many subscribers received it, which
//! makes `ok`/`fail` exact across the cluster: a node counts only once its
//! subscription is confirmed, so a push racing a subscribe may answer
//! `fail`, never a false `ok`.
//!
//! # Order
//!
//! Every push to a uid reaches that uid's connections in Redis's publish
//! order, on every node: a node delivers even its *own* pushes for a uid
//! whose subscription Redis confirmed only when they come back on that
//! subscription ([`Route::Bus`]). Delivering them at once used to let a push
//! taken by the holding node overtake an earlier push, already answered
//! `ok`, that another node had published and that was still on its way
//! (measured: 5 to 60 of 300 such pairs reversed). The cost is one Redis
//! round trip before a node's own push reaches its own connections. A push
//! for a uid held here whose subscription is not confirmed yet is delivered
//! at once ([`Route::Here`]) and marked so that this node skips its copy;
//! the choice is made before publishing, so nothing is delivered twice. A
//! push answers `ok` once Redis counted a receiving subscription (this
//! node's included) or a local delivery happened.
//!
//! Two limits. Between Redis applying a node's SUBSCRIBE and the node
//! reading the confirmation (microseconds), another node's push can already
//! be counted for it while this node still delivers its own pushes at once,
//! so one of those could overtake it. And when Redis does not answer within
//! `--redis-timeout`, a push routed through the bus is delivered here
//! anyway (Redis may still have published it: then it arrives twice).
//!
//! Delivery across the bus is at most once: pub/sub keeps nothing for a node
//! that is disconnected, and pushgate never queues a push to send later.
//! While Redis is unreachable, pushes for uids held locally still succeed
//! (delivered at once: the order guarantee is suspended for them); others
//! answer `fail` (text) or 503 (REST) within `--redis-timeout`.
//!
//! History (`--history`) is kept in Redis too (`history.rs`): one script
//! stores a push and publishes it, so offsets and delivery order agree.
//!
//! The subscriber task (`subscriber.rs`) owns the subscription connection:
//! it batches subscription churn (`presence.rs`), resubscribes everything
//! after a reconnect (with jittered backoff), delivers what arrives
//! (`inbound.rs`), and probes its own channel to catch a subscription that
//! looks healthy but receives nothing (Centrifugo issue #1189). Publishing
//! and the receiver counts are in `publish.rs`, the `/stats` reports in
//! `stats.rs`, the channel names and message framing in `wire.rs`.
//!
//! This is the only module that names the `redis` crate; it sees the routing
//! table only through [`LocalNode`].
//!
//! Two processes with one node id would each skip the other's messages as
//! their own. Every message therefore carries a random per-process nonce; a
//! node that receives a message with its id and another nonce logs an error,
//! turns `/readyz` 503 and stops publishing (cross-node pushes answer `fail`
//! / 503, never a false `ok`) until no such message came for three probe
//! intervals.

mod diagnose;
mod history;
mod inbound;
mod presence;
mod publish;
mod stats;
mod subscriber;
pub mod wire;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::sync::Notify;

use wire::{Channels, Kind};

use super::BrokerConfigError;
use crate::connections::broker::{
    Broker, BrokerError, ClusterStats, LocalNode, PresenceChange, Published, Readiness, Route,
};
use crate::model::{Payload, Position, Uid};
use crate::shutdown::Shutdown;
use crate::store::{HistoryLimits, HistoryPage, HistoryQuery};

/// Where the bus's Redis is.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// One Redis (or a managed endpoint that fails over behind one address).
    Url(String),
    /// Redis Sentinel: the current master of `master` is asked of these
    /// sentinels (`host:port`) at every (re)connection.
    Sentinel {
        /// Sentinel addresses.
        sentinels: Vec<String>,
        /// The monitored master's name.
        master: String,
    },
}

/// How a node finds and names itself on the bus.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Where Redis is.
    pub target: RedisTarget,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// This node's unique id.
    pub node_id: String,
    /// Interval between probes of the node's own subscription.
    pub probe_interval: Duration,
    /// Longest wait for any Redis command, so a push never hangs on Redis.
    pub timeout: Duration,
    /// History's bounds (`--history`); `None`: pushes are only published.
    pub history: Option<HistoryLimits>,
}

/// The Redis broker: a handle to the bus, shared by the map (publishing)
/// and the subscriber task. Cheap to clone.
#[derive(Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    channels: Channels,
    config: ClusterConfig,
    /// The publishing connection while Redis is reachable.
    publisher: RwLock<Option<MultiplexedConnection>>,
    /// Uids whose local presence changed since the subscriber last looked.
    dirty: Mutex<HashSet<Uid>>,
    wake: Notify,
    /// Uid channels Redis has confirmed this node subscribes to.
    confirmed: Mutex<HashSet<Uid>>,
    /// Woken whenever uids join `confirmed`.
    subscribed: Notify,
    up: AtomicBool,
    /// Random per process: tells this process's messages from those of
    /// another process started with the same node id.
    nonce: u64,
    /// When a message with this node's id and another nonce last arrived.
    twin_seen: Mutex<Option<Instant>>,
}

/// Where Redis connections come from: one address, or whatever master the
/// sentinels name at each connection.
enum Endpoint {
    /// One address.
    Client(redis::Client),
    /// Behind an async mutex: resolving asks the sentinels over the network.
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
}

impl Endpoint {
    /// A client for the current master.
    async fn client(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Endpoint::Client(client) => Ok(client.clone()),
            Endpoint::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await,
        }
    }
}

/// Probe intervals after which a node's `/stats` report expires, and after
/// which a node id conflict no longer seen is over.
const EXPIRY_PROBES: u32 = 3;

impl RedisBroker {
    /// A handle for `config`; connecting is [`Broker::run`]'s job. Errors: the
    /// URL or a sentinel address does not parse.
    pub fn new(config: ClusterConfig) -> Result<RedisBroker, BrokerConfigError> {
        // redis-rs says only "did not parse - InvalidClientConfig": say
        // what a valid address looks like.
        let invalid = |e: redis::RedisError| {
            BrokerConfigError::Redis(format!(
                "{e} (expected redis://[[USER]:PASSWORD@]HOST:PORT[/DB] or unix:///PATH; \
                 TLS (rediss://) is not supported)"
            ))
        };
        let endpoint = match &config.target {
            RedisTarget::Url(url) => {
                Endpoint::Client(redis::Client::open(url.as_str()).map_err(invalid)?)
            }
            RedisTarget::Sentinel { sentinels, master } => {
                let addrs: Vec<String> =
                    sentinels.iter().map(|s| format!("redis://{s}/")).collect();
                Endpoint::Sentinel(tokio::sync::Mutex::new(
                    redis::sentinel::SentinelClient::build(
                        addrs,
                        master.clone(),
                        None,
                        redis::sentinel::SentinelServerType::Master,
                    )
                    .map_err(invalid)?,
                ))
            }
        };
        Ok(RedisBroker {
            inner: Arc::new(Inner {
                endpoint,
                channels: Channels::new(&config.prefix),
                config,
                publisher: RwLock::new(None),
                dirty: Mutex::new(HashSet::new()),
                wake: Notify::new(),
                confirmed: Mutex::new(HashSet::new()),
                subscribed: Notify::new(),
                up: AtomicBool::new(false),
                nonce: fastrand::u64(..),
                twin_seen: Mutex::new(None),
            }),
        })
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.inner.config.node_id
    }

    /// Whether the node is connected and subscribed.
    fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    /// Whether another process with this node's id was heard from within
    /// the last three probe intervals. While it lasts, `/readyz` is 503 and
    /// nothing is published.
    fn has_duplicate_id(&self) -> bool {
        lock(&self.inner.twin_seen).is_some_and(|at| at.elapsed() < self.expiry())
    }

    /// Notes a message from another process with this node's id; returns
    /// whether a conflict begins with it (so it is logged once).
    fn twin_heard(&self) -> bool {
        let began = !self.has_duplicate_id();
        *lock(&self.inner.twin_seen) = Some(Instant::now());
        began
    }

    /// How long a `/stats` report lives, and a node id conflict outlives its
    /// last sign.
    fn expiry(&self) -> Duration {
        self.inner.config.probe_interval * EXPIRY_PROBES
    }

    /// Frames a message this node delivers itself at once (or never): it
    /// skips its own copy.
    fn encode(&self, kind: Kind, payload: &[u8]) -> Vec<u8> {
        wire::encode(
            kind,
            self.id(),
            self.inner.nonce,
            wire::SKIP_ORIGIN,
            payload,
        )
    }

    /// The frame of a push up to its flags byte: the origin skips its own
    /// copy unless it routed the push through its subscription.
    fn push_header(&self, route: Route, flags: u8, more: usize) -> Vec<u8> {
        let skip = match route {
            Route::Here => wire::SKIP_ORIGIN,
            Route::Bus => 0,
        };
        wire::header(Kind::Push, self.id(), self.inner.nonce, flags | skip, more)
    }
}

impl Broker for RedisBroker {
    /// Through the bus once Redis confirmed this node's subscription; a twin
    /// with this node's id stops publishing, so then at once.
    fn route(&self, uid: &Uid) -> Route {
        if self.is_up() && !self.has_duplicate_id() && lock(&self.inner.confirmed).contains(uid) {
            Route::Bus
        } else {
            Route::Here
        }
    }

    async fn publish_pushes(
        &self,
        pushes: &[(Uid, Payload)],
        routes: &[Route],
    ) -> Result<Vec<Published>, BrokerError> {
        if pushes.is_empty() {
            return Ok(Vec::new());
        }
        match &self.inner.config.history {
            Some(limits) => self.store_and_publish(pushes, routes, limits).await,
            None => self.push_elsewhere(pushes, routes).await,
        }
    }

    async fn publish_broadcast(&self, payload: &Payload) -> Result<usize, BrokerError> {
        self.broadcast_elsewhere(payload.as_bytes()).await
    }

    async fn await_subscribed(&self, uid: &Uid) -> Result<(), BrokerError> {
        let wait = async {
            loop {
                // Registered before the check, so a confirmation between the
                // check and the wait still wakes it.
                let notified = self.inner.subscribed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if lock(&self.inner.confirmed).contains(uid) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(self.inner.config.timeout, wait)
            .await
            .map_err(|_| BrokerError::Unavailable)
    }

    async fn read_history(
        &self,
        uid: &Uid,
        query: &HistoryQuery,
    ) -> Result<HistoryPage, BrokerError> {
        self.read_stream(uid, query).await
    }

    async fn delete_history(&self, uid: &Uid) -> Result<Position, BrokerError> {
        self.drop_stream(uid).await
    }

    async fn publish_disconnect(&self, uid: &Uid) -> Result<usize, BrokerError> {
        self.disconnect_elsewhere(uid).await
    }

    /// The subscriber batches these into few SUBSCRIBE/UNSUBSCRIBE calls; it
    /// reads the map's state when it applies them, so only the uid matters.
    fn presence_changed(&self, changes: &[PresenceChange]) {
        if changes.is_empty() {
            return;
        }
        let mut dirty = lock(&self.inner.dirty);
        dirty.extend(changes.iter().map(|c| c.uid.clone()));
        drop(dirty);
        self.inner.wake.notify_one();
    }

    /// Confirmed subscriptions only: what a push would reach.
    async fn nodes_holding(&self, uid: &Uid, _held_here: bool) -> Result<usize, BrokerError> {
        self.subscribed_nodes(uid).await
    }

    /// Each node reports every two seconds; `local` is not used, as this
    /// node's report is among the totals.
    async fn stats(&self, _local: ClusterStats) -> Result<ClusterStats, BrokerError> {
        self.totals().await
    }

    fn readiness(&self) -> Readiness {
        if self.has_duplicate_id() {
            Readiness::DuplicateNodeId
        } else if self.is_up() {
            Readiness::Up
        } else {
            Readiness::Down
        }
    }

    fn node_id(&self) -> Option<&str> {
        Some(&self.inner.config.node_id)
    }

    async fn run<L: LocalNode>(&self, local: L, shutdown: Shutdown) {
        subscriber::run(self.clone(), local, shutdown).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
