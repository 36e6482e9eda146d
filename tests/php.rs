//! The seed's PHP backend code, run by the real `php` (Debian's php-cli)
//! against the real gateway: `stream_socket_client`, `fwrite(json_encode($data)."\n")`,
//! `echo fread($client, 8192)`. The scripts are in `tests/php/`.
//!
//! Needs `php`, which `scripts/install-test-deps.sh` installs when missing.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use common::*;
use futures_util::StreamExt;
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

/// What a PHP script printed.
struct PhpRun {
    stdout: String,
    stderr: String,
}

/// Runs `php tests/php/SCRIPT ARGS...` to its end and checks it succeeded.
async fn php(script: &str, args: &[&str]) -> PhpRun {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/php")
        .join(script);
    let child = Command::new("php")
        .arg(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn php (is php-cli installed? run scripts/install-test-deps.sh)");
    let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("php {script} did not finish"))
        .expect("wait for php");
    let run = PhpRun {
        stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
    };
    assert!(
        out.status.success(),
        "php {script} exited with {}; stdout {:?}; stderr {:?}",
        out.status,
        run.stdout,
        run.stderr
    );
    run
}

fn port(gw: &Gateway) -> String {
    gw.text.port().to_string()
}

#[tokio::test]
async fn php_prints_ok_for_an_online_uid_and_the_client_gets_the_line_php_wrote() {
    let gw = Gateway::start(&[]);
    let mut ws = ws_bind(&gw, "uid1").await;
    let run = php("push.php", &[&port(&gw), "uid1"]).await;
    // What the seed's `echo fread($client, 8192)` prints.
    assert_eq!(run.stdout, "ok\n");
    // The seed's own example data, as json_encode writes it.
    assert_eq!(run.stderr, r#"{"uid":"uid1","percent":"88%"}"#);
    assert_eq!(next_text(&mut ws).await, run.stderr);
    assert_nothing_else(&gw, &mut ws, "uid1").await;
}

#[tokio::test]
async fn php_prints_fail_for_an_offline_uid_and_nobody_receives_it() {
    let gw = Gateway::start(&[]);
    let mut ws = ws_bind(&gw, "uid1").await;
    let run = php("push.php", &[&port(&gw), "uid2"]).await;
    assert_eq!(run.stdout, "fail\n");
    assert_nothing_else(&gw, &mut ws, "uid1").await;
}

#[tokio::test]
async fn php_json_encode_escapes_reach_the_client_byte_for_byte() {
    let gw = Gateway::start(&[]);
    let mut ws = ws_bind(&gw, "uid1").await;
    let run = php("push.php", &[&port(&gw), "uid1", "你好 a/b"]).await;
    assert_eq!(run.stdout, "ok\n");
    // PHP's defaults: non-ASCII as \uXXXX, "/" as "\/".
    let line = r#"{"uid":"uid1","percent":"88%","msg":"\u4f60\u597d a\/b"}"#;
    assert_eq!(run.stderr, line);
    assert_eq!(next_text(&mut ws).await, line);

    // Quotes, backslashes, a newline (escaped, so the line stays one line),
    // a character outside the BMP (a surrogate pair), HTML characters.
    let msg = "\"q\" back\\slash\nnew line 😀 é\t<&>'";
    let run = php("push.php", &[&port(&gw), "uid1", msg]).await;
    assert_eq!(run.stdout, "ok\n");
    let line = r#"{"uid":"uid1","percent":"88%","msg":"\"q\" back\\slash\nnew line \ud83d\ude00 \u00e9\t<&>'"}"#;
    assert_eq!(run.stderr, line);
    assert_eq!(next_text(&mut ws).await, line);
    assert_nothing_else(&gw, &mut ws, "uid1").await;
}

#[tokio::test]
async fn a_non_ascii_uid_that_php_escapes_reaches_the_client_bound_by_it() {
    let gw = Gateway::start(&[]);
    let mut ws = ws_bind(&gw, "用户").await;
    let run = php("push.php", &[&port(&gw), "用户"]).await;
    assert_eq!(run.stdout, "ok\n");
    // The uid is matched after JSON decoding, not as the escaped text.
    let line = r#"{"uid":"\u7528\u6237","percent":"88%"}"#;
    assert_eq!(run.stderr, line);
    assert_eq!(next_text(&mut ws).await, line);
}

#[tokio::test]
async fn a_number_uid_from_php_reaches_the_client_bound_by_its_decimal_text() {
    let gw = Gateway::start(&[]);
    let mut ws = ws_bind(&gw, "42").await;
    let run = php("push_number_uid.php", &[&port(&gw)]).await;
    assert_eq!(run.stdout, "ok\n");
    assert_eq!(run.stderr, r#"{"uid":42,"percent":"88%"}"#);
    assert_eq!(next_text(&mut ws).await, run.stderr);
    assert_nothing_else(&gw, &mut ws, "42").await;
}

/// Reads text messages from `ws` until it has `n`, or until nothing arrives
/// for [`PATIENCE`]; returns the client and what it got.
async fn collect(mut ws: Ws, n: usize) -> (Ws, Vec<String>) {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match tokio::time::timeout(PATIENCE, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => got.push(t.to_string()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => panic!("expected text, got {other:?}"),
            Err(_) => break,
        }
    }
    (ws, got)
}

#[tokio::test]
async fn a_thousand_php_pushes_each_on_a_new_connection_all_ok_and_each_delivered_once() {
    const N: usize = 1000;
    const UIDS: [&str; 4] = ["vol0", "vol1", "vol2", "vol3"];
    let gw = Gateway::start(&[]);
    let mut readers = vec![];
    for uid in UIDS {
        let ws = ws_bind(&gw, uid).await;
        let expected = (0..N).filter(|i| UIDS[i % UIDS.len()] == uid).count();
        readers.push(tokio::spawn(collect(ws, expected)));
    }

    let run = php(
        "push_many.php",
        &[&port(&gw), &N.to_string(), &UIDS.join(",")],
    )
    .await;
    assert_eq!(
        run.stdout,
        format!("ok={N} fail=0 other=0\n"),
        "stderr: {}",
        run.stderr
    );
    assert_eq!(run.stderr, "");

    for (k, reader) in readers.into_iter().enumerate() {
        let uid = UIDS[k];
        let (mut ws, got) = reader.await.expect("reader task");
        // What json_encode(array('uid'=>$uid, 'seq'=>$i)) writes, by seq.
        let want: BTreeMap<usize, String> = (0..N)
            .filter(|i| i % UIDS.len() == k)
            .map(|i| (i, format!(r#"{{"uid":"{uid}","seq":{i}}}"#)))
            .collect();
        let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
        for msg in &got {
            let v: serde_json::Value = serde_json::from_str(msg).expect("json message");
            let seq = v["seq"].as_u64().expect("seq") as usize;
            assert_eq!(want.get(&seq), Some(msg), "{uid} got a foreign message");
            *seen.entry(seq).or_default() += 1;
        }
        let missing: Vec<_> = want.keys().filter(|s| !seen.contains_key(s)).collect();
        let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(missing.is_empty(), "{uid}: missing seqs {missing:?}");
        assert!(duplicated.is_empty(), "{uid}: duplicated {duplicated:?}");
        // Each push was answered before the next was sent, so each client got
        // its messages in the order they were sent.
        assert_eq!(got, want.into_values().collect::<Vec<_>>(), "{uid}: order");
        assert_nothing_else(&gw, &mut ws, uid).await;
    }
}
