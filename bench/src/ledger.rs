//! What was pushed to each uid, and the judgement of what the resuming
//! clients (`v2.rs`) received against it.
//!
//! A push is *required* when its answer promised it: the text port answered
//! `ok`, or REST answered that it was delivered or stored (an `offset`).
//! Any other push (the text port's `fail`, which a stored push to an
//! offline uid still gets; a connection that failed mid-request) has an
//! unknown fate: a client may get it once, or not at all. A client must
//! get every required push of its uid, none twice, in the order they were
//! sent (the bench's pushers to one uid wait for each answer, and sequence
//! numbers grow with time).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::v2::Log;

/// Pushes by uid index: `(sequence number, required)`.
pub struct Ledger {
    uids: Mutex<Vec<Vec<(u64, bool)>>>,
}

impl Ledger {
    /// A ledger for uids `0..uids`.
    pub fn new(uids: usize) -> Ledger {
        Ledger {
            uids: Mutex::new(vec![Vec::new(); uids]),
        }
    }

    /// Notes the push `seq` to uid `uid` and whether its answer promised it.
    pub fn push(&self, uid: usize, seq: u64, required: bool) {
        let mut uids = self.uids.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = uids.get_mut(uid) {
            v.push((seq, required));
        }
    }

    /// Pushes noted so far, and how many of them were required.
    pub fn counts(&self) -> (u64, u64) {
        let uids = self.uids.lock().unwrap_or_else(|p| p.into_inner());
        let all = uids.iter().map(Vec::len).sum::<usize>() as u64;
        let required = uids.iter().flatten().filter(|(_, r)| *r).count() as u64;
        (all, required)
    }

    /// Whether `log` (a client of uid `uid`) holds every required push.
    pub fn complete(&self, uid: usize, log: &Log) -> bool {
        let uids = self.uids.lock().unwrap_or_else(|p| p.into_inner());
        let got: HashSet<u64> = log.got.iter().map(|(s, _)| *s).collect();
        uids.get(uid)
            .is_none_or(|v| v.iter().all(|(s, r)| !r || got.contains(s)))
    }

    /// Judges one client of uid `uid`; `since`: when its resume time
    /// starts (the node restart), if it counts.
    pub fn judge(&self, uid: usize, log: &Log, since: Option<Instant>) -> Verdict {
        let uids = self.uids.lock().unwrap_or_else(|p| p.into_inner());
        let pushed = uids.get(uid).map_or(&[][..], Vec::as_slice);
        let sent: HashSet<u64> = pushed.iter().map(|(s, _)| *s).collect();
        let mut seen = HashSet::with_capacity(log.got.len());
        let mut v = Verdict::default();
        let mut last = None;
        for &(seq, _) in &log.got {
            if !seen.insert(seq) {
                v.duplicates += 1;
                continue;
            }
            if !sent.contains(&seq) {
                v.foreign += 1;
            }
            if last.is_some_and(|l| seq < l) {
                v.out_of_order += 1;
            }
            last = Some(seq);
        }
        let required: HashSet<u64> = pushed.iter().filter(|(_, r)| *r).map(|(s, _)| *s).collect();
        v.lost = required.iter().filter(|s| !seen.contains(s)).count() as u64;
        // Done when re-bound after `since` and holding every required push.
        if let Some(t0) = since
            && v.lost == 0
            && let Some(bound) = log.last_bound.filter(|b| *b >= t0)
        {
            let last_needed = log
                .got
                .iter()
                .filter(|(s, _)| required.contains(s))
                .map(|(_, t)| *t)
                .max()
                .unwrap_or(bound);
            v.resumed_after = Some(bound.max(last_needed).saturating_duration_since(t0));
        }
        v
    }
}

/// Whether a REST push answer (`POST /push`, or one result of `POST
/// /push/batch`) promises the push: delivered on this node or another, or
/// stored in history (the answer names the `offset` it was stored at, or
/// lists what it `stored`).
pub fn promised(answer: &serde_json::Value) -> bool {
    let positive = |k: &str| answer[k].as_u64().is_some_and(|v| v > 0);
    let stored = match &answer["stored"] {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Array(a) => !a.is_empty(),
        serde_json::Value::Number(n) => n.as_u64().is_some_and(|v| v > 0),
        _ => false,
    };
    positive("delivered") || positive("remote_deliveries") || answer["offset"].is_u64() || stored
}

/// One client's faults (or, summed, a run's).
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Verdict {
    /// Required pushes it never got.
    pub lost: u64,
    /// Copies beyond the first.
    pub duplicates: u64,
    /// Pushes that came after a later one.
    pub out_of_order: u64,
    /// Pushes it got that were never pushed to its uid.
    pub foreign: u64,
    /// From `since` until it was bound again and held every required push.
    #[serde(skip)]
    pub resumed_after: Option<Duration>,
}

impl Verdict {
    /// Adds another client's counts.
    pub fn add(&mut self, o: &Verdict) {
        self.lost += o.lost;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.foreign += o.foreign;
    }
}

/// The `q` quantile of sorted `v` (nearest rank).
pub fn quantile(v: &[Duration], q: f64) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    let rank = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// Milliseconds, rounded to 0.1.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_judged_by_what_its_uid_was_promised() {
        let ledger = Ledger::new(1);
        for (seq, required) in [(1, true), (2, false), (3, true), (4, true)] {
            ledger.push(0, seq, required);
        }
        let t = Instant::now();
        let log = Log {
            got: [1, 3, 3, 9, 2].iter().map(|&s| (s, t)).collect(),
            last_bound: Some(t),
            ..Log::default()
        };
        let v = ledger.judge(0, &log, Some(t));
        assert_eq!(
            (v.lost, v.duplicates, v.foreign, v.out_of_order),
            (1, 1, 1, 1)
        );
        assert_eq!(v.resumed_after, None);
        assert!(!ledger.complete(0, &log));
    }

    #[test]
    fn an_answer_promises_a_push_it_delivered_or_stored() {
        let p = |v: serde_json::Value| promised(&v);
        assert!(p(serde_json::json!({"delivered": 1, "offline": []})));
        assert!(p(
            serde_json::json!({"delivered": 0, "remote_deliveries": 2})
        ));
        assert!(p(
            serde_json::json!({"delivered": 0, "offline": ["u"], "offset": 7})
        ));
        assert!(!p(serde_json::json!({"delivered": 0, "offline": ["u"]})));
    }
}
