//! The `pushgate` binary: parses configuration, sets up logging, binds the
//! listeners and runs the gateway until SIGTERM or SIGINT.

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;

use pushgate::{Config, Listeners, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    config.validate().map_err(anyhow::Error::msg)?;
    telemetry::init_tracing(config.log_format);
    raise_file_limit();

    let http = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let text = TcpListener::bind(config.text_listen)
        .await
        .with_context(|| format!("cannot listen on {} (text port)", config.text_listen))?;
    let api = match config.api_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (API)"))?,
        ),
        None => None,
    };
    let api_addr = match &api {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    tracing::info!(
        http = %http.local_addr()?,
        text = %text.local_addr()?,
        api = %api_addr.map_or_else(|| "-".to_owned(), |a| a.to_string()),
        "listening"
    );
    warn_about_trust(&config);

    pushgate::run(config, Listeners { http, text, api }, shutdown::signal()).await?;
    Ok(())
}

/// Says loudly, at start, where the configuration keeps the seed's trust.
fn warn_about_trust(config: &Config) {
    if config.jwt_secret.is_none()
        && config.jwt_public_key.is_none()
        && config.jwt_secret_file.is_none()
    {
        tracing::warn!(
            "LEGACY MODE: a WebSocket client is bound to whatever uid it sends first, so any \
             client can claim any uid (as push.php did). Set --jwt-secret or --jwt-public-key \
             for secure mode"
        );
    }
    if config.api_keys.is_empty() && config.api_key_file.is_none() {
        tracing::warn!(
            "no API key configured: the REST API accepts only local callers (loopback, no proxy \
             headers). Set --api-key to accept authenticated remote callers"
        );
    }
    if !config.text_listen.ip().is_loopback() && config.text_allow.is_empty() {
        tracing::warn!(
            addr = %config.text_listen,
            "the text push port accepts pushes from any peer that can reach it; \
             restrict it with --text-allow"
        );
    }
}

/// Raises the soft open-file limit to the hard limit: each connection is a
/// file descriptor, and the usual soft limit of 1024 would cap the gateway
/// far below what the host allows.
fn raise_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(open_files = limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}
