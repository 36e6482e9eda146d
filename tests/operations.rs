//! What an operator relies on day to day (issue 13), against the real
//! binary: process and build metrics, the capacity gauge, HTTP request
//! metrics, the split enqueue histograms, boolean environment spellings,
//! plain-text logs off a terminal, JSON start-up errors and the access log.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

async fn metrics_text(gw: &Gateway) -> String {
    reqwest::get(gw.url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body")
}

#[tokio::test]
async fn process_build_and_capacity_metrics_are_exported() {
    let gw = Gateway::start(&["--max-connections", "777"]);
    let body = metrics_text(&gw).await;
    for series in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            metric_value(&body, series) > 0.0,
            "{series} missing or zero in\n{body}"
        );
    }
    // A fresh process may not have used a whole clock tick yet.
    assert!(
        body.lines()
            .any(|l| l.starts_with("process_cpu_seconds_total ")),
        "{body}"
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        metric_value(
            &body,
            &format!("pushgate_build_info{{version=\"{version}\"}}")
        ),
        1.0
    );
    assert_eq!(metric_value(&body, "pushgate_max_connections"), 777.0);
}

#[tokio::test]
async fn http_requests_are_counted_by_route_template_and_status_class_never_by_uid() {
    let gw = Gateway::start(&[]);
    for uid in ["alice", "bob"] {
        let r = reqwest::get(gw.url(&format!("/users/{uid}")))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = reqwest::get(gw.url("/no/such/path")).await.unwrap();
    assert_eq!(r.status(), 404);
    let (status, _) = post_json(&gw, "/push", &json!({"uid": [], "data": 1})).await;
    assert_eq!(status, 400);
    let body = metrics_text(&gw).await;
    let count = |route: &str, class: &str| {
        metric_value(
            &body,
            &format!("pushgate_http_requests_total{{route=\"{route}\",status_class=\"{class}\"}}"),
        )
    };
    assert_eq!(count("/users/{uid}", "2xx"), 2.0, "{body}");
    assert_eq!(count("unmatched", "4xx"), 1.0, "{body}");
    assert_eq!(count("/push", "4xx"), 1.0, "{body}");
    assert!(
        body.contains("pushgate_http_request_duration_seconds_count{route=\"/users/{uid}\"} 2"),
        "{body}"
    );
    assert!(
        !body.contains("alice") && !body.contains("bob"),
        "a uid became a label"
    );
}

#[tokio::test]
async fn batches_and_broadcasts_are_timed_in_series_of_their_own() {
    let gw = Gateway::start(&[]);
    let _ws = ws_bind(&gw, "u").await;
    let mut text = TextClient::connect(&gw).await;
    text.write(b"{\"uid\":\"u\",\"n\":1}\n{\"uid\":\"u\",\"n\":2}\n{\"uid\":\"u\",\"n\":3}\n")
        .await;
    for _ in 0..3 {
        assert_eq!(text.answer().await, "ok");
    }
    let (status, _) = post_json(&gw, "/broadcast", &json!({"data": "all"})).await;
    assert_eq!(status, 200);
    let body = metrics_text(&gw).await;
    let batches = metric_value(&body, "pushgate_push_batch_enqueue_seconds_count");
    let sizes = metric_value(&body, "pushgate_push_batch_size_sum");
    assert!((1.0..=3.0).contains(&batches), "{body}");
    assert_eq!(sizes, 3.0, "three pushes in however many batches: {body}");
    assert_eq!(
        metric_value(&body, "pushgate_broadcast_enqueue_seconds_count"),
        1.0,
        "{body}"
    );
    assert!(
        !body.contains("pushgate_push_enqueue_seconds"),
        "the mixed series is gone"
    );
}

/// Starts the binary with `args` and `env`; once it printed its ready line,
/// SIGTERMs it. Returns whether it exited 0, and everything it logged.
fn start_and_stop(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let (mut child, reader) = spawn_collecting_stderr(
        Command::new(env!("CARGO_BIN_EXE_pushgate"))
            .args(["--listen", "127.0.0.1:0", "--text-listen", "127.0.0.1:0"])
            .args(["--api-listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied()),
    );
    // Started (the ready line) or refused (standard output closed as it
    // exited): either way an event, never a sleep.
    if wait_ready(&mut child).is_ok() {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    let status = child.wait().expect("wait");
    (status.success(), reader.join().expect("reader"))
}

#[test]
fn standard_output_carries_the_ready_line_and_nothing_else() {
    let (mut child, log) = spawn_collecting_stderr(
        Command::new(env!("CARGO_BIN_EXE_pushgate"))
            .args(["--listen", "127.0.0.1:0", "--text-listen", "127.0.0.1:0"])
            .args(["--api-listen", "127.0.0.1:0", "--log-format", "json"]),
    );
    let lines = stdout_lines(&mut child);
    let first = lines.recv_timeout(PATIENCE).expect("a ready line");
    // The documented shape, exactly: {"ready":{"api":…,"http":…,"text":…}}.
    let v: serde_json::Value = serde_json::from_str(&first).expect("one JSON object");
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let object = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {first}"));
        object.keys().cloned().collect()
    };
    assert_eq!(keys(&v), ["ready"], "{first}");
    assert_eq!(keys(&v["ready"]), ["api", "http", "text"], "{first}");
    let ready = Ready::parse(&first).expect("addresses");
    for addr in [ready.http, ready.text, ready.api] {
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{first}");
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().expect("wait").success());
    // The channel ends when the process closed its standard output.
    let rest: Vec<String> = lines.iter().collect();
    assert!(rest.is_empty(), "more on standard output: {rest:?}");
    // The human log line says the same, on standard error.
    let log = log.join().expect("stderr reader");
    let listening = log
        .lines()
        .find(|l| l.contains("\"listening\""))
        .expect("listening");
    assert!(listening.contains(&ready.http.to_string()), "{listening}");
}

#[test]
fn boolean_variables_accept_the_usual_spellings() {
    for value in ["1", "true", "TRUE", "yes", "On", "0", "false", "no", "off"] {
        let (ok, log) = start_and_stop(&[], &[("PUSHGATE_ACCESS_LOG", value)]);
        assert!(ok, "PUSHGATE_ACCESS_LOG={value} refused: {log}");
    }
    let (ok, log) = start_and_stop(&[], &[("PUSHGATE_ACCESS_LOG", "maybe")]);
    assert!(!ok, "a value that is no boolean is refused: {log}");
    // The issue's own example: --require-redis through its variable.
    let (ok, log) = start_and_stop(
        &["--redis-url", "redis://127.0.0.1:1/"],
        &[("PUSHGATE_REQUIRE_REDIS", "1")],
    );
    assert!(ok, "PUSHGATE_REQUIRE_REDIS=1 refused: {log}");
}

#[test]
fn text_logs_off_a_terminal_carry_no_colour_codes() {
    let (_, log) = start_and_stop(&["--log-format", "text"], &[]);
    assert!(log.contains("listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes in a pipe: {log:?}"
    );
}

#[test]
fn with_json_logs_a_start_up_error_is_a_json_line() {
    let (ok, log) = start_and_stop(
        &[
            "--log-format",
            "json",
            "--jwt-public-key",
            "/nonexistent/key.pem",
        ],
        &[],
    );
    assert!(!ok);
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "nothing logged");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ERROR") && l.contains("nonexistent")),
        "{log}"
    );
}

#[tokio::test]
async fn the_access_log_has_one_line_per_request_and_never_the_query_string() {
    let gw = Gateway::start(&["--access-log"]);
    let r = reqwest::get(gw.url("/users/carol?token=hush-hush"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    gw.wait_logged("pushgate::access");
    let logs = gw.logs.lock().unwrap().clone();
    let access: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("pushgate::access"))
        .collect();
    assert_eq!(access.len(), 1, "{access:?}");
    let line = access[0];
    for want in [
        "/users/{uid}",
        "\"status\":200",
        "GET",
        "127.0.0.1",
        "duration_ms",
    ] {
        assert!(line.contains(want), "{want} missing in {line}");
    }
    assert!(
        !line.contains("hush"),
        "the query string was logged: {line}"
    );
    let mut quiet = Gateway::start(&[]);
    reqwest::get(quiet.url("/healthz")).await.unwrap();
    // Every line is out once the process has exited.
    quiet.signal("TERM");
    assert!(quiet.wait_exit(PATIENCE).success());
    quiet.wait_logged("shutdown complete");
    assert!(
        !quiet.logged("pushgate::access"),
        "no access log without the flag"
    );
}

#[tokio::test]
async fn labelled_counters_are_exported_at_zero_from_the_start() {
    let gw = Gateway::start(&[]);
    let body = metrics_text(&gw).await;
    for series in [
        "pushgate_disconnects_total{reason=\"slow_consumer\"} 0",
        "pushgate_disconnects_total{reason=\"pong_timeout\"} 0",
        "pushgate_text_disconnects_total{reason=\"idle_timeout\"} 0",
        "pushgate_rejected_upgrades_total{reason=\"connection_cap\"} 0",
        "pushgate_push_failures_total{reason=\"offline\"} 0",
        "pushgate_dropped_messages_total{reason=\"slow_consumer\"} 0",
        "pushgate_broadcasts_total{source=\"http\"} 0",
        "pushgate_pushes_total{source=\"text\",result=\"fail\"} 0",
        "pushgate_http_requests_total{route=\"/push\",status_class=\"5xx\"} 0",
        "pushgate_text_connections 0",
        "pushgate_text_answers_dropped_total 0",
    ] {
        assert!(
            body.lines().any(|l| l == series),
            "{series} missing in\n{body}"
        );
    }
    assert!(
        !body.contains("pushgate_redis_reconnects_total"),
        "the bus's series belong to cluster mode"
    );
    let redis = Redis::start();
    let node = Gateway::start(&["--redis-url", &redis.url()]);
    let body = metrics_text(&node).await;
    assert!(
        body.lines()
            .any(|l| l == "pushgate_redis_reconnects_total{reason=\"probe_failed\"} 0"),
        "{body}"
    );
    assert!(
        body.lines()
            .any(|l| l == "pushgate_duplicate_node_id_total 0"),
        "{body}"
    );
}
