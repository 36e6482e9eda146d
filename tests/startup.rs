//! Settings that could never work are refused at start with one clear line
//! naming what to write instead; settings users write in their usual forms
//! are accepted. The real binary, started the way an operator starts it.

mod common;

use std::process::Command;

use common::*;

/// The binary on free loopback ports plus `args` and `env`.
fn pushgate(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushgate"));
    cmd.args(["--listen", "127.0.0.1:0", "--text-listen", "127.0.0.1:0"])
        .args(["--api-listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied());
    cmd
}

#[test]
fn allowed_origins_that_could_never_match_are_refused_at_start() {
    for (value, says) in [
        ("app.example", "expected scheme://host[:port]"),
        ("*", "leave --allowed-origins unset"),
        ("https://app.example/path", "expected scheme://host[:port]"),
    ] {
        let (status, log) = refuses_to_start(&mut pushgate(&["--allowed-origins", value], &[]));
        assert!(!status.success());
        assert!(log.contains(says), "{value}: {log}");
    }
}

#[tokio::test]
async fn an_origin_matches_whatever_its_case_and_default_port() {
    let gw = Gateway::start(&["--allowed-origins", "https://App.Example:443"]);
    for (origin, allowed) in [
        ("https://app.example", true),
        ("HTTPS://APP.EXAMPLE:443", true),
        ("https://app.example:8443", false),
        ("http://app.example", false),
        ("null", false),
    ] {
        let status = upgrade_with_origin(&gw, origin).await;
        assert_eq!(status == 101, allowed, "{origin}: {status}");
    }
}

async fn upgrade_with_origin(gw: &Gateway, origin: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Origin: {origin}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut head))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

#[test]
fn boolean_values_name_the_accepted_spellings_and_an_empty_variable_is_false() {
    let (status, log) = refuses_to_start(&mut pushgate(&[], &[("PUSHGATE_ACCESS_LOG", "maybe")]));
    assert!(!status.success());
    assert!(log.contains("1/0, true/false, yes/no or on/off"), "{log}");
    // An empty variable is how unit files and manifests unset one.
    let (mut child, log) =
        spawn_collecting_stderr(&mut pushgate(&[], &[("PUSHGATE_ACCESS_LOG", "")]));
    let started = wait_ready(&mut child);
    let _ = child.kill();
    let _ = child.wait();
    assert!(started.is_ok(), "{:?}", log.join());
    // A bare flag never swallows the next word: here the subcommand.
    let out = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["--require-redis", "completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn the_same_port_on_an_overlapping_address_is_refused_as_the_same_listener() {
    let port = free_port().to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushgate"));
    cmd.args(["--listen", &format!("0.0.0.0:{port}")])
        .args(["--api-listen", &format!("127.0.0.1:{port}")])
        .args(["--text-listen", "127.0.0.1:0"]);
    let (status, log) = refuses_to_start(&mut cmd);
    assert!(!status.success());
    assert!(log.contains("must differ from --listen"), "{log}");
}

#[test]
fn a_pod_name_that_is_no_node_id_is_named_as_such() {
    let (status, log) = refuses_to_start(&mut pushgate(
        &["--redis-url", "redis://127.0.0.1:1/"],
        &[("POD_NAME", "bad name!")],
    ));
    assert!(!status.success());
    assert!(
        log.contains("POD_NAME") && log.contains("set --node-id"),
        "{log}"
    );
}

#[test]
fn a_zero_timeout_is_refused_like_every_other_zero_bound() {
    for flag in [
        "--bind-timeout",
        "--write-timeout",
        "--text-idle-timeout",
        "--header-read-timeout",
        "--body-read-timeout",
        "--shutdown-timeout",
    ] {
        let (status, log) = refuses_to_start(&mut pushgate(&[flag, "0"], &[]));
        assert!(!status.success());
        assert!(
            log.contains(&format!("{flag} must be greater than zero")),
            "{log}"
        );
    }
}

#[test]
fn a_refused_start_says_its_one_line_and_nothing_about_a_server_that_never_ran() {
    let empty = std::env::temp_dir().join(format!("pushgate-empty-keys-{}", std::process::id()));
    std::fs::write(&empty, "# no keys yet\n").unwrap();
    let (status, log) = refuses_to_start(&mut pushgate(
        &["--api-key-file", empty.to_str().unwrap()],
        &[("RUST_LOG", "info")],
    ));
    let _ = std::fs::remove_file(&empty);
    assert!(!status.success());
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("holds no keys"), "{log}");
    let missing = refuses_to_start(&mut pushgate(
        &["--jwt-public-key", "/nonexistent.pem"],
        &[],
    ))
    .1;
    assert!(
        missing.contains("--jwt-public-key /nonexistent.pem"),
        "{missing}"
    );
}

/// A single node keeps message times as wrapping 32-bit milliseconds, so a
/// history TTL past 49.7 days would never expire a message by age: it is
/// refused at start (at most 30 days), as is a TTL of zero.
#[test]
fn a_history_ttl_past_thirty_days_or_of_zero_is_refused_at_start() {
    for value in ["60d", "31d", "0", "999us", "1ns"] {
        let (status, log) = refuses_to_start(&mut pushgate(&["--history-ttl", value], &[]));
        assert!(!status.success(), "{value}");
        assert!(log.contains("outside 1ms to 30d"), "{value}: {log}");
    }
}
