//! The configuration, one group per part of the gateway.
//!
//! Each group is a `#[command(flatten)]` struct, and each part receives only
//! its own group. Flag and environment names are those of the flat
//! configuration this replaced (pinned by the flag snapshot in `cli`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;

use super::{
    ClientIpHeader, ListenAddr, LogFormat, Secret, parse_bool, parse_duration, parse_history_ttl,
    parse_origin,
};

/// The WebSocket front end: message size, the bind, ping and write deadlines, allowed origins.
#[derive(Debug, Clone, Args)]
pub struct WsConfig {
    /// Largest WebSocket message or frame a client may send, in bytes. Larger
    /// ones close the connection with 1009 before they are buffered.
    #[arg(long, env = "PUSHGATE_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

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

    /// Origins (`scheme://host[:port]`) allowed to open a WebSocket or an SSE
    /// stream, and answered CORS for `/sse` and the client files; others get
    /// 403. Requests without `Origin` (non-browser clients) pass. Unset: any
    /// origin.
    #[arg(long, env = "PUSHGATE_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub allowed_origins: Vec<String>,
}

/// The legacy text port: where it listens, who may connect, line and answer bounds, idle deadline.
#[derive(Debug, Clone, Args)]
pub struct TextConfig {
    /// Address of the legacy text push port (one JSON object per line, answered
    /// `ok` or `fail`). Loopback by default: the seed's 0.0.0.0 let anyone push.
    /// `0.0.0.0:5678` restores the seed's behaviour.
    #[arg(long, env = "PUSHGATE_TEXT_LISTEN", default_value = "127.0.0.1:5678")]
    pub text_listen: ListenAddr,

    /// Largest line accepted on the text port, in bytes (without the line end).
    /// A longer line answers `fail` and closes that connection.
    #[arg(long, env = "PUSHGATE_MAX_LINE_BYTES", default_value_t = super::DEFAULT_MAX_LINE_BYTES)]
    pub max_line_bytes: usize,

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

    /// Peers (CIDR list) allowed on the text port; others are closed at
    /// accept. Unset: every peer that can reach the port.
    #[arg(long, env = "PUSHGATE_TEXT_ALLOW", value_delimiter = ',')]
    pub text_allow: Vec<IpNet>,
}

/// The HTTP listeners and what every request is held to: body and header deadlines, body size,
/// who a client is behind a proxy, the access log.
#[derive(Debug, Clone, Args)]
pub struct HttpConfig {
    /// The public listener (`host:port`; a host name is resolved at start and
    /// its first address bound): the WebSocket upgrade (on `/` and `/ws`) and
    /// health. The REST API is served here too only when API keys are
    /// configured, and then every call needs a key; `/metrics` never is.
    #[arg(long, env = "PUSHGATE_LISTEN", default_value = "0.0.0.0:1234")]
    pub listen: ListenAddr,

    /// The API listener: the REST API (push, broadcast, disconnect, online
    /// queries), `/metrics` and health. Without API keys, REST is served here
    /// unkeyed only when this is a loopback address; on any other address it
    /// answers 403 until keys are configured (metrics and health stay open).
    /// Must differ from `--listen`.
    #[arg(long, env = "PUSHGATE_API_LISTEN", default_value = "127.0.0.1:1235")]
    pub api_listen: ListenAddr,

    /// Largest REST request body, in bytes; larger bodies answer 413.
    #[arg(long, env = "PUSHGATE_MAX_BODY_BYTES", default_value_t = super::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Time an HTTP client has to send a request's headers (slowloris guard).
    #[arg(long, env = "PUSHGATE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Time a REST request's body has to arrive once its headers have; past
    /// it the request answers 408 and the connection closes (a caller that
    /// declares a body and never sends it does not hold a connection).
    #[arg(long, env = "PUSHGATE_BODY_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,

    /// Reverse proxies (CIDR list) whose `--client-ip-header` is believed for
    /// the client address (per-address caps). Headers from other peers are
    /// ignored.
    #[arg(long, env = "PUSHGATE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpNet>,

    /// The one header a trusted proxy writes the client address into. Only
    /// this header is read, and only from a peer in `--trusted-proxies`; a
    /// header of another kind is ignored, since the client could have written
    /// it. `X-Forwarded-For` and `Forwarded` are walked from the right: the
    /// first hop that is not a trusted proxy is the client.
    #[arg(
        long,
        env = "PUSHGATE_CLIENT_IP_HEADER",
        value_enum,
        default_value_t = ClientIpHeader::XForwardedFor
    )]
    pub client_ip_header: ClientIpHeader,

    /// One log line per HTTP request (target `pushgate::access`): method,
    /// route template, status, duration and client address; never the query
    /// string, which may carry a token.
    #[arg(long, env = "PUSHGATE_ACCESS_LOG", value_parser = parse_bool, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true")]
    pub access_log: bool,
}

/// Client tokens (JWT) and REST API keys.
#[derive(Debug, Clone, Args)]
pub struct AuthConfig {
    /// Secure mode with HS256 tokens: clients present a JWT (`?token=` on the
    /// upgrade, or as the first text frame) and are bound to its `sub`. At
    /// least 32 bytes (RFC 7518 §3.2).
    #[arg(
        long,
        env = "PUSHGATE_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "jwt_public_key"
    )]
    pub jwt_secret: Option<Secret>,

    /// Secure mode with RS256 or ES256 tokens: a PEM file with the public key.
    /// Re-read on SIGHUP.
    #[arg(long, env = "PUSHGATE_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// Secure mode with HS256 tokens, the secret read from this file (leading
    /// and trailing whitespace ignored) and re-read on SIGHUP: Kubernetes
    /// mounts Secrets as files, and updates them in place.
    #[arg(
        long,
        env = "PUSHGATE_JWT_SECRET_FILE",
        conflicts_with_all = ["jwt_secret", "jwt_public_key"]
    )]
    pub jwt_secret_file: Option<PathBuf>,

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
    /// several at once while rotating. Unset: REST is served only on a
    /// loopback `--api-listen`.
    #[arg(
        long = "api-key",
        env = "PUSHGATE_API_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub api_keys: Vec<Secret>,

    /// A file of API keys, one per line, added to `--api-key`: each line,
    /// trimmed, is a key; blank lines and lines starting with `#` are
    /// skipped (a `#` later in a line is part of the key).
    #[arg(long, env = "PUSHGATE_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
}

/// Connection caps and per-connection queue bounds.
#[derive(Debug, Clone, Args)]
pub struct LimitsConfig {
    /// Messages that may wait in one connection's outbound queue. A client whose
    /// queue is full is a slow consumer and is disconnected. As many as one
    /// `POST /push/batch` may carry, so a burst to one uid never overflows a
    /// client that reads: the byte bound is what stops a slow one.
    #[arg(long, env = "PUSHGATE_QUEUE_LEN", default_value_t = 10_000)]
    pub queue_len: usize,

    /// Bytes that may wait in one connection's outbound queue (whichever of
    /// `--queue-len` and this is reached first).
    #[arg(long, env = "PUSHGATE_QUEUE_BYTES", default_value_t = 1024 * 1024)]
    pub queue_bytes: usize,

    /// Connections one uid may hold; binding one more closes its oldest (4002).
    /// 0: no limit, like every other `--max-*` flag.
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
}

/// Per-uid history: off by default (the seed kept none); `--history` turns it
/// on with the bounds below.
#[derive(Debug, Clone, Args)]
pub struct HistoryConfig {
    /// Keep each uid's recent pushes, with offsets, so a v2 client that
    /// reconnects resumes without loss (in memory on a single node, in Redis
    /// in cluster mode). Off: nothing is stored and nothing is paid.
    #[arg(long, env = "PUSHGATE_HISTORY", value_parser = parse_bool, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true")]
    pub history: bool,

    /// Messages kept per uid; the oldest go first.
    #[arg(long, env = "PUSHGATE_HISTORY_SIZE", default_value_t = 100)]
    pub history_size: usize,

    /// How long a message is kept (at most 30 days); a uid's stream with no
    /// push for this long is dropped, and its next push starts a new epoch.
    #[arg(long, env = "PUSHGATE_HISTORY_TTL", default_value = "5m", value_parser = parse_history_ttl)]
    pub history_ttl: Duration,

    /// Single node: bytes all uids' history may hold together (payloads and
    /// bookkeeping); past it the oldest messages of any uid go first.
    #[arg(long, env = "PUSHGATE_HISTORY_MEMORY", default_value_t = 256 * 1024 * 1024)]
    pub history_memory: usize,
}

impl HistoryConfig {
    /// The bounds, for the store; `None` when history is off.
    pub fn limits(&self) -> Option<crate::store::HistoryLimits> {
        self.history.then_some(crate::store::HistoryLimits {
            size: self.history_size,
            ttl: self.history_ttl,
            memory: self.history_memory,
        })
    }
}

/// The broker that shares routing between nodes (Redis today; none: a single node).
#[derive(Debug, Clone, Args)]
pub struct BrokerConfig {
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

    /// Prefix of every Redis key and channel, so deployments can share a
    /// Redis: letters, digits, `.`, `_`, `-`, then one `:` (no prefix may
    /// start another).
    #[arg(long, env = "PUSHGATE_REDIS_PREFIX", default_value = "pushgate:")]
    pub redis_prefix: String,

    /// This node's id on the bus: 1 to 128 letters, digits, `.`, `_`, `:`,
    /// `-`, unique in the cluster. Default: `POD_NAME` when set, else the host
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
    #[arg(long, env = "PUSHGATE_REQUIRE_REDIS", value_parser = parse_bool, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true")]
    pub require_redis: bool,
}

/// How the process logs.
#[derive(Debug, Clone, Args)]
pub struct LogConfig {
    /// Log format.
    #[arg(long, env = "PUSHGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How a graceful shutdown is paced and bounded.
#[derive(Debug, Clone, Args)]
pub struct ShutdownConfig {
    /// Longest graceful shutdown: after SIGTERM/SIGINT, whatever is still open
    /// then is closed at once and the process exits 0. The default fits
    /// Kubernetes' default 30 s grace with a preStop pause.
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
}
