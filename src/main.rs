//! The `pushgate` binary: parses configuration, sets up logging, checks
//! everything the configuration names, binds the listeners and runs the
//! gateway until SIGTERM or SIGINT.
//!
//! The order matters: key files, JWT keys and Redis URLs are checked
//! ([`AppState::new`]) before anything is bound, so a bad configuration
//! fails with one clear line and never prints the ready line.
//!
//! Standard output carries exactly one line, the ready line (see
//! [`announce_ready`]): `{"ready":{"http":ADDR,"text":ADDR,"api":ADDR}}`,
//! printed once everything is bound and the signal handlers are in. Tests,
//! the bench and the scripts wait for it; logs go to standard error.

use std::net::SocketAddr;

use clap::Parser;
use tokio::net::TcpListener;

use pushgate::cli::{Cli, Command};
use pushgate::config::{ConfigError, ListenAddr};
use pushgate::{AppState, Config, Listeners, StartError, shutdown, telemetry};

#[tokio::main]
async fn main() {
    let Cli { command, config } = Cli::parse();
    match command {
        None => {}
        Some(Command::Healthcheck { url, timeout }) => healthcheck(&config, url, timeout).await,
        Some(Command::Completions { shell }) => {
            pushgate::cli::completions(shell, &mut std::io::stdout());
            return;
        }
        Some(Command::Man) => {
            if let Err(e) = pushgate::cli::man(&mut std::io::stdout()) {
                eprintln!("pushgate man: {e}");
                std::process::exit(1);
            }
            return;
        }
    }
    telemetry::init_tracing(config.log.log_format);
    if let Err(e) = start(config).await {
        // One line, the cause included once (no error chain repeating it).
        tracing::error!("cannot start: {e}");
        std::process::exit(1);
    }
}

/// Why the binary could not start; each says which flag and address.
#[derive(Debug, thiserror::Error)]
enum StartupError {
    /// Options clap accepted but the gateway cannot run with.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A key file, a JWT key or the broker URL is not usable.
    #[error(transparent)]
    State(#[from] StartError),
    /// A listen address (named by its flag) does not resolve.
    #[error("{flag} {addr}: cannot resolve the address: {source}")]
    Resolve {
        flag: &'static str,
        addr: ListenAddr,
        source: std::io::Error,
    },
    /// `--api-listen` and `--listen` are the same address.
    #[error(
        "--api-listen ({api}) must differ from --listen ({public}): the API must never be \
         served on the public listener"
    )]
    SameListener { api: ListenAddr, public: ListenAddr },
    /// A resolved address (named by its flag) cannot be bound.
    #[error("{flag} {addr}: cannot listen: {source}")]
    Bind {
        flag: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A bound listener's address cannot be read back.
    #[error("cannot read a bound address: {0}")]
    LocalAddr(std::io::Error),
}

async fn start(config: Config) -> Result<(), StartupError> {
    config.validate()?;
    // Each connection is a file descriptor, and the usual soft limit of 1024
    // would cap the gateway far below what the host allows: the soft limit
    // goes up to the hard one. Raised before the state is built (the
    // connection cap derives from it), but logged, like the warnings, only once everything has been
    // checked: a refused start says its one line and nothing else.
    let open_files = rlimit::increase_nofile_limit(u64::MAX);
    let (listen, text_listen, api_listen) = (
        config.http.listen.clone(),
        config.text.text_listen.clone(),
        config.http.api_listen.clone(),
    );
    let app = AppState::new(config)?;
    match open_files {
        Ok(limit) => tracing::info!(open_files = limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    warn_about_trust(&app.config);

    let http_addr = resolve(&listen, "--listen").await?;
    let text_addr = resolve(&text_listen, "--text-listen").await?;
    let api_addr = resolve(&api_listen, "--api-listen").await?;
    // The same port on an overlapping address (equal, or either one every
    // address) is the same listener as far as a client can tell.
    let overlap = api_addr.ip() == http_addr.ip()
        || api_addr.ip().is_unspecified()
        || http_addr.ip().is_unspecified();
    if overlap && api_addr.port() == http_addr.port() && api_addr.port() != 0 {
        return Err(StartupError::SameListener {
            api: api_listen,
            public: listen,
        });
    }
    // Signal handlers go in before the ready line: from then on, a
    // SIGTERM drains and a SIGHUP reloads, never the default kill.
    let stop = shutdown::signal();
    let http = bind(http_addr, "--listen").await?;
    let text = bind(text_addr, "--text-listen").await?;
    let api = bind(api_addr, "--api-listen").await?;
    let local = |l: &TcpListener| {
        l.local_addr()
            .map(|a| a.to_string())
            .map_err(StartupError::LocalAddr)
    };
    let (http_local, text_local, api_local) = (local(&http)?, local(&text)?, local(&api)?);
    tracing::info!(http = %http_local, text = %text_local, api = %api_local, "listening");
    announce_ready(&http_local, &text_local, &api_local);
    if !text_addr.ip().to_canonical().is_loopback() && app.config.text.text_allow.is_empty() {
        tracing::warn!(
            addr = %text_addr,
            "the text push port accepts pushes from any peer that can reach it; \
             restrict it with --text-allow"
        );
    }
    pushgate::serve(app, Listeners { http, text, api }, stop).await;
    Ok(())
}

/// Prints the ready line: the one line this binary writes to standard
/// output when serving, once every listener is bound and the signal
/// handlers are in, as one JSON object with the bound `ip:port` of each
/// listener:
///
/// ```text
/// {"ready":{"http":"127.0.0.1:1234","text":"127.0.0.1:5678","api":"127.0.0.1:1235"}}
/// ```
///
/// Tests, the bench and the scripts wait for this line (never for a log
/// line, whose format is `--log-format`'s) and read the ports from it, which
/// is what makes port 0 usable. A write error (standard output closed by a
/// supervisor that does not read it) is logged and otherwise ignored: the
/// gateway serves either way.
fn announce_ready(http: &str, text: &str, api: &str) {
    use std::io::Write;
    let line = serde_json::json!({ "ready": { "http": http, "text": text, "api": api } });
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        tracing::warn!(error = %e, "cannot print the ready line on standard output");
    }
}

/// `pushgate healthcheck`: exits 0 when the gateway's `/readyz` answers 200,
/// 1 otherwise, with one line on standard error saying why.
async fn healthcheck(config: &Config, url: Option<String>, timeout: std::time::Duration) -> ! {
    let url = match url {
        Some(url) => url,
        None => match resolve(&config.http.listen, "--listen").await {
            Ok(addr) => {
                // A gateway listening on every address is reached on loopback.
                let ip = match addr.ip() {
                    ip if ip.is_unspecified() && ip.is_ipv6() => {
                        std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
                    }
                    ip if ip.is_unspecified() => {
                        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
                    }
                    ip => ip,
                };
                format!("http://{}/readyz", SocketAddr::new(ip, addr.port()))
            }
            Err(e) => {
                eprintln!("pushgate healthcheck: {e}");
                std::process::exit(1);
            }
        },
    };
    match pushgate::cli::healthcheck(&url, timeout).await {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("pushgate healthcheck: {e}");
            std::process::exit(1);
        }
    }
}

async fn resolve(addr: &ListenAddr, flag: &'static str) -> Result<SocketAddr, StartupError> {
    addr.resolve()
        .await
        .map_err(|source| StartupError::Resolve {
            flag,
            addr: addr.clone(),
            source,
        })
}

async fn bind(addr: SocketAddr, flag: &'static str) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind { flag, addr, source })
}

/// Says loudly, at start, where the configuration keeps the seed's trust.
fn warn_about_trust(config: &Config) {
    if config.auth.jwt_secret.is_none()
        && config.auth.jwt_public_key.is_none()
        && config.auth.jwt_secret_file.is_none()
    {
        tracing::warn!(
            "LEGACY MODE: a WebSocket client is bound to whatever uid it sends first, so any \
             client can claim any uid (as push.php did). Set --jwt-secret or --jwt-public-key \
             for secure mode"
        );
    }
    if config.auth.api_keys.is_empty() && config.auth.api_key_file.is_none() {
        tracing::warn!(
            "no API key configured: the REST API is served only on the API listener, and \
             there only when it is loopback. Set --api-key to call it from elsewhere"
        );
    }
}
