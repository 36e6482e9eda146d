//! The per-uid order guarantee across nodes: a push sent after another
//! push's answer is delivered after it, whichever nodes took the two. Two
//! real pushgate nodes and a real redis-server started by the test.

mod common;

use common::*;

/// Pairs of pushes per run: enough that the race the guarantee closes (a
/// push taken by the holding node overtaking one still on its way through
/// Redis) showed up in 44–60 of 300 pairs before it was closed.
const PAIRS: usize = 300;

/// Sends `PAIRS` pairs — the first through `a`'s text port, the second
/// through `b`'s once the first was answered `ok` — to a client on `b`, and
/// returns the pairs that arrived reversed.
async fn reversed_pairs(extra: &[&str]) -> Vec<usize> {
    let redis = Redis::start();
    let (a, b) = (redis.node(extra), redis.node(extra));
    a.wait_redis_up().await;
    b.wait_redis_up().await;
    let mut client = ws_bind(&b, "ordered").await;
    a.wait_nodes("ordered", 1).await;
    let mut via_a = TextClient::connect(&a).await;
    let mut via_b = TextClient::connect(&b).await;
    let mut reversed = Vec::new();
    for i in 0..PAIRS {
        let first = format!(r#"{{"uid":"ordered","pair":{i},"n":1}}"#);
        let second = format!(r#"{{"uid":"ordered","pair":{i},"n":2}}"#);
        assert_eq!(via_a.send(&first).await, "ok", "pair {i}, first push");
        assert_eq!(via_b.send(&second).await, "ok", "pair {i}, second push");
        let got = [next_text(&mut client).await, next_text(&mut client).await];
        if got == [second.clone(), first.clone()] {
            reversed.push(i);
        } else {
            assert_eq!(got, [first, second], "pair {i}");
        }
    }
    assert_nothing_else(&b, &mut client, "ordered").await;
    reversed
}

#[tokio::test]
async fn a_push_answered_ok_through_one_node_is_delivered_before_a_later_push_through_the_holding_node()
 {
    let reversed = reversed_pairs(&[]).await;
    assert!(
        reversed.is_empty(),
        "{} of {PAIRS} pairs arrived reversed: {reversed:?}",
        reversed.len()
    );
}

#[tokio::test]
async fn with_history_on_a_push_answered_ok_through_one_node_is_delivered_before_a_later_push_through_the_holding_node()
 {
    let reversed = reversed_pairs(&["--history"]).await;
    assert!(
        reversed.is_empty(),
        "{} of {PAIRS} pairs arrived reversed: {reversed:?}",
        reversed.len()
    );
}
