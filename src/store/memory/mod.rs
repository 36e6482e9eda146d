//! History in memory, for a single node: kept inside the routing table's
//! lock, so a push's offset and its place in every connection's queue are
//! decided together, and a resume's read and its bind are one step.
//!
//! Each uid that was pushed to or read has a stream record: its epoch
//! (random, drawn when the record is created), the offset of its newest
//! message (the top; offsets start at 1 and are contiguous) and its
//! messages, oldest first. The messages of all uids live in one slab
//! (`slots.rs`) threaded on a global list in push order, which is time
//! order: the oldest message of all is at its head, the first to go by age
//! (`ttl`) or by the memory cap (`memory`), whatever its uid.
//!
//! A record that holds no message and was neither pushed to nor read for
//! `ttl` is dropped by the sweep ([`MemoryHistory::expire`]); the uid's next
//! push or read then starts a new epoch. Reads refresh a record because a
//! client was just told its epoch, and that epoch must hold while the
//! client can still resume from it.
//!
//! Memory accounting ([`MESSAGE_OVERHEAD`], [`RECORD_OVERHEAD`]): a message
//! costs its payload plus its 40-byte slot plus the allocator's header and
//! rounding of the payload's own allocation (16 bytes on average with
//! glibc's malloc); a record costs its own size, its hash-map entry, the
//! uid's text and its place in the idle queue.

mod evict;
mod slots;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use slots::{Chain, NIL, Slots};

use super::{HistoryLimits, HistoryPage, HistoryQuery, Order, StoredMessage};
use crate::model::{Epoch, Payload, Position, Uid};
use crate::telemetry::{Eviction, HistoryMetrics};

/// Bytes one stored message costs besides its payload: its slot, and the
/// allocator's per-allocation header and rounding for the payload (glibc:
/// 8-byte header, 16-byte granularity, so 8 to 23 bytes; 16 counted).
pub const MESSAGE_OVERHEAD: usize = std::mem::size_of::<slots::Slot>() + 16;

// The budget: a retained message costs at most its payload + 64 bytes.
const _: () = assert!(MESSAGE_OVERHEAD <= 64);

/// Bytes one stream record costs besides its uid's text: the record, its
/// hash-map entry (with the map's control byte and slack), the uid's
/// reference-counted allocation header, and its idle-queue entry.
pub const RECORD_OVERHEAD: usize = std::mem::size_of::<Option<Record>>()
    + std::mem::size_of::<(Uid, u32)>()
    + 8
    + 16
    + std::mem::size_of::<Reverse<(u64, u32)>>();

/// The longest time to live kept exactly: message times are wrapping `u32`
/// milliseconds (see `slots::Slot`); a longer `--history-ttl` counts as this.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 24 * 3600);

/// One uid's stream.
#[derive(Debug)]
struct Record {
    uid: Uid,
    epoch: Epoch,
    /// The offset of its newest message (0: none yet in this epoch).
    top: u64,
    chain: Chain,
    /// Milliseconds since the start of its last push, read or delete.
    active: u64,
    /// Whether it has an entry in the idle queue.
    idle_queued: bool,
}

/// Every uid's stream on this node, bounded by [`HistoryLimits`].
pub struct MemoryHistory {
    limits: HistoryLimits,
    ttl_ms: u64,
    /// What time 0 is, for the monotonic clock and for the wall clock.
    start: Instant,
    start_wall: SystemTime,
    by_uid: HashMap<Uid, u32>,
    records: Vec<Option<Record>>,
    free_records: Vec<u32>,
    slots: Slots,
    /// Records that hold no message, by when they may be dropped (at most
    /// one entry each): the sweep's to-do list, so it never scans every uid.
    idle: BinaryHeap<Reverse<(u64, u32)>>,
    /// Bytes by the accounting of the module docs.
    bytes: usize,
    metrics: HistoryMetrics,
}

impl std::fmt::Debug for MemoryHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryHistory")
            .field("limits", &self.limits)
            .field("streams", &self.by_uid.len())
            .field("messages", &self.slots.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl MemoryHistory {
    /// Empty history bounded by `limits`.
    pub fn new(limits: HistoryLimits) -> MemoryHistory {
        MemoryHistory::starting_at(limits, Instant::now(), SystemTime::now())
    }

    /// Empty history whose clock starts at `start` (for tests with explicit
    /// instants), which is `start_wall` on the wall clock.
    pub fn starting_at(
        limits: HistoryLimits,
        start: Instant,
        start_wall: SystemTime,
    ) -> MemoryHistory {
        let ttl = limits.ttl.min(MAX_TTL);
        MemoryHistory {
            limits,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
            start,
            start_wall,
            by_uid: HashMap::new(),
            records: Vec::new(),
            free_records: Vec::new(),
            slots: Slots::default(),
            idle: BinaryHeap::new(),
            bytes: 0,
            metrics: HistoryMetrics::new(),
        }
    }

    /// The bounds this history keeps.
    pub fn limits(&self) -> HistoryLimits {
        self.limits
    }

    /// Messages kept, across all uids.
    pub fn messages(&self) -> usize {
        self.slots.len()
    }

    /// Bytes kept, by the accounting of the module docs.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Uids with a stream record.
    pub fn streams(&self) -> usize {
        self.by_uid.len()
    }

    /// Stores a push to `uid` at the stream's next offset and returns that
    /// position; then drops what the bounds no longer allow (this uid's
    /// oldest past `size`, the oldest of all past `memory`, which may be
    /// this very message if it alone is larger than the cap).
    pub fn append(&mut self, uid: &Uid, payload: &Payload, now: Instant) -> Position {
        let t = self.millis(now);
        let r = self.record_for(uid, t);
        self.expire_stream(r, t);
        if self.slots.is_full() {
            self.evict_oldest(Eviction::Memory);
        }
        let Some(record) = self.record_mut(r) else {
            // `record_for` returned a live record.
            return Position {
                offset: 0,
                epoch: Epoch(0),
            };
        };
        record.top += 1;
        record.active = t;
        let position = Position {
            offset: record.top,
            epoch: record.epoch,
        };
        let mut chain = record.chain;
        let text: Box<str> = payload.as_str().into();
        self.bytes += text.len() + MESSAGE_OVERHEAD;
        self.slots.push(&mut chain, r, text, t as u32);
        while chain.len as usize > self.limits.size {
            self.remove_oldest(&mut chain);
            self.metrics.evicted(Eviction::Size);
        }
        self.set_chain(r, chain, t);
        self.shed(r);
        self.metrics.stored();
        self.metrics.retained(self.slots.len(), self.bytes);
        position
    }

    /// Reads `uid`'s stream (creating its empty stream, so its epoch holds
    /// from now on): its top, and the messages after `query.since` (all
    /// kept ones when `None`), at most `query.limit`, in `query.order` —
    /// with `NewestFirst`, the newest `limit` of them.
    pub fn read(&mut self, uid: &Uid, query: &HistoryQuery, now: Instant) -> HistoryPage {
        let t = self.millis(now);
        let r = self.record_for(uid, t);
        self.expire_stream(r, t);
        self.shed(r);
        let Some(record) = self.record_mut(r) else {
            return HistoryPage {
                top: Position {
                    offset: 0,
                    epoch: Epoch(0),
                },
                messages: Vec::new(),
            };
        };
        record.active = t;
        let (top, chain) = (record.top, record.chain);
        let page = HistoryPage {
            top: Position {
                offset: top,
                epoch: record.epoch,
            },
            messages: self.collect(top, chain, query, t),
        };
        self.metrics.retained(self.slots.len(), self.bytes);
        page
    }

    /// Drops `uid`'s messages and starts a new epoch at offset 0.
    pub fn delete(&mut self, uid: &Uid) -> Position {
        self.delete_at(uid, Instant::now())
    }

    /// [`MemoryHistory::delete`] at `now`.
    pub fn delete_at(&mut self, uid: &Uid, now: Instant) -> Position {
        let t = self.millis(now);
        let r = self.record_for(uid, t);
        let Some(record) = self.record_mut(r) else {
            return Position {
                offset: 0,
                epoch: Epoch::random(),
            };
        };
        let old = record.epoch;
        let mut chain = record.chain;
        while chain.len > 0 {
            self.remove_oldest(&mut chain);
        }
        let mut epoch = Epoch::random();
        while epoch == old {
            epoch = Epoch::random();
        }
        if let Some(record) = self.record_mut(r) {
            record.epoch = epoch;
            record.top = 0;
            record.active = t;
        }
        self.set_chain(r, chain, t);
        self.metrics.retained(self.slots.len(), self.bytes);
        Position { offset: 0, epoch }
    }

    /// The messages of a stream (top `top`, list `chain`) that `query` asks
    /// for, in its order.
    fn collect(&self, top: u64, chain: Chain, query: &HistoryQuery, t: u64) -> Vec<StoredMessage> {
        let len = u64::from(chain.len);
        let oldest = top + 1 - len;
        let from = query
            .since
            .map_or(oldest, |s| s.saturating_add(1))
            .max(oldest);
        if from > top || query.limit == 0 {
            return Vec::new();
        }
        let take = (top - from + 1).min(query.limit as u64);
        let (first, step_newer) = match query.order {
            Order::OldestFirst => (from, true),
            Order::NewestFirst => (top, false),
        };
        // Walk to the first message from the nearer end of the stream's list.
        let mut i = if first - oldest <= top - first {
            (0..first - oldest).fold(chain.oldest, |i, _| self.slots.stream_newer(i))
        } else {
            (0..top - first).fold(chain.newest, |i, _| self.slots.stream_older(i))
        };
        let mut out = Vec::with_capacity(take.min(64) as usize);
        let mut offset = first;
        let mut bytes = 0;
        while let Some(slot) = self.slots.slot(i) {
            if out.len() as u64 == take || !super::fits(bytes, slot.payload.len(), query.max_bytes)
            {
                break;
            }
            bytes += slot.payload.len();
            out.push(StoredMessage {
                offset,
                payload: Payload::from(slot.payload.to_string()),
                time: self.wall_time(slot.time, t),
            });
            if step_newer {
                i = self.slots.stream_newer(i);
                offset += 1;
            } else {
                i = self.slots.stream_older(i);
                offset -= 1;
            }
        }
        out
    }

    /// The record of `uid`, created (new epoch, offset 0) if it has none.
    fn record_for(&mut self, uid: &Uid, t: u64) -> u32 {
        // The common case looks up without cloning the uid (two atomic
        // operations on its count, on every push).
        if let Some(&r) = self.by_uid.get(uid) {
            return r;
        }
        let free = &mut self.free_records;
        let records = &mut self.records;
        match self.by_uid.entry(uid.clone()) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                let record = Record {
                    uid: uid.clone(),
                    epoch: Epoch::random(),
                    top: 0,
                    chain: Chain::default(),
                    active: t,
                    idle_queued: true,
                };
                let r = match free.pop() {
                    Some(r) => {
                        records[r as usize] = Some(record);
                        r
                    }
                    None => {
                        records.push(Some(record));
                        u32::try_from(records.len() - 1).unwrap_or(NIL)
                    }
                };
                e.insert(r);
                // A new record is empty: it may be dropped once idle.
                self.idle.push(Reverse((t.saturating_add(self.ttl_ms), r)));
                self.bytes += RECORD_OVERHEAD + uid.as_str().len();
                r
            }
        }
    }

    fn record(&self, r: u32) -> Option<&Record> {
        self.records.get(r as usize).and_then(Option::as_ref)
    }

    fn record_mut(&mut self, r: u32) -> Option<&mut Record> {
        self.records.get_mut(r as usize).and_then(Option::as_mut)
    }

    /// Stores record `r`'s list back; an empty one joins the idle queue.
    fn set_chain(&mut self, r: u32, chain: Chain, t: u64) {
        let ttl = self.ttl_ms;
        let Some(record) = self.record_mut(r) else {
            return;
        };
        record.chain = chain;
        if chain.len == 0 && !record.idle_queued {
            record.idle_queued = true;
            let due = record.active.max(t).saturating_add(ttl);
            self.idle.push(Reverse((due, r)));
        }
    }

    fn millis(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    /// The wall-clock time of a message stored at `time`, seen at `t`.
    fn wall_time(&self, time: u32, t: u64) -> SystemTime {
        let age = u64::from((t as u32).wrapping_sub(time));
        self.start_wall + Duration::from_millis(t.saturating_sub(age))
    }
}
