//! Results: one [`Row`] per measured phase, printed as a table row, and one
//! JSON line per scenario (`{"scenario":..,"ok":..,"rows":[..]}`).

use serde::Serialize;

use crate::sys::CpuSpan;
use crate::track::{Integrity, Percentiles, Tracker};

/// One measured phase of a scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub variant: String,
    pub connections: usize,
    pub secs: f64,
    /// Pushes the gateway accepted (`ok` / 200).
    pub pushes: u64,
    pub pushes_per_s: f64,
    /// Messages the WebSocket clients received.
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    pub latency: Option<Percentiles>,
    pub integrity: Integrity,
    pub cpu: CpuSpan,
    /// Gateway CPU per delivery (per push when nothing is delivered).
    pub gateway_us_per_op: Option<f64>,
    pub generator_us_per_op: f64,
    pub gateway_cores: Option<f64>,
    pub generator_cores: f64,
    /// Which side limited the figure, as far as CPU tells.
    pub bound: String,
    /// Scenario-specific figures (RSS per connection, broadcast reach time…).
    pub extra: serde_json::Value,
}

impl Row {
    /// Builds a row from what a phase measured.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scenario: &str,
        variant: &str,
        connections: usize,
        cpu: CpuSpan,
        pushes: u64,
        deliveries: u64,
        tracker: Option<&Tracker>,
        seqs: std::ops::Range<u64>,
    ) -> Row {
        let secs = cpu.wall_s.max(1e-9);
        let ops = if deliveries > 0 { deliveries } else { pushes }.max(1) as f64;
        let nproc = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let gw_cores = cpu.gateway_cpu_s.map(|c| c / secs);
        let gen_cores = cpu.generator_cpu_s / secs;
        let ours = gw_cores.unwrap_or(0.0) + gen_cores;
        let machine = cpu.machine_cpu_s.map_or(ours, |m| m / secs).max(ours);
        let others = machine - ours;
        let bound = if machine >= 0.85 * nproc {
            let gw = gw_cores.unwrap_or(0.0);
            let side = if others > gw.max(gen_cores) {
                "other processes use most"
            } else if gw > gen_cores * 1.2 {
                "gateway uses more"
            } else if gen_cores > gw * 1.2 {
                "generator uses more"
            } else {
                "gateway and generator alike"
            };
            format!("cpu-saturated ({side}; others {others:.2} cores)")
        } else {
            format!("not cpu-bound (others {others:.2} cores)")
        };
        Row {
            scenario: scenario.to_owned(),
            variant: variant.to_owned(),
            connections,
            secs,
            pushes,
            pushes_per_s: pushes as f64 / secs,
            deliveries,
            deliveries_per_s: deliveries as f64 / secs,
            latency: tracker.and_then(|t| t.latency.percentiles()),
            integrity: tracker
                .map(|t| t.integrity(seqs.start, seqs.end))
                .unwrap_or_default(),
            cpu,
            gateway_us_per_op: cpu.gateway_cpu_s.map(|c| c * 1e6 / ops),
            generator_us_per_op: cpu.generator_cpu_s * 1e6 / ops,
            gateway_cores: gw_cores,
            generator_cores: gen_cores,
            bound,
            extra: serde_json::json!({}),
        }
    }

    /// Sets the counts of a row built before they were known (the history
    /// scenarios judge their clients' logs after the measured span).
    pub fn counted(mut self, pushes: u64, deliveries: u64) -> Row {
        let ops = if deliveries > 0 { deliveries } else { pushes }.max(1) as f64;
        self.pushes = pushes;
        self.pushes_per_s = pushes as f64 / self.secs;
        self.deliveries = deliveries;
        self.deliveries_per_s = deliveries as f64 / self.secs;
        self.gateway_us_per_op = self.cpu.gateway_cpu_s.map(|c| c * 1e6 / ops);
        self.generator_us_per_op = self.cpu.generator_cpu_s * 1e6 / ops;
        self
    }

    /// Adds a scenario-specific figure.
    pub fn with(mut self, key: &str, value: impl Serialize) -> Row {
        if let serde_json::Value::Object(m) = &mut self.extra {
            m.insert(key.to_owned(), serde_json::json!(value));
        }
        self
    }

    /// Whether nothing was lost or duplicated.
    pub fn clean(&self) -> bool {
        self.integrity.lost == 0 && self.integrity.duplicates == 0
    }
}

fn rate(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// The table header.
pub fn header() -> String {
    format!(
        "{:<26} {:>6} {:>8} {:>8} {:>19} {:>9} {:>8} {:>8} {:>9}  {}",
        "scenario/variant",
        "conns",
        "push/s",
        "deliv/s",
        "p50/p99/max µs",
        "lost/dup",
        "gw µs/op",
        "gen µs/op",
        "gw+gen c",
        "notes"
    )
}

/// One table line.
pub fn line(r: &Row) -> String {
    let lat = r.latency.map_or("-".to_owned(), |p| {
        format!("{}/{}/{}", p.p50_us, p.p99_us, p.max_us)
    });
    let gw = r
        .gateway_us_per_op
        .map_or("-".into(), |v| format!("{v:.2}"));
    let cores = format!(
        "{}+{:.2}",
        r.gateway_cores.map_or("-".into(), |c| format!("{c:.2}")),
        r.generator_cores
    );
    let mut notes: Vec<String> = match &r.extra {
        serde_json::Value::Object(m) => m.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        _ => vec![],
    };
    if r.integrity.refused > 0 {
        notes.push(format!("refused={}", r.integrity.refused));
    }
    notes.push(r.bound.clone());
    format!(
        "{:<26} {:>6} {:>8} {:>8} {:>19} {:>9} {:>8} {:>8.2} {:>9}  {}",
        format!("{}/{}", r.scenario, r.variant),
        r.connections,
        rate(r.pushes_per_s),
        rate(r.deliveries_per_s),
        lat,
        format!("{}/{}", r.integrity.lost, r.integrity.duplicates),
        gw,
        r.generator_us_per_op,
        cores,
        notes.join(" ")
    )
}

/// The JSON line of a scenario; `gateway`: what was measured (`pushgate`,
/// or `floor` for the floor relay of `--floor`).
pub fn json_line(
    scenario: &str,
    gateway: &str,
    rows: &[Row],
    machine: &serde_json::Value,
) -> String {
    serde_json::json!({
        "scenario": scenario,
        "gateway": gateway,
        "ok": rows.iter().all(Row::clean),
        "machine": machine,
        "rows": rows,
    })
    .to_string()
}
