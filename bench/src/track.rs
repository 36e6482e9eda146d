//! What receivers record: every pushed message carries a sequence number and
//! a send timestamp (`{"s":SEQ,"t":UNIX_NANOS}`); receivers count each
//! sequence number (to find losses and duplicates) and record the
//! push→receive latency in a log-linear histogram.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch: comparable across processes on one host.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Finds `"key":NUMBER` in a message and returns the number.
pub fn field(msg: &[u8], key: &[u8]) -> Option<u64> {
    let pos = msg.windows(key.len()).position(|w| w == key)?;
    let mut n: u64 = 0;
    let mut digits = 0;
    for &b in &msg[pos + key.len()..] {
        if !b.is_ascii_digit() {
            break;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        digits += 1;
    }
    (digits > 0).then_some(n)
}

/// Latency histogram in microseconds: exact below 1024 µs, then 64
/// sub-buckets per power of two (under 1.6 % error), up to ~2^40 µs.
/// Its buckets live in the tracker's shared memory.
pub struct Histogram {
    buckets: &'static [AtomicU64],
    max: &'static AtomicU64,
}

const SUB: u64 = 64;
const LINEAR: u64 = 1024;
/// Buckets of a histogram.
const BUCKETS: usize = (LINEAR + 31 * SUB) as usize;

fn bucket_of(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros() as u64; // >= 10
    let sub = (us >> (exp - 6)) & (SUB - 1);
    (LINEAR + (exp - 10) * SUB + sub) as usize
}

fn bucket_value(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let exp = (i - LINEAR) / SUB + 10;
    let sub = (i - LINEAR) % SUB;
    (1 << exp) + (sub << (exp - 6))
}

impl Histogram {
    /// Records one latency.
    pub fn record(&self, us: u64) {
        let i = bucket_of(us).min(self.buckets.len() - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(us, Ordering::Relaxed);
    }

    /// p50, p90, p99, p99.9 and max in microseconds (None when empty).
    pub fn percentiles(&self) -> Option<Percentiles> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let at = |q: f64| {
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return bucket_value(i);
                }
            }
            self.max.load(Ordering::Relaxed)
        };
        Some(Percentiles {
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: self.max.load(Ordering::Relaxed),
            samples: total,
        })
    }
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Percentiles {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub samples: u64,
}

/// Shared by every receiver of one scenario — across processes: its counters
/// live in a `memfd` mapping that worker processes (see `worker.rs`) map too.
pub struct Tracker {
    /// Copies received of each sequence number.
    counts: &'static [AtomicU32],
    /// Broadcasts: µs from send until the last expected copy arrived.
    reach: &'static [AtomicU64],
    /// Copies each sequence number should reach (1 for a push to a uid with
    /// one connection, N for a broadcast to N).
    expect: u32,
    /// Messages received with a sequence number.
    pub received: &'static AtomicU64,
    /// Messages received without one, or beyond the tracked range.
    pub untracked: &'static AtomicU64,
    /// Push→receive latency.
    pub latency: Histogram,
    /// Sequence numbers the gateway refused (`fail`): not expected.
    refused: Mutex<Vec<u64>>,
    /// Header words (counters, capacity, expectation).
    head: &'static [AtomicU64],
    /// The memfd holding the counters (inherited by worker processes).
    pub fd: i32,
}

/// Header words of the shared mapping.
const HEADER: usize = 8;
const H_RECEIVED: usize = 0;
const H_UNTRACKED: usize = 1;
const H_MAX: usize = 2;
const H_CAPACITY: usize = 3;
const H_EXPECT: usize = 4;

/// Loss and duplicates over the sequence numbers issued.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Integrity {
    pub issued: u64,
    pub refused: u64,
    pub lost: u64,
    pub duplicates: u64,
}

impl Tracker {
    /// A tracker for up to `capacity` sequence numbers, each expected
    /// `expect` times, in a fresh shared mapping.
    pub fn new(capacity: usize, expect: u32) -> Tracker {
        let expect = expect.max(1);
        let reach = if expect > 1 { capacity } else { 0 };
        let words = HEADER + BUCKETS + reach + capacity.div_ceil(2);
        // SAFETY: plain syscalls on a fresh fd; failures are checked.
        let fd = unsafe { libc::memfd_create(c"pushgate-bench".as_ptr(), 0) };
        assert!(fd >= 0, "memfd_create failed");
        // SAFETY: fd is ours.
        let rc = unsafe { libc::ftruncate(fd, (words * 8) as libc::off_t) };
        assert!(rc == 0, "ftruncate failed");
        let t = Tracker::map(fd, words, capacity, reach, expect);
        t.header(H_CAPACITY)
            .store(capacity as u64, Ordering::Relaxed);
        t.header(H_EXPECT)
            .store(u64::from(expect), Ordering::Relaxed);
        t
    }

    /// Maps the tracker another process created (its fd was inherited).
    pub fn attach(fd: i32) -> Tracker {
        let head = Tracker::map(fd, HEADER, 0, 0, 1);
        let capacity = head.header(H_CAPACITY).load(Ordering::Relaxed) as usize;
        let expect = head.header(H_EXPECT).load(Ordering::Relaxed) as u32;
        let reach = if expect > 1 { capacity } else { 0 };
        let words = HEADER + BUCKETS + reach + capacity.div_ceil(2);
        Tracker::map(fd, words, capacity, reach, expect)
    }

    fn map(fd: i32, words: usize, capacity: usize, reach: usize, expect: u32) -> Tracker {
        let len = words.max(HEADER + BUCKETS) * 8;
        // SAFETY: a shared mapping of a memfd at least `len` long (ftruncate
        // above, or by the creating process); it is never unmapped, so the
        // 'static slices below stay valid. The memory is zero-filled and only
        // ever accessed through atomics, from every process mapping it.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            assert!(p != libc::MAP_FAILED, "mmap failed");
            let words64 = std::slice::from_raw_parts(p as *const AtomicU64, len / 8);
            let (head, rest) = words64.split_at(HEADER);
            let (buckets, rest) = rest.split_at(BUCKETS);
            let (reach, rest) = rest.split_at(reach.min(rest.len()));
            let counts = std::slice::from_raw_parts(rest.as_ptr() as *const AtomicU32, capacity);
            Tracker {
                counts,
                reach,
                expect,
                received: &head[H_RECEIVED],
                untracked: &head[H_UNTRACKED],
                latency: Histogram {
                    buckets,
                    max: &head[H_MAX],
                },
                refused: Mutex::new(Vec::new()),
                head,
                fd,
            }
        }
    }

    fn header(&self, i: usize) -> &AtomicU64 {
        &self.head[i]
    }

    /// Broadcasts: µs until every expected copy of `seq` had arrived.
    pub fn reach_us(&self, seq: u64) -> Option<u64> {
        let v = self.reach.get(seq as usize)?.load(Ordering::Acquire);
        (v > 0).then_some(v - 1)
    }

    /// How many sequence numbers it can track.
    pub fn capacity(&self) -> u64 {
        self.counts.len() as u64
    }

    /// Copies of `seq` received so far.
    pub fn count(&self, seq: u64) -> u32 {
        self.counts
            .get(seq as usize)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// Whether every expected copy of `seq` has arrived.
    pub fn done(&self, seq: u64) -> bool {
        self.count(seq) >= self.expect
    }

    /// Notes that the gateway answered `fail` for `seq`.
    pub fn refuse(&self, seq: u64) {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(seq);
    }

    /// Records one received message.
    pub fn record(&self, msg: &[u8]) {
        let (Some(seq), Some(sent)) = (field(msg, b"\"s\":"), field(msg, b"\"t\":")) else {
            self.untracked.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let now = now_ns();
        let us = now.saturating_sub(sent) / 1000;
        self.latency.record(us);
        self.received.fetch_add(1, Ordering::Relaxed);
        match self.counts.get(seq as usize) {
            Some(c) => {
                if c.fetch_add(1, Ordering::AcqRel) + 1 == self.expect
                    && let Some(r) = self.reach.get(seq as usize)
                {
                    r.store(us + 1, Ordering::Release);
                }
            }
            None => {
                self.untracked.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Refused sequence numbers in `from..to`, sorted.
    fn refused_in(&self, from: u64, to: u64) -> Vec<u64> {
        let all = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        let mut r: Vec<u64> = all
            .iter()
            .copied()
            .filter(|s| (from..to).contains(s))
            .collect();
        r.sort_unstable();
        r
    }

    /// Copies expected of sequence numbers `from..to`.
    pub fn expected(&self, from: u64, to: u64) -> u64 {
        let refused = self.refused_in(from, to).len() as u64;
        (to.saturating_sub(from)).saturating_sub(refused) * u64::from(self.expect)
    }

    /// Copies received of sequence numbers `from..to`.
    pub fn received_in(&self, from: u64, to: u64) -> u64 {
        (from..to.min(self.capacity()))
            .map(|s| u64::from(self.count(s)))
            .sum()
    }

    /// Forgets recorded latencies (between phases, nothing in flight).
    pub fn reset_latency(&self) {
        for b in self.latency.buckets {
            b.store(0, Ordering::Relaxed);
        }
        self.latency.max.store(0, Ordering::Relaxed);
    }

    /// Loss and duplicates among sequence numbers `from..to`.
    pub fn integrity(&self, from: u64, to: u64) -> Integrity {
        let refused = self.refused_in(from, to);
        let mut out = Integrity {
            issued: to.saturating_sub(from),
            refused: refused.len() as u64,
            ..Integrity::default()
        };
        for seq in from..to.min(self.capacity()) {
            let want = if refused.binary_search(&seq).is_ok() {
                0
            } else {
                self.expect
            };
            let got = self.count(seq);
            out.lost += u64::from(want.saturating_sub(got));
            out.duplicates += u64::from(got.saturating_sub(want));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_buckets() {
        assert_eq!(field(br#"{"uid":"u1","s":42,"t":7}"#, b"\"s\":"), Some(42));
        assert_eq!(field(br#"{"s":x}"#, b"\"s\":"), None);
        for us in [0, 5, 1023, 1024, 1500, 65_000, 3_000_000] {
            let v = bucket_value(bucket_of(us));
            assert!(v <= us && us - v <= us / 64 + 1, "{us} -> {v}");
        }
    }
}
