//! The node's uid subscriptions: one channel per uid held here, subscribed in
//! batches as presence changes, all of them again after a reconnect.

use std::collections::HashSet;
use std::time::Duration;

use redis::aio::PubSubSink;
use tokio::time::timeout;

use super::{RedisBroker, lock};
use crate::connections::broker::LocalNode;
use crate::model::Uid;
use crate::telemetry;

/// Channels per SUBSCRIBE or UNSUBSCRIBE command, so one command stays a
/// bounded size whatever the number of uids.
const CHANNELS_PER_COMMAND: usize = 1000;

/// A SUBSCRIBE or UNSUBSCRIBE failed or timed out: the session is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a Redis subscription command failed or timed out")]
pub(super) struct CommandFailed;

/// The subscribing half of a session and the uids it subscribes.
pub(super) struct Subscriptions {
    sink: PubSubSink,
    subscribed: HashSet<Uid>,
    /// Longest wait for one command.
    limit: Duration,
}

impl Subscriptions {
    /// Starts with nothing subscribed on `sink`.
    pub(super) fn new(sink: PubSubSink, limit: Duration) -> Subscriptions {
        Subscriptions {
            sink,
            subscribed: HashSet::new(),
            limit,
        }
    }

    /// Uids subscribed now.
    pub(super) fn len(&self) -> usize {
        self.subscribed.len()
    }

    /// Subscribes fixed channels (broadcast, the node's probe channel).
    pub(super) async fn subscribe_fixed(
        &mut self,
        channels: &[String],
    ) -> Result<(), CommandFailed> {
        match timeout(self.limit, self.sink.subscribe(channels)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(CommandFailed),
        }
    }

    /// Subscribes every uid `local` holds. Starts from the map itself:
    /// whatever changed before this snapshot is in it, whatever changes
    /// after is in the broker's dirty set.
    pub(super) async fn subscribe_all<L: LocalNode>(
        &mut self,
        broker: &RedisBroker,
        local: &L,
    ) -> Result<(), CommandFailed> {
        lock(&broker.inner.dirty).clear();
        let all = local.held_uids();
        for chunk in all.chunks(CHANNELS_PER_COMMAND) {
            self.subscribe(broker, chunk.to_vec()).await?;
        }
        Ok(())
    }

    /// Applies the batched presence changes: one SUBSCRIBE for every uid
    /// that gained its first local connection, one UNSUBSCRIBE for every uid
    /// that lost its last, whatever their number. Reads `local`'s state
    /// rather than the changes' order, so a uid that came and went is left
    /// as it is now.
    pub(super) async fn apply_changes<L: LocalNode>(
        &mut self,
        broker: &RedisBroker,
        local: &L,
    ) -> Result<(), CommandFailed> {
        let changed: Vec<Uid> = lock(&broker.inner.dirty).drain().collect();
        let mut add = Vec::new();
        let mut remove = Vec::new();
        for uid in changed {
            match (local.holds(&uid), self.subscribed.contains(&uid)) {
                (true, false) => add.push(uid),
                (false, true) => remove.push(uid),
                _ => {}
            }
        }
        for chunk in add.chunks(CHANNELS_PER_COMMAND) {
            self.subscribe(broker, chunk.to_vec()).await?;
        }
        for chunk in remove.chunks(CHANNELS_PER_COMMAND) {
            self.unsubscribe(broker, chunk).await?;
        }
        telemetry::redis_subscriptions(self.subscribed.len());
        Ok(())
    }

    async fn subscribe(
        &mut self,
        broker: &RedisBroker,
        uids: Vec<Uid>,
    ) -> Result<(), CommandFailed> {
        if uids.is_empty() {
            return Ok(());
        }
        let channels: Vec<String> = uids.iter().map(|u| broker.inner.channels.uid(u)).collect();
        self.subscribe_fixed(&channels).await?;
        let mut confirmed = lock(&broker.inner.confirmed);
        for uid in uids {
            confirmed.insert(uid.clone());
            self.subscribed.insert(uid);
        }
        drop(confirmed);
        broker.inner.subscribed.notify_waiters();
        telemetry::redis_subscriptions(self.subscribed.len());
        Ok(())
    }

    async fn unsubscribe(
        &mut self,
        broker: &RedisBroker,
        uids: &[Uid],
    ) -> Result<(), CommandFailed> {
        let channels: Vec<String> = uids.iter().map(|u| broker.inner.channels.uid(u)).collect();
        if !matches!(
            timeout(self.limit, self.sink.unsubscribe(&channels)).await,
            Ok(Ok(()))
        ) {
            return Err(CommandFailed);
        }
        let mut confirmed = lock(&broker.inner.confirmed);
        for uid in uids {
            self.subscribed.remove(uid);
            confirmed.remove(uid);
        }
        Ok(())
    }
}
