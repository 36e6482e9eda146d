//! The bus supervisor: one subscription connection and one publishing
//! connection per node, re-established with capped, fully jittered backoff
//! whenever Redis goes away, starves the subscription, or fails a probe.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::{MultiplexedConnection, PubSubStream};
use tokio::time::{Instant, Interval, MissedTickBehavior, interval, sleep, timeout};

use super::diagnose::{hint, is_master, step};
use super::presence::{CommandFailed, Subscriptions};
use super::wire::Kind;
use super::{RedisBroker, inbound, lock};
use crate::connections::broker::LocalNode;
use crate::shutdown::Shutdown;
use crate::telemetry;

/// The ceiling of the first pause between reconnection attempts, and the
/// largest ceiling: it doubles per failed attempt up to this.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(3);
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

/// Why a bus session ended: the session's typed error, and the `reason`
/// label of the reconnect counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lost {
    Connect,
    Connection,
    Command,
    Probe,
    NotMaster,
    Shutdown,
}

impl From<CommandFailed> for Lost {
    fn from(_: CommandFailed) -> Lost {
        Lost::Command
    }
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

/// Runs the bus for this node until the stop phase of shutdown: one
/// session after another, with backoff between them.
pub(super) async fn run<L: LocalNode>(broker: RedisBroker, local: L, shutdown: Shutdown) {
    // Failed attempts since the bus was last up.
    let mut failures: u32 = 0;
    telemetry::redis_up(false);
    loop {
        let lost = tokio::select! {
            _ = shutdown.stopping() => Lost::Shutdown,
            lost = session(&broker, &local, &mut failures) => lost,
        };
        if let Lost::Shutdown = lost {
            set_down(&broker);
            return;
        }
        // Counted before the gauge drops, so whoever sees the bus down also
        // sees why.
        telemetry::redis_reconnect(lost.as_str());
        set_down(&broker);
        let pause = backoff(failures);
        tracing::warn!(reason = lost.as_str(), retry_in = ?pause, "redis bus down");
        tokio::select! {
            _ = shutdown.stopping() => return,
            _ = sleep(pause) => {}
        }
        failures = failures.saturating_add(1);
    }
}

fn set_down(broker: &RedisBroker) {
    broker.inner.up.store(false, Ordering::Release);
    *broker
        .inner
        .publisher
        .write()
        .unwrap_or_else(|p| p.into_inner()) = None;
    lock(&broker.inner.confirmed).clear();
    telemetry::redis_subscriptions(0);
    telemetry::redis_up(false);
}

/// One connected period: connect and subscribe everything, then serve until
/// something fails. Returns why it ended.
async fn session<L: LocalNode>(broker: &RedisBroker, local: &L, failures: &mut u32) -> Lost {
    let (mut session, stream) = match connect(broker, local).await {
        Ok(connected) => connected,
        Err(lost) => return lost,
    };
    *failures = 0;
    match session.serve(stream).await {
        Ok(never) => match never {},
        Err(lost) => lost,
    }
}

/// A connected, subscribed session: what its steps share.
struct Session<'a, L> {
    broker: &'a RedisBroker,
    local: &'a L,
    publisher: MultiplexedConnection,
    subscriptions: Subscriptions,
    /// Longest wait for one command.
    limit: Duration,
    /// The last probe's sequence number.
    probe_seq: u64,
    /// The probe awaited on the node's own channel, and when it is overdue.
    probe_due: Option<(u64, Instant)>,
}

/// Opens the subscription and publishing connections to the current master,
/// subscribes the fixed channels and every uid held here, and marks the bus
/// up.
async fn connect<'a, L: LocalNode>(
    broker: &'a RedisBroker,
    local: &'a L,
) -> Result<(Session<'a, L>, PubSubStream), Lost> {
    let inner = &broker.inner;
    let limit = inner.config.timeout.max(Duration::from_secs(1));
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(limit))
        .set_response_timeout(Some(inner.config.timeout));
    let client = step(limit, "resolve the Redis master", inner.endpoint.client()).await?;
    let pubsub = step(limit, "open the subscription", client.get_async_pubsub()).await?;
    let mut publisher = step(
        limit,
        "open the publishing connection",
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await?;
    match is_master(&mut publisher, limit).await {
        Ok(true) => {}
        Ok(false) => return Err(Lost::NotMaster),
        Err(e) => {
            tracing::warn!(error = %e, hint = hint(&e), "redis: ROLE failed");
            return Err(Lost::Command);
        }
    }
    let (sink, stream) = pubsub.split();
    let mut subscriptions = Subscriptions::new(sink, limit);
    let fixed = [inner.channels.broadcast(), inner.channels.node(broker.id())];
    subscriptions.subscribe_fixed(&fixed).await?;
    subscriptions.subscribe_all(broker, local).await?;
    *inner.publisher.write().unwrap_or_else(|p| p.into_inner()) = Some(publisher.clone());
    inner.up.store(true, Ordering::Release);
    telemetry::redis_up(true);
    tracing::info!(
        node = broker.id(),
        uids = subscriptions.len(),
        "redis bus up"
    );
    let session = Session {
        broker,
        local,
        publisher,
        subscriptions,
        limit,
        probe_seq: 0,
        probe_due: None,
    };
    Ok((session, stream))
}

impl<L: LocalNode> Session<'_, L> {
    /// Serves messages, presence changes, probes and stats reports until
    /// one of them fails.
    async fn serve(&mut self, mut stream: PubSubStream) -> Result<std::convert::Infallible, Lost> {
        let config = &self.broker.inner.config;
        let mut probe = ticker(config.probe_interval);
        // The first probe waits one interval; the first stats report goes
        // out at once.
        probe.tick().await;
        let mut stats = ticker(STATS_EVERY.min(config.probe_interval));
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => self.message(&msg),
                    None => return Err(Lost::Connection),
                },
                _ = self.broker.inner.wake.notified() => self.presence().await?,
                _ = probe.tick() => self.probe().await?,
                _ = stats.tick() => self.report_stats().await?,
            }
        }
    }

    /// Delivers one message; notes the awaited probe's arrival.
    fn message(&mut self, msg: &redis::Msg) {
        let awaited = self.probe_due.map(|(seq, _)| seq);
        if inbound::handle(self.broker, self.local, msg, awaited) {
            self.probe_due = None;
        }
    }

    /// Applies a batch of presence changes.
    async fn presence(&mut self) -> Result<(), Lost> {
        // Let a storm of connects and disconnects gather into one SUBSCRIBE
        // and one UNSUBSCRIBE.
        sleep(BATCH_WINDOW).await;
        self.subscriptions
            .apply_changes(self.broker, self.local)
            .await?;
        Ok(())
    }

    /// Checks the server is still the master and the node's own subscription
    /// still receives: a probe published on its channel must come back
    /// within one interval.
    async fn probe(&mut self) -> Result<(), Lost> {
        // After a failover the old master lives on as a replica that accepts
        // PUBLISH and delivers it to nobody on the new one.
        match is_master(&mut self.publisher, self.limit).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("redis server is no longer a master: reconnecting");
                return Err(Lost::NotMaster);
            }
            // No answer at all: the connection is starved or dead.
            Err(e) => {
                tracing::warn!(error = %e, "redis: the probe's ROLE failed: reconnecting");
                return Err(Lost::Probe);
            }
        }
        if self.probe_due.is_some_and(|(_, due)| Instant::now() >= due) {
            tracing::warn!("redis subscription probe was not received: reconnecting");
            return Err(Lost::Probe);
        }
        if self.probe_due.is_none() {
            self.probe_seq += 1;
            let inner = &self.broker.inner;
            let message = self
                .broker
                .encode(Kind::Probe, self.probe_seq.to_string().as_bytes());
            let channel = inner.channels.node(self.broker.id());
            let published = timeout(
                self.limit,
                self.publisher.publish::<_, _, usize>(channel, message),
            )
            .await;
            match published {
                // Redis counts no subscriber on our own channel: the
                // subscription is gone even though the socket lives.
                Ok(Ok(0)) => return Err(Lost::Probe),
                Ok(Ok(_)) => {
                    let due = Instant::now() + inner.config.probe_interval;
                    self.probe_due = Some((self.probe_seq, due));
                }
                _ => return Err(Lost::Probe),
            }
        }
        Ok(())
    }

    /// Writes this node's counts for `/stats`.
    async fn report_stats(&mut self) -> Result<(), Lost> {
        let local = self.local.local_stats();
        let counts = [local.connections, local.bound_connections, local.bound_uids];
        match timeout(
            self.limit,
            self.broker.report_stats(&mut self.publisher, counts),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            _ => Err(Lost::Command),
        }
    }
}

/// An interval (first tick at once) that waits out a missed tick instead of
/// bursting.
fn ticker(period: Duration) -> Interval {
    let mut ticker = interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
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
            crate::connections::broker::BrokerError::Unavailable,
            crate::connections::broker::BrokerError::DuplicateNodeId,
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
