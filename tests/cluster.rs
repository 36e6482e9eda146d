//! Cluster mode: three real pushgate nodes and a real redis-server that the
//! test starts on a free port (and kills, and restarts).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::tungstenite::Message;

async fn three_nodes(redis: &Redis) -> (Gateway, Gateway, Gateway) {
    let (a, b, c) = (redis.node(&[]), redis.node(&[]), redis.node(&[]));
    for n in [&a, &b, &c] {
        n.wait_redis_up().await;
    }
    (a, b, c)
}

async fn push_http(gw: &Gateway, body: Value) -> (u16, Value) {
    post_json(gw, "/push", &body).await
}

#[tokio::test]
async fn a_push_on_any_node_reaches_the_node_holding_the_uid_once() {
    let redis = Redis::start();
    let (a, b, c) = three_nodes(&redis).await;
    let mut on_b = ws_bind(&b, "bob").await;
    a.wait_nodes("bob", 1).await;
    let mut text = TextClient::connect(&a).await;
    assert_eq!(text.send(r#"{"uid":"bob","n":1}"#).await, "ok");
    assert_eq!(next_text(&mut on_b).await, r#"{"uid":"bob","n":1}"#);
    let (status, r) = push_http(&c, json!({"uid": ["bob", "nobody"], "data": "via c"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        r,
        json!({"delivered": 0, "dropped": 0, "remote_deliveries": 1, "offline": ["nobody"]})
    );
    assert_eq!(next_text(&mut on_b).await, "via c");
    // Offline answers fail from every node.
    for n in [&a, &b, &c] {
        let mut t = TextClient::connect(n).await;
        assert_eq!(t.send(r#"{"uid":"nobody"}"#).await, "fail");
    }
    assert_nothing_else(&b, &mut on_b, "bob").await;
}

#[tokio::test]
async fn the_same_uid_on_two_nodes_receives_once_on_each_including_the_pushing_node() {
    let redis = Redis::start();
    let (a, b, c) = three_nodes(&redis).await;
    let mut on_a = ws_bind(&a, "multi").await;
    let mut on_b = ws_bind(&b, "multi").await;
    c.wait_nodes("multi", 2).await;
    let mut text = TextClient::connect(&a).await;
    assert_eq!(text.send(r#"{"uid":"multi","from":"a"}"#).await, "ok");
    let (_, r) = push_http(&c, json!({"uid": "multi", "data": "from c"})).await;
    assert_eq!(r["remote_deliveries"], 2);
    for ws in [&mut on_a, &mut on_b] {
        assert_eq!(next_text(ws).await, r#"{"uid":"multi","from":"a"}"#);
        assert_eq!(next_text(ws).await, "from c");
    }
    assert_nothing_else(&a, &mut on_a, "multi").await;
    assert_nothing_else(&b, &mut on_b, "multi").await;
    let v: Value = reqwest::get(c.url("/users/multi"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({"uid": "multi", "online": true, "connections": 0, "nodes": 2})
    );
}

#[tokio::test]
async fn broadcast_from_any_node_reaches_every_client_once() {
    let redis = Redis::start();
    let (a, b, c) = three_nodes(&redis).await;
    let mut clients = vec![
        ws_bind(&a, "x1").await,
        ws_bind(&b, "x2").await,
        ws_bind(&b, "x3").await,
        ws_bind(&c, "x4").await,
    ];
    let (_, r) = post_json(&c, "/broadcast", &json!({"data": "everyone"})).await;
    assert_eq!(
        r,
        json!({"delivered": 1, "dropped": 0, "remote_deliveries": 2})
    );
    for ws in &mut clients {
        assert_eq!(next_text(ws).await, "everyone");
    }
    for (gw, ws, uid) in [(&a, 0, "x1"), (&b, 1, "x2"), (&b, 2, "x3"), (&c, 3, "x4")] {
        assert_nothing_else(gw, &mut clients[ws], uid).await;
    }
    // Cluster totals.
    wait_until("3 nodes and 4 bound connections in /stats", || async {
        let s = a.stats().await;
        (s["nodes"] == 3 && s["bound_connections"] == 4)
            .then_some(())
            .ok_or(s)
    })
    .await;
}

#[tokio::test]
async fn disconnect_closes_the_uid_on_every_node() {
    let redis = Redis::start();
    let (a, b, _c) = three_nodes(&redis).await;
    let mut on_a = ws_bind(&a, "k").await;
    let mut on_b = ws_bind(&b, "k").await;
    a.wait_nodes("k", 2).await;
    let (status, _) = post_json(&a, "/disconnect", &json!({"uid": "k"})).await;
    assert_eq!(status, 200);
    for ws in [&mut on_a, &mut on_b] {
        assert_eq!(u16::from(next_close(ws).await.unwrap().code), 4001);
    }
    a.wait_nodes("k", 0).await;
}

#[tokio::test]
async fn redis_down_keeps_local_pushes_and_fails_remote_ones_then_recovers() {
    let mut redis = Redis::start();
    let a = redis.node(&[]);
    let b = redis.node(&["--require-redis"]);
    a.wait_redis_up().await;
    b.wait_redis_up().await;
    let mut on_a = ws_bind(&a, "local").await;
    let mut on_b = ws_bind(&b, "remote").await;
    a.wait_nodes("remote", 1).await;
    assert_eq!(reqwest::get(b.url("/readyz")).await.unwrap().status(), 200);

    redis.kill();
    a.wait_metric("pushgate_redis_up", 0.0).await;
    let mut text = TextClient::connect(&a).await;
    assert_eq!(
        text.send(r#"{"uid":"local"}"#).await,
        "ok",
        "local delivery needs no Redis"
    );
    assert_eq!(next_text(&mut on_a).await, r#"{"uid":"local"}"#);
    let start = Instant::now();
    assert_eq!(
        text.send(r#"{"uid":"remote"}"#).await,
        "fail",
        "never a false ok"
    );
    let (status, problem) = push_http(&a, json!({"uid": "remote", "data": 1})).await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(status, 503, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("Redis"));
    assert_eq!(
        reqwest::get(a.url("/healthz")).await.unwrap().status(),
        200,
        "the node stays up"
    );
    assert_eq!(reqwest::get(a.url("/readyz")).await.unwrap().status(), 200);
    assert_eq!(
        reqwest::get(b.url("/readyz")).await.unwrap().status(),
        503,
        "--require-redis"
    );
    assert!(
        a.metric(r#"pushgate_push_failures_total{reason="redis_unavailable"}"#)
            .await
            >= 2.0
    );

    redis.restart();
    a.wait_redis_up().await;
    b.wait_redis_up().await;
    a.wait_nodes("remote", 1).await;
    assert_eq!(text.send(r#"{"uid":"remote","back":true}"#).await, "ok");
    // Nothing pushed while Redis was down arrives later: at most once.
    assert_eq!(
        next_text(&mut on_b).await,
        r#"{"uid":"remote","back":true}"#
    );
    assert_eq!(reqwest::get(b.url("/readyz")).await.unwrap().status(), 200);
    assert!(
        a.metric(r#"pushgate_redis_reconnects_total{reason="connection_lost"}"#)
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_dead_nodes_uids_stop_answering_ok() {
    let redis = Redis::start();
    let a = redis.node(&[]);
    let mut b = redis.node(&[]);
    a.wait_redis_up().await;
    b.wait_redis_up().await;
    let _on_b = ws_bind(&b, "doomed").await;
    a.wait_nodes("doomed", 1).await;
    b.signal("KILL");
    b.wait_exit(PATIENCE);
    a.wait_nodes("doomed", 0).await;
    let mut text = TextClient::connect(&a).await;
    assert_eq!(text.send(r#"{"uid":"doomed"}"#).await, "fail");
}

#[tokio::test]
async fn subscription_churn_is_batched() {
    let redis = Redis::start();
    let a = redis.node(&[]);
    a.wait_redis_up().await;
    assert!(redis.command("CONFIG RESETSTAT").starts_with("+OK"));
    const N: usize = 300;
    // A storm: every client connects and binds at once.
    let connects = (0..N).map(|i| {
        let url = a.ws_url("/ws");
        tokio::spawn(async move {
            let mut ws = ws_connect(&url).await;
            ws.send(Message::text(format!("churn{i}"))).await.unwrap();
            ws
        })
    });
    let mut clients = Vec::new();
    for c in connects.collect::<Vec<_>>() {
        clients.push(c.await.unwrap());
    }
    a.wait_metric("pushgate_redis_subscriptions", N as f64)
        .await;
    drop(clients);
    a.wait_metric("pushgate_redis_subscriptions", 0.0).await;
    let stats = redis.command("INFO commandstats");
    let calls = |cmd: &str| -> u64 {
        stats
            .lines()
            .find(|l| l.starts_with(&format!("cmdstat_{cmd}:")))
            .and_then(|l| l.split("calls=").nth(1))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (sub, unsub) = (calls("subscribe"), calls("unsubscribe"));
    assert!(sub >= 1 && unsub >= 1, "{stats}");
    assert!(
        sub + unsub < (N / 5) as u64,
        "{sub} SUBSCRIBE and {unsub} UNSUBSCRIBE for {N} uids"
    );
}

/// A loopback TCP proxy in front of Redis that can freeze the first
/// connection it carried — the node's subscription, which it opens before
/// its publishing connection: bytes stop flowing, the socket stays open, and
/// Redis still counts the subscriber. Commands on the publishing connection
/// keep working, so only the probe can tell: the silent starvation of
/// Centrifugo issue #1189. Connections opened later flow normally.
struct FreezingProxy {
    port: u16,
    /// The ordinal of the frozen connection (0: none).
    frozen: Arc<AtomicU64>,
}

impl FreezingProxy {
    async fn start(upstream: u16) -> FreezingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicU64::new(0));
        let shared = frozen.clone();
        tokio::spawn(async move {
            let mut ordinal = 0;
            while let Ok((client, _)) = listener.accept().await {
                ordinal += 1;
                let frozen = shared.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = tokio::spawn(pipe(cr, sw, frozen.clone(), ordinal));
                    let down = tokio::spawn(pipe(sr, cw, frozen, ordinal));
                    let _ = tokio::join!(up, down);
                });
            }
        });
        FreezingProxy { port, frozen }
    }

    /// Freezes the first connection the node opened: its subscription.
    fn freeze_subscription(&self) {
        self.frozen.store(1, Ordering::SeqCst);
    }
}

/// Copies bytes until EOF; once this connection is the frozen one, swallows
/// them instead (the socket stays open).
async fn pipe(mut r: OwnedReadHalf, mut w: OwnedWriteHalf, frozen: Arc<AtomicU64>, ordinal: u64) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.load(Ordering::SeqCst) == ordinal {
            continue;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_starved_subscription_is_caught_by_the_probe_and_reestablished() {
    let redis = Redis::start();
    let proxy = FreezingProxy::start(redis.port).await;
    let through_proxy = format!("redis://127.0.0.1:{}/", proxy.port);
    let a = Gateway::start(&[
        "--redis-url",
        &through_proxy,
        "--redis-probe-interval",
        "300ms",
        "--redis-timeout",
        "500ms",
    ]);
    let b = redis.node(&[]);
    a.wait_redis_up().await;
    b.wait_redis_up().await;
    let mut on_a = ws_bind(&a, "starved").await;
    b.wait_nodes("starved", 1).await;

    // Redis still sees the subscription (its socket is open) but nothing
    // reaches node a any more; its commands still get answers.
    proxy.freeze_subscription();
    // The probe catching the starvation.
    a.wait_metric_at_least(
        r#"pushgate_redis_reconnects_total{reason="probe_failed"}"#,
        1.0,
    )
    .await;
    a.wait_redis_up().await;
    // The old, frozen subscription is gone and the new one is confirmed.
    b.wait_nodes("starved", 1).await;
    let mut text = TextClient::connect(&b).await;
    assert_eq!(
        text.send(r#"{"uid":"starved","after":"probe"}"#).await,
        "ok"
    );
    // Whatever was published during the freeze is lost (at most once); the
    // first message to arrive after recovery is the new one.
    assert_eq!(
        next_text(&mut on_a).await,
        r#"{"uid":"starved","after":"probe"}"#
    );
}

#[tokio::test]
async fn sentinel_mode_follows_a_failover() {
    let master = Redis::start();
    let replica = Redis::start_with(
        free_port(),
        vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            master.port.to_string(),
        ],
    );
    wait_until("the replica attached", || async {
        let info = master.command("INFO replication");
        info.contains("connected_slaves:1")
            .then_some(())
            .ok_or(info)
    })
    .await;
    let sentinel = Redis::sentinel(&master);
    wait_until("sentinel seeing the replica", || async {
        let replicas = sentinel.command("SENTINEL REPLICAS mymaster");
        replicas
            .contains(&replica.port.to_string())
            .then_some(())
            .ok_or(replicas)
    })
    .await;
    let sentinels = format!("127.0.0.1:{}", sentinel.port);
    let args = [
        "--redis-sentinels",
        sentinels.as_str(),
        "--redis-probe-interval",
        "200ms",
        "--redis-timeout",
        "500ms",
    ];
    let a = Gateway::start(&args);
    let b = Gateway::start(&args);
    a.wait_redis_up().await;
    b.wait_redis_up().await;
    let mut on_b = ws_bind(&b, "sent").await;
    a.wait_nodes("sent", 1).await;
    let mut text = TextClient::connect(&a).await;
    assert_eq!(text.send(r#"{"uid":"sent","n":1}"#).await, "ok");
    assert_eq!(next_text(&mut on_b).await, r#"{"uid":"sent","n":1}"#);

    // The replica becomes master; the old master a replica that would still
    // accept PUBLISH. Both nodes must notice and move.
    // Sentinel refuses (-NOGOODSLAVE) until it has the replica's details.
    wait_until("sentinel accepting the failover", || async {
        let answer = sentinel.command("SENTINEL FAILOVER mymaster");
        answer.starts_with("+OK").then_some(()).ok_or(answer)
    })
    .await;
    wait_until("the replica turned master", || async {
        let role = replica.command("ROLE");
        role.contains("$6\r\nmaster").then_some(()).ok_or(role)
    })
    .await;
    for n in [&a, &b] {
        // The old master either drops its clients or keeps them as a
        // replica, which the ROLE check catches: either way, a reconnect.
        wait_until("a node leaving the old master", || async {
            let mut total = 0.0;
            for reason in [
                "not_master",
                "connection_lost",
                "probe_failed",
                "command_failed",
            ] {
                let series = format!(r#"pushgate_redis_reconnects_total{{reason="{reason}"}}"#);
                total += n.metric(&series).await;
            }
            (total >= 1.0)
                .then_some(())
                .ok_or_else(|| (master.command("ROLE"), replica.command("ROLE")))
        })
        .await;
        n.wait_redis_up().await;
    }
    a.wait_nodes("sent", 1).await;
    assert_eq!(text.send(r#"{"uid":"sent","n":2}"#).await, "ok");
    assert_eq!(next_text(&mut on_b).await, r#"{"uid":"sent","n":2}"#);
    let numsub = replica.command("PUBSUB NUMSUB pushgate:v2:u:sent");
    assert!(
        numsub.ends_with(":1\r\n"),
        "the new master holds the subscription: {numsub:?}"
    );
}

#[tokio::test]
async fn a_redis_that_turns_replica_is_left_rather_than_published_to() {
    let other = Redis::start();
    let redis = Redis::start();
    let a = redis.node(&[]);
    a.wait_redis_up().await;
    // A replica accepts PUBLISH but its subscribers are not the cluster's.
    let answer = redis.command(&format!("REPLICAOF 127.0.0.1 {}", other.port));
    assert!(answer.starts_with("+OK"), "{answer}");
    a.wait_metric("pushgate_redis_up", 0.0).await;
    // The first failure may be a refused write (READONLY); every attempt to
    // come back then meets the ROLE check, which keeps the node off it.
    // The ROLE check refusing the replica.
    a.wait_metric_at_least(
        r#"pushgate_redis_reconnects_total{reason="not_master"}"#,
        1.0,
    )
    .await;
    let mut text = TextClient::connect(&a).await;
    let (status, _) = push_http(&a, json!({"uid": "anyone", "data": 1})).await;
    assert_eq!(status, 503);
    assert_eq!(text.send(r#"{"uid":"anyone"}"#).await, "fail");
    // Back to master: the node returns.
    assert!(redis.command("REPLICAOF NO ONE").starts_with("+OK"));
    a.wait_redis_up().await;
}

#[tokio::test]
async fn pipelined_lines_through_redis_keep_their_order() {
    let redis = Redis::start();
    let (a, b, _c) = three_nodes(&redis).await;
    let mut on_b = ws_bind(&b, "order").await;
    let mut on_a = ws_bind(&a, "local-order").await;
    a.wait_nodes("order", 1).await;
    let mut text = TextClient::connect(&a).await;
    let mut batch = String::new();
    let mut expected = Vec::new();
    for i in 0..500 {
        match i % 5 {
            0 => {
                batch.push_str(&format!("{{\"uid\":\"nobody\",\"i\":{i}}}\n"));
                expected.push("fail");
            }
            1 => {
                batch.push_str(&format!("{{\"uid\":\"local-order\",\"i\":{i}}}\n"));
                expected.push("ok");
            }
            _ => {
                batch.push_str(&format!("{{\"uid\":\"order\",\"i\":{i}}}\n"));
                expected.push("ok");
            }
        }
    }
    text.write(batch.as_bytes()).await;
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(text.answer().await, *want, "answer {i}");
    }
    for i in (0..500).filter(|i| i % 5 > 1) {
        assert_eq!(
            next_text(&mut on_b).await,
            format!("{{\"uid\":\"order\",\"i\":{i}}}")
        );
    }
    for i in (0..500).filter(|i| i % 5 == 1) {
        assert_eq!(
            next_text(&mut on_a).await,
            format!("{{\"uid\":\"local-order\",\"i\":{i}}}")
        );
    }
    assert_nothing_else(&b, &mut on_b, "order").await;
}

#[tokio::test]
async fn a_rest_batch_through_redis_is_answered_push_by_push_in_order() {
    let redis = Redis::start();
    let (a, b, _c) = three_nodes(&redis).await;
    let mut on_b = ws_bind(&b, "far").await;
    let mut on_a = ws_bind(&a, "near").await;
    a.wait_nodes("far", 1).await;
    let pushes: Vec<Value> = (0..200)
        .map(|i| match i % 4 {
            0 => json!({"uid": "nobody", "data": i}),
            1 => json!({"uid": "near", "data": i}),
            _ => json!({"uid": ["far", "near"], "data": i}),
        })
        .collect();
    let (status, r) = post_json(&a, "/push/batch", &json!({ "pushes": pushes })).await;
    assert_eq!(status, 200);
    let results = r["results"].as_array().expect("results");
    assert_eq!(results.len(), 200);
    for (i, got) in results.iter().enumerate() {
        let want = match i % 4 {
            0 => {
                json!({"delivered": 0, "dropped": 0, "remote_deliveries": 0, "offline": ["nobody"], "unrouted": []})
            }
            1 => {
                json!({"delivered": 1, "dropped": 0, "remote_deliveries": 0, "offline": [], "unrouted": []})
            }
            _ => {
                json!({"delivered": 1, "dropped": 0, "remote_deliveries": 1, "offline": [], "unrouted": []})
            }
        };
        assert_eq!(got, &want, "result {i}");
    }
    for i in (0..200).filter(|i| i % 4 > 1) {
        assert_eq!(next_text(&mut on_b).await, i.to_string());
    }
    for i in (0..200).filter(|i| i % 4 > 0) {
        assert_eq!(next_text(&mut on_a).await, i.to_string());
    }
    assert_nothing_else(&b, &mut on_b, "far").await;
    assert_nothing_else(&a, &mut on_a, "near").await;
}

/// Runs the binary with `args` in cluster mode and expects it to refuse to
/// start; returns what it printed.
fn refused_at_start(redis_url: &str, args: &[&str]) -> String {
    let (status, err) = refuses_to_start(
        std::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
            .args(["--listen", "127.0.0.1:0", "--text-listen", "127.0.0.1:0"])
            .args(["--redis-url", redis_url])
            .args(args),
    );
    assert!(!status.success(), "{args:?}: {err}");
    err
}

#[tokio::test]
async fn an_empty_long_or_odd_node_id_is_refused_at_start() {
    let url = "redis://127.0.0.1:1/";
    let long = "n".repeat(256);
    for (id, says) in [
        ("", "--node-id is empty"),
        (long.as_str(), "at most 128"),
        ("a b", "may contain only"),
        ("a*", "may contain only"),
    ] {
        let err = refused_at_start(url, &["--node-id", id]);
        assert!(err.contains(says), "{id:?}: {err}");
    }
}

#[tokio::test]
async fn deployments_sharing_a_redis_never_read_each_others_pushes_or_broadcasts() {
    let redis = Redis::start();
    // `pg:u:b:` starts with `pg:`: its channel of `victim` was `pg:`'s
    // channel of `b:u:victim`.
    let err = refused_at_start(&redis.url(), &["--redis-prefix", "pg:u:b:"]);
    assert!(err.contains("--redis-prefix"), "{err}");
    let a = redis.node(&["--redis-prefix", "pg:"]);
    let b = redis.node(&["--redis-prefix", "pgu:"]);
    a.wait_redis_up().await;
    b.wait_redis_up().await;
    let mut on_a = ws_bind(&a, "b:u:victim").await;
    let mut on_a2 = ws_bind(&a, "victim").await;
    a.wait_nodes("victim", 1).await;
    a.wait_nodes("b:u:victim", 1).await;
    b.wait_nodes("victim", 0).await;
    let mut text = TextClient::connect(&b).await;
    assert_eq!(text.send(r#"{"uid":"victim"}"#).await, "fail");
    let (_, r) = post_json(&b, "/broadcast", &json!({"data": "b only"})).await;
    assert_eq!(r["remote_deliveries"], 0, "{r}");
    assert_nothing_else(&a, &mut on_a, "b:u:victim").await;
    assert_nothing_else(&a, &mut on_a2, "victim").await;
}

#[tokio::test]
async fn two_nodes_with_one_node_id_turn_unready_and_never_answer_ok_for_a_cross_node_push() {
    let redis = Redis::start();
    let a = redis.node(&["--node-id", "twin"]);
    let b = redis.node(&["--node-id", "twin"]);
    a.wait_redis_up().await;
    b.wait_redis_up().await;
    let _on_b = ws_bind(&b, "far").await;
    a.wait_nodes("far", 1).await;
    for n in [&a, &b] {
        wait_until("/readyz answers 503", || async {
            let r = reqwest::get(n.url("/readyz")).await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status == 503 && body["status"] == "duplicate node id")
                .then_some(())
                .ok_or((status, body))
        })
        .await;
        n.wait_logged("another node uses this node id");
    }
    let mut text = TextClient::connect(&a).await;
    assert_eq!(text.send(r#"{"uid":"far"}"#).await, "fail");
    let (status, problem) = push_http(&a, json!({"uid": "far", "data": 1})).await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["unrouted"], json!(["far"]), "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("node's id"),
        "{problem}"
    );
    assert_eq!(
        a.metric(r#"pushgate_push_failures_total{reason="duplicate_node_id"}"#)
            .await,
        2.0
    );
}

#[tokio::test]
async fn a_dead_nodes_stats_entry_is_gone_within_three_probe_intervals() {
    let redis = Redis::start();
    // `node` probes every 300 ms: a report lives 900 ms.
    let a = redis.node(&[]);
    let mut b = redis.node(&["--node-id", "doomed-b"]);
    a.wait_redis_up().await;
    b.wait_redis_up().await;
    wait_until("two nodes in /stats", || async {
        let s = a.stats().await;
        (s["nodes"] == 2).then_some(()).ok_or(s)
    })
    .await;
    b.signal("KILL");
    b.wait_exit(PATIENCE);
    let killed = Instant::now();
    wait_until("one node in /stats", || async {
        let s = a.stats().await;
        (s["nodes"] == 1).then_some(()).ok_or(s)
    })
    .await;
    let took = killed.elapsed();
    // Three probe intervals, plus room for a loaded machine.
    assert!(took < Duration::from_millis(900 + 1500), "{took:?}");
    assert_eq!(redis.command("EXISTS pushgate:v1:stats:doomed-b"), ":0\r\n");
}

#[tokio::test]
async fn bus_messages_of_an_unknown_format_version_are_ignored_and_counted() {
    let redis = Redis::start();
    let a = redis.node(&[]);
    a.wait_redis_up().await;
    let mut on_a = ws_bind(&a, "v").await;
    a.wait_nodes("v", 1).await;
    // A version 3 message, and one in the format before versions.
    assert_eq!(
        redis.command("PUBLISH pushgate:v2:u:v \x03M\x01x12345678hi"),
        ":1\r\n"
    );
    assert_eq!(redis.command("PUBLISH pushgate:v2:b M\x01xhello"), ":1\r\n");
    a.wait_metric(
        r#"pushgate_dropped_messages_total{reason="bus_unknown_version"}"#,
        2.0,
    )
    .await;
    assert_nothing_else(&a, &mut on_a, "v").await;
}

#[tokio::test]
async fn answers_count_remote_deliveries_per_uid_and_nodes_in_all_where_they_say_nodes() {
    let redis = Redis::start();
    let a = redis.node(&[]);
    let b = redis.node(&[]);
    a.wait_redis_up().await;
    b.wait_redis_up().await;
    let mut on_b = Vec::new();
    for uid in ["r1", "r2", "r3"] {
        on_b.push(ws_bind(&b, uid).await);
        a.wait_nodes(uid, 1).await;
    }
    // Three uids on one other node: three bus deliveries, not "3 nodes".
    let (status, r) = push_http(&a, json!({"uid": ["r1", "r2", "r3"], "data": "x"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        r,
        json!({"delivered": 0, "dropped": 0, "remote_deliveries": 3, "offline": []})
    );
    for ws in &mut on_b {
        assert_eq!(next_text(ws).await, "x");
    }
    let (_, r) = post_json(&a, "/broadcast", &json!({"data": "all"})).await;
    assert_eq!(
        r,
        json!({"delivered": 0, "dropped": 0, "remote_deliveries": 1})
    );
    // `nodes` stays "nodes in all".
    assert_eq!(a.user("r1").await["nodes"], 1);
    wait_until("/stats counts both nodes", || async {
        let s = a.stats().await;
        (s["nodes"] == 2).then_some(()).ok_or(s)
    })
    .await;
    // A uid held only on b, closed through a: the answer shows the remote
    // close, not just zero local connections.
    let (status, r) = post_json(&a, "/disconnect", &json!({"uid": "r1"})).await;
    assert_eq!(status, 200);
    assert_eq!(r, json!({"disconnected": 0, "remote_deliveries": 1}));
    assert_eq!(next_text(&mut on_b[0]).await, "all");
    assert_eq!(
        u16::from(next_close(&mut on_b[0]).await.unwrap().code),
        4001
    );
}

#[tokio::test]
async fn with_redis_down_a_failed_answer_says_what_was_delivered_anyway() {
    let mut redis = Redis::start();
    let a = redis.node(&[]);
    let b = redis.node(&[]);
    a.wait_redis_up().await;
    b.wait_redis_up().await;
    let mut on_a = ws_bind(&a, "here").await;
    let _on_b = ws_bind(&b, "there").await;
    a.wait_nodes("there", 1).await;
    redis.kill();
    a.wait_metric("pushgate_redis_up", 0.0).await;

    let (status, p) = push_http(&a, json!({"uid": ["here", "there"], "data": "p"})).await;
    assert_eq!(status, 503, "{p}");
    assert_eq!(
        (
            &p["delivered"],
            &p["remote_deliveries"],
            &p["offline"],
            &p["unrouted"]
        ),
        (&json!(1), &json!(0), &json!([]), &json!(["there"])),
        "{p}"
    );
    assert_eq!(next_text(&mut on_a).await, "p");

    let (status, p) = post_json(&a, "/broadcast", &json!({"data": "b"})).await;
    assert_eq!(status, 503, "{p}");
    assert_eq!(
        (&p["delivered"], &p["dropped"]),
        (&json!(1), &json!(0)),
        "{p}"
    );
    assert!(p["detail"].as_str().unwrap().contains("retry"), "{p}");
    assert_eq!(next_text(&mut on_a).await, "b");

    // Every uid is closed locally even though the bus is down.
    let (status, p) = post_json(&a, "/disconnect", &json!({"uid": ["nobody", "here"]})).await;
    assert_eq!(status, 503, "{p}");
    assert_eq!(
        (&p["disconnected"], &p["unrouted"]),
        (&json!(1), &json!(["nobody", "here"])),
        "{p}"
    );
    assert_eq!(u16::from(next_close(&mut on_a).await.unwrap().code), 4001);
}

#[tokio::test]
async fn a_redis_that_refuses_the_password_is_logged_with_redis_own_words_and_a_hint() {
    let redis = Redis::start_with(free_port(), vec!["--requirepass".into(), "s3cret".into()]);
    let none = Gateway::start(&["--redis-url", &redis.url()]);
    none.wait_logged("NOAUTH");
    none.wait_logged("check the password in --redis-url");
    let wrong = format!("redis://:wrong@127.0.0.1:{}/", redis.port);
    let wrong = Gateway::start(&["--redis-url", &wrong]);
    wrong.wait_logged("Password authentication failed");
    let right = format!("redis://:s3cret@127.0.0.1:{}/", redis.port);
    let right = Gateway::start(&["--redis-url", &right]);
    right.wait_redis_up().await;
}

#[test]
fn a_redis_url_that_does_not_parse_says_what_a_valid_one_looks_like() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args([
            "--redis-url",
            "http://127.0.0.1:6379/",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .args(["--listen", "127.0.0.1:0", "--text-listen", "127.0.0.1:0"])
        .output()
        .expect("run pushgate");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("expected redis://"), "{said}");
}
