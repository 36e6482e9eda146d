//! Command-line and environment configuration.
//!
//! Every option is a flag with an environment-variable twin (`--listen` and
//! `PUSHGATE_LISTEN`), so the same binary is driven by a shell, systemd or a
//! Kubernetes ConfigMap without a config file. Defaults are the ones a careful
//! operator would pick (see the README's configuration table); every timeout is
//! configurable so tests can run with short ones.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

pub use crate::net::client_ip::ClientIpHeader;
pub use groups::{
    AuthConfig, BrokerConfig, HistoryConfig, HttpConfig, LimitsConfig, LogConfig, ShutdownConfig,
    TextConfig, WsConfig,
};

mod groups;
mod parse;

pub use parse::{
    MAX_HISTORY_TTL, normalize_origin, parse_bool, parse_duration, parse_history_ttl, parse_origin,
};

/// pushgate: a real-time push gateway. Browsers hold WebSocket connections and
/// bind a user id; backends push to that uid over the legacy text port or REST.
#[derive(Debug, Clone, Parser)]
#[command(name = "pushgate", version, about, long_about = None)]
pub struct Config {
    /// The HTTP listeners and what every request is held to: body and header deadlines,
    /// body size, who a client is behind a proxy, the access log.
    #[command(flatten)]
    pub http: HttpConfig,

    /// The legacy text port: where it listens, who may connect, line and answer bounds,
    /// idle deadline.
    #[command(flatten)]
    pub text: TextConfig,

    /// The WebSocket front end: message size, the bind, ping and write deadlines, allowed origins.
    #[command(flatten)]
    pub websocket: WsConfig,

    /// Client tokens (JWT) and REST API keys.
    #[command(flatten)]
    pub auth: AuthConfig,

    /// Connection caps and per-connection queue bounds.
    #[command(flatten)]
    pub limits: LimitsConfig,

    /// The broker that shares routing between nodes (Redis today; none: a single node).
    #[command(flatten)]
    pub broker: BrokerConfig,

    /// Per-uid history and its bounds (off by default).
    #[command(flatten)]
    pub history: HistoryConfig,

    /// How a graceful shutdown is paced and bounded.
    #[command(flatten)]
    pub shutdown: ShutdownConfig,

    /// How the process logs.
    #[command(flatten)]
    pub log: LogConfig,
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

/// Port of `--listen`'s default (`0.0.0.0:1234`, push.php's WebSocket
/// port). Published for tools that reach a gateway started with defaults
/// (the bench); the flag's default is pinned to it by a test.
pub const DEFAULT_WS_PORT: u16 = 1234;

/// Port of `--api-listen`'s default (`127.0.0.1:1235`); pinned like
/// [`DEFAULT_WS_PORT`].
pub const DEFAULT_API_PORT: u16 = 1235;

/// Port of `--text-listen`'s default (`127.0.0.1:5678`, push.php's text
/// port); pinned like [`DEFAULT_WS_PORT`].
pub const DEFAULT_TEXT_PORT: u16 = 5678;

/// Default of `--max-line-bytes`: the longest text-port line, in bytes
/// (64 KiB), without the line end.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;

/// Default of `--max-body-bytes`: the largest REST request body, in bytes
/// (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

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

/// A configuration clap accepted but the gateway cannot run with. The
/// messages are the ones operators saw before this was a type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A size or length bound (named by its flag) is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// `--redis-probe-interval` or `--redis-timeout` is zero.
    #[error("--redis-probe-interval and --redis-timeout must be greater than zero")]
    ZeroRedisInterval,
    /// `--require-redis` without a broker to require.
    #[error("--require-redis needs --redis-url or --redis-sentinels")]
    RequireRedisAlone,
    /// The node id or key prefix is not one the bus accepts (the bus's own
    /// message, which names the flag).
    #[error(transparent)]
    Broker(#[from] crate::broker::NameError),
    /// `--ping-interval` or `--pong-timeout` is zero.
    #[error("--ping-interval and --pong-timeout must be greater than zero")]
    ZeroPing,
    /// A timeout (named by its flag) is zero.
    #[error("{0} must be greater than zero")]
    ZeroTimeout(&'static str),
    /// No `--node-id` was given and `POD_NAME`, the default, is not a valid
    /// node id.
    #[error("POD_NAME {pod:?}, the default node id, is not a valid one ({why}); set --node-id")]
    PodName {
        /// The variable's value.
        pod: String,
        /// What is wrong with it (the bus's check).
        why: crate::broker::NameError,
    },
}

impl Config {
    /// This node's id: `--node-id`, else `POD_NAME`, else host name, process
    /// id and a random suffix (unique even for two processes on one host).
    pub fn node_id(&self) -> String {
        if let Some(id) = &self.broker.node_id {
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
    ///
    /// Errors: a bound or interval that must be positive is zero, the broker
    /// options contradict each other, or the node id or key prefix is not one
    /// the bus accepts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("--max-message-bytes", self.websocket.max_message_bytes),
            ("--max-line-bytes", self.text.max_line_bytes),
            ("--max-body-bytes", self.http.max_body_bytes),
            ("--queue-len", self.limits.queue_len),
            ("--queue-bytes", self.limits.queue_bytes),
            ("--text-answer-backlog", self.text.text_answer_backlog),
            ("--history-size", self.history.history_size),
            ("--history-memory", self.history.history_memory),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        let broker = &self.broker;
        if broker.redis_probe_interval.is_zero() || broker.redis_timeout.is_zero() {
            return Err(ConfigError::ZeroRedisInterval);
        }
        let clustered = broker.redis_url.is_some() || !broker.redis_sentinels.is_empty();
        if broker.require_redis && !clustered {
            return Err(ConfigError::RequireRedisAlone);
        }
        if clustered {
            let id = self.node_id();
            if let Err(why) = crate::broker::check_node_id(&id) {
                if self.broker.node_id.is_none() {
                    return Err(ConfigError::PodName { pod: id, why });
                }
                return Err(why.into());
            }
            crate::broker::check_prefix(&broker.redis_prefix)?;
        }
        if self.websocket.ping_interval.is_zero() || self.websocket.pong_timeout.is_zero() {
            return Err(ConfigError::ZeroPing);
        }
        // A zero deadline would close every client at once, or never let a
        // request through: every timeout must be positive (only
        // `--jwt-leeway`, an allowance, may be zero).
        let timeouts = [
            ("--bind-timeout", self.websocket.bind_timeout),
            ("--write-timeout", self.websocket.write_timeout),
            ("--text-idle-timeout", self.text.text_idle_timeout),
            ("--header-read-timeout", self.http.header_read_timeout),
            ("--body-read-timeout", self.http.body_read_timeout),
            ("--shutdown-timeout", self.shutdown.shutdown_timeout),
            ("--history-ttl", self.history.history_ttl),
        ];
        if let Some((flag, _)) = timeouts.iter().find(|(_, d)| d.is_zero()) {
            return Err(ConfigError::ZeroTimeout(flag));
        }
        Ok(())
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
        assert_eq!(c.auth.api_keys.len(), 2);
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
            assert_eq!(crate::broker::check_node_id(&id), Ok(()), "{host:?}");
        }
    }

    #[test]
    fn default_ports_are_the_published_constants() {
        let c = Config::parse_from(["pushgate"]);
        assert_eq!(c.http.listen.port, DEFAULT_WS_PORT);
        assert_eq!(c.http.api_listen.port, DEFAULT_API_PORT);
        assert_eq!(c.text.text_listen.port, DEFAULT_TEXT_PORT);
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::parse_from(["pushgate"]);
        assert_eq!(c.http.listen.to_string(), "0.0.0.0:1234");
        assert_eq!(c.text.text_listen.to_string(), "127.0.0.1:5678");
        assert_eq!(c.http.api_listen.to_string(), "127.0.0.1:1235");
        assert_eq!(c.http.client_ip_header, ClientIpHeader::XForwardedFor);
        assert_eq!(c.limits.max_conns_per_uid, 32);
        assert!(c.shutdown.shutdown_timeout <= Duration::from_secs(20));
        assert_eq!(c.http.body_read_timeout, Duration::from_secs(10));
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
