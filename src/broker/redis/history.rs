//! Per-uid history in Redis (`--history` in cluster mode), so any node can
//! replay it and it survives node restarts.
//!
//! # Layout
//!
//! A uid's history is two keys in one Redis Cluster hash slot (see
//! `wire.rs`): a meta hash (`e`: the epoch, `o`: the newest offset) and a
//! stream whose entry ids are `<offset>-0` (fields `p`: the payload, `t`:
//! Unix milliseconds when stored). Both expire `--history-ttl` after the
//! uid's last push; when the meta is gone, the next push or read starts a
//! new epoch (a random [`Epoch`] the node passes in, used only then).
//!
//! Streams rather than lists (Centrifugo keeps a stream plus a meta hash
//! too): the offset *is* the entry id, so "everything after offset N" is
//! one `XRANGE` from `N+1` (a list would need the offset of its first
//! element to compute an index, and a trim between the two reads shifts
//! it); `XADD … MAXLEN` trims in the same command; and Redis refuses an id
//! that does not grow, a cheap check that offsets never repeat.
//!
//! # One push, one script
//!
//! [`STORE`] reads or creates the meta, takes the next offset, appends the
//! message, renews both TTLs and PUBLISHes the message with its position on
//! the uid's channel, atomically: no other push to the uid can come between
//! the offset and the publication, so offset order and delivery order are
//! one order. A batch of pushes (pipelined text-port lines) is one pipeline
//! of `EVALSHA`s, one round trip; a `NOSCRIPT` (Redis restarted or its
//! script cache flushed) loads the script and runs again only the pushes
//! that got it (none of them ran).
//!
//! Offsets are Lua numbers in the script (doubles): exact up to 2^53
//! pushes per epoch.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, ServerErrorKind};
use sha1::{Digest, Sha1};

use super::RedisBroker;
use super::wire::POSITIONED;
use crate::connections::broker::{BrokerError, Published, Route};
use crate::model::{Epoch, Payload, Position, Uid};
use crate::store::{HistoryLimits, HistoryPage, HistoryQuery, Order, StoredMessage};
use crate::telemetry;

/// Stores and publishes one push. KEYS: meta, stream. ARGV: new epoch,
/// max length, TTL (ms), channel, message header, payload, now (ms).
/// Returns `{offset, epoch, receivers}`.
static STORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], offset .. '-0', 'p', ARGV[6], 't', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local n = redis.call('PUBLISH', ARGV[4], ARGV[5] .. offset .. ' ' .. epoch .. '\n' .. ARGV[6])
return {offset, epoch, n}
",
    )
});

/// Reads a stream's top and a page of it, creating an empty stream (a new
/// epoch) when there is none. KEYS: meta, stream. ARGV: new epoch, TTL
/// (ms), first id (`-`, or `<offset>-0`), `asc` or `desc`, count.
/// Returns `{epoch, offset, entries}`.
static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local m = redis.call('HMGET', KEYS[1], 'e', 'o')
if not m[1] then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', ARGV[1], 'o', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {ARGV[1], '0', {}}
end
local n = tonumber(ARGV[5])
if n == 0 then return {m[1], m[2], {}} end
local entries
if ARGV[4] == 'asc' then
  entries = redis.call('XRANGE', KEYS[2], ARGV[3], '+', 'COUNT', n)
else
  entries = redis.call('XREVRANGE', KEYS[2], '+', ARGV[3], 'COUNT', n)
end
return {m[1], m[2], entries}
",
    )
});

/// A Lua script and its SHA-1, the name `EVALSHA` calls it by (computed
/// here: the `redis` crate's own script type needs a feature this build
/// does not compile).
struct Script {
    source: &'static str,
    sha: String,
}

impl Script {
    fn new(source: &'static str) -> Script {
        let sha = Sha1::digest(source.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Script { source, sha }
    }

    /// `EVALSHA` with the script's keys and arguments to come.
    fn evalsha(&self, keys: &[String]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(keys.len()).arg(keys);
        cmd
    }

    /// Runs `call` (built by [`Script::evalsha`]); on `NOSCRIPT` loads the
    /// script and runs it once more (a script that was not found never ran).
    async fn run<T: redis::FromRedisValue>(
        &self,
        conn: &mut MultiplexedConnection,
        call: &redis::Cmd,
    ) -> RedisResult<T> {
        match call.query_async(conn).await {
            Err(e) if is_noscript(&e) => {
                self.load(conn).await?;
                call.query_async(conn).await
            }
            other => other,
        }
    }

    async fn load(&self, conn: &mut MultiplexedConnection) -> RedisResult<()> {
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(self.source)
            .query_async::<String>(conn)
            .await
            .map(drop)
    }
}

fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript)
}

/// What [`STORE`] returns: the offset, the epoch, and Redis's count of
/// receiving subscriptions.
type Stored = (u64, String, usize);

/// A stream entry as `XRANGE` returns it: its id and its field/value pairs.
type Entry = (String, Vec<(String, Vec<u8>)>);

impl RedisBroker {
    fn limits(&self) -> Result<&HistoryLimits, BrokerError> {
        self.inner
            .config
            .history
            .as_ref()
            .ok_or(BrokerError::Unavailable)
    }

    /// Stores and publishes `pushes` in one pipelined round trip (see the
    /// module docs); returns what each reached and where it was stored.
    /// Errors: Redis unreachable or slow, or it refused every push.
    pub(super) async fn store_and_publish(
        &self,
        pushes: &[(Uid, Payload)],
        routes: &[Route],
        limits: &HistoryLimits,
    ) -> Result<Vec<Published>, BrokerError> {
        let mut conn = self.publishing()?;
        let now = unix_millis().to_string();
        let ttl = millis(limits.ttl).to_string();
        let size = limits.size.max(1).to_string();
        let mut replies: Vec<Option<Stored>> = vec![None; pushes.len()];
        let mut pending: Vec<usize> = (0..pushes.len()).collect();
        let start = std::time::Instant::now();
        // At most one NOSCRIPT per batch: the second run follows a load.
        for _ in 0..2 {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for &i in &pending {
                let (uid, payload) = &pushes[i];
                let channels = &self.inner.channels;
                let header = self.push_header(routes[i], POSITIONED, 0);
                let keys = [channels.history_meta(uid), channels.history_stream(uid)];
                let mut call = STORE.evalsha(&keys);
                call.arg(Epoch::random().to_string())
                    .arg(&size)
                    .arg(&ttl)
                    .arg(channels.uid(uid))
                    .arg(header)
                    .arg(payload.as_bytes())
                    .arg(&now);
                pipe.add_command(call);
            }
            let sent: Result<RedisResult<Vec<RedisResult<Stored>>>, _> =
                tokio::time::timeout(self.inner.config.timeout, pipe.query_async(&mut conn)).await;
            let Ok(Ok(results)) = sent else {
                tracing::warn!("redis: storing pushes failed or timed out");
                return Err(BrokerError::Unavailable);
            };
            let mut missing = Vec::new();
            for (&i, result) in pending.iter().zip(results) {
                match result {
                    Ok(reply) => replies[i] = Some(reply),
                    Err(e) if is_noscript(&e) => missing.push(i),
                    Err(e) => tracing::warn!(error = %e, "redis: storing a push failed"),
                }
            }
            if missing.is_empty() {
                break;
            }
            let loaded =
                tokio::time::timeout(self.inner.config.timeout, STORE.load(&mut conn)).await;
            if !matches!(loaded, Ok(Ok(_))) {
                return Err(BrokerError::Unavailable);
            }
            pending = missing;
        }
        telemetry::redis_publish_took(start.elapsed());
        if replies.iter().all(Option::is_none) {
            return Err(BrokerError::Unavailable);
        }
        // A push Redis refused (its script failed) reached nobody, here
        // included: it answers `fail` unless delivered here at once.
        let counts = replies.into_iter().map(|reply| match reply {
            Some((offset, epoch, n)) => (
                n,
                epoch.parse().ok().map(|epoch| Position { offset, epoch }),
            ),
            None => (0, None),
        });
        Ok(self.receivers(pushes, routes, counts))
    }

    /// `uid`'s stream: its top and the page `query` asks for, without
    /// messages older than the TTL.
    pub(super) async fn read_stream(
        &self,
        uid: &Uid,
        query: &HistoryQuery,
    ) -> Result<HistoryPage, BrokerError> {
        let limits = self.limits()?;
        let mut conn = self.publisher()?;
        let channels = &self.inner.channels;
        let first = match query.since {
            Some(offset) => format!("{}-0", offset.saturating_add(1)),
            None => "-".to_owned(),
        };
        let order = match query.order {
            Order::OldestFirst => "asc",
            Order::NewestFirst => "desc",
        };
        let keys = [channels.history_meta(uid), channels.history_stream(uid)];
        let mut call = READ.evalsha(&keys);
        call.arg(Epoch::random().to_string())
            .arg(millis(limits.ttl))
            .arg(first)
            .arg(order)
            .arg(query.limit);
        let read: Result<RedisResult<(String, String, Vec<Entry>)>, _> =
            tokio::time::timeout(self.inner.config.timeout, READ.run(&mut conn, &call)).await;
        let Ok(Ok((epoch, offset, entries))) = read else {
            tracing::warn!("redis: reading history failed or timed out");
            return Err(BrokerError::Unavailable);
        };
        let top = Position {
            offset: offset.parse().map_err(|_| BrokerError::Unavailable)?,
            epoch: epoch.parse().map_err(|_| BrokerError::Unavailable)?,
        };
        let oldest = SystemTime::now()
            .checked_sub(limits.ttl)
            .unwrap_or(UNIX_EPOCH);
        let messages = entries
            .into_iter()
            .filter_map(stored)
            .filter(|m| m.time >= oldest)
            .collect();
        Ok(HistoryPage { top, messages })
    }

    /// Drops `uid`'s stream and starts a new epoch at offset 0.
    pub(super) async fn drop_stream(&self, uid: &Uid) -> Result<Position, BrokerError> {
        let limits = self.limits()?;
        let mut conn = self.publisher()?;
        let channels = &self.inner.channels;
        let (meta, stream) = (channels.history_meta(uid), channels.history_stream(uid));
        let epoch = Epoch::random();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(&[&meta, &stream])
            .ignore()
            .hset_multiple(&meta, &[("e", epoch.to_string()), ("o", "0".to_owned())])
            .ignore()
            .pexpire(&meta, i64::try_from(millis(limits.ttl)).unwrap_or(i64::MAX))
            .ignore();
        let done: Result<RedisResult<()>, _> =
            tokio::time::timeout(self.inner.config.timeout, pipe.query_async(&mut conn)).await;
        match done {
            Ok(Ok(())) => Ok(Position { offset: 0, epoch }),
            _ => Err(BrokerError::Unavailable),
        }
    }
}

/// A stream entry as a stored message; `None` for an entry pushgate did not
/// write (it is skipped, not trusted).
fn stored((id, fields): Entry) -> Option<StoredMessage> {
    let offset = id.strip_suffix("-0")?.parse().ok()?;
    let mut payload = None;
    let mut time = None;
    for (name, value) in fields {
        match name.as_str() {
            "p" => payload = Payload::try_from(bytes::Bytes::from(value)).ok(),
            "t" => {
                let ms: u64 = std::str::from_utf8(&value).ok()?.parse().ok()?;
                time = UNIX_EPOCH.checked_add(Duration::from_millis(ms));
            }
            _ => {}
        }
    }
    Some(StoredMessage {
        offset,
        payload: payload?,
        time: time?,
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
