//! The command line: what to measure ([`Scenario`]) and how ([`Args`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use pushgate::config;

/// Load generator and benchmark for pushgate.
#[derive(Debug, Parser)]
#[command(name = "pushgate-bench", version, about)]
pub struct Args {
    /// What to measure.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// The gateway's public address (WebSocket).
    #[arg(long, default_value_t = loopback(config::DEFAULT_WS_PORT))]
    pub http: SocketAddr,
    /// The gateway's API listener (REST, `/stats`, `/metrics`; its
    /// `--api-listen`). For the floor relay, give its `--http` address.
    #[arg(long, default_value_t = loopback(config::DEFAULT_API_PORT))]
    pub api: SocketAddr,
    /// The gateway's text port.
    #[arg(long, default_value_t = loopback(config::DEFAULT_TEXT_PORT))]
    pub text: SocketAddr,
    /// Gateway process id(s), for CPU and RSS (node A then node B in cluster).
    #[arg(long = "gateway-pid")]
    pub gateway_pid: Vec<u32>,
    /// Cluster scenario: HTTP address of node B, where the clients connect
    /// (pushes go to node A at --text).
    #[arg(long = "node-b-http", alias = "redis-http")]
    pub node_b_http: Option<SocketAddr>,
    /// Cluster scenario: API listener of node B (its `/stats` counts the
    /// clients).
    #[arg(long = "node-b-api")]
    pub node_b_api: Option<SocketAddr>,
    /// WebSocket connections (a comma-separated list of steps for idle and
    /// growth). Default depends on the scenario.
    #[arg(long, value_delimiter = ',')]
    pub connections: Vec<usize>,
    /// Length of each measured phase.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Pushes per second: latency and cluster (default 10000),
    /// rolling-deploy (default 300).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Pushing connections or tasks. Default depends on the scenario.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// push-http: also measure `POST /push/batch` with this many pushes per
    /// request (to distinct receivers while ≤ --connections); 0: not.
    /// Default: 0 for push-http alone, 100 with `all`.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Pushing connections of the batch variant of push-http.
    #[arg(long, default_value_t = 4)]
    pub batch_concurrency: usize,
    /// Lines in flight per pipelined text connection; broadcasts not yet
    /// fully delivered (at most 64).
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// WebSocket handshakes in flight while connecting clients.
    #[arg(long, default_value_t = 128)]
    pub parallel_connects: usize,
    /// Start the gateway (and for cluster, redis-server and two nodes) on
    /// free loopback ports; a fresh gateway per scenario. Killed on exit.
    #[arg(long)]
    pub spawn: bool,
    /// With --spawn: start the floor relay (a hidden mode of this binary,
    /// see floor.rs) instead of pushgate — a relay of the same wire
    /// contract with next to no user-space work, the reference for what
    /// the machine allows for each traffic pattern. Not for cluster.
    #[arg(long)]
    pub floor: bool,
    /// The pushgate binary for --spawn (default: beside this executable).
    #[arg(long)]
    pub gateway_bin: Option<PathBuf>,
    /// Extra flags for spawned gateways, every node of every scenario
    /// (repeat, e.g. --gateway-arg=--queue-len=4096; --gateway-arg=--history
    /// measures any scenario with history on).
    #[arg(long = "gateway-arg", allow_hyphen_values = true)]
    pub gateway_args: Vec<String>,
    /// resume: stop node B with SIGKILL (no drain) instead of SIGTERM.
    #[arg(long)]
    pub resume_kill: bool,
    /// rolling-deploy: after the rolling deploy, also SIGKILL one node (no
    /// drain), push on for --duration, and start it again.
    #[arg(long)]
    pub crash: bool,
    /// resume: pushes through node A while node B is down (default: one
    /// per client).
    #[arg(long)]
    pub pushes: Option<usize>,
    /// rolling-deploy: uids the clients bind (client i has uid i % uids).
    #[arg(long, default_value_t = 50)]
    pub uids: usize,
    /// history-memory: messages stored.
    #[arg(long, default_value_t = 100_000)]
    pub messages: usize,
    /// history-memory: bytes of each message's payload (the text-port line).
    #[arg(long, default_value_t = 200)]
    pub payload_bytes: usize,
    /// history-memory: messages per uid (keep it within --history-size).
    #[arg(long, default_value_t = 50)]
    pub per_uid: usize,
    /// Print only the JSON lines.
    #[arg(long)]
    pub json: bool,
    /// WebSocket clients one bench process holds; more are spread over
    /// worker processes. Default: this process's open-file limit less 300.
    #[arg(long)]
    pub clients_per_process: Option<usize>,
    /// WebSocket clients per loopback source address (127.0.0.1, then
    /// 127.0.0.2, …). Past ~10k on one address the kernel's search for a
    /// free ephemeral port makes each connect several times dearer.
    #[arg(long, default_value_t = 10_000)]
    pub clients_per_source: usize,
    /// Worker mode: the inherited memfd of the shared tracker.
    #[arg(long, hide = true, default_value_t = -1)]
    pub shm_fd: i32,
    /// Worker mode: the uid prefix of its clients.
    #[arg(long, hide = true, default_value = "")]
    pub worker_prefix: String,
}

/// `127.0.0.1:port`: a gateway on this host at one of its default ports.
fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Args {
    /// WebSocket clients this process holds before starting workers.
    pub fn per_process(&self) -> usize {
        self.clients_per_process.unwrap_or_else(|| {
            let files = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
            usize::try_from(files.saturating_sub(300))
                .unwrap_or(usize::MAX)
                .max(1)
        })
    }
}

/// A benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Idle,
    PushText,
    PushHttp,
    Broadcast,
    Latency,
    Growth,
    Cluster,
    /// Protocol v2 clients resume after their node restarts (two nodes,
    /// Redis history; --spawn only).
    Resume,
    /// Three nodes restarted in turn under a push stream, v2 clients
    /// resuming (Redis history; --spawn only).
    RollingDeploy,
    /// Memory per retained message on a single node with history.
    HistoryMemory,
    /// Every scenario in turn (not resume, rolling-deploy, history-memory:
    /// they measure history, see BENCHMARKS.md).
    All,
    /// Internal: a worker process holding clients (see worker.rs).
    #[value(hide = true)]
    Worker,
    /// Internal: the floor relay, the reference gateway of `--floor` (see
    /// floor.rs).
    #[value(hide = true)]
    FloorRelay,
}

pub const ALL: [Scenario; 7] = [
    Scenario::Idle,
    Scenario::PushText,
    Scenario::PushHttp,
    Scenario::Broadcast,
    Scenario::Latency,
    Scenario::Growth,
    Scenario::Cluster,
];

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Idle => "idle",
            Scenario::PushText => "push-text",
            Scenario::PushHttp => "push-http",
            Scenario::Broadcast => "broadcast",
            Scenario::Latency => "latency",
            Scenario::Growth => "growth",
            Scenario::Cluster => "cluster",
            Scenario::Resume => "resume",
            Scenario::RollingDeploy => "rolling-deploy",
            Scenario::HistoryMemory => "history-memory",
            Scenario::All => "all",
            Scenario::Worker => "worker",
            Scenario::FloorRelay => "floor-relay",
        }
    }

    pub fn default_connections(self, max: usize) -> Vec<usize> {
        let steps = match self {
            Scenario::Idle => vec![1000, 10_000],
            Scenario::Broadcast => vec![10_000],
            Scenario::Growth => vec![1000, 2000, 5000, 10_000, 19_000],
            Scenario::Resume => vec![10_000],
            _ => vec![1000],
        };
        let mut out: Vec<usize> = steps.into_iter().map(|n| n.min(max)).collect();
        out.dedup();
        out
    }
}
