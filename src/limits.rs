//! Admission limits for WebSocket connections: a global cap (so the process
//! never runs out of file descriptors mid-accept) and optional per-address
//! caps on open connections and on connects per second.
//!
//! Per-address limits are off by default: many real clients share one NAT
//! address, and load tests come from loopback.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why an upgrade was refused (answered 503, counted by this label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmissionRefusal {
    /// The gateway holds `--max-connections` already.
    ConnectionCap,
    /// This address holds `--max-conns-per-ip` already.
    PerIpCap,
    /// This address connected more than `--max-connects-per-ip` times this second.
    PerIpRate,
}

impl AdmissionRefusal {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            AdmissionRefusal::ConnectionCap => "connection_cap",
            AdmissionRefusal::PerIpCap => "per_ip_cap",
            AdmissionRefusal::PerIpRate => "per_ip_rate",
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
    /// Admitted connections not yet released. Counted here, at admission,
    /// rather than when the upgraded connection registers with the map, so
    /// a burst of concurrent upgrades cannot slip past the cap.
    admitted: AtomicUsize,
    per_ip_max: usize,
    per_ip_rate: u32,
    by_ip: Mutex<HashMap<IpAddr, Entry>>,
}

/// Holds one connection's place in the global count and in its address's;
/// released on drop.
#[derive(Debug)]
pub struct Permit {
    admission: Admission,
    ip: Option<IpAddr>,
}

impl Admission {
    /// Limits: `max_connections` in all (must be > 0); per address 0 means off.
    pub fn new(max_connections: usize, per_ip_max: usize, per_ip_rate: u32) -> Admission {
        Admission {
            inner: Arc::new(Inner {
                max_connections,
                admitted: AtomicUsize::new(0),
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

    /// Admits one more connection from `ip`, or says why not.
    pub fn admit(&self, ip: IpAddr) -> Result<Permit, AdmissionRefusal> {
        let before = self.inner.admitted.fetch_add(1, Ordering::AcqRel);
        if before >= self.inner.max_connections {
            self.inner.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(AdmissionRefusal::ConnectionCap);
        }
        // From here the permit releases the global count on every path.
        let mut permit = Permit {
            admission: self.clone(),
            ip: None,
        };
        if self.inner.per_ip_max == 0 && self.inner.per_ip_rate == 0 {
            return Ok(permit);
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
            return Err(AdmissionRefusal::PerIpRate);
        }
        if self.inner.per_ip_max > 0 && entry.open >= self.inner.per_ip_max {
            return Err(AdmissionRefusal::PerIpCap);
        }
        entry.in_window += 1;
        entry.open += 1;
        permit.ip = Some(ip);
        Ok(permit)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let inner = &self.admission.inner;
        inner.admitted.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip.take() {
            let mut table = inner.by_ip.lock().unwrap_or_else(|p| p.into_inner());
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

    #[test]
    fn every_refusal_label_is_exported_from_the_start() {
        for r in [
            AdmissionRefusal::ConnectionCap,
            AdmissionRefusal::PerIpCap,
            AdmissionRefusal::PerIpRate,
        ] {
            assert!(crate::telemetry::is_listed(
                crate::telemetry::REJECTED_UPGRADES,
                r.as_str()
            ));
        }
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn the_global_cap_counts_admitted_connections() {
        let a = Admission::new(2, 0, 0);
        let first = a.admit(IP).unwrap();
        let _second = a.admit(IP).unwrap();
        assert_eq!(a.admit(IP).unwrap_err(), AdmissionRefusal::ConnectionCap);
        drop(first);
        assert!(a.admit(IP).is_ok());
    }

    #[test]
    fn per_ip_caps_release_on_drop() {
        let a = Admission::new(100, 2, 0);
        let p1 = a.admit(IP).unwrap();
        let _p2 = a.admit(IP).unwrap();
        assert_eq!(a.admit(IP).unwrap_err(), AdmissionRefusal::PerIpCap);
        drop(p1);
        assert!(a.admit(IP).is_ok());
    }

    #[test]
    fn per_ip_rate_limits_connects_per_second() {
        let a = Admission::new(100, 0, 3);
        for _ in 0..3 {
            drop(a.admit(IP).unwrap());
        }
        assert_eq!(a.admit(IP).unwrap_err(), AdmissionRefusal::PerIpRate);
    }
}
