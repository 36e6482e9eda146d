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
    tracing::info!(
        http = %http.local_addr()?,
        text = %text.local_addr()?,
        "listening"
    );
    tracing::warn!(
        "legacy mode: a WebSocket client binds whatever uid it sends first, \
         so any client can claim any uid (as push.php did)"
    );
    if !config.text_listen.ip().is_loopback() {
        tracing::warn!(
            addr = %config.text_listen,
            "the text push port accepts pushes from any peer that can reach it"
        );
    }

    pushgate::run(config, Listeners { http, text }, shutdown::signal()).await;
    Ok(())
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
