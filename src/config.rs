//! Command-line and environment configuration.
//!
//! Every option is a flag with an environment-variable twin (`--listen` and
//! `PUSHGATE_LISTEN`), so the same binary is driven by a shell, systemd or a
//! Kubernetes ConfigMap without a config file. Defaults are the ones a careful
//! operator would pick (see the README's configuration table); every timeout is
//! configurable so tests can run with short ones.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ipnet::IpNet;

pub use crate::net::client_ip::ClientIpHeader;

/// pushgate: a real-time push gateway. Browsers hold WebSocket connections and
/// bind a user id; backends push to that uid over the legacy text port or REST.
#[derive(Debug, Clone, Parser)]
#[command(name = "pushgate", version, about, long_about = None)]
pub struct Config {
    /// The public listener (`host:port`; a host name is resolved at start and
    /// its first address bound): the WebSocket upgrade (on `/` and `/ws`) and
    /// health. The REST API is served here too only when API keys are
    /// configured, and then every call needs a key; `/metrics` never is.
    #[arg(long, env = "PUSHGATE_LISTEN", default_value = "0.0.0.0:1234")]
    pub listen: ListenAddr,

    /// Address of the legacy text push port (one JSON object per line, answered
    /// `ok` or `fail`). Loopback by default: the seed's 0.0.0.0 let anyone push.
    /// `0.0.0.0:5678` restores the seed's behaviour.
    #[arg(long, env = "PUSHGATE_TEXT_LISTEN", default_value = "127.0.0.1:5678")]
    pub text_listen: ListenAddr,

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

    /// The API listener: the REST API (push, broadcast, disconnect, online
    /// queries), `/metrics` and health. Without API keys, REST is served here
    /// unkeyed only when this is a loopback address; on any other address it
    /// answers 403 until keys are configured (metrics and health stay open).
    /// Must differ from `--listen`.
    #[arg(long, env = "PUSHGATE_API_LISTEN", default_value = "127.0.0.1:1235")]
    pub api_listen: ListenAddr,

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

    /// A file of API keys, one per line (blank lines and `#` comments
    /// ignored), added to `--api-key`.
    #[arg(long, env = "PUSHGATE_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

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
    #[arg(long, env = "PUSHGATE_REQUIRE_REDIS", value_parser = boolish(), num_args = 0..=1,
          default_value = "false", default_missing_value = "true")]
    pub require_redis: bool,

    /// One log line per HTTP request (target `pushgate::access`): method,
    /// route template, status, duration and client address; never the query
    /// string, which may carry a token.
    #[arg(long, env = "PUSHGATE_ACCESS_LOG", value_parser = boolish(), num_args = 0..=1,
          default_value = "false", default_missing_value = "true")]
    pub access_log: bool,
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

/// A listening address as given: an IP literal with its port
/// (`0.0.0.0:1234`, `[::1]:1235`) or a host name with its port
/// (`localhost:1234`), resolved by [`ListenAddr::resolve`] at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    host: String,
    port: u16,
}

impl ListenAddr {
    /// Resolves the host (the system resolver, through tokio) and returns its
    /// first address. Errors: the name does not resolve, or to nothing.
    pub async fn resolve(&self) -> std::io::Result<SocketAddr> {
        if let Ok(ip) = self.host.parse() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .next()
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{} resolves to no address", self.host),
                )
            })
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> Self {
        ListenAddr {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(addr.into());
        }
        let bad = || format!("{s:?} is not host:port");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse().map_err(|_| bad())?;
        // A bracket or a second colon means an IPv6 literal that did not parse.
        if host.is_empty() || host.contains([':', '[', ']', '/', ' ']) {
            return Err(bad());
        }
        Ok(ListenAddr {
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, self.port).fmt(f),
            Err(_) => write!(f, "{}:{}", self.host, self.port),
        }
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

/// The longest duration any option accepts: 1,000 years (365,250 days).
/// Far beyond any useful timeout (`100000d` still means "never"), and far
/// enough below the clock's limits that adding it to the current time can
/// never overflow: every deadline built from the configuration is safe.
pub const MAX_DURATION: Duration = Duration::from_secs(365_250 * 86_400);

/// `text` trimmed, cut to 64 characters, with every character outside the
/// node id alphabet (`[A-Za-z0-9._-]`) replaced by `-`.
fn node_id_part(text: &str) -> String {
    text.trim()
        .chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '-',
        })
        .take(64)
        .collect()
}

/// The parser of every boolean option: `--flag` alone means true, and a value
/// (`--flag=false`, or the environment twin) may be spelled `1/0`,
/// `true/false`, `yes/no`, `on/off`, `y/n`, `t/f`, in any case — as
/// systemd, Compose and Kubernetes manifests write them.
fn boolish() -> clap::builder::BoolishValueParser {
    clap::builder::BoolishValueParser::new()
}

/// Parses `10s`, `500ms`, `2m` (humantime syntax); a bare number means seconds.
///
/// Errors: not a duration, or longer than [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))?
        }
    };
    if d > MAX_DURATION {
        return Err(format!(
            "duration {s:?} is longer than the longest allowed, 1000 years (365250d)"
        ));
    }
    Ok(d)
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
        // A host name outside the node id alphabet (or a long one) must not
        // keep a node from starting when no id was asked for.
        let host = node_id_part(
            &std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_else(|_| "node".to_owned()),
        );
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
        if self.redis_probe_interval.is_zero() || self.redis_timeout.is_zero() {
            return Err(
                "--redis-probe-interval and --redis-timeout must be greater than zero".into(),
            );
        }
        let clustered = self.redis_url.is_some() || !self.redis_sentinels.is_empty();
        if self.require_redis && !clustered {
            return Err("--require-redis needs --redis-url or --redis-sentinels".into());
        }
        if clustered {
            crate::cluster::wire::check_node_id(&self.node_id()).map_err(|e| e.to_string())?;
            crate::cluster::wire::check_prefix(&self.redis_prefix).map_err(|e| e.to_string())?;
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
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        config.listen = loopback.into();
        config.text_listen = loopback.into();
        config.api_listen = loopback.into();
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
    fn durations_past_a_thousand_years_are_refused() {
        assert_eq!(parse_duration("365250d"), Ok(MAX_DURATION));
        assert!(parse_duration("100000d").is_ok());
        for huge in ["365251d", "10000000000000000s", "18446744073709551615"] {
            let err = parse_duration(huge).unwrap_err();
            assert!(err.contains("longer than the longest allowed"), "{err}");
        }
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
    fn a_default_node_id_from_any_host_name_is_a_valid_one() {
        for host in ["web-1.example\n", "hôst name", &"h".repeat(300)] {
            let id = format!("{}-1-ff", node_id_part(host));
            assert_eq!(crate::cluster::wire::check_node_id(&id), Ok(()), "{host:?}");
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::parse_from(["pushgate"]);
        assert_eq!(c.listen.to_string(), "0.0.0.0:1234");
        assert_eq!(c.text_listen.to_string(), "127.0.0.1:5678");
        assert_eq!(c.api_listen.to_string(), "127.0.0.1:1235");
        assert_eq!(c.client_ip_header, ClientIpHeader::XForwardedFor);
        assert_eq!(c.max_conns_per_uid, 32);
        assert!(c.shutdown_timeout <= Duration::from_secs(20));
        assert_eq!(c.body_read_timeout, Duration::from_secs(10));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn listen_addresses_take_ip_literals_and_host_names_with_a_port() {
        for ok in [
            "0.0.0.0:1234",
            "[::1]:1235",
            "localhost:1234",
            "gw.internal:80",
        ] {
            let a: ListenAddr = ok.parse().unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(a.to_string(), ok);
        }
        for bad in [
            "localhost",
            "1234",
            ":1234",
            "host:port",
            "::1:99999",
            "[::1]",
        ] {
            assert!(bad.parse::<ListenAddr>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_host_name_resolves_to_its_first_address() {
        let a: ListenAddr = "localhost:1234".parse().unwrap();
        let addr = a.resolve().await.unwrap();
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_eq!(addr.port(), 1234);
    }

    #[test]
    fn zero_conns_per_uid_means_no_limit_like_every_other_max() {
        let c = Config::parse_from(["pushgate", "--max-conns-per-uid", "0"]);
        assert_eq!(c.validate(), Ok(()));
    }
}
