//! Command-line and environment configuration.
//!
//! Every option is a flag with an environment-variable twin (`--listen` and
//! `PUSHGATE_LISTEN`), so the same binary is driven by a shell, systemd or a
//! Kubernetes ConfigMap without a config file. Defaults are the ones a careful
//! operator would pick (see the README's configuration table); every timeout is
//! configurable so tests can run with short ones.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ipnet::IpNet;

/// pushgate: a real-time push gateway. Browsers hold WebSocket connections and
/// bind a user id; backends push to that uid over the legacy text port or REST.
#[derive(Debug, Clone, Parser)]
#[command(name = "pushgate", version, about, long_about = None)]
pub struct Config {
    /// Address for HTTP: the WebSocket upgrade (on `/` and `/ws`), the REST API,
    /// health and metrics.
    #[arg(long, env = "PUSHGATE_LISTEN", default_value = "0.0.0.0:1234")]
    pub listen: SocketAddr,

    /// Address of the legacy text push port (one JSON object per line, answered
    /// `ok` or `fail`). Loopback by default: the seed's 0.0.0.0 let anyone push.
    /// `0.0.0.0:5678` restores the seed's behaviour.
    #[arg(long, env = "PUSHGATE_TEXT_LISTEN", default_value = "127.0.0.1:5678")]
    pub text_listen: SocketAddr,

    /// Largest WebSocket message or frame a client may send, in bytes. Larger
    /// ones close the connection with 1009 before they are buffered.
    #[arg(long, env = "PUSHGATE_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Largest line accepted on the text port, in bytes (without the line end).
    /// A longer line answers `fail` and closes that connection.
    #[arg(long, env = "PUSHGATE_MAX_LINE_BYTES", default_value_t = 64 * 1024)]
    pub max_line_bytes: usize,

    /// Largest REST request body, in bytes; larger bodies answer 413.
    #[arg(long, env = "PUSHGATE_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Messages that may wait in one connection's outbound queue. A client whose
    /// queue is full is a slow consumer and is disconnected.
    #[arg(long, env = "PUSHGATE_QUEUE_LEN", default_value_t = 1024)]
    pub queue_len: usize,

    /// Bytes that may wait in one connection's outbound queue (whichever of
    /// `--queue-len` and this is reached first).
    #[arg(long, env = "PUSHGATE_QUEUE_BYTES", default_value_t = 1024 * 1024)]
    pub queue_bytes: usize,

    /// Time a new WebSocket client has to send its uid before it is closed.
    #[arg(long, env = "PUSHGATE_BIND_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub bind_timeout: Duration,

    /// Interval between WebSocket pings to each client.
    #[arg(long, env = "PUSHGATE_PING_INTERVAL", default_value = "25s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// Time a client has to answer a ping (any frame counts) before it is dropped.
    #[arg(long, env = "PUSHGATE_PONG_TIMEOUT", default_value = "8s", value_parser = parse_duration)]
    pub pong_timeout: Duration,

    /// Time one write to a WebSocket client may take before the client is
    /// treated as stuck and dropped.
    #[arg(long, env = "PUSHGATE_WRITE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Time a text-port connection may stay without sending a complete line
    /// or taking any of its answers before it is closed (persistent backends
    /// reconnect; a line that never ends, or a client that neither writes nor
    /// reads, does not hold a socket forever).
    #[arg(long, env = "PUSHGATE_TEXT_IDLE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub text_idle_timeout: Duration,

    /// Bytes of text-port answers that may wait for a client to read them
    /// (Workerman's send buffer was 1 MB). Lines keep being routed when it
    /// is full; that answer and every later one on the connection are
    /// dropped and counted (`pushgate_text_answers_dropped_total`), so a
    /// client that reads late still reads its first answers, in order.
    #[arg(long, env = "PUSHGATE_TEXT_ANSWER_BACKLOG", default_value_t = 1024 * 1024)]
    pub text_answer_backlog: usize,

    /// Time an HTTP client has to send a request's headers (slowloris guard).
    #[arg(long, env = "PUSHGATE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Time a REST request's body has to arrive once its headers have; past
    /// it the request answers 408 and the connection closes (a caller that
    /// declares a body and never sends it does not hold a connection).
    #[arg(long, env = "PUSHGATE_BODY_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,

    /// Longest graceful shutdown: after SIGTERM/SIGINT, whatever is still open
    /// then is closed at once and the process exits 0. At most 20 s by default
    /// so it fits Kubernetes' default 30 s grace with a preStop pause.
    #[arg(long, env = "PUSHGATE_SHUTDOWN_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Slowest pace of WebSocket closes during a drain, per second (0: all at
    /// once). Spreading them keeps a rolling deploy from making every client
    /// reconnect in the same second. The drain has three quarters of
    /// `--shutdown-timeout` (T) for the N connections open when it begins and
    /// closes one every min(1/rate, T/N): at this rate when they fit in T,
    /// faster and still evenly when they would not.
    #[arg(long, env = "PUSHGATE_DRAIN_RATE", default_value_t = 1000)]
    pub drain_rate: u32,

    /// Log format.
    #[arg(long, env = "PUSHGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Serve the REST API (push, broadcast, disconnect, online queries) and
    /// `/metrics` only on this separate address; the public `--listen` then
    /// serves WebSocket and health alone. Unset: everything on `--listen`.
    #[arg(long, env = "PUSHGATE_API_LISTEN")]
    pub api_listen: Option<SocketAddr>,

    /// Secure mode with HS256 tokens: clients present a JWT (`?token=` on the
    /// upgrade, or as the first text frame) and are bound to its `sub`.
    #[arg(
        long,
        env = "PUSHGATE_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "jwt_public_key"
    )]
    pub jwt_secret: Option<Secret>,

    /// Secure mode with RS256 or ES256 tokens: a PEM file with the public key.
    #[arg(long, env = "PUSHGATE_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// Required `aud` claim (secure mode).
    #[arg(long, env = "PUSHGATE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Required `iss` claim (secure mode).
    #[arg(long, env = "PUSHGATE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Clock skew allowed when checking `exp` and `nbf`.
    #[arg(long, env = "PUSHGATE_JWT_LEEWAY", default_value = "5s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,

    /// API keys for the REST API, sent as `Authorization: Bearer KEY`.
    /// Repeat the flag (or separate with commas in the variable) to accept
    /// several at once while rotating. Unset: only local callers may push.
    #[arg(
        long = "api-key",
        env = "PUSHGATE_API_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub api_keys: Vec<Secret>,

    /// A file of API keys, one per line (blank lines and `#` comments
    /// ignored), added to `--api-key`.
    #[arg(long, env = "PUSHGATE_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Reverse proxies (CIDR list) whose `Forwarded` / `X-Forwarded-For`
    /// headers are believed for the client address. A request through a proxy
    /// is never a local caller.
    #[arg(long, env = "PUSHGATE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpNet>,

    /// Peers (CIDR list) allowed on the text port; others are closed at
    /// accept. Unset: every peer that can reach the port.
    #[arg(long, env = "PUSHGATE_TEXT_ALLOW", value_delimiter = ',')]
    pub text_allow: Vec<IpNet>,

    /// Origins (`scheme://host[:port]`) allowed to open a WebSocket; others
    /// get 403. Requests without `Origin` (non-browser clients) pass. Unset:
    /// any origin.
    #[arg(long, env = "PUSHGATE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Connections one uid may hold; binding one more closes its oldest (4002).
    #[arg(long, env = "PUSHGATE_MAX_CONNS_PER_UID", default_value_t = 32)]
    pub max_conns_per_uid: usize,

    /// WebSocket connections the gateway holds at most; beyond it upgrades
    /// answer 503. 0: derived from the open-file limit, leaving headroom.
    #[arg(long, env = "PUSHGATE_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// WebSocket connections one client address may hold. 0: no limit (many
    /// clients share one NAT address).
    #[arg(long, env = "PUSHGATE_MAX_CONNS_PER_IP", default_value_t = 0)]
    pub max_conns_per_ip: usize,

    /// WebSocket upgrades one client address may make per second. 0: no limit.
    #[arg(long, env = "PUSHGATE_MAX_CONNECTS_PER_IP", default_value_t = 0)]
    pub max_connects_per_ip: u32,

    /// Cluster mode: nodes share routing through this Redis
    /// (`redis://[:password@]host:port[/db]`). Unset: a single node.
    #[arg(long, env = "PUSHGATE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<Secret>,

    /// Cluster mode through Redis Sentinel: sentinel addresses (`host:port`,
    /// comma-separated); the current master is asked of them at every
    /// (re)connection, so a failover is followed.
    #[arg(
        long,
        env = "PUSHGATE_REDIS_SENTINELS",
        value_delimiter = ',',
        conflicts_with = "redis_url"
    )]
    pub redis_sentinels: Vec<String>,

    /// The master name the sentinels monitor.
    #[arg(
        long,
        env = "PUSHGATE_REDIS_SENTINEL_MASTER",
        default_value = "mymaster"
    )]
    pub redis_sentinel_master: String,

    /// Prefix of every Redis key and channel, so deployments can share a Redis.
    #[arg(long, env = "PUSHGATE_REDIS_PREFIX", default_value = "pushgate:")]
    pub redis_prefix: String,

    /// This node's id on the bus. Default: `POD_NAME` when set, else the host
    /// name with the process id and a random suffix.
    #[arg(long, env = "PUSHGATE_NODE_ID")]
    pub node_id: Option<String>,

    /// Longest wait for Redis on a push; past it the push answers `fail`/503.
    #[arg(long, env = "PUSHGATE_REDIS_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub redis_timeout: Duration,

    /// How often a node checks, by publishing to its own channel, that its
    /// subscription still receives.
    #[arg(long, env = "PUSHGATE_REDIS_PROBE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub redis_probe_interval: Duration,

    /// `/readyz` answers 503 while Redis is unreachable (cluster mode), taking
    /// the node out of rotation instead of serving local clients only.
    #[arg(long, env = "PUSHGATE_REQUIRE_REDIS")]
    pub require_redis: bool,
}

/// A secret value (JWT secret, API key): never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::str::FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Secret(s.trim().to_owned()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Parses `10s`, `500ms`, `2m` (humantime syntax); a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

impl Config {
    /// This node's id: `--node-id`, else `POD_NAME`, else host name, process
    /// id and a random suffix (unique even for two processes on one host).
    pub fn node_id(&self) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        if let Ok(pod) = std::env::var("POD_NAME")
            && !pod.is_empty()
        {
            return pod;
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "node".to_owned());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("{host}-{}-{nanos:x}", std::process::id())
    }

    /// Checks relations between options that clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("--max-message-bytes", self.max_message_bytes),
            ("--max-line-bytes", self.max_line_bytes),
            ("--max-body-bytes", self.max_body_bytes),
            ("--queue-len", self.queue_len),
            ("--queue-bytes", self.queue_bytes),
            ("--text-answer-backlog", self.text_answer_backlog),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        if self.max_conns_per_uid == 0 {
            return Err("--max-conns-per-uid must be greater than zero".into());
        }
        if self.redis_probe_interval.is_zero() || self.redis_timeout.is_zero() {
            return Err(
                "--redis-probe-interval and --redis-timeout must be greater than zero".into(),
            );
        }
        if self.require_redis && self.redis_url.is_none() && self.redis_sentinels.is_empty() {
            return Err("--require-redis needs --redis-url or --redis-sentinels".into());
        }
        if self.ping_interval.is_zero() || self.pong_timeout.is_zero() {
            return Err("--ping-interval and --pong-timeout must be greater than zero".into());
        }
        Ok(())
    }

    /// A configuration with every default, as if no flag or variable was set.
    /// Listeners default to loopback port 0, for tests and embedding.
    pub fn for_tests() -> Self {
        let mut config = Config::parse_from(["pushgate"]);
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.text_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn secrets_are_never_printed_and_never_empty() {
        let c = Config::parse_from(["pushgate", "--api-key", "k1,k2", "--jwt-secret", "hush"]);
        assert_eq!(c.api_keys.len(), 2);
        let printed = format!("{c:?}");
        assert!(
            !printed.contains("hush") && !printed.contains("k1"),
            "{printed}"
        );
        assert!(Config::try_parse_from(["pushgate", "--api-key", " "]).is_err());
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::parse_from(["pushgate"]);
        assert_eq!(c.listen, "0.0.0.0:1234".parse().unwrap());
        assert_eq!(c.text_listen, "127.0.0.1:5678".parse().unwrap());
        assert!(c.shutdown_timeout <= Duration::from_secs(20));
        assert_eq!(c.body_read_timeout, Duration::from_secs(10));
        assert!(c.validate().is_ok());
    }
}
