//! Publishing on the bus: pushes (pipelined), broadcasts, disconnects, and
//! the counts of receivers that make `ok`/`fail` exact across the cluster.

use std::time::Instant;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

use super::wire::Kind;
use super::{RedisBroker, lock};
use crate::connections::broker::{BrokerError, Published, Route};
use crate::model::{Payload, Position, Uid};
use crate::telemetry;

impl RedisBroker {
    /// Asks the other nodes to close `uid`'s connections; returns how many
    /// other nodes received the request (each closes its connections of
    /// `uid`).
    pub(super) async fn disconnect_elsewhere(&self, uid: &Uid) -> Result<usize, BrokerError> {
        self.publish_uid(Kind::Disconnect, uid, b"").await
    }

    /// Publishes a broadcast; returns how many other nodes got it.
    pub(super) async fn broadcast_elsewhere(&self, payload: &[u8]) -> Result<usize, BrokerError> {
        let n = self
            .publish(&self.inner.channels.broadcast(), Kind::Push, payload)
            .await?;
        // Every node, this one included, subscribes the broadcast channel.
        Ok(n.saturating_sub(usize::from(self.is_up())))
    }

    /// Publishes several pushes in one pipelined round trip, each marked
    /// with its route; returns, per push and in order, who got it.
    pub(super) async fn push_elsewhere(
        &self,
        pushes: &[(Uid, Payload)],
        routes: &[Route],
    ) -> Result<Vec<Published>, BrokerError> {
        let mut conn = self.publishing()?;
        let mut pipe = redis::pipe();
        for ((uid, payload), route) in pushes.iter().zip(routes) {
            let mut message = self.push_header(*route, 0, payload.len());
            message.extend_from_slice(payload.as_bytes());
            pipe.publish(self.inner.channels.uid(uid), message);
        }
        let start = Instant::now();
        let sent: Result<Result<Vec<usize>, _>, _> =
            tokio::time::timeout(self.inner.config.timeout, pipe.query_async(&mut conn)).await;
        telemetry::redis_publish_took(start.elapsed());
        let counts = match sent {
            Ok(Ok(counts)) if counts.len() == pushes.len() => counts,
            Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {
                tracing::warn!("redis pipelined publish failed or timed out");
                return Err(BrokerError::Unavailable);
            }
        };
        Ok(self.receivers(pushes, routes, counts.into_iter().map(|n| (n, None))))
    }

    /// Turns Redis's receiver counts (and positions) into what each push
    /// reached. A [`Route::Bus`] push was published while this node's
    /// subscription was confirmed, so Redis counted it among the receivers.
    /// For a [`Route::Here`] push, as in `publish_uid`: subtracting this
    /// node's own confirmed subscription can only undercount.
    pub(super) fn receivers(
        &self,
        pushes: &[(Uid, Payload)],
        routes: &[Route],
        counts: impl Iterator<Item = (usize, Option<Position>)>,
    ) -> Vec<Published> {
        let confirmed = lock(&self.inner.confirmed);
        pushes
            .iter()
            .zip(routes)
            .zip(counts)
            .map(|(((uid, _), route), (n, stored))| match route {
                Route::Bus => Published {
                    others: n.saturating_sub(1),
                    here: n > 0,
                    stored,
                },
                Route::Here => Published {
                    others: n.saturating_sub(usize::from(confirmed.contains(uid))),
                    here: false,
                    stored,
                },
            })
            .collect()
    }

    async fn publish_uid(
        &self,
        kind: Kind,
        uid: &Uid,
        payload: &[u8],
    ) -> Result<usize, BrokerError> {
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

    async fn publish(
        &self,
        channel: &str,
        kind: Kind,
        payload: &[u8],
    ) -> Result<usize, BrokerError> {
        let mut conn = self.publishing()?;
        let message = self.encode(kind, payload);
        let start = Instant::now();
        let sent = tokio::time::timeout(
            self.inner.config.timeout,
            conn.publish::<_, _, usize>(channel, message),
        )
        .await;
        telemetry::redis_publish_took(start.elapsed());
        match sent {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis publish failed");
                Err(BrokerError::Unavailable)
            }
            Err(_) => {
                tracing::warn!("redis publish timed out");
                Err(BrokerError::Unavailable)
            }
        }
    }

    /// The connection to publish on, unless a twin makes every count of
    /// receivers meaningless.
    pub(super) fn publishing(&self) -> Result<MultiplexedConnection, BrokerError> {
        if self.has_duplicate_id() {
            return Err(BrokerError::DuplicateNodeId);
        }
        self.publisher()
    }

    pub(super) fn publisher(&self) -> Result<MultiplexedConnection, BrokerError> {
        self.inner
            .publisher
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(BrokerError::Unavailable)
    }

    /// Nodes whose subscription to `uid`'s channel Redis has confirmed.
    pub(super) async fn subscribed_nodes(&self, uid: &Uid) -> Result<usize, BrokerError> {
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
            _ => Err(BrokerError::Unavailable),
        }
    }
}
