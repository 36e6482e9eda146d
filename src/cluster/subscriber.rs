//! The bus supervisor: one subscription connection and one publishing
//! connection per node, re-established with capped, fully jittered backoff
//! whenever Redis goes away, starves the subscription, or fails a probe.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::PubSubSink;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep, timeout};

use super::wire::{self, DecodeError, Kind, Target};
use super::{Cluster, lock};
use crate::connections::ConnectionMap;
use crate::model::{Payload, Uid};
use crate::shutdown::Shutdown;
use crate::telemetry;

/// The ceiling of the first pause between reconnection attempts, and the
/// largest ceiling: it doubles per failed attempt up to this.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(3);
/// Channels per SUBSCRIBE command when resubscribing everything.
const CHUNK: usize = 1000;
/// How long presence changes gather before one batch goes to Redis.
const BATCH_WINDOW: Duration = Duration::from_millis(10);
/// How often, at most, a node reports its counts for `/stats` (more often
/// when the probe interval is shorter, so a report always outlives the next).
const STATS_EVERY: Duration = Duration::from_secs(2);

/// The pause before reconnection attempt `failures + 1`: uniformly random
/// between zero and `min(BACKOFF_MAX, BACKOFF_MIN * 2^failures)` ("full
/// jitter", AWS Architecture Blog, "Exponential Backoff And Jitter"), so the
/// nodes of a cluster do not all reconnect and resubscribe every uid in
/// lockstep after a Redis restart.
fn backoff(failures: u32) -> Duration {
    let ceiling = backoff_ceiling(failures);
    let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..=ceiling_ms))
}

/// `min(BACKOFF_MAX, BACKOFF_MIN * 2^failures)`.
fn backoff_ceiling(failures: u32) -> Duration {
    BACKOFF_MIN
        .checked_mul(2u32.saturating_pow(failures.min(31)))
        .map_or(BACKOFF_MAX, |d| d.min(BACKOFF_MAX))
}

/// Why a bus session ended (a metrics label).
#[derive(Debug, Clone, Copy)]
enum Lost {
    Connect,
    Connection,
    Command,
    Probe,
    NotMaster,
    Shutdown,
}

impl Lost {
    fn as_str(self) -> &'static str {
        match self {
            Lost::Connect => "connect_failed",
            Lost::Connection => "connection_lost",
            Lost::Command => "command_failed",
            Lost::Probe => "probe_failed",
            Lost::NotMaster => "not_master",
            Lost::Shutdown => "shutdown",
        }
    }
}

/// Runs the bus for this node until the stop phase of shutdown.
pub async fn run(cluster: Cluster, map: ConnectionMap, shutdown: Shutdown) {
    // Failed attempts since the bus was last up.
    let mut failures: u32 = 0;
    let up = metrics::gauge!(telemetry::REDIS_UP);
    up.set(0.0);
    loop {
        let lost = tokio::select! {
            _ = shutdown.stopping() => Lost::Shutdown,
            lost = session(&cluster, &map, &mut failures) => lost,
        };
        if let Lost::Shutdown = lost {
            set_down(&cluster);
            up.set(0.0);
            return;
        }
        // Counted before the gauge drops, so whoever sees the bus down also
        // sees why.
        metrics::counter!(telemetry::REDIS_RECONNECTS, "reason" => lost.as_str()).increment(1);
        set_down(&cluster);
        up.set(0.0);
        let pause = backoff(failures);
        tracing::warn!(reason = lost.as_str(), retry_in = ?pause, "redis bus down");
        tokio::select! {
            _ = shutdown.stopping() => return,
            _ = sleep(pause) => {}
        }
        failures = failures.saturating_add(1);
    }
}

fn set_down(cluster: &Cluster) {
    cluster.inner.up.store(false, Ordering::Release);
    *cluster
        .inner
        .publisher
        .write()
        .unwrap_or_else(|p| p.into_inner()) = None;
    lock(&cluster.inner.confirmed).clear();
    metrics::gauge!(telemetry::REDIS_SUBSCRIPTIONS).set(0.0);
}

/// One connected period: connect, subscribe everything, then serve messages,
/// subscription changes, probes and stats reports until something fails.
async fn session(cluster: &Cluster, map: &ConnectionMap, failures: &mut u32) -> Lost {
    let inner = &cluster.inner;
    let limit = inner.config.timeout.max(Duration::from_secs(1));
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(limit))
        .set_response_timeout(Some(inner.config.timeout));
    let Ok(Ok(client)) = timeout(limit, inner.source.client()).await else {
        return Lost::Connect;
    };
    let Ok(Ok(pubsub)) = timeout(limit, client.get_async_pubsub()).await else {
        return Lost::Connect;
    };
    let Ok(Ok(mut publisher)) = timeout(
        limit,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    else {
        return Lost::Connect;
    };
    match is_master(&mut publisher, limit).await {
        Some(true) => {}
        Some(false) => return Lost::NotMaster,
        None => return Lost::Command,
    }
    let (mut sink, mut stream) = pubsub.split();
    let node_channel = inner.channels.node(cluster.node_id());
    let fixed = vec![inner.channels.broadcast(), node_channel];
    if !matches!(timeout(limit, sink.subscribe(&fixed)).await, Ok(Ok(()))) {
        return Lost::Command;
    }
    // Start from the map itself: whatever changed before this snapshot is in
    // it, whatever changes after is in `dirty`.
    lock(&inner.dirty).clear();
    let mut subscribed: HashSet<Uid> = HashSet::new();
    let all: Vec<Uid> = map.uids();
    for chunk in all.chunks(CHUNK) {
        if subscribe(cluster, &mut sink, &mut subscribed, chunk.to_vec(), limit)
            .await
            .is_err()
        {
            return Lost::Command;
        }
    }
    *inner.publisher.write().unwrap_or_else(|p| p.into_inner()) = Some(publisher.clone());
    inner.up.store(true, Ordering::Release);
    metrics::gauge!(telemetry::REDIS_UP).set(1.0);
    *failures = 0;
    tracing::info!(
        node = cluster.node_id(),
        uids = subscribed.len(),
        "redis bus up"
    );

    let mut probe = interval(inner.config.probe_interval);
    probe.set_missed_tick_behavior(MissedTickBehavior::Delay);
    probe.tick().await;
    let mut stats = interval(STATS_EVERY.min(inner.config.probe_interval));
    stats.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut probe_seq: u64 = 0;
    let mut probe_due: Option<(u64, Instant)> = None;

    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(msg) => {
                    let probe_ok = handle(cluster, map, &msg, probe_due.map(|(seq, _)| seq));
                    if probe_ok {
                        probe_due = None;
                    }
                }
                None => return Lost::Connection,
            },
            _ = inner.wake.notified() => {
                // Let a storm of connects and disconnects gather into one
                // SUBSCRIBE and one UNSUBSCRIBE.
                sleep(BATCH_WINDOW).await;
                if apply_changes(cluster, map, &mut sink, &mut subscribed, limit).await.is_err() {
                    return Lost::Command;
                }
            }
            _ = probe.tick() => {
                // After a failover the old master lives on as a replica that
                // accepts PUBLISH and delivers it to nobody on the new one.
                match is_master(&mut publisher, limit).await {
                    Some(true) => {}
                    Some(false) => {
                        tracing::warn!("redis server is no longer a master: reconnecting");
                        return Lost::NotMaster;
                    }
                    // No answer at all: the connection is starved or dead.
                    None => return Lost::Probe,
                }
                if probe_due.is_some_and(|(_, due)| Instant::now() >= due) {
                    tracing::warn!("redis subscription probe was not received: reconnecting");
                    return Lost::Probe;
                }
                if probe_due.is_none() {
                    probe_seq += 1;
                    let message = cluster.encode(Kind::Probe, probe_seq.to_string().as_bytes());
                    let channel = inner.channels.node(cluster.node_id());
                    match timeout(limit, publisher.publish::<_, _, usize>(channel, message)).await {
                        // Redis counts no subscriber on our own channel: the
                        // subscription is gone even though the socket lives.
                        Ok(Ok(0)) => return Lost::Probe,
                        Ok(Ok(_)) => probe_due = Some((probe_seq, Instant::now() + inner.config.probe_interval)),
                        _ => return Lost::Probe,
                    }
                }
            }
            _ = stats.tick() => {
                let counts = [map.connections(), map.bound_connections(), map.bound_uids()];
                if !matches!(
                    timeout(limit, cluster.report_stats(&mut publisher, counts)).await,
                    Ok(Ok(()))
                ) {
                    return Lost::Command;
                }
            }
        }
    }
}

/// Whether the server behind `conn` is a master (`ROLE`), so publishes reach
/// every subscriber of the deployment; `None` when it does not answer.
async fn is_master(conn: &mut redis::aio::MultiplexedConnection, limit: Duration) -> Option<bool> {
    let role: Result<Result<redis::Value, _>, _> =
        timeout(limit, redis::cmd("ROLE").query_async(conn)).await;
    match role {
        Ok(Ok(redis::Value::Array(items))) => Some(matches!(
            items.first(),
            Some(redis::Value::BulkString(b)) if b == b"master"
        )),
        _ => None,
    }
}

/// Delivers one bus message locally. Returns whether it was the awaited probe.
fn handle(cluster: &Cluster, map: &ConnectionMap, msg: &redis::Msg, probe: Option<u64>) -> bool {
    let message = match wire::decode(msg.get_payload_bytes()) {
        Ok(message) => message,
        Err(DecodeError::UnknownVersion(_)) => {
            metrics::counter!(telemetry::DROPPED, "reason" => telemetry::BUS_UNKNOWN_VERSION)
                .increment(1);
            return false;
        }
        Err(DecodeError::Malformed) => {
            metrics::counter!(telemetry::DROPPED, "reason" => "bus_malformed").increment(1);
            return false;
        }
    };
    let same_id = message.origin == cluster.node_id();
    let own = same_id && message.nonce == cluster.inner.nonce;
    if same_id && !own && cluster.twin_heard() {
        metrics::counter!(telemetry::DUPLICATE_NODE_ID).increment(1);
        tracing::error!(
            node = cluster.node_id(),
            "another node uses this node id: not ready, and cross-node pushes answer fail \
             until it is gone; give every node its own --node-id"
        );
    }
    match (
        cluster.inner.channels.target(msg.get_channel_name()),
        message.kind,
    ) {
        (Target::Node, Kind::Probe) => {
            own && probe.is_some_and(|seq| message.payload == seq.to_string().as_bytes())
        }
        // This node delivered its own pushes locally already.
        _ if own => false,
        (Target::Uid(uid), Kind::Push) => {
            match Payload::try_from(message.payload) {
                Ok(payload) => map.deliver_local(&uid, &payload),
                Err(_) => {
                    metrics::counter!(telemetry::DROPPED, "reason" => "bus_malformed").increment(1);
                }
            }
            false
        }
        (Target::Uid(uid), Kind::Kick) => {
            map.disconnect_local(&uid);
            false
        }
        (Target::Broadcast, Kind::Push) => {
            if let Ok(payload) = Payload::try_from(message.payload) {
                map.broadcast_local(&payload);
            }
            false
        }
        _ => false,
    }
}

/// Applies the batched presence changes: one SUBSCRIBE for every uid that
/// gained its first local connection, one UNSUBSCRIBE for every uid that lost
/// its last, whatever their number.
async fn apply_changes(
    cluster: &Cluster,
    map: &ConnectionMap,
    sink: &mut PubSubSink,
    subscribed: &mut HashSet<Uid>,
    limit: Duration,
) -> Result<(), ()> {
    let changed: Vec<Uid> = lock(&cluster.inner.dirty).drain().collect();
    let mut add = Vec::new();
    let mut remove = Vec::new();
    for uid in changed {
        let wanted = map.connections_of(&uid) > 0;
        match (wanted, subscribed.contains(&uid)) {
            (true, false) => add.push(uid),
            (false, true) => remove.push(uid),
            _ => {}
        }
    }
    for chunk in add.chunks(CHUNK) {
        subscribe(cluster, sink, subscribed, chunk.to_vec(), limit).await?;
    }
    for chunk in remove.chunks(CHUNK) {
        let channels: Vec<String> = chunk
            .iter()
            .map(|u| cluster.inner.channels.uid(u))
            .collect();
        if !matches!(
            timeout(limit, sink.unsubscribe(&channels)).await,
            Ok(Ok(()))
        ) {
            return Err(());
        }
        let mut confirmed = lock(&cluster.inner.confirmed);
        for uid in chunk {
            subscribed.remove(uid);
            confirmed.remove(uid);
        }
    }
    metrics::gauge!(telemetry::REDIS_SUBSCRIPTIONS).set(subscribed.len() as f64);
    Ok(())
}

async fn subscribe(
    cluster: &Cluster,
    sink: &mut PubSubSink,
    subscribed: &mut HashSet<Uid>,
    uids: Vec<Uid>,
    limit: Duration,
) -> Result<(), ()> {
    if uids.is_empty() {
        return Ok(());
    }
    let channels: Vec<String> = uids.iter().map(|u| cluster.inner.channels.uid(u)).collect();
    if !matches!(timeout(limit, sink.subscribe(&channels)).await, Ok(Ok(()))) {
        return Err(());
    }
    let mut confirmed = lock(&cluster.inner.confirmed);
    for uid in uids {
        confirmed.insert(uid.clone());
        subscribed.insert(uid);
    }
    metrics::gauge!(telemetry::REDIS_SUBSCRIPTIONS).set(subscribed.len() as f64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reconnect_label_is_exported_from_the_start() {
        for lost in [
            Lost::Connect,
            Lost::Connection,
            Lost::Command,
            Lost::Probe,
            Lost::NotMaster,
        ] {
            assert!(telemetry::is_listed(
                telemetry::REDIS_RECONNECTS,
                lost.as_str()
            ));
        }
        for e in [
            super::super::BusError::Unavailable,
            super::super::BusError::DuplicateNodeId,
        ] {
            assert!(telemetry::is_listed(telemetry::PUSH_FAILURES, e.reason()));
        }
    }

    #[test]
    fn the_backoff_ceiling_doubles_from_100ms_to_3s() {
        let ceilings: Vec<u128> = (0..8).map(|n| backoff_ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 3000, 3000, 3000]);
        assert_eq!(backoff_ceiling(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn backoff_pauses_are_spread_between_zero_and_the_ceiling() {
        for failures in [0, 3, 10] {
            let ceiling = backoff_ceiling(failures);
            let pauses: Vec<Duration> = (0..200).map(|_| backoff(failures)).collect();
            assert!(pauses.iter().all(|p| *p <= ceiling), "{pauses:?}");
            // Full jitter: pauses land in both halves of the range, so two
            // nodes failing together do not retry together.
            assert!(pauses.iter().any(|p| *p < ceiling / 2), "{pauses:?}");
            assert!(pauses.iter().any(|p| *p > ceiling / 2), "{pauses:?}");
        }
    }
}
