//! The command line: the gateway itself (no subcommand), and the helper
//! subcommands an operator runs beside it — `healthcheck` (for images without
//! a shell or curl), `completions` and `man` (generated from the same clap
//! definition, so they never drift from `--help`).

use std::io::Write;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::Config;

/// pushgate: a real-time push gateway. Browsers hold WebSocket connections and
/// bind a user id; backends push to that uid over the legacy text port or REST.
#[derive(Debug, Clone, Parser)]
// The gateway's flags stay valid beside a subcommand: `healthcheck` reads
// `--listen` (or PUSHGATE_LISTEN, which the image sets) to find the gateway.
#[command(name = "pushgate", version, about, long_about = None)]
pub struct Cli {
    /// A helper command; without one, pushgate runs the gateway.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The gateway's configuration.
    #[command(flatten)]
    pub config: Config,
}

/// The helper commands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Probes a running gateway's `/readyz` and exits 0 when it answers 200,
    /// 1 otherwise (Docker's HEALTHCHECK; the image has no shell or curl).
    Healthcheck {
        /// The URL to probe. Default: `/readyz` on the address of `--listen`
        /// (PUSHGATE_LISTEN), an unspecified address (0.0.0.0, ::) read as
        /// loopback.
        #[arg(long)]
        url: Option<String>,
        /// Longest wait for the answer.
        #[arg(long, default_value = "3s", value_parser = crate::config::parse_duration)]
        timeout: Duration,
    },
    /// Prints a shell completion script to standard output.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Prints the manual page (roff) to standard output.
    Man,
}

/// Why a health probe failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    /// The URL is not an `http://host:port/path` URL.
    #[error("invalid URL {0:?}: expected http://host:port/path")]
    Url(String),
    /// No connection, or no complete answer, within the timeout.
    #[error("no answer from {0} within the timeout")]
    Timeout(String),
    /// The connection or the exchange failed.
    #[error("{url}: {source}")]
    Io {
        /// The probed URL.
        url: String,
        /// What failed.
        source: std::io::Error,
    },
    /// HTTP failed.
    #[error("{url}: {source}")]
    Http {
        /// The probed URL.
        url: String,
        /// What failed.
        source: hyper::Error,
    },
    /// The gateway answered, but not 200 (503 while draining or not ready).
    #[error("{url} answered {status}")]
    NotReady {
        /// The probed URL.
        url: String,
        /// Its status.
        status: hyper::StatusCode,
    },
}

/// `GET url` over HTTP/1.1; `Ok` when the answer is 200, within `limit` in
/// all (connect, send, status line).
pub async fn healthcheck(url: &str, limit: Duration) -> Result<(), HealthcheckError> {
    tokio::time::timeout(limit, probe(url))
        .await
        .map_err(|_| HealthcheckError::Timeout(url.to_owned()))?
}

async fn probe(url: &str) -> Result<(), HealthcheckError> {
    let bad_url = || HealthcheckError::Url(url.to_owned());
    let uri: hyper::Uri = url.parse().map_err(|_| bad_url())?;
    if uri.scheme_str() != Some("http") {
        return Err(bad_url());
    }
    let authority = uri.authority().ok_or_else(bad_url)?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let io = |source| HealthcheckError::Io {
        url: url.to_owned(),
        source,
    };
    let http = |source| HealthcheckError::Http {
        url: url.to_owned(),
        source,
    };
    let stream = TcpStream::connect((authority.host().trim_matches(['[', ']']), port))
        .await
        .map_err(io)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let driver = tokio::spawn(conn);
    let request = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|_| bad_url())?;
    let answer = sender.send_request(request).await.map_err(http);
    driver.abort();
    let status = answer?.status();
    if status == hyper::StatusCode::OK {
        Ok(())
    } else {
        Err(HealthcheckError::NotReady {
            url: url.to_owned(),
            status,
        })
    }
}

/// Writes `shell`'s completion script for the whole command line to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "pushgate", out);
}

/// Writes the manual page (roff, section 1) to `out`.
///
/// clap_mangen leaves out the environment twins and refers to one page per
/// subcommand (`pushgate-healthcheck(1)`) that nobody installs; so each
/// option's text names its variable, and the subcommands are described on
/// this one page instead.
pub fn man(out: &mut dyn Write) -> std::io::Result<()> {
    let mut command = Cli::command();
    let with_env: Vec<(clap::Id, String)> = command
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_string_lossy().into_owned();
            let help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(ToString::to_string)
                .unwrap_or_default();
            Some((arg.get_id().clone(), format!("{help}\n\n[env: {env}]")))
        })
        .collect();
    for (id, help) in with_env {
        command = command.mut_arg(id, |arg| arg.long_help(help));
    }
    let subcommands: Vec<String> = command
        .get_subcommands()
        .map(|sub| {
            let about = sub.get_about().map(ToString::to_string).unwrap_or_default();
            format!("pushgate {}: {about}", sub.get_name())
        })
        .collect();
    let command = command.after_long_help(format!(
        "Helper commands (the gateway's flags go before them):\n\n{}",
        subcommands.join("\n\n")
    ));
    let page = clap_mangen::Man::new(command);
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    page.render_description_section(out)?;
    page.render_options_section(out)?;
    page.render_extra_section(out)?;
    page.render_version_section(out)
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use clap::CommandFactory;

    use super::Cli;

    /// Every flag as an operator sees it: name, environment twin, default,
    /// conflicts and help text, one block per flag, sorted by name so that
    /// regrouping the configuration in code cannot hide a change.
    fn flags() -> String {
        let cmd = Cli::command();
        let mut args: Vec<_> = cmd.get_arguments().collect();
        args.sort_by_key(|a| a.get_id().as_str().to_owned());
        let mut out = String::new();
        for arg in args {
            let show = |s: Option<&clap::builder::StyledStr>| s.map(|s| s.to_string());
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            let defaults: Vec<_> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let conflicts: Vec<_> = cmd
                .get_arg_conflicts_with(arg)
                .iter()
                .map(|a| a.get_id().as_str().to_owned())
                .collect();
            let _ = writeln!(
                out,
                "--{} short={:?} env={env:?} hide_env_values={} defaults={defaults:?} \
                 conflicts={conflicts:?} global={} required={}\n  help={:?}\n  long_help={:?}",
                arg.get_long().unwrap_or(arg.get_id().as_str()),
                arg.get_short(),
                arg.is_hide_env_values_set(),
                arg.is_global_set(),
                arg.is_required_set(),
                show(arg.get_help()),
                show(arg.get_long_help()),
            );
        }
        out
    }

    #[test]
    fn flags_env_names_defaults_and_help_are_the_documented_ones() {
        // The snapshot was taken before the configuration was split into
        // groups; operators' scripts, unit files and ConfigMaps depend on it.
        // Regenerate (PUSHGATE_WRITE_FLAGS=1) only for a deliberate change.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/cli/flags.snapshot");
        let now = flags();
        if std::env::var_os("PUSHGATE_WRITE_FLAGS").is_some() {
            std::fs::write(path, &now).expect("write the snapshot");
        }
        assert_eq!(now, include_str!("flags.snapshot"));
    }
}
