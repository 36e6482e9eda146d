//! Binds that resume from a stream position, and reads of history.
//!
//! A resume must give the client every push after its offset, once, in
//! order, and then the live stream, with no gap even for pushes that arrive
//! while the replay is read. The order of steps makes that hold: the
//! connection is bound first (live pushes start queuing), the node's
//! subscription is confirmed (cluster mode: later pushes reach this node),
//! and only then is the history read. Every push is therefore in the read,
//! or queued live, or both; the front end drops a live message whose offset
//! the replay already covered ([`Bound::replayed_up_to`]).
//!
//! On a single node the bind and the read happen under the table lock, in
//! one step, so nothing is in both.

use super::broker::{Broker, BrokerError};
use super::{BindError, Connection, ConnectionMap, mailbox};
use crate::model::{Position, Uid};
use crate::store::{self, HistoryPage, HistoryQuery, Order, StoredMessage, Unrecoverable};

/// What a bind with history tells the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// The uid's stream when bound: its epoch and the offset of its newest
    /// message. `None`: history is off, or the store could not be read.
    pub top: Option<Position>,
    /// Only after a bind with `since`: the messages after that offset to
    /// send before any live one (oldest first), or why they cannot be.
    pub recovery: Option<Result<Vec<StoredMessage>, Unrecoverable>>,
}

impl Bound {
    /// The offset up to which the client has everything once the bind
    /// answer and the replay are sent: a live message at or below it is a
    /// duplicate. `None`: no position (history off).
    pub fn replayed_up_to(&self) -> Option<Position> {
        self.top
    }
}

/// Why history could not be read or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// `--history` is off.
    #[error("history is off (start pushgate with --history)")]
    Off,
    /// The store (Redis) could not be reached.
    #[error(transparent)]
    Unavailable(#[from] BrokerError),
}

impl Connection {
    /// Binds this connection to `uid` and reads where its stream stands;
    /// with `since`, also the messages the client missed (see the module
    /// docs for why nothing falls between them and the live stream).
    /// Errors: the connection is already bound.
    ///
    /// Cancel-safe: the connection is bound (and its uid recorded, so
    /// dropping it unbinds) before the one wait, the cluster's read of
    /// history; a front end may bound that wait with a deadline.
    pub async fn bind_stream(
        &mut self,
        uid: Uid,
        since: Option<Position>,
    ) -> Result<Bound, BindError> {
        let outbox = self.pending.take().ok_or(BindError::AlreadyBound)?;
        let step = self.map.bind_with_history(&uid, outbox, since);
        self.uid = Some(uid.clone());
        Ok(match step {
            BindStep::Done(bound) => bound,
            BindStep::ReadRemote(query) => {
                let page = self.map.read_remote(&uid, &query).await;
                bound_from(since, page)
            }
        })
    }
}

/// What is left of a bind with history once the connection is in the table.
enum BindStep {
    /// Nothing: history off, or read in the same step (single node).
    Done(Bound),
    /// Cluster mode: the broker's read of the stream.
    ReadRemote(HistoryQuery),
}

/// The bind's answer from a read of the stream (or its failure).
fn bound_from(since: Option<Position>, page: Result<HistoryPage, BrokerError>) -> Bound {
    match page {
        Ok(page) => Bound {
            top: Some(page.top),
            recovery: since.map(|since| store::recovery(since, page)),
        },
        Err(_) => Bound {
            top: None,
            recovery: since.map(|_| Err(Unrecoverable::Unavailable)),
        },
    }
}

impl ConnectionMap {
    /// Binds `outbox` to `uid`; on a single node with history, reads the
    /// stream in the same step under the table lock. Never waits.
    fn bind_with_history(
        &self,
        uid: &Uid,
        outbox: mailbox::Outbox,
        since: Option<Position>,
    ) -> BindStep {
        let Some(limits) = self.shared.history else {
            self.bind(uid, outbox);
            return BindStep::Done(Bound {
                top: None,
                recovery: since.map(|_| Err(Unrecoverable::HistoryOff)),
            });
        };
        let query = HistoryQuery {
            since: since.map(|p| p.offset),
            // A resume needs everything after its offset; the stream holds
            // at most `size`.
            limit: if since.is_some() { limits.size } else { 0 },
            order: Order::OldestFirst,
            // A replay costs no more than a full queue (`--queue-bytes`);
            // past it the resume is `too_large` (see `store::recovery`).
            max_bytes: self.shared.limits.max_bytes,
        };
        let local = {
            let mut guard = self.lock();
            let table = &mut *guard;
            match table.history.as_mut() {
                Some(history) => {
                    let page = history.read(uid, &query, std::time::Instant::now());
                    Ok((page, self.bind_in(table, uid, outbox)))
                }
                None => Err(outbox),
            }
        };
        match local {
            Ok((page, change)) => {
                self.presence_changed(change.as_slice());
                BindStep::Done(bound_from(since, Ok(page)))
            }
            Err(outbox) => {
                self.bind(uid, outbox);
                BindStep::ReadRemote(query)
            }
        }
    }

    /// Cluster mode: once this node's subscription to `uid` is confirmed,
    /// the broker's read of the stream.
    async fn read_remote(
        &self,
        uid: &Uid,
        query: &HistoryQuery,
    ) -> Result<HistoryPage, BrokerError> {
        let broker = &self.shared.broker;
        broker.await_subscribed(uid).await?;
        broker.read_history(uid, query).await
    }

    /// `GET /history/{uid}`: where `uid`'s stream stands and the messages
    /// `query` asks for. Errors: history is off, or the store is unreachable.
    pub async fn history(
        &self,
        uid: &Uid,
        query: &HistoryQuery,
    ) -> Result<HistoryPage, HistoryError> {
        if self.shared.history.is_none() {
            return Err(HistoryError::Off);
        }
        {
            let mut table = self.lock();
            if let Some(history) = table.history.as_mut() {
                return Ok(history.read(uid, query, std::time::Instant::now()));
            }
        }
        Ok(self.shared.broker.read_history(uid, query).await?)
    }

    /// `DELETE /history/{uid}`: drops `uid`'s messages and starts a new
    /// epoch, so a client resuming across it learns it cannot recover.
    /// Returns the new top (offset 0). Errors: as [`ConnectionMap::history`].
    pub async fn delete_history(&self, uid: &Uid) -> Result<Position, HistoryError> {
        if self.shared.history.is_none() {
            return Err(HistoryError::Off);
        }
        {
            let mut table = self.lock();
            if let Some(history) = table.history.as_mut() {
                return Ok(history.delete(uid));
            }
        }
        Ok(self.shared.broker.delete_history(uid).await?)
    }
}
