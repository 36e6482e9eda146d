//! What receivers record: every pushed message carries a sequence number and
//! a send timestamp (`{"s":SEQ,"t":UNIX_NANOS}`); receivers count each
//! sequence number (to find losses and duplicates) and record the
//! push→receive latency in a log-linear histogram.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;

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
    /// The memfd holding the counters (inherited by worker processes: it is
    /// created without close-on-exec).
    file: File,
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
    ///
    /// Errors: the memfd cannot be created, sized or mapped.
    pub fn new(capacity: usize, expect: u32) -> anyhow::Result<Tracker> {
        let expect = expect.max(1);
        let file = File::from(
            rustix::fs::memfd_create("pushgate-bench", rustix::fs::MemfdFlags::empty())
                .context("memfd_create")?,
        );
        file.set_len(Tracker::file_words(capacity, expect) as u64 * 8)
            .context("sizing the tracker's memfd")?;
        let t = Tracker::map(file, capacity, expect)?;
        t.header(H_CAPACITY)
            .store(capacity as u64, Ordering::Relaxed);
        t.header(H_EXPECT)
            .store(u64::from(expect), Ordering::Relaxed);
        Ok(t)
    }

    /// Maps the tracker another process created, whose memfd this process
    /// inherited as descriptor `fd`.
    ///
    /// Errors: `fd` is no such memfd, or it cannot be mapped.
    pub fn attach(fd: i32) -> anyhow::Result<Tracker> {
        // A second descriptor of the same memfd, opened without `unsafe`.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{fd}"))
            .with_context(|| format!("the tracker's memfd (descriptor {fd})"))?;
        let word = |i: usize| -> anyhow::Result<u64> {
            let mut b = [0u8; 8];
            file.read_exact_at(&mut b, i as u64 * 8)
                .context("the tracker's header")?;
            Ok(u64::from_ne_bytes(b))
        };
        let capacity = usize::try_from(word(H_CAPACITY)?)?;
        let expect = u32::try_from(word(H_EXPECT)?)?;
        let have = file.metadata()?.len();
        if have < Tracker::file_words(capacity, expect) as u64 * 8 {
            anyhow::bail!("the tracker's memfd is shorter than its header says");
        }
        Tracker::map(file, capacity, expect)
    }

    /// 64-bit words of the header, histogram and broadcast reach times.
    fn head_words(capacity: usize, expect: u32) -> usize {
        let reach = if expect > 1 { capacity } else { 0 };
        HEADER + BUCKETS + reach
    }

    /// 64-bit words of the whole memfd: the counts are 32-bit, two a word.
    fn file_words(capacity: usize, expect: u32) -> usize {
        Tracker::head_words(capacity, expect) + capacity.div_ceil(2)
    }

    fn map(file: File, capacity: usize, expect: u32) -> anyhow::Result<Tracker> {
        let (words, counts) =
            shared_atomics(&file, Tracker::head_words(capacity, expect), capacity)?;
        let (head, rest) = words.split_at(HEADER);
        let (buckets, reach) = rest.split_at(BUCKETS);
        Ok(Tracker {
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
            file,
        })
    }

    /// The memfd's descriptor number, for a worker process to attach to.
    pub fn fd(&self) -> i32 {
        self.file.as_raw_fd()
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

/// Maps `file` shared and views it as `words` 64-bit atomics followed by
/// `counts` 32-bit ones. The mapping is never unmapped, so the views live as
/// long as the process.
///
/// The one place the bench still needs `unsafe`: no safe crate views shared
/// memory as atomics, and a live view of the counters is what lets the bench
/// see, while it pushes, which broadcasts worker processes have delivered.
#[allow(unsafe_code)]
fn shared_atomics(
    file: &File,
    words: usize,
    counts: usize,
) -> anyhow::Result<(&'static [AtomicU64], &'static [AtomicU32])> {
    let len = words * 8 + counts * 4;
    // SAFETY: memmap2 needs the file not to be truncated or written other
    // than through the mapping while it is mapped: the memfd is the bench's
    // own, sized once before anyone maps it, never truncated, and only ever
    // written through atomics in mappings like this one.
    let map = unsafe { memmap2::MmapOptions::new().len(len).map_mut(file) }
        .context("mapping the tracker's memfd")?;
    let bytes: &'static mut [u8] = &mut Box::leak(Box::new(map))[..];
    let (w, c) = bytes.split_at_mut(words * 8);
    // SAFETY: the mapping starts page-aligned, so `w` is 8-byte aligned and
    // `c` (8·words bytes further) 4-byte aligned; their lengths are exactly
    // `words` u64s and `counts` u32s; the bytes are initialized (the kernel
    // zero-fills a memfd); atomics have their integer's size and alignment
    // and may share memory with other processes' atomics; and the `&mut`
    // borrows end here, so every later access is atomic.
    let views = unsafe {
        (
            std::slice::from_raw_parts(w.as_mut_ptr().cast::<AtomicU64>(), words),
            std::slice::from_raw_parts(c.as_mut_ptr().cast::<AtomicU32>(), counts),
        )
    };
    Ok(views)
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

    #[test]
    fn an_attached_tracker_shares_the_creators_counters() {
        let made = Tracker::new(10, 3).unwrap();
        let seen = Tracker::attach(made.fd()).unwrap();
        assert_eq!((seen.capacity(), seen.expect), (10, 3));
        for _ in 0..3 {
            seen.record(br#"{"s":7,"t":1}"#);
        }
        seen.record(br#"{"s":99,"t":1}"#);
        assert!(made.done(7) && !made.done(6));
        assert_eq!(made.received.load(Ordering::Relaxed), 4);
        assert_eq!(made.untracked.load(Ordering::Relaxed), 1);
        assert!(made.reach_us(7).is_some());
        assert_eq!(made.integrity(0, 10).lost, 27);
    }
}
