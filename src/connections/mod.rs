//! The `ConnectionMap`: the one service every front end calls.
//!
//! It maps each uid to all of its live connections (several tabs of one user
//! all receive), routes pushes and broadcasts into their bounded queues, and
//! keeps the counts behind `/metrics` and the health of the routing table.
//! The WebSocket, text-port and REST front ends only translate their wire
//! format into calls on this type; none of them holds routing state.
//!
//! Like mini-redis' `Db`, it is a cheap `Clone` handle over shared state, and
//! its std `Mutex` is never held across an `.await`: every operation under the
//! lock is a hash lookup plus non-blocking `try_send`s.

mod mailbox;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

pub use mailbox::{CloseReason, Delivery};
use mailbox::{Inbox, Offer, Outbox};

use crate::model::{ConnId, Payload, Source, Uid};
use crate::telemetry::Metrics;

/// Per-connection outbound queue bounds.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Messages.
    pub max_len: usize,
    /// Bytes.
    pub max_bytes: usize,
}

/// What one push achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// Connections that accepted the message into their queue.
    pub delivered: usize,
    /// Bound connections whose queue was full (now being disconnected).
    pub dropped: usize,
}

impl PushOutcome {
    /// The legacy `ok`: at least one connection took it.
    pub fn is_ok(&self) -> bool {
        self.delivered > 0
    }
}

/// Handle to the routing table. Clone it freely.
#[derive(Clone)]
pub struct ConnectionMap {
    shared: Arc<Shared>,
}

struct Shared {
    table: Mutex<Table>,
    max_per_uid: usize,
    next_id: AtomicU64,
    open: AtomicUsize,
    limits: QueueLimits,
    metrics: Metrics,
}

#[derive(Default)]
struct Table {
    /// Every bound connection, grouped by uid, oldest first. A uid is present
    /// only while it has at least one connection.
    by_uid: HashMap<Uid, Vec<Outbox>>,
    /// Bound connections across all uids.
    bound: usize,
}

/// Why a bind was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// A connection binds once; later frames are ignored, not re-bound.
    #[error("connection is already bound")]
    AlreadyBound,
}

impl ConnectionMap {
    /// An empty map whose connections get queues bounded by `limits`, with at
    /// most `max_per_uid` connections per uid.
    pub fn new(limits: QueueLimits, max_per_uid: usize) -> ConnectionMap {
        ConnectionMap {
            shared: Arc::new(Shared {
                table: Mutex::new(Table::default()),
                max_per_uid: max_per_uid.max(1),
                next_id: AtomicU64::new(1),
                open: AtomicUsize::new(0),
                limits,
                metrics: Metrics::new(),
            }),
        }
    }

    /// Registers a new, not yet bound connection. Dropping the returned
    /// [`Connection`] removes it (and only it) from the map.
    pub fn open(&self) -> Connection {
        let id = ConnId(self.shared.next_id.fetch_add(1, Ordering::Relaxed));
        let (outbox, inbox) =
            mailbox::channel(id, self.shared.limits.max_len, self.shared.limits.max_bytes);
        self.shared.open.fetch_add(1, Ordering::Relaxed);
        self.shared.metrics.ws_connections.increment(1.0);
        Connection {
            id,
            map: self.clone(),
            pending: Some(outbox),
            inbox,
            uid: None,
        }
    }

    /// Pushes `payload` to every connection bound to `uid`; each gets it at
    /// most once. Never waits on a client.
    pub async fn push(&self, source: Source, uid: &Uid, payload: &Payload) -> PushOutcome {
        let start = Instant::now();
        let outcome = {
            let mut table = self.lock();
            let outcome = match table.by_uid.get(uid) {
                Some(conns) => offer_all(conns.iter(), payload),
                None => PushOutcome::default(),
            };
            if outcome.dropped > 0 {
                self.evict_closing(&mut table, uid);
            }
            outcome
        };
        self.account(source, outcome, start);
        outcome
    }

    /// Sends `payload` (encoded once, shared) to every bound connection.
    pub async fn broadcast(&self, source: Source, payload: &Payload) -> PushOutcome {
        let start = Instant::now();
        let outcome = {
            let mut table = self.lock();
            let outcome = offer_all(table.by_uid.values().flatten(), payload);
            if outcome.dropped > 0 {
                let closing: Vec<Uid> = table
                    .by_uid
                    .iter()
                    .filter(|(_, conns)| conns.iter().any(Outbox::is_closing))
                    .map(|(uid, _)| uid.clone())
                    .collect();
                for uid in closing {
                    self.evict_closing(&mut table, &uid);
                }
            }
            outcome
        };
        metrics::counter!(crate::telemetry::BROADCASTS, "source" => source.as_str()).increment(1);
        let m = &self.shared.metrics;
        m.deliveries.increment(outcome.delivered as u64);
        m.dropped_slow.increment(outcome.dropped as u64);
        m.enqueue_seconds.record(start.elapsed().as_secs_f64());
        outcome
    }

    /// Closes every connection of `uid` (they get a close code of their own,
    /// 4001) and returns how many there were. They are offline at once.
    pub fn disconnect(&self, uid: &Uid) -> usize {
        let mut table = self.lock();
        let Some(conns) = table.by_uid.get(uid) else {
            return 0;
        };
        for conn in conns {
            conn.close(CloseReason::Kicked);
        }
        let n = conns.len();
        self.evict_closing(&mut table, uid);
        n
    }

    /// Counts a push that was refused before routing (bad input): it answers
    /// `fail` like an offline uid.
    pub fn refused(&self, source: Source) {
        self.shared.metrics.push_result(source, false);
    }

    /// Open connections, bound or not.
    pub fn connections(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Distinct uids with at least one bound connection.
    pub fn bound_uids(&self) -> usize {
        self.lock().by_uid.len()
    }

    /// Bound connections across all uids.
    pub fn bound_connections(&self) -> usize {
        self.lock().bound
    }

    /// Connections bound to `uid`.
    pub fn connections_of(&self, uid: &Uid) -> usize {
        self.lock().by_uid.get(uid).map_or(0, Vec::len)
    }

    fn account(&self, source: Source, outcome: PushOutcome, start: Instant) {
        let m = &self.shared.metrics;
        m.push_result(source, outcome.is_ok());
        m.deliveries.increment(outcome.delivered as u64);
        m.dropped_slow.increment(outcome.dropped as u64);
        m.enqueue_seconds.record(start.elapsed().as_secs_f64());
    }

    /// The table lock. A panic while holding it cannot leave the table
    /// half-updated in a way later calls would trip on (every update is a
    /// single insert or remove), so a poisoned lock is taken over.
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.shared
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bind(&self, uid: &Uid, outbox: Outbox) {
        let mut guard = self.lock();
        let table = &mut *guard;
        match table.by_uid.entry(uid.clone()) {
            Entry::Occupied(mut e) => {
                let conns = e.get_mut();
                // One user opening tab after tab must not grow without bound:
                // the oldest connection gives way.
                if conns.len() >= self.shared.max_per_uid {
                    conns.remove(0).close(CloseReason::Replaced);
                } else {
                    table.bound += 1;
                }
                conns.push(outbox);
            }
            Entry::Vacant(e) => {
                table.bound += 1;
                e.insert(vec![outbox]);
                self.shared.metrics.bound_uids.increment(1.0);
            }
        }
    }

    /// Removes exactly connection `id` from `uid`'s list, so a closing socket
    /// never removes a newer connection of the same uid (the seed's bug).
    fn unbind(&self, uid: &Uid, id: ConnId) {
        let mut table = self.lock();
        self.remove_where(&mut table, uid, |o| o.id == id);
    }

    /// Takes connections that were just told to close (slow consumers) out of
    /// routing at once: they are offline from this moment, not from when
    /// their stuck socket finally gives up.
    fn evict_closing(&self, table: &mut Table, uid: &Uid) {
        self.remove_where(table, uid, Outbox::is_closing);
    }

    fn remove_where(&self, table: &mut Table, uid: &Uid, remove: impl Fn(&Outbox) -> bool) {
        let Some(conns) = table.by_uid.get_mut(uid) else {
            return;
        };
        let before = conns.len();
        conns.retain(|o| !remove(o));
        let removed = before - conns.len();
        let now_empty = conns.is_empty();
        if now_empty {
            table.by_uid.remove(uid);
            self.shared.metrics.bound_uids.decrement(1.0);
        }
        table.bound -= removed;
    }
}

fn offer_all<'a>(conns: impl Iterator<Item = &'a Outbox>, payload: &Payload) -> PushOutcome {
    let mut outcome = PushOutcome::default();
    for conn in conns {
        match conn.offer(payload) {
            Offer::Queued => outcome.delivered += 1,
            Offer::Dropped => outcome.dropped += 1,
            Offer::Closed => {}
        }
    }
    outcome
}

/// One connection's membership in the map, held by its task. Dropping it
/// unbinds and unregisters exactly this connection.
pub struct Connection {
    id: ConnId,
    map: ConnectionMap,
    /// The enqueueing end, until [`Connection::bind`] hands it to the table.
    pending: Option<Outbox>,
    inbox: Inbox,
    uid: Option<Uid>,
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

    /// A further queued message, if one is ready now.
    pub fn try_next(&mut self) -> Option<Payload> {
        self.inbox.try_next()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(uid) = self.uid.take() {
            self.map.unbind(&uid, self.id);
        }
        self.map.shared.open.fetch_sub(1, Ordering::Relaxed);
        self.map.shared.metrics.ws_connections.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ConnectionMap {
        ConnectionMap::new(
            QueueLimits {
                max_len: 4,
                max_bytes: 1024,
            },
            2,
        )
    }

    fn uid(s: &str) -> Uid {
        Uid::new(s).unwrap()
    }

    #[tokio::test]
    async fn every_connection_of_a_uid_receives_once() {
        let map = map();
        let mut a = map.open();
        let mut b = map.open();
        a.bind(uid("u")).unwrap();
        b.bind(uid("u")).unwrap();
        let out = map
            .push(Source::Text, &uid("u"), &Payload::from("hi"))
            .await;
        assert_eq!(
            out,
            PushOutcome {
                delivered: 2,
                dropped: 0
            }
        );
        for c in [&mut a, &mut b] {
            assert!(matches!(c.next().await, Delivery::Message(m) if m == "hi"));
            assert!(c.try_next().is_none());
        }
    }

    #[tokio::test]
    async fn closing_an_old_connection_keeps_the_new_one() {
        let map = map();
        let mut old = map.open();
        old.bind(uid("u")).unwrap();
        let mut new = map.open();
        new.bind(uid("u")).unwrap();
        drop(old);
        assert_eq!(map.connections_of(&uid("u")), 1);
        assert!(
            map.push(Source::Http, &uid("u"), &Payload::from("x"))
                .await
                .is_ok()
        );
        drop(new);
        assert_eq!(map.bound_uids(), 0);
        assert_eq!(map.connections(), 0);
        assert!(
            !map.push(Source::Http, &uid("u"), &Payload::from("x"))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn the_oldest_connection_gives_way_past_the_per_uid_cap() {
        let map = map();
        let mut conns: Vec<Connection> = (0..3).map(|_| map.open()).collect();
        for c in &mut conns {
            c.bind(uid("u")).unwrap();
        }
        assert_eq!(map.connections_of(&uid("u")), 2);
        assert_eq!(map.bound_connections(), 2);
        assert!(matches!(
            conns[0].next().await,
            Delivery::Close(CloseReason::Replaced)
        ));
        assert_eq!(map.disconnect(&uid("u")), 2);
        assert!(matches!(
            conns[2].next().await,
            Delivery::Close(CloseReason::Kicked)
        ));
        assert_eq!(map.bound_uids(), 0);
        drop(conns);
        assert_eq!(map.bound_connections(), 0);
    }

    #[tokio::test]
    async fn binding_twice_is_refused() {
        let map = map();
        let mut c = map.open();
        c.bind(uid("a")).unwrap();
        assert_eq!(c.bind(uid("b")), Err(BindError::AlreadyBound));
        assert_eq!(c.uid(), Some(&uid("a")));
    }

    #[tokio::test]
    async fn broadcast_skips_unbound_connections() {
        let map = map();
        let _unbound = map.open();
        let mut a = map.open();
        a.bind(uid("a")).unwrap();
        let out = map.broadcast(Source::Http, &Payload::from("all")).await;
        assert_eq!(out.delivered, 1);
    }
}
