//! History kept in Redis (cluster mode with `--history`), through the map
//! and the broker seam: nodes are `ConnectionMap`s in this process, each
//! with its own Redis broker and bus task, on a real redis-server started by
//! the test.

mod common;

use std::time::Duration;

use common::{Redis, wait_until};
use pushgate::ConnectionMap;
use pushgate::broker::AnyBroker;
use pushgate::broker::redis::{ClusterConfig, RedisBroker, RedisTarget};
use pushgate::connections::broker::Readiness;
use pushgate::connections::{Connection, Delivery, QueueLimits, RouteError};
use pushgate::model::{Message, Payload, Position, Source, Uid};
use pushgate::shutdown::Shutdown;
use pushgate::store::{HistoryLimits, HistoryQuery, Order, Unrecoverable};
use tokio::task::JoinHandle;

/// A node: its map and its bus task (aborting it is a crash).
struct Node {
    map: ConnectionMap,
    bus: JoinHandle<()>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.bus.abort();
    }
}

fn limits(ttl: Duration) -> HistoryLimits {
    HistoryLimits {
        size: 100,
        ttl,
        memory: 1 << 20,
    }
}

async fn node(redis: &Redis, id: &str, history: HistoryLimits) -> Node {
    let broker = RedisBroker::new(ClusterConfig {
        target: RedisTarget::Url(redis.url()),
        prefix: "pushgate:".into(),
        node_id: id.into(),
        probe_interval: Duration::from_millis(300),
        timeout: Duration::from_millis(500),
        history: Some(history),
    })
    .unwrap();
    let queues = QueueLimits {
        max_len: 1000,
        max_bytes: 1 << 20,
    };
    let map = ConnectionMap::new(queues, 0, AnyBroker::Redis(broker), Some(history));
    let bus = tokio::spawn(map.clone().run_broker(Shutdown::new()));
    wait_until(&format!("{id} up"), || async {
        let r = map.readiness();
        (r == Readiness::Up).then_some(()).ok_or(format!("{r:?}"))
    })
    .await;
    Node { map, bus }
}

fn uid(s: &str) -> Uid {
    Uid::new(s).unwrap()
}

/// The next message queued for `conn`, within a few seconds.
async fn next(conn: &mut Connection) -> Message {
    match tokio::time::timeout(Duration::from_secs(5), conn.next()).await {
        Ok(Delivery::Message(m)) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

fn all_after(since: Option<u64>) -> HistoryQuery {
    HistoryQuery {
        since,
        limit: 1000,
        order: Order::OldestFirst,
        max_bytes: usize::MAX,
    }
}

#[tokio::test]
async fn offsets_are_contiguous_and_in_delivery_order_across_pushes_taken_by_different_nodes() {
    let redis = Redis::start();
    let ttl = limits(Duration::from_secs(60));
    let (a, b) = (node(&redis, "a", ttl).await, node(&redis, "b", ttl).await);
    let mut conn = b.map.open();
    let bound = conn.bind_stream(uid("h"), None).await.unwrap();
    let top = bound.top.expect("a stream position once bound");
    assert_eq!(top.offset, 0);
    let mut answered = Vec::new();
    for i in 1..=40u64 {
        let taker = if i % 2 == 0 { &a } else { &b };
        let payload = Payload::from(format!("{{\"n\":{i}}}"));
        let out = taker
            .map
            .push(Source::Text, &uid("h"), &payload)
            .await
            .unwrap();
        assert!(out.is_ok(), "push {i}: {out:?}");
        answered.push(out.stored.expect("stored"));
    }
    let expected: Vec<Position> = (1..=40)
        .map(|offset| Position {
            offset,
            epoch: top.epoch,
        })
        .collect();
    assert_eq!(
        answered, expected,
        "the offsets the pushes were answered with"
    );
    for i in 1..=40u64 {
        let m = next(&mut conn).await;
        assert_eq!(m.payload.as_str(), format!("{{\"n\":{i}}}"));
        assert_eq!(m.position(), Some(expected[i as usize - 1]), "message {i}");
    }
    // Any node reads the same history.
    let page = a
        .map
        .history(&uid("h"), &all_after(Some(30)))
        .await
        .unwrap();
    assert_eq!(page.top, expected[39]);
    let offsets: Vec<u64> = page.messages.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, (31..=40).collect::<Vec<_>>());
    assert_eq!(page.messages[0].payload.as_str(), "{\"n\":31}");
}

#[tokio::test]
async fn a_push_stored_while_nobody_is_connected_survives_its_node_and_is_resumed_on_another() {
    let redis = Redis::start();
    let ttl = limits(Duration::from_secs(60));
    let a = node(&redis, "a", ttl).await;
    let mut first = a.map.open();
    let bound = first.bind_stream(uid("away"), None).await.unwrap();
    let since = bound.top.unwrap();
    drop(first);
    let out = a
        .map
        .push(Source::Http, &uid("away"), &Payload::from("missed"))
        .await
        .unwrap();
    assert!(!out.is_ok(), "nobody online: the text port answers fail");
    assert_eq!(out.stored.map(|p| p.offset), Some(1));
    // The node that took it goes away without a word; another resumes.
    drop(a);
    let b = node(&redis, "b", ttl).await;
    let mut back = b.map.open();
    let bound = back.bind_stream(uid("away"), Some(since)).await.unwrap();
    let replay = bound.recovery.unwrap().expect("recovered");
    assert_eq!(replay.len(), 1);
    assert_eq!(
        (replay[0].offset, replay[0].payload.as_str()),
        (1, "missed")
    );
    assert_eq!(bound.top, out.stored);
}

#[tokio::test]
async fn the_epoch_changes_when_the_keys_expire_and_when_history_is_deleted() {
    let redis = Redis::start();
    let a = node(&redis, "a", limits(Duration::from_millis(300))).await;
    let u = uid("fleeting");
    let out = a
        .map
        .push(Source::Text, &u, &Payload::from("x"))
        .await
        .unwrap();
    let first = out.stored.unwrap();
    assert_eq!(first.offset, 1);
    // Expired with its keys: the next read starts a new epoch at 0.
    wait_until("the stream expired", || async {
        let exists = redis.command(&format!("EXISTS pushgate:v1:h:{{{u}}}:m"));
        (exists == ":0\r\n").then_some(()).ok_or(exists)
    })
    .await;
    let page = a.map.history(&u, &all_after(None)).await.unwrap();
    assert_ne!(page.top.epoch, first.epoch);
    assert_eq!((page.top.offset, page.messages.len()), (0, 0));
    let next = a
        .map
        .push(Source::Text, &u, &Payload::from("y"))
        .await
        .unwrap();
    assert_eq!(
        next.stored,
        Some(Position {
            offset: 1,
            epoch: page.top.epoch
        })
    );
    // A resume from the old epoch learns it cannot recover.
    let mut conn = a.map.open();
    let bound = conn.bind_stream(u.clone(), Some(first)).await.unwrap();
    assert_eq!(bound.recovery, Some(Err(Unrecoverable::EpochChanged)));
    // Deleting starts yet another epoch.
    let deleted = a.map.delete_history(&u).await.unwrap();
    assert_eq!(deleted.offset, 0);
    assert_ne!(deleted.epoch, page.top.epoch);
    let after = a
        .map
        .push(Source::Text, &u, &Payload::from("z"))
        .await
        .unwrap();
    assert_eq!(
        after.stored,
        Some(Position {
            offset: 1,
            epoch: deleted.epoch
        })
    );
    assert_eq!(next_message_position(&mut conn).await, after.stored);
}

async fn next_message_position(conn: &mut Connection) -> Option<Position> {
    next(conn).await.position()
}

#[tokio::test]
async fn with_redis_down_pushes_to_held_uids_are_delivered_without_an_offset_and_others_fail() {
    let mut redis = Redis::start();
    let a = node(&redis, "a", limits(Duration::from_secs(60))).await;
    let mut conn = a.map.open();
    conn.bind_stream(uid("here"), None).await.unwrap();
    let up = a
        .map
        .push(Source::Text, &uid("here"), &Payload::from("1"))
        .await
        .unwrap();
    assert_eq!(next(&mut conn).await.position(), up.stored);
    redis.kill();
    // Whether or not the bus noticed yet, the push is delivered here.
    let out = a
        .map
        .push(Source::Text, &uid("here"), &Payload::from("2"))
        .await
        .expect("a push to a held uid is delivered with Redis down");
    assert_eq!((out.delivered, out.stored), (1, None));
    let m = next(&mut conn).await;
    assert_eq!((m.payload.as_str(), m.position()), ("2", None));
    let elsewhere = a
        .map
        .push(Source::Text, &uid("elsewhere"), &Payload::from("3"))
        .await;
    assert!(
        matches!(elsewhere, Err(RouteError::ClusterUnavailable(..))),
        "{elsewhere:?}"
    );
}

#[tokio::test]
async fn a_flushed_script_cache_is_refilled_without_losing_or_repeating_a_push() {
    let redis = Redis::start();
    let a = node(&redis, "a", limits(Duration::from_secs(60))).await;
    let u = uid("flushed");
    let first = a
        .map
        .push(Source::Text, &u, &Payload::from("1"))
        .await
        .unwrap();
    assert_eq!(redis.command("SCRIPT FLUSH"), "+OK\r\n");
    // Several script calls (one per chunk of pushes), each refused once.
    let batch: Vec<(Uid, Payload)> = (2..=300)
        .map(|n| (u.clone(), Payload::from(n.to_string())))
        .collect();
    let stored: Vec<Option<u64>> = a
        .map
        .push_batch(Source::Text, &batch)
        .await
        .into_iter()
        .map(|r| r.unwrap().stored.map(|p| p.offset))
        .collect();
    assert_eq!(stored, (2..=300).map(Some).collect::<Vec<_>>());
    assert_eq!(redis.command("SCRIPT FLUSH"), "+OK\r\n");
    let page = a.map.history(&u, &all_after(None)).await.unwrap();
    let got: Vec<(u64, String)> = page
        .messages
        .iter()
        .map(|m| (m.offset, m.payload.as_str().to_owned()))
        .collect();
    let newest: Vec<(u64, String)> = (201..=300).map(|n| (n, n.to_string())).collect();
    assert_eq!(got, newest, "each push once, the newest 100 kept");
    assert_eq!(page.top.epoch, first.stored.unwrap().epoch);
}

#[tokio::test]
async fn a_batch_of_many_pushes_over_several_uids_is_stored_per_uid_in_order_and_trimmed_exactly() {
    let redis = Redis::start();
    let ttl = limits(Duration::from_secs(60));
    let (a, b) = (node(&redis, "a", ttl).await, node(&redis, "b", ttl).await);
    // "held" is held on the pushing node (its own pushes come back through
    // the bus), "far" on the other, "none" nowhere, "broken" has a meta key
    // of another type, so its pushes fail and no other.
    let mut here = a.map.open();
    here.bind_stream(uid("held"), None).await.unwrap();
    let mut far = b.map.open();
    far.bind_stream(uid("far"), None).await.unwrap();
    assert_eq!(
        redis.command("SET pushgate:v1:h:{broken}:m x"),
        "+OK\r\n",
        "a key the store script cannot read as a hash"
    );
    // 300 pushes: several script calls in one batch, the uids interleaved.
    let uids = ["held", "far", "none", "broken"];
    let batch: Vec<(Uid, Payload)> = (0..300)
        .map(|i| (uid(uids[i % 4]), Payload::from(format!("{i}"))))
        .collect();
    let results = a.map.push_batch(Source::Text, &batch).await;
    let mut last = std::collections::HashMap::new();
    for (i, result) in results.iter().enumerate() {
        let out = result.as_ref().unwrap();
        let name = uids[i % 4];
        if name == "broken" {
            assert_eq!(out.stored, None, "push {i} to a broken uid");
            continue;
        }
        let position = out.stored.unwrap_or_else(|| panic!("push {i} stored"));
        assert_eq!(out.is_ok(), name != "none", "push {i} to {name}: {out:?}");
        let offset = last.entry(name).or_insert((0, position.epoch));
        assert_eq!(
            position.offset,
            offset.0 + 1,
            "push {i}: contiguous per uid"
        );
        assert_eq!(position.epoch, offset.1, "push {i}: one epoch per uid");
        *offset = (position.offset, position.epoch);
    }
    let epochs: std::collections::HashSet<_> = last.values().map(|(_, e)| *e).collect();
    assert_eq!(epochs.len(), 3, "each new uid starts its own epoch");
    for (conn, name) in [(&mut here, "held"), (&mut far, "far")] {
        for i in (0..300).filter(|i| uids[i % 4] == name) {
            let m = next(conn).await;
            assert_eq!(m.payload.as_str(), i.to_string(), "{name}");
            assert_eq!(m.position().map(|p| p.offset), Some(i as u64 / 4 + 1));
        }
    }
    // 75 pushes each, history size 100: all there; then 60 more to one uid
    // leave exactly its newest 100.
    let page = b.map.history(&uid("none"), &all_after(None)).await.unwrap();
    assert_eq!(page.messages.len(), 75);
    let more: Vec<(Uid, Payload)> = (300..360)
        .map(|i| (uid("none"), Payload::from(format!("{i}"))))
        .collect();
    for result in a.map.push_batch(Source::Text, &more).await {
        assert!(result.unwrap().stored.is_some());
    }
    let page = b.map.history(&uid("none"), &all_after(None)).await.unwrap();
    let offsets: Vec<u64> = page.messages.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, (36..=135).collect::<Vec<_>>());
    assert_eq!(page.messages[99].payload.as_str(), "359");
    assert_eq!(page.top.offset, 135);
    // Redis trims whole stream nodes only (MAXLEN ~): the stream holds more
    // than the size, and every read still shows exactly the newest 100.
    let xlen = |redis: &Redis| -> u64 {
        let reply = redis.command("XLEN pushgate:v1:h:{none}:s");
        reply.trim_start_matches(':').trim().parse().unwrap()
    };
    assert!(xlen(&redis) > 100, "{}", xlen(&redis));
    let since = b
        .map
        .history(&uid("none"), &all_after(Some(10)))
        .await
        .unwrap();
    assert_eq!(since.messages.first().map(|m| m.offset), Some(36));
    assert_eq!(since.messages.len(), 100);
    let newest_first = HistoryQuery {
        since: None,
        limit: 1000,
        order: Order::NewestFirst,
        max_bytes: usize::MAX,
    };
    let page = b.map.history(&uid("none"), &newest_first).await.unwrap();
    let offsets: Vec<u64> = page.messages.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, (36..=135).rev().collect::<Vec<_>>());
    let many: Vec<(Uid, Payload)> = (0..300)
        .map(|i| (uid("none"), Payload::from(format!("{i}"))))
        .collect();
    a.map.push_batch(Source::Text, &many).await;
    assert!(xlen(&redis) < 200, "at most one node beyond the size");
    let page = b.map.history(&uid("none"), &all_after(None)).await.unwrap();
    let offsets: Vec<u64> = page.messages.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, (336..=435).collect::<Vec<_>>());
    // Two uids whose history one script call creates get two epochs.
    let fresh = [
        (uid("x"), Payload::from("1")),
        (uid("y"), Payload::from("1")),
    ];
    let epochs: Vec<_> = a
        .map
        .push_batch(Source::Text, &fresh)
        .await
        .into_iter()
        .map(|r| r.unwrap().stored.map(|p| (p.offset, p.epoch)))
        .collect();
    assert_eq!(epochs[0].map(|p| p.0), Some(1));
    assert_eq!(epochs[1].map(|p| p.0), Some(1));
    assert_ne!(epochs[0].map(|p| p.1), epochs[1].map(|p| p.1));
}

/// Offsets past 10^14 are still written in full: Lua's own number to
/// string conversion would make offset 10^14 the id `1e+14-0`, which Redis
/// refuses, failing every later push to the uid while its offset went on
/// growing.
#[tokio::test]
async fn offsets_past_ten_to_the_fourteen_are_stored_and_published_exactly() {
    let redis = Redis::start();
    let a = node(&redis, "a", limits(Duration::from_secs(60))).await;
    let u = uid("far");
    let mut conn = a.map.open();
    conn.bind_stream(u.clone(), None).await.unwrap();
    a.map
        .push(Source::Http, &u, &Payload::from("0"))
        .await
        .unwrap();
    assert_eq!(next(&mut conn).await.position().map(|p| p.offset), Some(1));
    assert_eq!(
        redis.command("HSET pushgate:v1:h:{far}:m o 99999999999998"),
        ":0\r\n"
    );
    for (n, want) in [(1, 99_999_999_999_999_u64), (2, 100_000_000_000_000)] {
        let out = a
            .map
            .push(Source::Http, &u, &Payload::from(n.to_string()))
            .await
            .unwrap();
        assert_eq!(out.stored.map(|p| p.offset), Some(want), "push {n}");
        assert_eq!(
            next(&mut conn).await.position().map(|p| p.offset),
            Some(want)
        );
    }
    let page = a
        .map
        .history(&u, &all_after(Some(99_999_999_999_998)))
        .await
        .unwrap();
    let got: Vec<u64> = page.messages.iter().map(|m| m.offset).collect();
    assert_eq!(got, [99_999_999_999_999, 100_000_000_000_000]);
}

/// A resume from Redis replays at most the connection's queue bytes, and
/// the store sends no more than that: past it the resume is `too_large`.
#[tokio::test]
async fn a_resume_from_redis_replays_at_most_the_connections_queue_bytes() {
    let redis = Redis::start();
    let a = node(&redis, "a", limits(Duration::from_secs(60))).await;
    let u = uid("heavy");
    let mut first = a.map.open();
    let since = first
        .bind_stream(u.clone(), None)
        .await
        .unwrap()
        .top
        .unwrap();
    drop(first);
    // The node's queues take 1 MiB: three 300 kB messages fit, four do not.
    let chunk = Payload::from("x".repeat(300_000));
    for _ in 0..3 {
        a.map.push(Source::Http, &u, &chunk).await.unwrap();
    }
    let mut back = a.map.open();
    let bound = back.bind_stream(u.clone(), Some(since)).await.unwrap();
    assert_eq!(bound.recovery.unwrap().map(|r| r.len()), Ok(3));
    drop(back);
    a.map.push(Source::Http, &u, &chunk).await.unwrap();
    let mut again = a.map.open();
    let bound = again.bind_stream(u.clone(), Some(since)).await.unwrap();
    assert_eq!(bound.recovery, Some(Err(Unrecoverable::TooLarge)));
    assert_eq!(bound.top.map(|p| p.offset), Some(4));
    let page = a
        .map
        .history(
            &u,
            &HistoryQuery {
                since: None,
                limit: 100,
                order: Order::OldestFirst,
                max_bytes: 700_000,
            },
        )
        .await
        .unwrap();
    let got: Vec<u64> = page.messages.iter().map(|m| m.offset).collect();
    assert_eq!(got, [1, 2], "the page ends before the bound");
}
