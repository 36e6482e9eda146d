//! Cluster mode: several pushgate nodes share routing through Redis pub/sub.
//!
//! A node SUBSCRIBEs a uid's channel while it holds at least one connection
//! bound to that uid, and UNSUBSCRIBEs when the last one leaves, so a push
//! reaches only the nodes holding the uid (GatewayWorker asked every node).
//! A push is delivered locally at once and PUBLISHed; Redis answers with how
//! many subscribers received it, which makes `ok`/`fail` exact across the
//! cluster: a node counts only once its subscription is confirmed, so a push
//! racing a subscribe may answer `fail`, never a false `ok`.
//!
//! Delivery across the bus is at most once: pub/sub keeps nothing for a node
//! that is disconnected, and pushgate never queues a push to send later.
//! While Redis is unreachable, pushes for uids held locally still succeed;
//! others answer `fail` (text) or 503 (REST) within `--redis-timeout`.
//!
//! [`subscriber::run`] owns the subscription connection: it batches
//! subscription churn, resubscribes everything after a reconnect (with
//! jittered backoff), and probes its own channel to catch a subscription that
//! looks healthy but receives nothing (Centrifugo issue #1189).
//!
//! Two processes with one node id would each skip the other's messages as
//! their own. Every message therefore carries a random per-process nonce; a
//! node that receives a message with its id and another nonce logs an error,
//! turns `/readyz` 503 and stops publishing (cross-node pushes answer `fail`
//! / 503, never a false `ok`) until no such message came for three probe
//! intervals.

mod subscriber;
pub mod wire;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use tokio::sync::Notify;

pub use subscriber::run;
use wire::{Channels, Kind};

use crate::model::Uid;
use crate::telemetry;

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
}

/// Why the bus could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// No connection to Redis right now, or it failed or timed out.
    #[error("Redis is unavailable")]
    Unavailable,
    /// Another process uses this node's id: receivers on other nodes cannot
    /// be counted (nor told from the twin), so nothing is published.
    #[error("another node uses this node's id")]
    DuplicateNodeId,
}

impl BusError {
    /// The `reason` label of a push that failed for this.
    pub fn reason(&self) -> &'static str {
        match self {
            BusError::Unavailable => "redis_unavailable",
            BusError::DuplicateNodeId => "duplicate_node_id",
        }
    }
}

/// Counts across the cluster, for `GET /stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClusterStats {
    /// Nodes whose report has not expired (three probe intervals).
    pub nodes: usize,
    /// Open WebSocket connections.
    pub connections: usize,
    /// Bound connections.
    pub bound_connections: usize,
    /// Bound uids, summed over nodes (a uid on two nodes counts twice).
    pub bound_uids: usize,
}

/// Handle to the bus. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    source: Source,
    channels: Channels,
    config: ClusterConfig,
    /// The publishing connection while Redis is reachable.
    publisher: RwLock<Option<MultiplexedConnection>>,
    /// Uids whose local presence changed since the subscriber last looked.
    dirty: Mutex<HashSet<Uid>>,
    wake: Notify,
    /// Uid channels Redis has confirmed this node subscribes to.
    confirmed: Mutex<HashSet<Uid>>,
    up: AtomicBool,
    /// Random per process: tells this process's messages from those of
    /// another process started with the same node id.
    nonce: u64,
    /// When a message with this node's id and another nonce last arrived.
    twin_seen: Mutex<Option<Instant>>,
}

/// Where connections come from.
enum Source {
    Client(redis::Client),
    /// Behind an async mutex: resolving asks the sentinels over the network.
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
}

impl Source {
    /// A client for the current master.
    async fn client(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Source::Client(client) => Ok(client.clone()),
            Source::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await,
        }
    }
}

/// Probe intervals after which a node's `/stats` report expires, and after
/// which a node id conflict no longer seen is over.
const EXPIRY_PROBES: u32 = 3;

impl Cluster {
    /// A handle for `config`; connecting is [`run`]'s job.
    pub fn new(config: ClusterConfig) -> Result<Cluster, redis::RedisError> {
        let source = match &config.target {
            RedisTarget::Url(url) => Source::Client(redis::Client::open(url.as_str())?),
            RedisTarget::Sentinel { sentinels, master } => {
                let addrs: Vec<String> =
                    sentinels.iter().map(|s| format!("redis://{s}/")).collect();
                Source::Sentinel(tokio::sync::Mutex::new(
                    redis::sentinel::SentinelClient::build(
                        addrs,
                        master.clone(),
                        None,
                        redis::sentinel::SentinelServerType::Master,
                    )?,
                ))
            }
        };
        Ok(Cluster {
            inner: Arc::new(Inner {
                source,
                channels: Channels::new(&config.prefix),
                config,
                publisher: RwLock::new(None),
                dirty: Mutex::new(HashSet::new()),
                wake: Notify::new(),
                confirmed: Mutex::new(HashSet::new()),
                up: AtomicBool::new(false),
                nonce: fastrand::u64(..),
                twin_seen: Mutex::new(None),
            }),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.config.node_id
    }

    /// Whether the node is connected and subscribed.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    /// Whether another process with this node's id was heard from within
    /// the last three probe intervals. While it lasts, `/readyz` is 503 and
    /// nothing is published.
    pub fn has_duplicate_id(&self) -> bool {
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

    fn encode(&self, kind: Kind, payload: &[u8]) -> Vec<u8> {
        wire::encode(kind, self.node_id(), self.inner.nonce, payload)
    }

    /// Notes that `uid` gained its first or lost its last local connection;
    /// the subscriber batches these into few SUBSCRIBE/UNSUBSCRIBE calls.
    pub(crate) fn uid_changed(&self, uid: &Uid) {
        lock(&self.inner.dirty).insert(uid.clone());
        self.inner.wake.notify_one();
    }

    /// Asks the other nodes to close `uid`'s connections; returns how many
    /// other nodes received the request (each closes its connections of
    /// `uid`).
    pub async fn publish_kick(&self, uid: &Uid) -> Result<usize, BusError> {
        self.publish_uid(Kind::Kick, uid, b"").await
    }

    /// Publishes a broadcast; returns how many other nodes got it.
    pub async fn publish_broadcast(&self, payload: &[u8]) -> Result<usize, BusError> {
        let n = self
            .publish(&self.inner.channels.broadcast(), Kind::Push, payload)
            .await?;
        // Every node, this one included, subscribes the broadcast channel.
        Ok(n.saturating_sub(usize::from(self.is_up())))
    }

    /// Publishes several pushes in one pipelined round trip; returns, per
    /// push and in order, how many *other* nodes got it.
    pub async fn publish_pushes(
        &self,
        pushes: &[(Uid, crate::model::Payload)],
    ) -> Result<Vec<usize>, BusError> {
        let mut conn = self.publishing()?;
        let mut pipe = redis::pipe();
        for (uid, payload) in pushes {
            let message = self.encode(Kind::Push, payload.as_bytes());
            pipe.publish(self.inner.channels.uid(uid), message);
        }
        let start = Instant::now();
        let sent: Result<Result<Vec<usize>, _>, _> =
            tokio::time::timeout(self.inner.config.timeout, pipe.query_async(&mut conn)).await;
        metrics::histogram!(telemetry::REDIS_PUBLISH_SECONDS).record(start.elapsed().as_secs_f64());
        let counts = match sent {
            Ok(Ok(counts)) if counts.len() == pushes.len() => counts,
            Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {
                tracing::warn!("redis pipelined publish failed or timed out");
                return Err(BusError::Unavailable);
            }
        };
        // As in `publish_uid`: subtracting this node's own confirmed
        // subscription can only undercount.
        let confirmed = lock(&self.inner.confirmed);
        Ok(pushes
            .iter()
            .zip(counts)
            .map(|((uid, _), n)| n.saturating_sub(usize::from(confirmed.contains(uid))))
            .collect())
    }

    async fn publish_uid(&self, kind: Kind, uid: &Uid, payload: &[u8]) -> Result<usize, BusError> {
        // Read before publishing: if this node's own subscription is counted
        // by Redis, it is already in `confirmed` (added only after Redis
        // confirmed it, removed only after Redis confirmed the unsubscribe),
        // so subtracting it can only undercount — a possible false `fail`,
        // never a false `ok`.
        let n = self
            .publish(&self.inner.channels.uid(uid), kind, payload)
            .await?;
        let self_counted = lock(&self.inner.confirmed).contains(uid);
        Ok(n.saturating_sub(usize::from(self_counted)))
    }

    async fn publish(&self, channel: &str, kind: Kind, payload: &[u8]) -> Result<usize, BusError> {
        let mut conn = self.publishing()?;
        let message = self.encode(kind, payload);
        let start = Instant::now();
        let sent = tokio::time::timeout(
            self.inner.config.timeout,
            conn.publish::<_, _, usize>(channel, message),
        )
        .await;
        metrics::histogram!(telemetry::REDIS_PUBLISH_SECONDS).record(start.elapsed().as_secs_f64());
        match sent {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis publish failed");
                Err(BusError::Unavailable)
            }
            Err(_) => {
                tracing::warn!("redis publish timed out");
                Err(BusError::Unavailable)
            }
        }
    }

    /// Nodes whose subscription to `uid`'s channel Redis has confirmed.
    pub async fn nodes_holding(&self, uid: &Uid) -> Result<usize, BusError> {
        let mut conn = self.publisher()?;
        let channel = self.inner.channels.uid(uid);
        let reply: Result<Result<Vec<(String, usize)>, _>, _> = tokio::time::timeout(
            self.inner.config.timeout,
            redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut conn),
        )
        .await;
        match reply {
            Ok(Ok(pairs)) => Ok(pairs.first().map_or(0, |(_, n)| *n)),
            _ => Err(BusError::Unavailable),
        }
    }

    /// Sums the counts every live node reported. A report expires three
    /// probe intervals after it was written (Redis drops the key), so a dead
    /// node leaves the totals within that time.
    pub async fn stats(&self) -> Result<ClusterStats, BusError> {
        let mut conn = self.publisher()?;
        let channels = &self.inner.channels;
        let read = async {
            let nodes: Vec<String> = conn
                .zrange(channels.nodes_key(), 0, MAX_NODES_READ - 1)
                .await?;
            if nodes.is_empty() {
                return Ok(Vec::new());
            }
            let keys: Vec<String> = nodes.iter().map(|n| channels.stats_key(n)).collect();
            conn.mget::<_, Vec<Option<String>>>(keys).await
        };
        let reply: Result<redis::RedisResult<Vec<Option<String>>>, _> =
            tokio::time::timeout(self.inner.config.timeout, read).await;
        let Ok(Ok(reports)) = reply else {
            return Err(BusError::Unavailable);
        };
        let mut stats = ClusterStats::default();
        for report in reports.into_iter().flatten() {
            let fields: Vec<usize> = report.split(' ').filter_map(|f| f.parse().ok()).collect();
            let [conns, bound, uids] = fields[..] else {
                continue;
            };
            // Counts read from Redis: a corrupt report must not overflow.
            stats.nodes += 1;
            stats.connections = stats.connections.saturating_add(conns);
            stats.bound_connections = stats.bound_connections.saturating_add(bound);
            stats.bound_uids = stats.bound_uids.saturating_add(uids);
        }
        Ok(stats)
    }

    /// Writes this node's counts for `/stats` (`connections bound_connections
    /// bound_uids`), valid for three probe intervals, and drops the
    /// membership of nodes long gone.
    async fn report_stats(
        &self,
        conn: &mut MultiplexedConnection,
        counts: [usize; 3],
    ) -> redis::RedisResult<()> {
        let channels = &self.inner.channels;
        let ttl_ms = u64::try_from(self.expiry().as_millis()).unwrap_or(u64::MAX);
        let now_ms = unix_millis();
        // Membership outlives reports by a wide margin: a node's clock may
        // lag, and the report key, which Redis expires, is the truth.
        let keep_ms = ttl_ms.saturating_mul(10);
        let [conns, bound, uids] = counts;
        redis::pipe()
            .set(
                channels.stats_key(self.node_id()),
                format!("{conns} {bound} {uids}"),
            )
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .zadd(channels.nodes_key(), self.node_id(), now_ms)
            .ignore()
            .zrembyscore(channels.nodes_key(), "-inf", now_ms.saturating_sub(keep_ms))
            .ignore()
            .pexpire(
                channels.nodes_key(),
                i64::try_from(keep_ms).unwrap_or(i64::MAX),
            )
            .ignore()
            .query_async(conn)
            .await
    }

    /// The connection to publish on, unless a twin makes every count of
    /// receivers meaningless.
    fn publishing(&self) -> Result<MultiplexedConnection, BusError> {
        if self.has_duplicate_id() {
            return Err(BusError::DuplicateNodeId);
        }
        self.publisher()
    }

    fn publisher(&self) -> Result<MultiplexedConnection, BusError> {
        self.inner
            .publisher
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(BusError::Unavailable)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Most node reports `/stats` reads (a bound on one reply's size).
const MAX_NODES_READ: isize = 10_000;

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
