//! The local routing table: uid → this node's live connections, and every
//! operation that touches only this node. A broker calls the `*_local`
//! operations (through [`LocalNode`](super::broker::LocalNode)) for pushes
//! that arrive from other nodes.
//!
//! No call leaves this module while the table lock is held: an operation
//! that makes a uid appear or vanish returns a [`PresenceChange`], and the
//! map hands it to the broker once the lock is released.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::MutexGuard;
use std::sync::atomic::Ordering;

use smallvec::SmallVec;

use super::broker::PresenceChange;
use super::mailbox::{Offer, Outbox};
use super::{CloseReason, ConnectionMap, PushOutcome};
use crate::model::{ConnId, Message, Payload, Stream, Uid};
use crate::store::memory::MemoryHistory;

/// A uid's connections, oldest first. Almost every uid has one connection,
/// which stays inline in the map's bucket: a push or a broadcast then reads
/// the connection's handle from the (sequentially laid out) buckets instead of
/// chasing one more pointer to a cold heap block per connection.
type Conns = SmallVec<[Outbox; 1]>;

/// Most pushes of a batch routed under one hold of the table lock: enough to
/// amortise the lock, few enough that binds and other pushers wait
/// microseconds, not a whole 10,000-push batch.
const LOCK_CHUNK: usize = 64;

#[derive(Default)]
pub(super) struct Table {
    /// Every bound connection, grouped by uid, oldest first. A uid is present
    /// only while it has at least one connection.
    by_uid: HashMap<Uid, Conns>,
    /// Bound connections across all uids.
    bound: usize,
    /// A single node's history (`--history`), under the same lock: a push's
    /// offset and its place in every queue are decided in one step, and so
    /// are a resume's read and its bind.
    pub(super) history: Option<MemoryHistory>,
}

impl ConnectionMap {
    /// [`ConnectionMap::push_local`] for several pushes in order, taking the
    /// table lock once per [`LOCK_CHUNK`] pushes instead of once each. Uids
    /// that lost their last connection (slow consumers evicted) are added to
    /// `gone`.
    pub(super) fn push_local_many(
        &self,
        pushes: &[(Uid, Payload)],
        gone: &mut Vec<PresenceChange>,
    ) -> Vec<PushOutcome> {
        let mut outcomes = Vec::with_capacity(pushes.len());
        for chunk in pushes.chunks(LOCK_CHUNK) {
            let mut table = self.lock();
            for (uid, payload) in chunk {
                outcomes.push(self.push_locked(&mut table, uid, payload, gone));
            }
        }
        outcomes
    }

    /// Enqueues `payload` for `uid`'s connections, under the held lock;
    /// connections found full leave routing at once.
    fn push_locked(
        &self,
        table: &mut Table,
        uid: &Uid,
        payload: &Payload,
        gone: &mut Vec<PresenceChange>,
    ) -> PushOutcome {
        let stored = table
            .history
            .as_mut()
            .map(|history| history.append(uid, payload, std::time::Instant::now()));
        let Some(conns) = table.by_uid.get(uid) else {
            // Offline: nothing to queue (with history off, nothing built).
            return PushOutcome {
                stored,
                ..PushOutcome::default()
            };
        };
        let message = Message {
            payload: payload.clone(),
            stream: Stream::Uid(stored),
        };
        let mut outcome = match conns.as_slice() {
            [only] => offer_one(only, message),
            _ => offer_all(conns.iter(), &message),
        };
        outcome.stored = stored;
        if outcome.dropped > 0 {
            gone.extend(self.evict_closing(table, uid));
        }
        outcome
    }

    /// Enqueues `payload` for this node's connections of `uid`; uids that
    /// lost their last connection are added to `gone`.
    pub(super) fn push_local(
        &self,
        uid: &Uid,
        message: &Message,
        gone: &mut Vec<PresenceChange>,
    ) -> PushOutcome {
        let mut table = self.lock();
        let outcome = match table.by_uid.get(uid) {
            Some(conns) => offer_all(conns.iter(), message),
            None => PushOutcome::default(),
        };
        if outcome.dropped > 0 {
            gone.extend(self.evict_closing(&mut table, uid));
        }
        outcome
    }

    /// Enqueues `payload` for every bound connection on this node; uids that
    /// lost their last connection are added to `gone`.
    pub(super) fn broadcast_local_outcome(
        &self,
        payload: &Payload,
        gone: &mut Vec<PresenceChange>,
    ) -> PushOutcome {
        let message = Message::broadcast(payload.clone());
        let mut table = self.lock();
        let outcome = offer_all(table.by_uid.values().flatten(), &message);
        if outcome.dropped > 0 {
            let closing: Vec<Uid> = table
                .by_uid
                .iter()
                .filter(|(_, conns)| conns.iter().any(Outbox::is_closing))
                .map(|(uid, _)| uid.clone())
                .collect();
            for uid in closing {
                gone.extend(self.evict_closing(&mut table, &uid));
            }
        }
        outcome
    }

    /// Closes this node's connections of `uid` (4001) and takes them out of
    /// routing; returns how many, and the uid's departure.
    pub(super) fn disconnect_locked(&self, uid: &Uid) -> (usize, Option<PresenceChange>) {
        let mut table = self.lock();
        let Some(conns) = table.by_uid.get(uid) else {
            return (0, None);
        };
        for conn in conns {
            conn.close(CloseReason::Disconnected);
        }
        let n = conns.len();
        (n, self.evict_closing(&mut table, uid))
    }

    /// Distinct uids with at least one bound connection.
    pub fn bound_uids(&self) -> usize {
        self.lock().by_uid.len()
    }

    /// Bound connections across all uids.
    pub fn bound_connections(&self) -> usize {
        self.lock().bound
    }

    /// Connections bound to `uid` on this node.
    pub fn connections_of(&self, uid: &Uid) -> usize {
        self.lock().by_uid.get(uid).map_or(0, SmallVec::len)
    }

    /// Every uid bound on this node (a snapshot, for resubscribing).
    pub(super) fn uids(&self) -> Vec<Uid> {
        self.lock().by_uid.keys().cloned().collect()
    }

    pub(super) fn connection_closed(&self) {
        self.shared.open.fetch_sub(1, Ordering::Relaxed);
        self.shared.metrics.ws_connections.decrement(1.0);
    }

    /// The table lock. A panic while holding it cannot leave the table
    /// half-updated in a way later calls would trip on (every update is a
    /// single insert or remove), so a poisoned lock is taken over.
    pub(super) fn lock(&self) -> MutexGuard<'_, Table> {
        self.shared
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds `outbox` to `uid`'s connections (the oldest gives way past the
    /// per-uid cap); returns the uid's arrival if it is new on this node.
    pub(super) fn bind_locked(&self, uid: &Uid, outbox: Outbox) -> Option<PresenceChange> {
        self.bind_in(&mut self.lock(), uid, outbox)
    }

    /// [`ConnectionMap::bind_locked`] under a lock the caller holds (a
    /// resume reads history in the same step).
    pub(super) fn bind_in(
        &self,
        table: &mut Table,
        uid: &Uid,
        outbox: Outbox,
    ) -> Option<PresenceChange> {
        match table.by_uid.entry(uid.clone()) {
            Entry::Occupied(mut e) => {
                let conns = e.get_mut();
                // One user opening tab after tab must not grow without bound:
                // the oldest connection gives way (0: no cap, as for every
                // other `--max-*` flag).
                let max = self.shared.max_per_uid;
                if max != 0 && conns.len() >= max {
                    conns.remove(0).close(CloseReason::Replaced);
                } else {
                    table.bound += 1;
                }
                conns.push(outbox);
                None
            }
            Entry::Vacant(e) => {
                table.bound += 1;
                e.insert(smallvec::smallvec![outbox]);
                Some(PresenceChange {
                    uid: uid.clone(),
                    held: true,
                })
            }
        }
    }

    /// Removes exactly connection `id` from `uid`'s list, so a closing socket
    /// never removes a newer connection of the same uid (the seed's bug).
    /// Returns the uid's departure if `id` was its last connection here.
    pub(super) fn unbind_locked(&self, uid: &Uid, id: ConnId) -> Option<PresenceChange> {
        let mut table = self.lock();
        self.remove_where(&mut table, uid, |o| o.id == id)
    }

    /// Takes connections that were just told to close (slow consumers,
    /// disconnected) out of routing at once: they are offline from this moment,
    /// not from when their stuck socket finally gives up.
    fn evict_closing(&self, table: &mut Table, uid: &Uid) -> Option<PresenceChange> {
        self.remove_where(table, uid, Outbox::is_closing)
    }

    /// Removes `uid`'s connections matching `remove`; returns the uid's
    /// departure if none is left.
    fn remove_where(
        &self,
        table: &mut Table,
        uid: &Uid,
        remove: impl Fn(&Outbox) -> bool,
    ) -> Option<PresenceChange> {
        let conns = table.by_uid.get_mut(uid)?;
        let before = conns.len();
        conns.retain(|o| !remove(o));
        let removed = before - conns.len();
        table.bound -= removed;
        if !conns.is_empty() {
            return None;
        }
        table.by_uid.remove(uid);
        Some(PresenceChange {
            uid: uid.clone(),
            held: false,
        })
    }
}

/// Connections a broadcast looks at together: it first loads each one's queue
/// state, then offers to each. The loads have no locked instruction between
/// them, so their cache misses (the connections' tasks last touched that
/// memory, often on the other core) overlap instead of stalling one by one.
const OFFER_CHUNK: usize = 8;

/// [`offer_all`] for a uid's only connection, the message moved in.
fn offer_one(conn: &Outbox, message: Message) -> PushOutcome {
    let mut outcome = PushOutcome::default();
    match conn.offer_owned(message) {
        Offer::Queued => outcome.delivered = 1,
        Offer::Dropped => outcome.dropped = 1,
        Offer::Closed => {}
    }
    outcome
}

fn offer_all<'a>(mut conns: impl Iterator<Item = &'a Outbox>, message: &Message) -> PushOutcome {
    let mut outcome = PushOutcome::default();
    let mut chunk: [Option<&Outbox>; OFFER_CHUNK] = [None; OFFER_CHUNK];
    loop {
        let mut n = 0;
        for slot in &mut chunk {
            *slot = conns.next();
            if slot.is_none() {
                break;
            }
            n += 1;
        }
        if n == 0 {
            break;
        }
        let chunk = chunk[..n].iter().flatten();
        for conn in chunk.clone() {
            conn.warm();
        }
        for conn in chunk {
            match conn.offer(message) {
                Offer::Queued => outcome.delivered += 1,
                Offer::Dropped => outcome.dropped += 1,
                Offer::Closed => {}
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::super::mailbox;
    use super::super::{QueueLimits, broker::Single};
    use super::*;
    use crate::broker::AnyBroker;

    fn map() -> ConnectionMap {
        let limits = QueueLimits {
            max_len: 4,
            max_bytes: 1024,
        };
        ConnectionMap::new(limits, 2, AnyBroker::Single(Single), None)
    }

    fn uid(s: &str) -> Uid {
        Uid::new(s).unwrap()
    }

    fn change(s: &str, held: bool) -> Option<PresenceChange> {
        Some(PresenceChange { uid: uid(s), held })
    }

    #[test]
    fn only_a_uids_first_bind_and_last_unbind_are_presence_changes() {
        let map = map();
        let (first, _a) = mailbox::channel(ConnId(1), 4, 1024);
        let (second, _b) = mailbox::channel(ConnId(2), 4, 1024);
        assert_eq!(map.bind_locked(&uid("u"), first), change("u", true));
        assert_eq!(map.bind_locked(&uid("u"), second), None);
        assert_eq!(map.unbind_locked(&uid("u"), ConnId(1)), None);
        // Unbinding an id that is not there changes nothing.
        assert_eq!(map.unbind_locked(&uid("u"), ConnId(1)), None);
        assert_eq!(map.unbind_locked(&uid("u"), ConnId(2)), change("u", false));
        assert_eq!(map.unbind_locked(&uid("u"), ConnId(2)), None);
    }

    #[test]
    fn a_disconnect_and_an_evicted_slow_consumer_report_the_uid_gone() {
        let map = map();
        let (outbox, _inbox) = mailbox::channel(ConnId(1), 4, 1024);
        map.bind_locked(&uid("d"), outbox);
        assert_eq!(map.disconnect_locked(&uid("d")), (1, change("d", false)));
        assert_eq!(map.disconnect_locked(&uid("d")), (0, None));

        // A queue of one message: the second push finds it full.
        let (outbox, _inbox) = mailbox::channel(ConnId(2), 1, 1024);
        map.bind_locked(&uid("slow"), outbox);
        let mut gone = Vec::new();
        let pushes = [
            (uid("slow"), Payload::from("1")),
            (uid("slow"), Payload::from("2")),
        ];
        let outcomes = map.push_local_many(&pushes, &mut gone);
        assert_eq!(outcomes[1].dropped, 1);
        assert_eq!(
            gone,
            [PresenceChange {
                uid: uid("slow"),
                held: false
            }]
        );
        assert_eq!(map.connections_of(&uid("slow")), 0);
    }
}
