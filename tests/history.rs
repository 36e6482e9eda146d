//! History on a single node (`--history`), through the real binary: offsets
//! in the REST push answers, `GET /history/{uid}` and `DELETE
//! /history/{uid}`, and the bounds (size, age, memory) as a backend and an
//! operator see them, in the pages and in `/metrics`.

mod common;

use common::*;
use serde_json::{Value, json};

/// `GET path` on the API listener: the status, the content type and the
/// JSON body.
async fn get(gw: &Gateway, path: &str) -> (u16, String, Value) {
    let r = reqwest::get(gw.url(path)).await.expect("GET");
    let status = r.status().as_u16();
    let kind = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, kind, r.json().await.expect("json answer"))
}

async fn delete(gw: &Gateway, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .delete(gw.url(path))
        .send()
        .await
        .expect("DELETE");
    (r.status().as_u16(), r.json().await.expect("json answer"))
}

async fn push(gw: &Gateway, uid: &str, data: Value) -> Value {
    let (status, answer) = post_json(gw, "/push", &json!({ "uid": uid, "data": data })).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// The offsets of a history page.
fn offsets(page: &Value) -> Vec<u64> {
    page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect()
}

async fn history(gw: &Gateway, uid: &str, query: &str) -> Value {
    let (status, _, page) = get(gw, &format!("/history/{uid}{query}")).await;
    assert_eq!(status, 200, "{page}");
    page
}

const SIZE_EVICTIONS: &str = r#"pushgate_history_evictions_total{reason="size"}"#;
const TTL_EVICTIONS: &str = r#"pushgate_history_evictions_total{reason="ttl"}"#;
const MEMORY_EVICTIONS: &str = r#"pushgate_history_evictions_total{reason="memory"}"#;

#[tokio::test]
async fn each_push_to_a_uid_takes_the_next_offset_and_the_answer_says_where() {
    let gw = Gateway::start(&["--history"]);
    let mut ws = ws_bind(&gw, "on").await;
    let first = push(&gw, "on", json!({"n": 1})).await;
    assert_eq!(first["offset"], 1);
    assert_eq!(first["delivered"], 1);
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    assert_eq!(epoch.len(), 16);
    assert_eq!(
        first["stored"],
        json!([{"uid": "on", "offset": 1, "epoch": epoch}])
    );
    // A v1 client still gets exactly the pushed text.
    assert_eq!(next_text(&mut ws).await, r#"{"n":1}"#);
    let second = push(&gw, "on", json!("two")).await;
    assert_eq!(
        (second["offset"].as_u64(), second["epoch"].as_str()),
        (Some(2), Some(&*epoch))
    );
    // An offline uid: stored all the same, and said to be offline.
    let away = push(&gw, "away", json!(1)).await;
    assert_eq!(away["offline"], json!(["away"]));
    assert_eq!(
        (away["delivered"].as_u64(), away["offset"].as_u64()),
        (Some(0), Some(1))
    );
    // A push to several uids: one position each, no single offset.
    let both = post_json(&gw, "/push", &json!({"uid": ["on", "away"], "data": 3}))
        .await
        .1;
    assert_eq!(both.get("offset"), None);
    let stored = both["stored"].as_array().unwrap();
    assert_eq!(
        stored
            .iter()
            .map(|s| (s["uid"].as_str().unwrap(), s["offset"].as_u64().unwrap()))
            .collect::<Vec<_>>(),
        [("on", 3), ("away", 2)]
    );
    let (status, batch) = post_json(
        &gw,
        "/push/batch",
        &json!({"pushes": [{"uid": "on", "data": 4}, {"uid": "away", "data": 5}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(batch["results"][0]["offset"], 4);
    assert_eq!(batch["results"][1]["offset"], 3);
    assert_eq!(offsets(&history(&gw, "on", "").await), [1, 2, 3, 4]);
    assert_eq!(gw.metric("pushgate_history_stored_total").await, 7.0);
    assert_eq!(gw.metric("pushgate_history_messages").await, 7.0);
}

#[tokio::test]
async fn offline_pushes_are_kept_and_read_back_with_their_data_and_time() {
    let gw = Gateway::start(&["--history"]);
    push(&gw, "later", json!({"percent": "88%"})).await;
    push(&gw, "later", json!("plain text")).await;
    let mut text = TextClient::connect(&gw).await;
    assert_eq!(
        text.send(r#"{"uid":"later","percent":"90%"}"#).await,
        "fail"
    );
    let page = history(&gw, "later", "").await;
    assert_eq!(page["uid"], "later");
    assert_eq!(page["offset"], 3);
    assert_eq!(page["epoch"].as_str().unwrap().len(), 16);
    let messages = page["messages"].as_array().unwrap();
    // `data` follows protocol v2: JSON embedded, other text as a string.
    assert_eq!(messages[0]["data"], json!({"percent": "88%"}));
    assert_eq!(messages[1]["data"], json!("plain text"));
    assert_eq!(
        messages[2]["data"],
        json!({"uid": "later", "percent": "90%"})
    );
    let time = messages[0]["time"].as_str().unwrap();
    assert!(time.ends_with('Z') && time.len() == 24, "{time}");
    assert!(time.starts_with("20"), "{time}");
}

#[tokio::test]
async fn the_text_port_answers_fail_for_an_offline_uid_even_when_its_push_is_stored() {
    let gw = Gateway::start(&["--history"]);
    let mut text = TextClient::connect(&gw).await;
    assert_eq!(text.send(r#"{"uid":"gone","m":1}"#).await, "fail");
    assert_eq!(offsets(&history(&gw, "gone", "").await), [1]);
    let _ws = ws_bind(&gw, "here").await;
    assert_eq!(text.send(r#"{"uid":"here","m":2}"#).await, "ok");
}

#[tokio::test]
async fn a_history_page_honours_since_limit_and_order_and_refuses_bad_values() {
    let gw = Gateway::start(&["--history"]);
    for i in 1..=10 {
        push(&gw, "u", json!(i)).await;
    }
    let page = |q: &'static str| {
        let gw = &gw;
        async move { offsets(&history(gw, "u", q).await) }
    };
    assert_eq!(page("").await, (1..=10).collect::<Vec<_>>());
    assert_eq!(page("?since=3&limit=4").await, [4, 5, 6, 7]);
    assert_eq!(page("?since=3&limit=4&order=newest").await, [10, 9, 8, 7]);
    assert_eq!(page("?order=newest&limit=2").await, [10, 9]);
    assert_eq!(page("?order=oldest&limit=2").await, [1, 2]);
    assert_eq!(page("?since=10").await, Vec::<u64>::new());
    for bad in [
        "?limit=0",
        "?limit=1001",
        "?limit=x",
        "?since=-1",
        "?since=",
        "?order=sideways",
        "?offset=3",
    ] {
        let (status, kind, problem) = get(&gw, &format!("/history/u{bad}")).await;
        assert_eq!(status, 400, "{bad}: {problem}");
        assert_eq!(kind, "application/problem+json", "{bad}");
        assert!(problem["detail"].as_str().is_some(), "{bad}");
    }
    let (status, _, problem) = get(&gw, &format!("/history/{}", "x".repeat(257))).await;
    assert_eq!(status, 400);
    assert!(problem["detail"].as_str().unwrap().contains("256 bytes"));
}

#[tokio::test]
async fn a_uid_in_the_path_is_percent_decoded() {
    let gw = Gateway::start(&["--history"]);
    push(&gw, "a b/é", json!(1)).await;
    let page = history(&gw, "a%20b%2F%C3%A9", "").await;
    assert_eq!(page["uid"], "a b/é");
    assert_eq!(offsets(&page), [1]);
}

#[tokio::test]
async fn past_the_size_the_oldest_messages_go_and_the_metrics_count_them() {
    let gw = Gateway::start(&["--history", "--history-size", "3"]);
    for i in 1..=5 {
        push(&gw, "u", json!(i)).await;
    }
    let page = history(&gw, "u", "").await;
    assert_eq!(
        (offsets(&page), page["offset"].as_u64()),
        (vec![3, 4, 5], Some(5))
    );
    assert_eq!(gw.metric(SIZE_EVICTIONS).await, 2.0);
    assert_eq!(gw.metric("pushgate_history_messages").await, 3.0);
}

#[tokio::test]
async fn messages_expire_after_the_ttl_without_any_traffic() {
    let gw = Gateway::start(&["--history", "--history-ttl", "1s"]);
    // Exported at zero before anything happens.
    let body = reqwest::get(gw.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains(TTL_EVICTIONS), "{body}");
    let first = push(&gw, "u", json!(1)).await;
    push(&gw, "u", json!(2)).await;
    // Only /metrics is asked meanwhile: the sweep alone drops them.
    wait_until("the two messages expired", || async {
        let (evicted, kept) = (
            gw.metric(TTL_EVICTIONS).await,
            gw.metric("pushgate_history_messages").await,
        );
        (evicted == 2.0 && kept == 0.0)
            .then_some(())
            .ok_or((evicted, kept))
    })
    .await;
    // The stream record goes too, once empty and untouched for the ttl:
    // the bytes fall to zero, and the next push starts a new epoch.
    wait_until("the stream record dropped", || async {
        let bytes = gw.metric("pushgate_history_bytes").await;
        (bytes == 0.0).then_some(()).ok_or(bytes)
    })
    .await;
    let next = push(&gw, "u", json!(3)).await;
    assert_eq!(next["offset"], 1);
    assert_ne!(next["epoch"], first["epoch"]);
}

#[tokio::test]
async fn past_the_memory_cap_the_oldest_message_of_any_uid_goes_first() {
    let gw = Gateway::start(&["--history", "--history-memory", "10000"]);
    let big = "x".repeat(3000);
    push(&gw, "a", json!(big)).await;
    push(&gw, "b", json!(big)).await;
    push(&gw, "a", json!(big)).await;
    assert_eq!(gw.metric(MEMORY_EVICTIONS).await, 0.0);
    push(&gw, "b", json!(big)).await;
    // a's first message was the oldest of all.
    assert_eq!(offsets(&history(&gw, "a", "").await), [2]);
    assert_eq!(offsets(&history(&gw, "b", "").await), [1, 2]);
    assert_eq!(gw.metric(MEMORY_EVICTIONS).await, 1.0);
    assert!(gw.metric("pushgate_history_bytes").await <= 10000.0);
}

#[tokio::test]
async fn delete_starts_a_new_epoch_at_offset_zero() {
    let gw = Gateway::start(&["--history"]);
    let old = push(&gw, "u", json!(1)).await;
    push(&gw, "u", json!(2)).await;
    let (status, answer) = delete(&gw, "/history/u").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["uid"], "u");
    assert_eq!(answer["offset"], 0);
    assert_ne!(answer["epoch"], old["epoch"]);
    let page = history(&gw, "u", "").await;
    assert_eq!((page["offset"].as_u64(), offsets(&page)), (Some(0), vec![]));
    assert_eq!(page["epoch"], answer["epoch"]);
    let next = push(&gw, "u", json!(3)).await;
    assert_eq!(
        (&next["offset"], &next["epoch"]),
        (&json!(1), &answer["epoch"])
    );
}

#[tokio::test]
async fn with_history_off_the_endpoints_answer_404_and_pushes_answer_as_before() {
    let gw = Gateway::start(&[]);
    for (status, kind, problem) in [get(&gw, "/history/u").await, {
        let (s, p) = delete(&gw, "/history/u").await;
        (s, "application/problem+json".into(), p)
    }] {
        assert_eq!(status, 404, "{problem}");
        assert_eq!(kind, "application/problem+json");
        assert!(
            problem["detail"].as_str().unwrap().contains("--history"),
            "{problem}"
        );
    }
    let answer = push(&gw, "u", json!(1)).await;
    assert_eq!(
        answer,
        json!({"delivered": 0, "dropped": 0, "remote_deliveries": 0, "offline": ["u"]})
    );
    let body = reqwest::get(gw.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!body.contains("pushgate_history_"), "{body}");
}

#[tokio::test]
async fn history_needs_the_api_key_like_every_rest_call() {
    let gw = Gateway::start(&[
        "--history",
        "--api-key",
        "k-0123456789abcdef0123456789abcdef",
    ]);
    let (status, _, _) = get(&gw, "/history/u").await;
    assert_eq!(status, 401);
    let r = reqwest::Client::new()
        .get(gw.url("/history/u"))
        .bearer_auth("k-0123456789abcdef0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn memory_stays_flat_when_one_uid_is_pushed_far_past_its_size() {
    let gw = Gateway::start(&["--history", "--history-size", "10"]);
    let payload = "p".repeat(1000);
    let batch = json!({
        "pushes": (0..1000).map(|_| json!({"uid": "hot", "data": payload})).collect::<Vec<_>>()
    });
    let (status, _) = post_json(&gw, "/push/batch", &batch).await;
    assert_eq!(status, 200);
    let bytes = gw.metric("pushgate_history_bytes").await;
    let rss = rss_kib(gw.pid());
    // 20 MB more pushed to the same uid.
    for _ in 0..20 {
        let (status, _) = post_json(&gw, "/push/batch", &batch).await;
        assert_eq!(status, 200);
    }
    assert_eq!(gw.metric("pushgate_history_messages").await, 10.0);
    assert_eq!(gw.metric("pushgate_history_bytes").await, bytes);
    assert_eq!(gw.metric(SIZE_EVICTIONS).await, 20_990.0);
    let grown = rss_kib(gw.pid()).saturating_sub(rss);
    assert!(grown < 8 * 1024, "RSS grew {grown} KiB");
}

#[tokio::test]
async fn the_sweep_ends_with_the_gateway_on_sigterm() {
    let mut gw = Gateway::start(&["--history", "--shutdown-timeout", "5s"]);
    push(&gw, "u", json!(1)).await;
    gw.signal("TERM");
    assert!(gw.wait_exit(PATIENCE).success());
    gw.wait_logged("shutdown complete");
}

/// A resume replays at most what the connection may queue (`--queue-bytes`):
/// anyone who can bind a uid could otherwise make the gateway copy its whole
/// history (100 messages of up to 1 MiB each by default) for every
/// connection that asks, and never read it. Past the bound the resume is
/// refused as `too_large`, the client starts from the top, and the backend
/// pages through the rest with `GET /history/{uid}`.
#[tokio::test]
async fn a_resume_replays_at_most_the_connections_queue_bytes() {
    let gw = Gateway::start(&["--history", "--queue-bytes", "100000"]);
    let (_ws, bound) = common::v2::bind_uid(&gw, "big", None).await;
    let start = common::v2::position(&bound);
    let chunk = "x".repeat(30_000);
    for _ in 0..3 {
        push(&gw, "big", json!(chunk)).await;
    }
    // 3 × 30 kB fits in 100 kB: replayed whole.
    let (mut ws, bound) = common::v2::bind_uid(&gw, "big", Some(&start)).await;
    assert_eq!(bound["recovered"], true, "{bound}");
    for offset in 1..=3 {
        assert_eq!(common::v2::next_frame(&mut ws).await["offset"], offset);
    }
    push(&gw, "big", json!(chunk)).await;
    // 4 × 30 kB does not.
    let (mut ws, bound) = common::v2::bind_uid(&gw, "big", Some(&start)).await;
    assert_eq!(
        (&bound["recovered"], &bound["reason"], &bound["offset"]),
        (&json!(false), &json!("too_large"), &json!(4)),
        "{bound}"
    );
    // Nothing of the history follows; live pushes do.
    push(&gw, "big", json!("live")).await;
    let frame = common::v2::next_frame(&mut ws).await;
    assert_eq!(
        (&frame["offset"], &frame["data"]),
        (&json!(5), &json!("live"))
    );
    // From a later offset the rest fits again.
    let later = json!({"offset": 2, "epoch": bound["epoch"]});
    let (_ws, bound) = common::v2::bind_uid(&gw, "big", Some(&later)).await;
    assert_eq!(bound["recovered"], true, "{bound}");
}

/// One history page holds at most 4 MiB of payloads (at least one message),
/// whatever its `limit`: a backend pages on with `since`.
#[tokio::test]
async fn a_history_page_is_cut_at_four_mib_and_pages_on_with_since() {
    let gw = Gateway::start(&["--history", "--max-body-bytes", "5000000"]);
    let chunk = "y".repeat(900_000);
    for _ in 0..6 {
        push(&gw, "pages", json!(chunk)).await;
    }
    let first = history(&gw, "pages", "?limit=100").await;
    assert_eq!(
        offsets(&first),
        [1, 2, 3, 4],
        "4 × 900 kB + 2 bytes of quotes"
    );
    let rest = history(&gw, "pages", "?since=4&limit=100").await;
    assert_eq!(offsets(&rest), [5, 6]);
    // A single message larger than a page still comes, alone.
    let huge = "z".repeat(4_500_000);
    push(&gw, "one", json!(huge)).await;
    push(&gw, "one", json!(huge)).await;
    assert_eq!(offsets(&history(&gw, "one", "").await), [1]);
    assert_eq!(offsets(&history(&gw, "one", "?since=1").await), [2]);
}

#[tokio::test]
async fn delete_refuses_query_parameters_like_get() {
    let gw = Gateway::start(&["--history"]);
    push(&gw, "keep", json!(1)).await;
    let (status, answer) = delete(&gw, "/history/keep?since=1").await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        offsets(&history(&gw, "keep", "").await),
        [1],
        "nothing deleted"
    );
}
