//! What the bench reads from the operating system: CPU time of the gateway
//! (`/proc/PID/stat`) and of itself (its process CPU clock), resident memory,
//! the open-file limit, and the machine's description for the report; and the
//! one socket option call its clients and the floor relay share.

use std::os::fd::AsRawFd;
use std::time::Instant;

use crate::worker::WorkerPids;

/// Sets an integer socket option on `socket`.
///
/// For the two options the bench needs (`IP_BIND_ADDRESS_NO_PORT`,
/// `TCP_DEFER_ACCEPT`), which neither socket2 nor rustix wraps: the one
/// `unsafe` call outside the tracker's mapping.
#[allow(unsafe_code)]
pub fn set_int_option(
    socket: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: a valid socket fd (borrowed for the call) and a pointer to a
    // c_int option value with its exact size; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Clock ticks per second of `/proc/PID/stat` times.
fn clock_ticks() -> f64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100.0,
        t => t as f64,
    }
}

/// User plus system CPU seconds of process `pid` (all its threads).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields resume after its `)`.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// CPU seconds of the generator: this process (its CPU clock) plus its
/// running worker processes `workers` (`/proc/PID/stat`).
pub fn generator_cpu_secs(workers: &WorkerPids) -> f64 {
    self_cpu_secs()
        + workers
            .running()
            .iter()
            .filter_map(|&p| cpu_secs(p))
            .sum::<f64>()
}

/// User plus system CPU seconds of this process, every thread: the clock
/// `CLOCK_PROCESS_CPUTIME_ID` counts what `getrusage(RUSAGE_SELF)` sums.
pub fn self_cpu_secs() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// Resident memory of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Raises this process's soft open-file limit to the hard one; returns it.
pub fn raise_file_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

/// CPU of the gateway processes and of the generator over one measured span.
pub struct CpuMeter {
    pids: Vec<u32>,
    workers: WorkerPids,
    gw_start: Option<f64>,
    gen_start: f64,
    machine_start: Option<f64>,
    wall: Instant,
}

/// Busy CPU seconds of the whole machine (every process), from `/proc/stat`.
fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<f64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy excludes idle, iowait.
    let busy = f.get(..8)?.iter().sum::<f64>() - f[3] - f[4];
    Some(busy / clock_ticks())
}

/// What a [`CpuMeter`] measured.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CpuSpan {
    /// Wall-clock seconds.
    pub wall_s: f64,
    /// Gateway CPU seconds (user+system, every gateway process), if known.
    pub gateway_cpu_s: Option<f64>,
    /// Generator CPU seconds (this process and its workers).
    pub generator_cpu_s: f64,
    /// CPU seconds used by the whole machine meanwhile (gateway, generator
    /// and whatever else runs: on a shared machine, others).
    pub machine_cpu_s: Option<f64>,
}

impl CpuMeter {
    /// Starts measuring the gateways `pids`, and the generator: this
    /// process and its worker processes `workers`.
    pub fn start(pids: &[u32], workers: &WorkerPids) -> CpuMeter {
        CpuMeter {
            pids: pids.to_vec(),
            workers: workers.clone(),
            gw_start: gateway_cpu(pids),
            gen_start: generator_cpu_secs(workers),
            machine_start: machine_busy_secs(),
            wall: Instant::now(),
        }
    }

    /// Ends the span.
    pub fn stop(&self) -> CpuSpan {
        let gw_end = gateway_cpu(&self.pids);
        CpuSpan {
            wall_s: self.wall.elapsed().as_secs_f64(),
            gateway_cpu_s: match (self.gw_start, gw_end) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            },
            generator_cpu_s: generator_cpu_secs(&self.workers) - self.gen_start,
            machine_cpu_s: match (self.machine_start, machine_busy_secs()) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            },
        }
    }
}

fn gateway_cpu(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| cpu_secs(p)).sum()
}

/// nproc, CPU model and memory, for the report header.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    serde_json::json!({
        "nproc": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cpu": model,
        "mem_mib": mem_kib / 1024,
        "loadavg": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}
