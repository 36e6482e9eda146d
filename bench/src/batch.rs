//! The batch form of the REST API: `POST /push/batch` on the same
//! hand-written keep-alive connection as `POST /push`, each request carrying
//! `batch` pushes with consecutive sequence numbers, i.e. to distinct
//! receivers while `batch` ≤ the number of receivers.
//!
//! Body: `{"pushes":[{"uid":"PREFIXi","data":{"s":SEQ,"t":UNIX_NANOS}},…]}`
//! (one timestamp per request: every push of it is written at once). The
//! answer's `results` come in order, one per push; a push counts as accepted
//! when its result has `delivered` ≥ 1, as for `POST /push`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use anyhow::bail;
use serde::Deserialize;

pub use pushgate::http::push::MAX_PUSHES_PER_BATCH as MAX_BATCH;

use crate::push::{Http, Plan};
use crate::track::now_ns;

/// The parts of pushgate's `BatchResponse` the bench reads (the rest —
/// `dropped`, `remote_deliveries`, `offline`, `unrouted` — is skipped).
/// pushgate's answer types only serialize; the test reads one of them.
#[derive(Debug, Deserialize)]
struct Answer {
    delivered: u64,
    results: Vec<PushResult>,
}

#[derive(Debug, Deserialize)]
struct PushResult {
    delivered: u64,
}

/// Appends the batch body for `seqs` to `body`.
fn body_for(plan: &Plan, seqs: Range<u64>, body: &mut String) {
    let t = now_ns();
    body.push_str(r#"{"pushes":["#);
    for (i, seq) in seqs.enumerate() {
        if i > 0 {
            body.push(',');
        }
        let uid = seq % plan.n;
        let _ = write!(
            body,
            r#"{{"uid":"{}{uid}","data":{{"s":{seq},"t":{t}}}}}"#,
            plan.prefix
        );
    }
    body.push_str("]}");
}

/// Which pushes of a 200 answer were accepted: one flag per push, in order.
fn accepted(answer: &[u8], pushes: usize) -> anyhow::Result<Vec<bool>> {
    let a: Answer = serde_json::from_slice(answer)?;
    if a.results.len() != pushes {
        bail!(
            "POST /push/batch answered {} results for {pushes} pushes",
            a.results.len()
        );
    }
    let sum: u64 = a.results.iter().map(|r| r.delivered).sum();
    if sum != a.delivered {
        bail!(
            "POST /push/batch: delivered {} but its results sum to {sum}",
            a.delivered
        );
    }
    Ok(a.results.iter().map(|r| r.delivered > 0).collect())
}

/// Pushes `batch` at a time (`POST /push/batch`) over one keep-alive
/// connection, one request at a time.
pub async fn http_batch(addr: SocketAddr, plan: Arc<Plan>, batch: usize) -> anyhow::Result<()> {
    let batch = batch.clamp(1, MAX_BATCH);
    let mut http = Http::connect(addr).await?;
    let mut body = String::with_capacity(batch * 72 + 16);
    while let Some(seqs) = plan.next_range(batch as u64) {
        body.clear();
        body_for(&plan, seqs.clone(), &mut body);
        let pushes = (seqs.end - seqs.start) as usize;
        let answer = http.request("POST", "/push/batch", body.as_bytes()).await;
        let flags = match answer {
            Ok((200, answer)) => accepted(&answer, pushes),
            Ok((status, answer)) => Err(anyhow::anyhow!(
                "POST /push/batch: {status} {}",
                String::from_utf8_lossy(&answer)
            )),
            Err(e) => Err(e),
        };
        match flags {
            Ok(flags) => {
                for (seq, ok) in seqs.zip(flags) {
                    plan.answered(seq, ok);
                }
            }
            Err(e) => {
                // Whether any of them was delivered is unknown: none expected.
                for seq in seqs {
                    plan.errored(seq);
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use pushgate::model::{BatchResponse, BatchResult, PushResponse, Uid};

    #[test]
    fn answers() {
        let result = |delivered, offline: &[&str]| BatchResult {
            push: PushResponse {
                delivered,
                offline: offline.iter().map(|u| Uid::new(u).unwrap()).collect(),
                ..PushResponse::default()
            },
            unrouted: Vec::new(),
        };
        let answer = BatchResponse {
            delivered: 1,
            dropped: 0,
            remote_deliveries: 0,
            results: vec![result(1, &[]), result(0, &["u2"])],
        };
        let a = &serde_json::to_vec(&answer).unwrap()[..];
        assert_eq!(accepted(a, 2).unwrap(), vec![true, false]);
        assert!(accepted(a, 3).is_err());
        assert!(accepted(br#"{"delivered":2,"results":[{"delivered":1}]}"#, 1).is_err());
        assert!(accepted(b"not json", 1).is_err());
    }
}
