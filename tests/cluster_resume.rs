//! History in Redis end to end: real pushgate nodes with `--history`, a real
//! redis-server, protocol v2 clients resuming on another node after the one
//! that took the pushes was killed.

mod common;

use serde_json::{Value, json};

use common::v2::*;
use common::*;

fn node(redis: &Redis) -> Gateway {
    redis.node(&["--history"])
}

async fn up(redis: &Redis) -> Gateway {
    let gw = node(redis);
    gw.wait_redis_up().await;
    gw
}

async fn push_line(gw: &Gateway, line: &str) -> String {
    TextClient::connect(gw).await.send(line).await
}

#[tokio::test]
async fn pushes_stored_while_a_client_was_away_are_resumed_on_another_node_after_a_kill() {
    let redis = Redis::start();
    let (a, mut b) = (up(&redis).await, up(&redis).await);
    let (ws, bound) = bind_uid(&b, "roam", None).await;
    let since = position(&bound);
    assert_eq!(since["offset"], 0);
    drop(ws);
    b.wait_bound("roam", 0).await;
    a.wait_nodes("roam", 0).await;
    // Taken by both nodes while nobody is online: `fail`, but stored.
    assert_eq!(push_line(&a, r#"{"uid":"roam","n":1}"#).await, "fail");
    assert_eq!(push_line(&b, r#"{"uid":"roam","n":2}"#).await, "fail");
    b.signal("KILL");
    b.wait_exit(PATIENCE);
    let c = up(&redis).await;
    let (mut ws, bound) = bind_uid(&c, "roam", Some(&since)).await;
    assert_eq!(
        bound,
        json!({"type": "bound", "uid": "roam", "history": true, "offset": 2,
               "epoch": since["epoch"], "recovered": true})
    );
    for n in 1..=2 {
        assert_eq!(
            next_frame(&mut ws).await,
            json!({"type": "message", "offset": n, "epoch": since["epoch"],
                   "data": {"uid": "roam", "n": n}})
        );
    }
    // Then live pushes, from any node, at the next offsets.
    a.wait_nodes("roam", 1).await;
    assert_eq!(push_line(&a, r#"{"uid":"roam","n":3}"#).await, "ok");
    assert_eq!(push_line(&c, r#"{"uid":"roam","n":4}"#).await, "ok");
    for n in 3..=4 {
        let frame = next_frame(&mut ws).await;
        assert_eq!(
            (frame["offset"].clone(), frame["data"]["n"].clone()),
            (json!(n), json!(n))
        );
    }
    // Any node reads the same history over REST.
    let page: Value = reqwest::get(a.url("/history/roam"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let offsets: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [1, 2, 3, 4], "{page}");
}

#[tokio::test]
async fn with_history_on_and_redis_killed_a_held_uid_still_receives_without_an_offset_and_others_fail()
 {
    let mut redis = Redis::start();
    let a = up(&redis).await;
    let (mut ws, _) = bind_uid(&a, "held", None).await;
    a.wait_nodes("held", 1).await;
    assert_eq!(push_line(&a, r#"{"uid":"held","n":1}"#).await, "ok");
    assert_eq!(next_frame(&mut ws).await["offset"], 1);
    redis.kill();
    assert_eq!(push_line(&a, r#"{"uid":"held","n":2}"#).await, "ok");
    assert_eq!(
        next_frame(&mut ws).await,
        json!({"type": "message", "data": {"uid": "held", "n": 2}}),
        "delivered, without an offset"
    );
    assert_eq!(push_line(&a, r#"{"uid":"elsewhere","n":3}"#).await, "fail");
}

#[tokio::test]
async fn pipelined_lines_through_two_nodes_reach_a_v2_client_at_contiguous_offsets_in_order() {
    let redis = Redis::start();
    let (a, b) = (up(&redis).await, up(&redis).await);
    let (mut ws, bound) = bind_uid(&b, "piped", None).await;
    a.wait_nodes("piped", 1).await;
    let mut via_a = TextClient::connect(&a).await;
    let mut via_b = TextClient::connect(&b).await;
    // Each round: 50 lines written at once through one node (one batch),
    // answered, then 50 through the other.
    let mut sent = 0;
    for round in 0..4 {
        let text = if round % 2 == 0 {
            &mut via_a
        } else {
            &mut via_b
        };
        let lines: String = (sent + 1..=sent + 50)
            .map(|n| format!("{{\"uid\":\"piped\",\"n\":{n}}}\n"))
            .collect();
        text.write(lines.as_bytes()).await;
        for _ in 0..50 {
            assert_eq!(text.answer().await, "ok");
        }
        sent += 50;
    }
    for n in 1..=sent {
        let frame = next_frame(&mut ws).await;
        assert_eq!(
            (
                frame["offset"].clone(),
                frame["epoch"].clone(),
                frame["data"]["n"].clone()
            ),
            (json!(n), bound["epoch"].clone(), json!(n)),
        );
    }
}

/// A node whose Redis subscription Redis dropped (here `CLIENT KILL`; in
/// production, a subscriber past Redis's `client-output-buffer-limit
/// pubsub`) misses what was published until it resubscribes. The next
/// message that reaches it shows the gap in its offset: a v2 connection
/// there (WebSocket or Server-Sent Events) is closed with 4006 instead of
/// silently moving past what it missed, and the client resumes and gets
/// every message, in order.
#[tokio::test]
async fn a_v2_connection_that_missed_messages_is_closed_4006_and_resumes_them() {
    let redis = Redis::start();
    let (a, b) = (up(&redis).await, up(&redis).await);
    let (mut ws, bound) = bind_uid(&b, "gap", None).await;
    let epoch = bound["epoch"].clone();
    let mut sse = common::sse::bind(&b, "gap").await;
    a.wait_nodes("gap", 1).await;
    assert_eq!(push_line(&a, r#"{"uid":"gap","n":1}"#).await, "ok");
    assert_eq!(next_frame(&mut ws).await["offset"], 1);
    assert_eq!(sse.next_event().await.unwrap().json()["offset"], 1);
    // Drop node B's subscription (the one with the most channels: B's
    // includes the uid's) until a push through A is stored while B is not
    // subscribed: `fail`, nobody took it.
    let mut n = 1;
    let mut missed = false;
    for _ in 0..20 {
        let list = redis.command("CLIENT LIST TYPE pubsub");
        let id = list
            .lines()
            .filter_map(|l| {
                let field = |k: &str| {
                    l.split(' ')
                        .find_map(|f| f.strip_prefix(k))
                        .and_then(|v| v.parse::<u64>().ok())
                };
                Some((field("sub=")?, field("id=")?))
            })
            .max()
            .map(|(_, id)| id)
            .expect("a subscribed node");
        assert!(
            redis
                .command(&format!("CLIENT KILL ID {id}"))
                .starts_with(":1")
        );
        n += 1;
        if push_line(&a, &format!(r#"{{"uid":"gap","n":{n}}}"#)).await == "fail" {
            missed = true;
            break;
        }
    }
    assert!(missed, "node B resubscribed before every push");
    // Once B is back, the next push reaches it past the gap.
    wait_until("node B back on the bus", || {
        n += 1;
        let line = format!(r#"{{"uid":"gap","n":{n}}}"#);
        let a = &a;
        async move {
            match push_line(a, &line).await.as_str() {
                "ok" => Ok(()),
                other => Err(other.to_owned()),
            }
        }
    })
    .await;
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(
        (code, reason.as_str()),
        (4006, "messages missed: reconnect with since")
    );
    let close = sse.next_event().await.expect("a close event");
    assert_eq!(
        (close.kind(), &close.json()["code"]),
        ("close", &json!(4006)),
        "no message past the gap"
    );
    let since = json!({"offset": 1, "epoch": epoch});
    let (mut ws, bound) = bind_uid(&b, "gap", Some(&since)).await;
    assert_eq!(bound["recovered"], true, "{bound}");
    let top = bound["offset"].as_u64().unwrap();
    let mut last = 1;
    for offset in 2..=top {
        let frame = next_frame(&mut ws).await;
        let got = frame["data"]["n"].as_u64().unwrap();
        assert_eq!(frame["offset"], offset, "{frame}");
        assert!(got > last, "in push order: {frame}");
        last = got;
    }
    assert_eq!(last, n, "ends with the push B took");
}
