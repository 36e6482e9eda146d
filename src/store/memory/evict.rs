//! Eviction: what the bounds take out of the store, and the sweep that
//! does it without traffic. Every message leaves through [`MemoryHistory::remove`],
//! so the byte accounting cannot drift.

use std::cmp::Reverse;
use std::time::Instant;

use super::slots::Chain;
use super::{MESSAGE_OVERHEAD, MemoryHistory, RECORD_OVERHEAD};
use crate::telemetry::Eviction;

impl MemoryHistory {
    /// The sweep, at `now`: drops messages older than the time to live and
    /// the records that stayed empty and untouched for as long, at most
    /// `budget` of them (so the table lock is held briefly). Returns whether
    /// more are due (call again).
    pub fn expire(&mut self, now: Instant, budget: usize) -> bool {
        let t = self.millis(now);
        let mut work = 0;
        while let Some((_, slot)) = self.slots.oldest() {
            if !self.is_expired(slot.time, t) {
                break;
            }
            if work == budget {
                self.metrics.retained(self.slots.len(), self.bytes);
                return true;
            }
            self.evict_oldest(Eviction::Ttl);
            work += 1;
        }
        while let Some(&Reverse((due, r))) = self.idle.peek() {
            if due > t {
                break;
            }
            if work == budget {
                self.metrics.retained(self.slots.len(), self.bytes);
                return true;
            }
            self.idle.pop();
            self.settle_idle(r, t);
            work += 1;
        }
        self.metrics.retained(self.slots.len(), self.bytes);
        false
    }

    /// An idle-queue entry for record `r` came due at `t`: drop the record
    /// if it is still empty and untouched, queue it again if it was touched
    /// since, forget it if it holds messages again.
    fn settle_idle(&mut self, r: u32, t: u64) {
        let ttl = self.ttl_ms;
        let Some(record) = self.record_mut(r) else {
            return;
        };
        record.idle_queued = false;
        if record.chain.len > 0 {
            return;
        }
        let due = record.active.saturating_add(ttl);
        if due > t {
            record.idle_queued = true;
            self.idle.push(Reverse((due, r)));
            return;
        }
        self.drop_record(r);
    }

    /// Forgets record `r` (its uid's next push or read starts a new epoch);
    /// returns whether there was one.
    fn drop_record(&mut self, r: u32) -> bool {
        let Some(record) = self.records.get_mut(r as usize).and_then(Option::take) else {
            return false;
        };
        self.by_uid.remove(&record.uid);
        self.bytes -= RECORD_OVERHEAD + record.uid.as_str().len();
        self.free_records.push(r);
        true
    }

    /// Drops record `r`'s messages older than the time to live (its oldest
    /// first), so a read never returns one the sweep has not reached yet.
    pub(super) fn expire_stream(&mut self, r: u32, t: u64) {
        let Some(mut chain) = self.record(r).map(|x| x.chain) else {
            return;
        };
        let before = chain.len;
        while let Some(slot) = self.slots.slot(chain.oldest) {
            if !self.is_expired(slot.time, t) {
                break;
            }
            self.remove_oldest(&mut chain);
            self.metrics.evicted(Eviction::Ttl);
        }
        if chain.len != before {
            self.set_chain(r, chain, t);
        }
    }

    /// Brings the byte total back under `--history-memory`: empty streams go
    /// first, the longest idle first (they hold no message, only an epoch a
    /// client may come back to, and any client can make them by binding or
    /// reading a new uid), then the oldest messages of any uid. Record
    /// `keep`, the one being written, is never dropped. Without the first
    /// step, empty streams made by public binds would push every real
    /// message out the moment it is stored.
    pub(super) fn shed(&mut self, keep: u32) {
        let mut kept = None;
        while self.bytes > self.limits.memory {
            if let Some(Reverse((due, r))) = self.idle.pop() {
                if r == keep {
                    kept = Some(due);
                    continue;
                }
                let Some(record) = self.record_mut(r) else {
                    continue;
                };
                record.idle_queued = false;
                if record.chain.len > 0 {
                    continue;
                }
                if self.drop_record(r) {
                    self.metrics.evicted(Eviction::Memory);
                }
                continue;
            }
            if self.slots.len() == 0 {
                break;
            }
            self.evict_oldest(Eviction::Memory);
        }
        if let Some(due) = kept {
            self.idle.push(Reverse((due, keep)));
        }
    }

    /// Drops the oldest message of all, for `reason`.
    pub(super) fn evict_oldest(&mut self, reason: Eviction) {
        let Some((i, slot)) = self.slots.oldest() else {
            return;
        };
        let r = slot.stream;
        let Some(mut chain) = self.record(r).map(|x| x.chain) else {
            return;
        };
        self.remove(&mut chain, i);
        self.metrics.evicted(reason);
        let t = self.record(r).map_or(0, |x| x.active);
        self.set_chain(r, chain, t);
    }

    /// Takes `chain`'s oldest message out of it and the accounting.
    pub(super) fn remove_oldest(&mut self, chain: &mut Chain) {
        let oldest = chain.oldest;
        self.remove(chain, oldest);
    }

    /// Takes message `i` out of `chain` and the accounting.
    pub(super) fn remove(&mut self, chain: &mut Chain, i: u32) {
        let len = self.slots.remove(chain, i);
        self.bytes -= len + MESSAGE_OVERHEAD;
    }

    pub(super) fn is_expired(&self, time: u32, t: u64) -> bool {
        u64::from((t as u32).wrapping_sub(time)) >= self.ttl_ms
    }
}
