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
//! # One batch, one round trip, one script call per chunk
//!
//! [`STORE`] takes each push of a chunk in turn: it reads or creates the
//! meta, takes the next offset, appends the message (trimming the stream,
//! see below), renews both TTLs and PUBLISHes the message
//! with its position on the uid's channel. A script runs atomically, so no
//! other push to the uid can come between an offset and its publication:
//! offset order and delivery order are one order. A batch of pushes
//! (pipelined text-port lines) is one pipeline of such calls, [`CHUNK`]
//! pushes each, in one round trip.
//!
//! One call per chunk rather than per push because the per-call overhead
//! was most of the cost (measured on Redis 7.0 with 1000 subscribed uids,
//! batches of 100: 7.3 µs of Redis CPU per push with one `EVALSHA` per
//! push, 5.3 µs with one per batch), and the node encodes one command and
//! parses one reply per chunk. The pushes of a call are independent:
//! `pcall` keeps a push's failure (a key of another type) to that push,
//! which answers as a push Redis refused, as before. The keys of one call
//! belong to several uids, so several Redis Cluster hash slots; the broker
//! talks to one Redis (plain or behind Sentinel), which runs them as one.
//! (Redis Cluster would need one call per slot.)
//!
//! A `NOSCRIPT` (Redis restarted or its script cache flushed) means that
//! call never ran: the node loads the script and runs again only the
//! chunks that got it.
//!
//! A push that creates a uid's meta starts a new epoch: 12 random hex
//! digits the node passes once per call, then the push's index in the call
//! as 4 more, so the uids a call creates get distinct epochs and a uid's
//! new epoch differs from its last one but with odds of 2^-48.
//!
//! Every push renews both TTLs (two `PEXPIRE`s), so both keys expire
//! exactly `--history-ttl` after the uid's last push. Renewing only when
//! the expiry had fallen below the TTL (an expiry time kept in the meta,
//! read by the same `HMGET` as the epoch; keys then living up to 1/16 of
//! the TTL longer) measured no cheaper in the cluster bench, within the
//! noise, so the exact form stays.
//!
//! # Trimming: approximate in Redis, exact as seen
//!
//! `XADD … MAXLEN ~ size` drops only whole stream nodes (listpacks of at
//! most `stream-node-max-entries`, 100, and about `stream-node-max-bytes`,
//! 4 KiB, by default), so a stream holds its newest `size` messages plus
//! less than one node more. Exact trimming (`MAXLEN size`) deletes one
//! entry per push, and Redis 7.0 walks the first node's deleted entries to
//! find the next one: measured at about a quarter of Redis's time per push
//! once streams were full (100 per uid). The trade is memory: up to one
//! node per uid beyond `--history-size` (at most 99 small messages, or
//! about 4 KiB of large ones). What reads return stays exact: [`READ`]
//! never returns a message older than the newest `size` (it raises the
//! first id it reads from), so clients see what exact trimming would keep.
//! Nodes of the previous build, trimming exactly, read streams written
//! this way without that bound during a rolling upgrade: they may return
//! up to one node more than `size`, never less.
//!
//! Offsets are Lua numbers in the script (doubles), written with
//! `string.format('%d')` (Lua's own `..` would write 10^14 as `1e+14`, an
//! id Redis refuses): exact up to 2^53 pushes per epoch.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, ServerErrorKind};
use sha1::{Digest, Sha1};

use super::RedisBroker;
use super::wire::{HistoryKey, POSITIONED};
use crate::connections::broker::{BrokerError, Published, Route};
use crate::model::{Epoch, Payload, Position, Uid};
use crate::store::{HistoryLimits, HistoryPage, HistoryQuery, Order, StoredMessage};
use crate::telemetry;

/// Stores and publishes a chunk of pushes, each in turn (see the module
/// docs). KEYS: meta and stream of each push. ARGV: 12 hex digits
/// that a new epoch starts with (the push's index in the chunk, as 4 hex
/// digits, ends it), max length, TTL (ms), now (ms), the message header of
/// a push routed through the bus, that of a push delivered at its origin,
/// then per push: its channel, `h` if delivered at its origin (else `b`),
/// its payload. Returns `{offset, epoch, receivers}` per push, flattened;
/// a push the script failed is `{0, the error, 0}` (offsets start at 1).
///
/// `pcall` keeps one push's failure (a key of another type, an id Redis
/// refuses) to that push, as one script per push did: what the failed push
/// wrote before its error stays, and the next push runs.
static STORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local size, ttl, now = ARGV[2], ARGV[3], ARGV[4]
local function store(i)
  local meta, stream, a = KEYS[2 * i - 1], KEYS[2 * i], 3 * i + 4
  local epoch = redis.call('HGET', meta, 'e')
  if not epoch then
    epoch = ARGV[1] .. string.format('%04x', i)
    redis.call('DEL', stream)
    redis.call('HSET', meta, 'e', epoch, 'o', 0)
  end
  local offset = redis.call('HINCRBY', meta, 'o', 1)
  local id = string.format('%d', offset)
  local payload = ARGV[a + 2]
  redis.call('XADD', stream, 'MAXLEN', '~', size, id .. '-0', 'p', payload, 't', now)
  redis.call('PEXPIRE', meta, ttl)
  redis.call('PEXPIRE', stream, ttl)
  local header = ARGV[5]
  if ARGV[a + 1] == 'h' then header = ARGV[6] end
  local n = redis.call('PUBLISH', ARGV[a], header .. id .. ' ' .. epoch .. '\n' .. payload)
  return offset, epoch, n
end
local out = {}
for i = 1, #KEYS / 2 do
  local ok, offset, epoch, n = pcall(store, i)
  if not ok then
    if type(offset) == 'table' then offset = offset.err end
    offset, epoch, n = 0, tostring(offset), 0
  end
  out[3 * i - 2], out[3 * i - 1], out[3 * i] = offset, epoch, n
end
return out
",
    )
});

/// Pushes per [`STORE`] call: a call runs alone in Redis, so a long one
/// would hold up every other client (another node's publish included); at
/// about 5 µs of Redis time per push, 128 pushes hold it about 0.6 ms.
/// Larger batches are several calls in one pipeline.
const CHUNK: usize = 128;

/// Reads a stream's top and a page of it, creating an empty stream (a new
/// epoch) when there is none. KEYS: meta, stream. ARGV: new epoch, TTL
/// (ms), first id (`-`, or `<offset>-0`), `asc` or `desc`, count, history
/// size, most payload bytes. Returns `{epoch, offset, entries}`: never an
/// entry older than the newest `size` (the stream may hold more, see the
/// module docs), and the entries cut before the one whose payload would
/// pass the byte bound (the first always stays: `HistoryQuery::max_bytes`),
/// so a large history never crosses the network whole for one reader.
///
/// The first id is raised to the oldest of the newest `size` offsets when
/// it is below it; a first id past 2^53 reads as a Lua number only roughly,
/// but then it is far above that bound, so it is kept as it came.
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
local first, newest = ARGV[3], tonumber(m[2]) - tonumber(ARGV[6]) + 1
if newest > 1 and (first == '-' or tonumber(string.sub(first, 1, -3)) < newest) then
  first = string.format('%d', newest) .. '-0'
end
local entries
if ARGV[4] == 'asc' then
  entries = redis.call('XRANGE', KEYS[2], first, '+', 'COUNT', n)
else
  entries = redis.call('XREVRANGE', KEYS[2], '+', first, 'COUNT', n)
end
local max, bytes = tonumber(ARGV[7]), 0
for i = 1, #entries do
  local fields, len = entries[i][2], 0
  for j = 1, #fields, 2 do
    if fields[j] == 'p' then len = #fields[j + 1] end
  end
  if bytes > 0 and bytes + len > max then
    for k = #entries, i, -1 do entries[k] = nil end
    break
  end
  bytes = bytes + len
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

/// What [`STORE`] answered for a push it ran: Redis's count of receiving
/// subscriptions and, when it reads, the push's place in the history.
type Stored = (usize, Option<Position>);

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

    /// Stores and publishes `pushes` in one round trip: one [`STORE`] call
    /// per [`CHUNK`] pushes, pipelined (see the module docs); returns what
    /// each reached and where it was stored. Errors: Redis unreachable or
    /// slow, or it refused every push.
    pub(super) async fn store_and_publish(
        &self,
        pushes: &[(Uid, Payload)],
        routes: &[Route],
        limits: &HistoryLimits,
    ) -> Result<Vec<Published>, BrokerError> {
        let mut conn = self.publishing()?;
        let mut replies: Vec<Option<Stored>> = vec![None; pushes.len()];
        let mut pending: Vec<usize> = (0..pushes.len()).step_by(CHUNK).collect();
        let start = std::time::Instant::now();
        // At most one NOSCRIPT per batch: the second run follows a load.
        for _ in 0..2 {
            let mut pipe = self.store_calls(pushes, routes, limits, &pending);
            pipe.ignore_errors();
            let sent: Result<RedisResult<Vec<RedisResult<redis::Value>>>, _> =
                tokio::time::timeout(self.inner.config.timeout, pipe.query_async(&mut conn)).await;
            let Ok(Ok(results)) = sent else {
                tracing::warn!("redis: storing pushes failed or timed out");
                return Err(BrokerError::Unavailable);
            };
            let mut missing = Vec::new();
            for (&first, result) in pending.iter().zip(results) {
                let end = pushes.len().min(first + CHUNK);
                match result {
                    Ok(reply) => read_stored(reply, &mut replies[first..end]),
                    Err(e) if is_noscript(&e) => missing.push(first),
                    Err(e) => tracing::warn!(error = %e, "redis: storing pushes failed"),
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
        let counts = replies.into_iter().map(|reply| reply.unwrap_or((0, None)));
        Ok(self.receivers(pushes, routes, counts))
    }

    /// One [`STORE`] call per chunk of `pushes` starting at each of `firsts`.
    fn store_calls(
        &self,
        pushes: &[(Uid, Payload)],
        routes: &[Route],
        limits: &HistoryLimits,
        firsts: &[usize],
    ) -> redis::Pipeline {
        let channels = &self.inner.channels;
        let now = unix_millis();
        let ttl = millis(limits.ttl);
        let size = limits.size.max(1);
        let bus = self.push_header(Route::Bus, POSITIONED, 0);
        let here = self.push_header(Route::Here, POSITIONED, 0);
        let mut name = String::new();
        let mut pipe = redis::pipe();
        for &first in firsts {
            let chunk = first..pushes.len().min(first + CHUNK);
            let mut call = redis::cmd("EVALSHA");
            call.arg(&STORE.sha).arg(2 * chunk.len());
            for (uid, _) in &pushes[chunk.clone()] {
                channels.history_key_into(uid, HistoryKey::Meta, &mut name);
                call.arg(name.as_str());
                channels.history_key_into(uid, HistoryKey::Stream, &mut name);
                call.arg(name.as_str());
            }
            // 48 random bits: a uid's new epoch differs from its last one
            // but with odds of 2^-48.
            let epoch = format!("{:012x}", fastrand::u64(..1 << 48));
            call.arg(epoch).arg(size).arg(ttl).arg(now);
            call.arg(bus.as_slice()).arg(here.as_slice());
            for ((uid, payload), route) in pushes[chunk.clone()].iter().zip(&routes[chunk]) {
                channels.uid_into(uid, &mut name);
                let route = match route {
                    Route::Bus => "b",
                    Route::Here => "h",
                };
                call.arg(name.as_str()).arg(route).arg(payload.as_bytes());
            }
            pipe.add_command(call);
        }
        pipe
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
            .arg(query.limit)
            .arg(limits.size.max(1))
            .arg(query.max_bytes);
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

/// Reads [`STORE`]'s reply into `out` (one slot per push of its chunk): a
/// slot stays `None` for a push the script failed, and for every push of a
/// reply of another shape (nothing in it is trusted then).
fn read_stored(reply: redis::Value, out: &mut [Option<Stored>]) {
    use redis::Value;
    let Value::Array(items) = reply else {
        tracing::warn!("redis: the store script answered something other than a list");
        return;
    };
    if items.len() != 3 * out.len() {
        tracing::warn!(
            got = items.len(),
            "redis: the store script answered for another number of pushes"
        );
        return;
    }
    let mut items = items.into_iter();
    for slot in out {
        let (Some(offset), Some(epoch), Some(n)) = (items.next(), items.next(), items.next())
        else {
            return;
        };
        *slot = match (offset, epoch, n) {
            (Value::Int(0), Value::BulkString(error), _) => {
                let error = String::from_utf8_lossy(&error);
                tracing::warn!(%error, "redis: storing a push failed");
                None
            }
            (Value::Int(offset), Value::BulkString(epoch), Value::Int(n)) => {
                // Published, so its receivers count even if its position
                // does not read (a meta hash someone else wrote).
                let epoch = std::str::from_utf8(&epoch)
                    .ok()
                    .and_then(|e| e.parse().ok());
                let position = match (u64::try_from(offset), epoch) {
                    (Ok(offset), Some(epoch)) => Some(Position { offset, epoch }),
                    _ => None,
                };
                Some((usize::try_from(n).unwrap_or(0), position))
            }
            _ => None,
        };
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
