//! `history-memory`: what one retained message costs a single node with
//! `--history` (issue budget: at most its payload + 64 bytes).
//!
//! Pushes `--messages` lines of exactly `--payload-bytes` bytes each
//! through the text port to uids nobody holds (`--per-uid` messages each,
//! kept below `--history-size`, so nothing is evicted): each is answered
//! `fail` (offline) and stored. Before and after, it reads the gateway's
//! resident memory and its history gauges (`pushgate_history_bytes`: the
//! store's own accounting of payloads and bookkeeping;
//! `pushgate_history_messages`), and reports bytes per message by both, less
//! the payload. The gauge is the store's claim; RSS is what the process
//! paid, allocator slack included (it moves in pages, so it needs many
//! messages to mean anything).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::Args;
use crate::phase::Target;
use crate::push::Http;
use crate::report::Row;
use crate::sys::{CpuMeter, rss_kib};

/// The budget of the issue: bytes per retained message beyond its payload.
const BUDGET: f64 = 64.0;
/// The history gauges pushgate exports while history is on.
const BYTES: &str = "pushgate_history_bytes";
const MESSAGES: &str = "pushgate_history_messages";

/// Runs the scenario (see the module) on `target`, a single node.
pub async fn history_memory(target: &Target, args: &Args) -> anyhow::Result<Vec<Row>> {
    let Some(&pid) = target.pids.first() else {
        bail!("history-memory needs --gateway-pid (or --spawn) to read the gateway's RSS");
    };
    let (k, size, per_uid) = (args.messages, args.payload_bytes, args.per_uid.max(1));
    let prefix = crate::scenarios::prefix("m");
    let lines = payload_lines(&prefix, k, size, per_uid)?;
    // Let the start-up allocations settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (bytes0, msgs0) = gauges(target.api).await?;
    let rss0 = rss_kib(pid).context("the gateway's RSS")?;
    let meter = CpuMeter::start(&target.pids, &target.generator.workers);
    let (ok, fail) = push_all(target.text, lines, k).await?;
    let span = meter.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = rss_kib(pid).context("the gateway's RSS")?;
    let (bytes1, msgs1) = gauges(target.api).await?;

    // The gauge says how many were kept; without it, every push is assumed kept.
    let stored = match (msgs0, msgs1) {
        (Some(a), Some(b)) => (b - a).max(0.0),
        _ => k as f64,
    };
    let per = |delta: f64| (stored > 0.0).then(|| round1(delta / stored));
    let rss_per_msg = per((rss1 as f64 - rss0 as f64) * 1024.0);
    let gauge_per_msg = bytes0.zip(bytes1).and_then(|(a, b)| per(b - a));
    let over = |v: Option<f64>| v.map(|v| round1(v - size as f64));
    let variant = format!("{size} B x {k}, {per_uid}/uid");
    let mut row = Row::new("history-memory", &variant, 0, span, k as u64, 0, None, 0..0);
    // Per-op cost here is per stored push.
    row.gateway_us_per_op = span.gateway_cpu_s.map(|c| c * 1e6 / k.max(1) as f64);
    let fits = |v: Option<f64>| over(v).map(|o| o <= BUDGET);
    Ok(vec![
        row.with("payload_bytes", size)
            .with("answered_ok", ok)
            .with("answered_fail", fail)
            .with("stored", stored as u64)
            .with("rss_bytes_per_msg", rss_per_msg)
            .with("rss_overhead_bytes", over(rss_per_msg))
            .with("gauge_bytes_per_msg", gauge_per_msg)
            .with("gauge_overhead_bytes", over(gauge_per_msg))
            .with("budget_overhead_bytes", BUDGET)
            .with("gauge_within_budget", fits(gauge_per_msg))
            .with("rss_within_budget", fits(rss_per_msg))
            .with("history_gauges", bytes1.is_some()),
    ])
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// `k` text-port lines, each exactly `size` bytes before its newline (the
/// payload a legacy client would receive), `per_uid` to each uid.
fn payload_lines(prefix: &str, k: usize, size: usize, per_uid: usize) -> anyhow::Result<String> {
    let mut out = String::with_capacity(k * (size + 1));
    for i in 0..k {
        let head = format!("{{\"uid\":\"{prefix}{}\",\"p\":\"", i / per_uid);
        let pad = size
            .checked_sub(head.len() + 2)
            .with_context(|| format!("--payload-bytes {size} is shorter than a line's frame"))?;
        out.push_str(&head);
        out.extend(std::iter::repeat_n('x', pad));
        out.push_str("\"}\n");
    }
    Ok(out)
}

/// Writes `lines` on one text connection while reading its `k` answers;
/// returns how many were `ok` and `fail`.
async fn push_all(text: SocketAddr, lines: String, k: usize) -> anyhow::Result<(u64, u64)> {
    let stream = TcpStream::connect(text).await.context("text port")?;
    let (rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move { wr.write_all(lines.as_bytes()).await.map(|()| wr) });
    let mut rd = BufReader::new(rd);
    let (mut ok, mut fail) = (0, 0);
    let mut answer = String::new();
    for i in 0..k {
        answer.clear();
        let read = tokio::time::timeout(Duration::from_secs(10), rd.read_line(&mut answer));
        if read.await.context("text answers")?? == 0 {
            bail!("the text port closed after {i} of {k} answers");
        }
        match answer.trim() {
            "ok" => ok += 1,
            _ => fail += 1,
        }
    }
    writer.await??;
    Ok((ok, fail))
}

/// The history gauges in `GET /metrics`: (bytes, messages), each `None`
/// when not exported (history off, or a gateway without them).
async fn gauges(api: SocketAddr) -> anyhow::Result<(Option<f64>, Option<f64>)> {
    let (status, body) = Http::connect(api)
        .await?
        .request("GET", "/metrics", b"")
        .await?;
    if status != 200 {
        bail!("GET /metrics: {status}");
    }
    let text = String::from_utf8_lossy(&body);
    Ok((metric(&text, BYTES), metric(&text, MESSAGES)))
}

/// The sum of `name`'s samples (any labels) in Prometheus text format.
fn metric(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_exactly_the_payload_size() {
        let lines = payload_lines("m1-", 250, 120, 100).unwrap();
        assert!(lines.lines().all(|l| l.len() == 120));
        assert_eq!(lines.lines().count(), 250);
        assert!(payload_lines("m1-", 1, 10, 1).is_err());
    }

    #[test]
    fn gauges_are_read_from_the_exposition() {
        let text = "# TYPE pushgate_history_bytes gauge\npushgate_history_bytes 1024\n\
                    pushgate_history_bytes_x 5\npushgate_history_messages{node=\"a\"} 3\n";
        assert_eq!(metric(text, BYTES), Some(1024.0));
        assert_eq!(metric(text, MESSAGES), Some(3.0));
        assert_eq!(metric(text, "pushgate_nope"), None);
    }
}
