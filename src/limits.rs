//! Admission limits for WebSocket connections: a global cap (so the process
//! never runs out of file descriptors mid-accept) and optional per-address
//! caps on open connections and on connects per second.
//!
//! Per-address limits are off by default: many real clients share one NAT
//! address, and load tests come from loopback.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why an upgrade was refused (answered 503, counted by this label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The gateway holds `--max-connections` already.
    ConnectionCap,
    /// This address holds `--max-conns-per-ip` already.
    PerIpCap,
    /// This address connected more than `--max-connects-per-ip` times this second.
    PerIpRate,
}

impl Refusal {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::ConnectionCap => "connection_cap",
            Refusal::PerIpCap => "per_ip_cap",
            Refusal::PerIpRate => "per_ip_rate",
        }
    }
}

/// Entries kept before stale ones are pruned; bounds the table's memory
/// under a flood from many addresses.
const PRUNE_AT: usize = 4096;
const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Entry {
    open: usize,
    window_start: Instant,
    in_window: u32,
}

/// The admission state. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Admission {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max_connections: usize,
    per_ip_max: usize,
    per_ip_rate: u32,
    by_ip: Mutex<HashMap<IpAddr, Entry>>,
}

/// Holds one connection's place in its address's count; released on drop.
#[derive(Debug)]
pub struct Permit {
    admission: Option<(Admission, IpAddr)>,
}

impl Admission {
    /// Limits: `max_connections` in all (must be > 0); per address 0 means off.
    pub fn new(max_connections: usize, per_ip_max: usize, per_ip_rate: u32) -> Admission {
        Admission {
            inner: Arc::new(Inner {
                max_connections,
                per_ip_max,
                per_ip_rate,
                by_ip: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The global cap.
    pub fn max_connections(&self) -> usize {
        self.inner.max_connections
    }

    /// Admits one more connection from `ip` while `open` are open, or says why not.
    pub fn admit(&self, ip: IpAddr, open: usize) -> Result<Permit, Refusal> {
        if open >= self.inner.max_connections {
            return Err(Refusal::ConnectionCap);
        }
        if self.inner.per_ip_max == 0 && self.inner.per_ip_rate == 0 {
            return Ok(Permit { admission: None });
        }
        let now = Instant::now();
        let mut table = self.inner.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        if table.len() >= PRUNE_AT {
            table.retain(|_, e| e.open > 0 || now.duration_since(e.window_start) < WINDOW);
        }
        let entry = table.entry(ip).or_insert(Entry {
            open: 0,
            window_start: now,
            in_window: 0,
        });
        if now.duration_since(entry.window_start) >= WINDOW {
            entry.window_start = now;
            entry.in_window = 0;
        }
        if self.inner.per_ip_rate > 0 && entry.in_window >= self.inner.per_ip_rate {
            return Err(Refusal::PerIpRate);
        }
        if self.inner.per_ip_max > 0 && entry.open >= self.inner.per_ip_max {
            return Err(Refusal::PerIpCap);
        }
        entry.in_window += 1;
        entry.open += 1;
        Ok(Permit {
            admission: Some((self.clone(), ip)),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some((admission, ip)) = self.admission.take() {
            let mut table = admission
                .inner
                .by_ip
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(e) = table.get_mut(&ip) {
                e.open = e.open.saturating_sub(1);
            }
        }
    }
}

/// The default global cap: the open-file limit less headroom for listeners,
/// text-port and HTTP connections, and the process's own files.
pub fn default_max_connections() -> usize {
    let limit = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let headroom = (limit / 20).max(64);
    limit.saturating_sub(headroom).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn the_global_cap_counts_open_connections() {
        let a = Admission::new(2, 0, 0);
        assert!(a.admit(IP, 1).is_ok());
        assert_eq!(a.admit(IP, 2).unwrap_err(), Refusal::ConnectionCap);
    }

    #[test]
    fn per_ip_caps_release_on_drop() {
        let a = Admission::new(100, 2, 0);
        let p1 = a.admit(IP, 0).unwrap();
        let _p2 = a.admit(IP, 0).unwrap();
        assert_eq!(a.admit(IP, 0).unwrap_err(), Refusal::PerIpCap);
        drop(p1);
        assert!(a.admit(IP, 0).is_ok());
    }

    #[test]
    fn per_ip_rate_limits_connects_per_second() {
        let a = Admission::new(100, 0, 3);
        for _ in 0..3 {
            drop(a.admit(IP, 0).unwrap());
        }
        assert_eq!(a.admit(IP, 0).unwrap_err(), Refusal::PerIpRate);
    }
}
