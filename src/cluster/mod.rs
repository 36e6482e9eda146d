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
//! backoff), and probes its own channel to catch a subscription that looks
//! healthy but receives nothing (Centrifugo issue #1189).

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
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// No connection to Redis right now, or it failed or timed out.
    #[error("Redis is unavailable")]
    Unavailable,
}

/// Counts across the cluster, for `GET /stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClusterStats {
    /// Nodes that reported within the last few seconds.
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

/// How long a node's `/stats` report stays valid.
const STATS_TTL: Duration = Duration::from_secs(10);

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

    /// Notes that `uid` gained its first or lost its last local connection;
    /// the subscriber batches these into few SUBSCRIBE/UNSUBSCRIBE calls.
    pub(crate) fn uid_changed(&self, uid: &Uid) {
        lock(&self.inner.dirty).insert(uid.clone());
        self.inner.wake.notify_one();
    }

    /// Asks the other nodes to close `uid`'s connections; returns how many
    /// other nodes hold it.
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
        let mut conn = self.publisher()?;
        let mut pipe = redis::pipe();
        for (uid, payload) in pushes {
            let message = wire::encode(Kind::Push, self.node_id(), payload.as_bytes());
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
        let mut conn = self.publisher()?;
        let message = wire::encode(kind, self.node_id(), payload);
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

    /// Sums the counts every live node reported.
    pub async fn stats(&self) -> Result<ClusterStats, BusError> {
        let mut conn = self.publisher()?;
        let reply: Result<Result<Vec<(String, String)>, _>, _> = tokio::time::timeout(
            self.inner.config.timeout,
            conn.hgetall(self.inner.channels.stats_key()),
        )
        .await;
        let Ok(Ok(entries)) = reply else {
            return Err(BusError::Unavailable);
        };
        let now = unix_secs();
        let mut stats = ClusterStats::default();
        for (_, report) in entries {
            let fields: Vec<u64> = report.split(' ').filter_map(|f| f.parse().ok()).collect();
            let [at, conns, bound, uids] = fields[..] else {
                continue;
            };
            if now.saturating_sub(at) > STATS_TTL.as_secs() {
                continue;
            }
            // Counts read from Redis: a corrupt report must not overflow.
            let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
            stats.nodes += 1;
            stats.connections = stats.connections.saturating_add(count(conns));
            stats.bound_connections = stats.bound_connections.saturating_add(count(bound));
            stats.bound_uids = stats.bound_uids.saturating_add(count(uids));
        }
        Ok(stats)
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

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
