//! The `/stats` totals: every node reports its counts under a key that
//! expires, and a reader sums the live reports.

use std::time::{SystemTime, UNIX_EPOCH};

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

use super::RedisBroker;
use crate::connections::broker::{BrokerError, ClusterStats};

impl RedisBroker {
    /// Sums the counts every live node reported. A report expires three
    /// probe intervals after it was written (Redis drops the key), so a dead
    /// node leaves the totals within that time.
    pub(super) async fn totals(&self) -> Result<ClusterStats, BrokerError> {
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
            return Err(BrokerError::Unavailable);
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
    pub(super) async fn report_stats(
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
                channels.stats_key(self.id()),
                format!("{conns} {bound} {uids}"),
            )
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .zadd(channels.nodes_key(), self.id(), now_ms)
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
}

/// Most node reports `/stats` reads (a bound on one reply's size).
const MAX_NODES_READ: isize = 10_000;

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
