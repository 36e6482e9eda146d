//! [`Connection`]: one WebSocket's membership in the map, held by its task.

use super::mailbox::{Inbox, Outbox};
use super::{BindError, CloseReason, ConnectionMap, Delivery};
use crate::model::{ConnId, Message, Uid};

/// One connection's membership in the map, held by its task. Dropping it
/// unbinds and unregisters exactly this connection.
pub struct Connection {
    pub(super) id: ConnId,
    pub(super) map: ConnectionMap,
    /// The enqueueing end, until [`Connection::bind`] hands it to the table.
    pub(super) pending: Option<Outbox>,
    pub(super) inbox: Inbox,
    pub(super) uid: Option<Uid>,
}

impl Connection {
    /// This connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The uid this connection is bound to, if any.
    pub fn uid(&self) -> Option<&Uid> {
        self.uid.as_ref()
    }

    /// Binds this connection to `uid`: from now on pushes to `uid` reach it.
    pub fn bind(&mut self, uid: Uid) -> Result<(), BindError> {
        let outbox = self.pending.take().ok_or(BindError::AlreadyBound)?;
        self.map.bind(&uid, outbox);
        self.uid = Some(uid);
        Ok(())
    }

    /// Waits for the next message or close request. Cancel-safe. Only a bound
    /// connection ever receives anything.
    pub async fn next(&mut self) -> Delivery {
        self.inbox.next().await
    }

    /// Resolves once the gateway asks this connection to close.
    pub async fn close_requested(&self) -> CloseReason {
        self.inbox.close_requested().await
    }

    /// Gives back queue capacity left over from a burst, once the queue is
    /// empty; for the connection's quiet moments.
    pub fn trim_queue(&self) {
        self.inbox.trim();
    }

    /// Takes up to `max` further queued messages, those ready now.
    pub fn take_queued(&self, max: usize, take: impl FnMut(Message)) {
        self.inbox.take_queued(max, take);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(uid) = self.uid.take() {
            self.map.unbind(&uid, self.id);
        }
        self.map.connection_closed();
    }
}
