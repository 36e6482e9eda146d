//! What the REST API answers to bodies it cannot use: a 400 problem whose
//! `detail` says what was wrong in the caller's terms, and nothing delivered.

mod common;

use common::*;
use serde_json::Value;

async fn post_raw(gw: &Gateway, path: &str, body: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(gw.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("POST");
    (r.status().as_u16(), r.json().await.expect("json answer"))
}

const UID_RULE: &str =
    "expected uid as a string of 1 to 256 bytes, an integer, or a non-empty list of them";

#[tokio::test]
async fn an_empty_target_list_is_a_400_and_delivers_nothing() {
    let gw = Gateway::start(&[]);
    let mut ws = ws_bind(&gw, "u").await;
    gw.wait_bound("u", 1).await;
    for (path, body, says) in [
        ("/push", r#"{"uid":[],"data":1}"#, "uid is an empty list"),
        ("/disconnect", r#"{"uid":[]}"#, "uid is an empty list"),
        ("/push/batch", r#"{"pushes":[]}"#, "pushes is an empty list"),
        (
            "/push/batch",
            r#"{"pushes":[{"uid":"u","data":1},{"uid":[],"data":2}]}"#,
            "uid is an empty list",
        ),
    ] {
        let (status, p) = post_raw(&gw, path, body).await;
        assert_eq!(status, 400, "{path} {body}: {p}");
        let detail = p["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{path} {body}: {detail}");
    }
    assert_nothing_else(&gw, &mut ws, "u").await;
}

#[tokio::test]
async fn bad_bodies_are_explained_in_the_callers_terms() {
    let gw = Gateway::start(&[]);
    let long = format!(r#"{{"uid":"{}","data":1}}"#, "x".repeat(257));
    for (path, body, says) in [
        ("/push", r#"{"uid":1.5,"data":1}"#, UID_RULE),
        ("/push", r#"{"uid":null,"data":1}"#, UID_RULE),
        ("/push", r#"{"uid":{"a":1},"data":1}"#, UID_RULE),
        ("/push", r#"{"uid":true,"data":1}"#, UID_RULE),
        ("/push", r#"{"uid":"","data":1}"#, "uid is empty"),
        ("/push", long.as_str(), "uid is longer than 256 bytes"),
        (
            "/push",
            r#"{"uid":["a",1.5],"data":1}"#,
            "a string of 1 to 256 bytes or an integer",
        ),
        ("/push", r#"{"uid":["a",""],"data":1}"#, "uid is empty"),
        ("/push", r#"{"uid":"a"}"#, "missing field `data`"),
        ("/push", r#"{"data":1}"#, "missing field `uid`"),
        (
            "/push",
            r#"{"uid":"a","data":1,"to":2}"#,
            "unknown field `to`",
        ),
        (
            "/push",
            r#"[1]"#,
            "a push: a JSON object with members uid and data",
        ),
        (
            "/broadcast",
            r#"[1]"#,
            "a broadcast: a JSON object with member data",
        ),
        ("/disconnect", r#"{"uid":1.5}"#, UID_RULE),
        (
            "/disconnect",
            r#""a""#,
            "a disconnect: a JSON object with member uid",
        ),
        ("/push/batch", r#"{"pushes":{}}"#, "a sequence"),
        (
            "/push/batch",
            r#"{"pushes":[{"uid":null,"data":1}]}"#,
            UID_RULE,
        ),
    ] {
        let (status, p) = post_raw(&gw, path, body).await;
        assert_eq!(status, 400, "{path} {body}: {p}");
        let detail = p["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{path} {body}: {detail}");
        for internal in ["untagged", "UidList", "Request", "struct "] {
            assert!(!detail.contains(internal), "{path} {body}: {detail}");
        }
    }
}
