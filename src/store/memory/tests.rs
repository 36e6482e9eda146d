//! The store's bounds with explicit instants: no test sleeps.

use super::*;

const SECOND: Duration = Duration::from_secs(1);

fn limits(size: usize, ttl: Duration, memory: usize) -> HistoryLimits {
    HistoryLimits { size, ttl, memory }
}

fn history(size: usize, ttl: Duration, memory: usize) -> (MemoryHistory, Instant) {
    let t0 = Instant::now();
    let h = MemoryHistory::starting_at(limits(size, ttl, memory), t0, SystemTime::UNIX_EPOCH);
    (h, t0)
}

fn uid(s: &str) -> Uid {
    Uid::new(s).unwrap()
}

fn all() -> HistoryQuery {
    HistoryQuery {
        since: None,
        limit: usize::MAX,
        order: Order::OldestFirst,
        max_bytes: usize::MAX,
    }
}

/// The offsets and payloads a read returns.
fn read(h: &mut MemoryHistory, u: &str, q: HistoryQuery, now: Instant) -> Vec<(u64, String)> {
    h.read(&uid(u), &q, now)
        .messages
        .into_iter()
        .map(|m| (m.offset, m.payload.to_string()))
        .collect()
}

fn offsets(h: &mut MemoryHistory, u: &str, q: HistoryQuery, now: Instant) -> Vec<u64> {
    read(h, u, q, now).into_iter().map(|(o, _)| o).collect()
}

fn push(h: &mut MemoryHistory, u: &str, text: &str, now: Instant) -> Position {
    h.append(&uid(u), &Payload::from(text.to_owned()), now)
}

#[test]
fn offsets_start_at_one_and_are_contiguous_per_uid_within_one_epoch() {
    let (mut h, t0) = history(100, 60 * SECOND, 1 << 20);
    let a1 = push(&mut h, "a", "1", t0);
    let b1 = push(&mut h, "b", "1", t0);
    let a2 = push(&mut h, "a", "2", t0);
    assert_eq!((a1.offset, b1.offset, a2.offset), (1, 1, 2));
    assert_eq!(a1.epoch, a2.epoch);
    assert_ne!(a1.epoch, b1.epoch);
    let page = h.read(&uid("a"), &all(), t0);
    assert_eq!(page.top, a2);
    assert_eq!(
        read(&mut h, "a", all(), t0),
        [(1, "1".into()), (2, "2".into())]
    );
    // The time is the push's, on the wall clock of the history's start.
    assert_eq!(page.messages[0].time, SystemTime::UNIX_EPOCH);
}

#[test]
fn a_read_creates_the_stream_so_the_epoch_it_told_holds_for_the_next_push() {
    let (mut h, t0) = history(100, 60 * SECOND, 1 << 20);
    let told = h.read(&uid("new"), &all(), t0).top;
    assert_eq!(told.offset, 0);
    assert_eq!(push(&mut h, "new", "x", t0 + SECOND).epoch, told.epoch);
}

#[test]
fn past_the_size_the_uids_oldest_messages_go_and_others_keep_theirs() {
    let (mut h, t0) = history(3, 60 * SECOND, 1 << 20);
    for i in 1..=5 {
        push(&mut h, "busy", &i.to_string(), t0);
    }
    push(&mut h, "calm", "c", t0);
    assert_eq!(offsets(&mut h, "busy", all(), t0), [3, 4, 5]);
    assert_eq!(offsets(&mut h, "calm", all(), t0), [1]);
    assert_eq!(h.messages(), 4);
}

#[test]
fn messages_older_than_the_ttl_go_at_the_sweep_and_are_never_read() {
    let (mut h, t0) = history(100, SECOND, 1 << 20);
    push(&mut h, "a", "old", t0);
    push(&mut h, "b", "young", t0 + SECOND / 2);
    // A read drops its own stream's expired messages even before a sweep.
    assert_eq!(offsets(&mut h, "a", all(), t0 + SECOND), Vec::<u64>::new());
    assert!(!h.expire(t0 + SECOND, usize::MAX));
    assert_eq!(h.messages(), 1);
    assert!(!h.expire(t0 + SECOND * 3 / 2, usize::MAX));
    assert_eq!(h.messages(), 0);
}

#[test]
fn a_stream_empty_and_untouched_for_the_ttl_is_dropped_and_its_uid_starts_a_new_epoch() {
    let (mut h, t0) = history(100, SECOND, 1 << 20);
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let first = push(&mut h, "a", "x", t0);
    h.read(&uid("a"), &all(), ms(500));
    h.expire(ms(1000), usize::MAX);
    // Its message is gone, but the read half a second ago keeps the record.
    assert_eq!((h.messages(), h.streams()), (0, 1));
    // Another read refreshes it again: the epoch it tells must hold a while.
    assert_eq!(h.read(&uid("a"), &all(), ms(1200)).top, first);
    h.expire(ms(2000), usize::MAX);
    assert_eq!(h.streams(), 1);
    h.expire(ms(2200), usize::MAX);
    assert_eq!((h.streams(), h.bytes()), (0, 0));
    let next = push(&mut h, "a", "y", ms(3000));
    assert_eq!(next.offset, 1);
    assert_ne!(next.epoch, first.epoch);
}

#[test]
fn past_the_memory_cap_the_oldest_message_of_any_uid_goes_first() {
    let record = |u: &str| RECORD_OVERHEAD + u.len();
    let message = MESSAGE_OVERHEAD + 4;
    let cap = record("a") + record("b") + 3 * message;
    let (mut h, t0) = history(100, 60 * SECOND, cap);
    push(&mut h, "a", "a--1", t0);
    push(&mut h, "b", "b--1", t0);
    push(&mut h, "a", "a--2", t0);
    assert_eq!(h.bytes(), cap);
    push(&mut h, "b", "b--2", t0);
    assert_eq!(offsets(&mut h, "a", all(), t0), [2]);
    assert_eq!(offsets(&mut h, "b", all(), t0), [1, 2]);
    assert_eq!(h.bytes(), cap);
}

#[test]
fn a_message_larger_than_the_cap_takes_its_offset_and_is_dropped_at_once() {
    let (mut h, t0) = history(100, 60 * SECOND, RECORD_OVERHEAD + 100);
    assert_eq!(push(&mut h, "a", &"x".repeat(200), t0).offset, 1);
    assert_eq!(h.messages(), 0);
    assert_eq!(push(&mut h, "a", "small", t0).offset, 2);
    assert_eq!(offsets(&mut h, "a", all(), t0), [2]);
}

#[test]
fn reads_honour_since_limit_and_order() {
    let (mut h, t0) = history(100, 60 * SECOND, 1 << 20);
    for i in 1..=10 {
        push(&mut h, "u", &i.to_string(), t0);
    }
    let q = |since, limit, order| HistoryQuery {
        since,
        limit,
        order,
        max_bytes: usize::MAX,
    };
    use Order::{NewestFirst as New, OldestFirst as Old};
    assert_eq!(offsets(&mut h, "u", q(Some(3), 4, Old), t0), [4, 5, 6, 7]);
    assert_eq!(offsets(&mut h, "u", q(Some(3), 4, New), t0), [10, 9, 8, 7]);
    assert_eq!(offsets(&mut h, "u", q(Some(8), 100, New), t0), [10, 9]);
    assert_eq!(offsets(&mut h, "u", q(None, 2, Old), t0), [1, 2]);
    assert_eq!(offsets(&mut h, "u", q(None, 2, New), t0), [10, 9]);
    assert_eq!(
        offsets(&mut h, "u", q(Some(10), 5, Old), t0),
        Vec::<u64>::new()
    );
    assert_eq!(
        offsets(&mut h, "u", q(Some(99), 5, New), t0),
        Vec::<u64>::new()
    );
    assert_eq!(offsets(&mut h, "u", q(None, 0, Old), t0), Vec::<u64>::new());
    // Payloads follow their offsets, from whichever end the walk starts.
    assert_eq!(
        read(&mut h, "u", q(Some(1), 2, Old), t0),
        [(2, "2".into()), (3, "3".into())]
    );
    assert_eq!(read(&mut h, "u", q(Some(7), 1, Old), t0), [(8, "8".into())]);
}

#[test]
fn delete_drops_the_messages_and_starts_a_new_epoch_at_zero() {
    let (mut h, t0) = history(100, 60 * SECOND, 1 << 20);
    let old = push(&mut h, "u", "x", t0);
    push(&mut h, "u", "y", t0);
    let new = h.delete_at(&uid("u"), t0);
    assert_eq!(new.offset, 0);
    assert_ne!(new.epoch, old.epoch);
    assert_eq!(h.messages(), 0);
    assert_eq!(h.bytes(), RECORD_OVERHEAD + 1);
    assert_eq!(
        push(&mut h, "u", "z", t0),
        Position {
            offset: 1,
            epoch: new.epoch
        }
    );
}

#[test]
fn one_uid_pushed_far_past_its_size_keeps_memory_flat() {
    let (mut h, t0) = history(10, 60 * SECOND, 1 << 30);
    for i in 0..100_000 {
        push(&mut h, "hot", &format!("{i:08}"), t0);
    }
    assert_eq!(h.messages(), 10);
    assert_eq!(h.bytes(), RECORD_OVERHEAD + 3 + 10 * (MESSAGE_OVERHEAD + 8));
    // The slab never held more than one message past the size.
    assert_eq!(h.slots.allocated(), 11);
}

#[test]
fn a_message_costs_its_payload_and_at_most_64_bytes_of_bookkeeping() {
    let (mut h, t0) = history(1000, 60 * SECOND, 1 << 30);
    let payload = "p".repeat(100);
    for _ in 0..1000 {
        push(&mut h, "u", &payload, t0);
    }
    let per_message = (h.bytes() - RECORD_OVERHEAD - 1) / 1000;
    assert_eq!(per_message, 100 + MESSAGE_OVERHEAD);
}

#[test]
fn the_sweep_does_at_most_its_budget_per_call() {
    let (mut h, t0) = history(100, SECOND, 1 << 20);
    for i in 0..5 {
        push(&mut h, &format!("u{i}"), "x", t0);
    }
    let later = t0 + 3 * SECOND;
    let mut calls = 1;
    while h.expire(later, 2) {
        calls += 1;
    }
    // Five messages, then five records.
    assert_eq!(calls, 5);
    assert_eq!((h.messages(), h.streams(), h.bytes()), (0, 0, 0));
}

#[test]
fn empty_streams_made_by_binds_give_way_before_any_message_under_the_memory_cap() {
    // Any client can make an empty stream (a v2 bind or an SSE stream on a
    // new uid, a read of a new uid): they must never push real messages
    // out of a full store, nor grow it past its cap.
    let cap = 64 * 1024;
    let (mut h, t0) = history(100, 60 * SECOND, cap);
    push(&mut h, "victim", "kept", t0);
    for i in 0..10_000 {
        h.read(&uid(&format!("drive-by-{i}")), &all(), t0);
        assert!(h.bytes() <= cap, "{} bytes after {i} reads", h.bytes());
    }
    push(&mut h, "victim2", "kept too", t0);
    assert!(h.bytes() <= cap);
    assert_eq!(read(&mut h, "victim", all(), t0), [(1, "kept".into())]);
    assert_eq!(read(&mut h, "victim2", all(), t0), [(1, "kept too".into())]);
}
